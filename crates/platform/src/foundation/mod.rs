//! The layer under all others, importing no other folder: configuration primitives, problems,
//! retries, crash points, shutdown, the operational routes' names, health reports, telemetry.

pub mod env;
pub mod failpoint;
pub mod health;
pub mod metrics_scope;
pub mod ops;
pub mod problem;
pub mod redact;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_logs;
