//! customer-service: registers customers and publishes `Customer.created`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::definition::main::<customer_service::CustomerService>().await
}
