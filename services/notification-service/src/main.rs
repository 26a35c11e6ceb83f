//! notification-service: welcome messages and transaction alerts by email.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::definition::main::<notification_service::NotificationService>().await
}
