//! customer-service: registers customers and publishes `Customer.created`.

use customer_service::{build, DEFAULT_PORT, MIGRATIONS, NAME};
use platform::Service;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut service = Service::start(NAME, DEFAULT_PORT, &MIGRATIONS).await?;
    let routes = build(&mut service);
    service.serve(routes).await
}
