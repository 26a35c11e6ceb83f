//! console: a read-only live view of the event pipeline. It reads every topic (and the dead
//! letters) into a bounded recent window with its own consumer group, reads the services'
//! public APIs for balances and deliveries, measures consumer lag (and, from the services'
//! metrics, their outbox backlog), and serves it all to a page
//! over server-sent events. It keeps no state that matters: a restart rebuilds it.
//!
//! # Layout
//!
//! The console is a [`platform::Definition`] like the services, [`ConsoleService`], whose storage
//! is [`NoDatabase`]: the runtime opens no database and runs no migrations, relay or pruner (it
//! has no outbox and no event handlers, so no `domain`/`storage`/`handlers` either). The modules
//! it shares with the services keep their meaning:
//!
//! - `lib.rs`: [`ConsoleService`], whose `build` starts the tasks below and returns the routes.
//! - [`settings`]: the console's own settings (the services' URLs, the window size).
//! - [`routes`]: HTTP only: the page, the snapshot, the live stream, the OpenAPI document.
//! - [`state`]: what the console shows, in memory, and the fan-out of its changes.
//! - [`window`]: the recent window of events, bounded in count and bytes.
//! - [`reader`]: the task reading every topic into the window.
//! - [`broker_meter`]: the task measuring consumer lag and dead letters from the broker.
//! - [`backlogs`]: the task scraping the services' outbox backlogs from their metrics.
//! - [`upstream`]: the tasks reading the services' public APIs.
//!
//! # Request flow
//!
//! A record on a topic is read by [`reader`] into the [`window`] of the [`state::Console`],
//! which announces the change; `GET /api/stream` ([`routes`]) sends a snapshot, then every
//! announced change, to the page as server-sent events.

pub mod backlogs;
pub mod broker_meter;
pub mod reader;
pub mod routes;
pub mod settings;
pub mod state;
pub mod upstream;
pub mod window;

use anyhow::Context;
use axum::Router;
use platform::bind::Bind;
use platform::config::api_keys_from;
use platform::service::NoDatabase;
use platform::{ConfigError, Definition, Env, Service};

pub use settings::Settings;

/// Service name: log field and client id.
pub const NAME: &str = "console";
/// Default HTTP port (`PORT` overrides).
pub const DEFAULT_PORT: u16 = 3004;

/// The console, as [`platform::definition::main`] runs it.
pub struct ConsoleService;

impl Definition for ConsoleService {
    const NAME: &'static str = NAME;
    const DEFAULT_PORT: u16 = DEFAULT_PORT;
    type Settings = Settings;
    /// The console keeps nothing: a restart rebuilds what it shows.
    type Storage = NoDatabase;

    fn migrations() {}

    /// Reads the settings for the address the console will listen on (`BIND_ADDRESS`, decided
    /// with the keys as the runtime decides it): beyond loopback the services' URLs must be set.
    fn settings(env: &impl Env) -> Result<Settings, ConfigError> {
        let bind = Bind::from_env(env, &api_keys_from(env)?)?;
        Settings::from_env_for(env, bind.address)
    }

    /// Registers the topic reader, the broker meter, the backlog scraper and the service
    /// readers, and returns the routes.
    fn build(service: &mut Service<NoDatabase>, settings: Settings) -> anyhow::Result<Router> {
        tracing::info!(customers = %settings.customer_service,
            transactions = %settings.transaction_service,
            notifications = %settings.notification_service, window = settings.window,
            "reading the topics and the services");
        let console = state::Console::new(settings.window);
        let upstream = upstream::Upstream::new(settings.clone()).context("cannot set up HTTP")?;
        let (kafka, window) = (service.config.kafka.clone(), settings.window);
        let shown = console.clone();
        service.spawn(move |shutdown| async move {
            if let Err(error) = reader::run(kafka, shown, window, shutdown.clone()).await {
                tracing::error!(%error, "topic reader failed; shutting down");
                shutdown.cancel();
            }
        });
        let (kafka, shown) = (service.config.kafka.clone(), console.clone());
        service.spawn(move |shutdown| broker_meter::run(kafka, shown, shutdown));
        let (read, shown) = (upstream.clone(), console.clone());
        service.spawn(move |shutdown| backlogs::run(read, shown, shutdown));
        let (read, shown) = (upstream.clone(), console.clone());
        service.spawn(move |shutdown| async move { read.load_customers(shown, shutdown).await });
        let (read, shown) = (upstream.clone(), console.clone());
        service.spawn(move |shutdown| async move { read.refresh_accounts(shown, shutdown).await });
        let shown = console.clone();
        service.spawn(
            move |shutdown| async move { upstream.follow_deliveries(shown, shutdown).await },
        );
        let state = routes::AppState {
            console,
            shutdown: service.shutdown.clone(),
        };
        Ok(routes::router(state, &service.api_keys))
    }
}
