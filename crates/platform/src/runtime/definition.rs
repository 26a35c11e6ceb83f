//! The one shape of a service: a crate declares what it is ([`Definition`]) and its `main` is
//! one line, [`main`]. Reading the settings, starting the runtime (database, producer, relay,
//! telemetry), wiring the service's consumers and routes and serving them happen here, the same
//! for every service, the console included (it keeps no database: its storage is
//! [`NoDatabase`](crate::runtime::service::NoDatabase)).

use std::process::ExitCode;

use axum::Router;

use crate::runtime::config::{ConfigError, Env, ProcessEnv};
use crate::runtime::service::{Service, Storage};

/// What a service crate declares about itself; [`main`] runs it.
pub trait Definition {
    /// Log field, event source, consumer-group prefix, default database file.
    const NAME: &'static str;
    /// HTTP port when `PORT` is unset.
    const DEFAULT_PORT: u16;
    /// The service's own settings (beyond [`crate::runtime::config::ServiceConfig`]); `()` when it has none.
    type Settings;
    /// Where it keeps its state: its [`Database`](crate::Database), or
    /// [`NoDatabase`](crate::runtime::service::NoDatabase) (no migrations, relay, pruner or producer;
    /// see [`Storage`]).
    type Storage: Storage;

    /// The service's migrations (versions from 100 on; the platform owns 1 to 99); `()`
    /// without a database.
    fn migrations() -> <Self::Storage as Storage>::Migrations;

    /// Reads the settings; a bad value fails with one line naming the variable.
    fn settings(env: &impl Env) -> Result<Self::Settings, ConfigError>;

    /// Registers the consumers and background tasks on `service` and returns the routes.
    fn build(
        service: &mut Service<Self::Storage>,
        settings: Self::Settings,
    ) -> anyhow::Result<Router>;
}

/// The whole `main` of a service: settings first (bad configuration fails before anything
/// connects), then start, build and serve until SIGTERM/SIGINT. An error ends the process with
/// one line on stderr and exit code 1, whatever `RUST_BACKTRACE` says.
pub async fn main<D: Definition>() -> ExitCode {
    exit_code(run::<D>().await)
}

/// How a process ends: success, or the error's chain on one line of stderr and exit code 1.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run<D: Definition>() -> anyhow::Result<()> {
    let settings = D::settings(&ProcessEnv)?;
    let mut service =
        Service::<D::Storage>::start_on(D::NAME, D::DEFAULT_PORT, D::migrations()).await?;
    let routes = D::build(&mut service, settings)?;
    service.serve(routes).await
}
