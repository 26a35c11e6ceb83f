//! notification-service: welcome messages and transaction alerts by email.

use notification_service::{build, Settings, DEFAULT_PORT, MIGRATIONS, NAME};
use platform::config::ProcessEnv;
use platform::Service;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Mail settings are checked before anything starts: a bad SMTP_URL fails with one line.
    let settings = Settings::from_env(&ProcessEnv)?;
    let mut service = Service::start(NAME, DEFAULT_PORT, &MIGRATIONS).await?;
    let routes = build(&mut service, settings)?;
    service.serve(routes).await
}
