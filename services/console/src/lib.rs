//! console: a read-only live view of the event pipeline. It reads every topic (and the dead
//! letters) into a bounded recent window with its own consumer group, reads the services'
//! public APIs for balances and deliveries, measures consumer lag (and, from the services'
//! metrics, their outbox backlog), and serves it all to a page
//! over server-sent events. It keeps no state that matters: a restart rebuilds it.
//!
//! # Layout
//!
//! The console has no database, no outbox and no event handlers, so it is not a
//! [`platform::Definition`] and has no `domain`/`storage`/`handlers`; the modules it shares with
//! the services keep their meaning:
//!
//! - `lib.rs`: [`main`] and [`run`], which start the tasks below and serve the routes.
//! - [`settings`]: the console's own settings (the services' URLs, the window size).
//! - [`routes`]: HTTP only: the page, the snapshot, the live stream, the OpenAPI document.
//! - [`state`]: what the console shows, in memory, and the fan-out of its changes.
//! - [`window`]: the recent window of events, bounded in count and bytes.
//! - [`reader`]: the task reading every topic into the window.
//! - [`health`]: the task measuring consumer lag and dead letters.
//! - [`outbox`]: the task scraping the services' outbox backlog.
//! - [`upstream`]: the tasks reading the services' public APIs.
//!
//! # Request flow
//!
//! A record on a topic is read by [`reader`] into the [`window`] of the [`state::Console`],
//! which announces the change; `GET /api/stream` ([`routes`]) sends a snapshot, then every
//! announced change, to the page as server-sent events.

pub mod health;
pub mod outbox;
pub mod reader;
pub mod routes;
pub mod settings;
pub mod state;
pub mod upstream;
pub mod window;

use std::time::Duration;

use anyhow::Context;
use platform::config::ProcessEnv;
use platform::http;
use platform::readiness::Readiness;
use platform::{kafka, telemetry, ServiceConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

/// Service name: log field and client id.
pub const NAME: &str = "console";
/// Default HTTP port (`PORT` overrides).
pub const DEFAULT_PORT: u16 = 3004;

/// The console's `main`: reads its configuration from the environment, binds `PORT` and runs
/// until SIGTERM/SIGINT. (The console has no database and no outbox, so it is not a
/// [`platform::Definition`]; it ends the same way.)
pub async fn main() -> anyhow::Result<()> {
    let config = ServiceConfig::from_env(NAME, DEFAULT_PORT, &ProcessEnv)?;
    let settings = Settings::from_env_for(&ProcessEnv, config.bind.address)?;
    telemetry::init(&config)?;
    let address = std::net::SocketAddr::new(config.bind.address, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (PORT)"))?;
    run(config, settings, listener, platform::shutdown::on_signal()).await
}

/// Runs the console on `listener` until `shutdown`: the topic reader, the health meter, the
/// service readers and the HTTP routes (with `/healthz`, `/readyz`, `/metrics`).
pub async fn run(
    config: ServiceConfig,
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(service = NAME, kafka = ?config.kafka.brokers,
        protocol = config.kafka.security_protocol.as_str(),
        customers = %settings.customer_service, transactions = %settings.transaction_service,
        notifications = %settings.notification_service, window = settings.window, "starting");
    config.bind.log(&config.api_keys);
    // The recorder before any task records a metric (one recorded earlier would be lost).
    let metrics = telemetry::metrics_handle();
    // Credentials and certificates are checked first: retrying cannot fix them.
    match kafka::check_connection(&config.kafka, Duration::from_secs(10)).await {
        Err(error) if error.is_refusal() => return Err(error.into()),
        _ => {}
    }
    let console = state::Console::new(settings.window);
    let upstream = upstream::Upstream::new(settings.clone()).context("cannot set up HTTP")?;
    let mut tasks = JoinSet::new();
    {
        let (kafka, console, stop) = (config.kafka.clone(), console.clone(), shutdown.clone());
        let window = settings.window;
        tasks.spawn(async move {
            if let Err(error) = reader::run(kafka, console, window, stop.clone()).await {
                tracing::error!(%error, "topic reader failed; shutting down");
                stop.cancel();
            }
        });
    }
    tasks.spawn(health::run(
        config.kafka.clone(),
        console.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(outbox::run(
        upstream.clone(),
        console.clone(),
        shutdown.clone(),
    ));
    for task in 0..3 {
        let (upstream, console, stop) = (upstream.clone(), console.clone(), shutdown.clone());
        tasks.spawn(async move {
            match task {
                0 => upstream.load_customers(console, stop).await,
                1 => upstream.refresh_accounts(console, stop).await,
                _ => upstream.follow_deliveries(console, stop).await,
            }
        });
    }
    let routes = routes::router(
        routes::AppState {
            console,
            shutdown: shutdown.clone(),
        },
        &config.api_keys,
    );
    let readiness = Readiness::brokers_only(config.kafka.clone(), shutdown.clone());
    tasks.spawn(readiness.clone().watch(shutdown.clone()));
    let app = http::with_common_layers(routes.merge(http::ops_routes(readiness, metrics)));
    tracing::info!(service = NAME, address = %listener.local_addr()?, "listening");
    let served = http::serve(listener, app, &config.http, shutdown.clone()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!(service = NAME, "stopped");
    telemetry::shutdown().await;
    served.context("HTTP server failed")
}
