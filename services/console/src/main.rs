//! console: the read-only live console of the event pipeline.

use anyhow::Context;
use console::{Settings, DEFAULT_PORT, NAME};
use platform::config::ProcessEnv;
use platform::ServiceConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ServiceConfig::from_env(NAME, DEFAULT_PORT, &ProcessEnv)?;
    let settings = Settings::from_env(&ProcessEnv)?;
    platform::telemetry::init(&config)?;
    let address = std::net::SocketAddr::from(([0, 0, 0, 0], config.port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (PORT)"))?;
    console::run(config, settings, listener, platform::shutdown::on_signal()).await
}
