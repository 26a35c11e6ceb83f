//! The system tests, in one test binary (one link instead of ten): the three services as real
//! processes over the real broker. One module per scenario; a test is named
//! `<module>::<test>` (e.g. `cargo test -p system-tests --test system crash_points::`).
//!
//! libtest runs tests of one binary in parallel threads, so tests of different modules may now
//! run at the same time. Each test takes [`exclusive`] or [`shared`] first: the crash, shutdown,
//! replica and chaos runs (CPU-heavy, timing-sensitive, judging recovery times) and the browser
//! tests (a 2 s freshness assertion) run alone; the others may overlap each other.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

mod api_keys;
mod chaos;
mod console;
mod crash_points;
mod crash_recovery;
mod graceful_shutdown;
mod replicas;
mod sasl_ssl;
mod secrets;
mod seed_flow;
mod shutdown_under_load;

/// Serialises the tests that must not overlap others (see the crate docs).
static STACKS: RwLock<()> = RwLock::const_new(());

/// For a test that must run alone: waits until no other test runs, and keeps others out until
/// the guard is dropped (hold it for the whole test).
async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    STACKS.write().await
}

/// For a test that may run beside other [`shared`] tests, but not beside an [`exclusive`] one.
async fn shared() -> RwLockReadGuard<'static, ()> {
    STACKS.read().await
}
