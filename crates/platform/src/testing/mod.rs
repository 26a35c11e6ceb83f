//! The test harness of every crate: integration tests against the real local broker
//! (`cargo xtask kafka start`), a real database (SQLite files, or PostgreSQL when
//! `TEST_DATABASE_URL` names a server) and a real SMTP server ([`smtp`]).
//!
//! - start a service and call it: [`TestApp`] (or [`RunningService`] for a service built by
//!   hand);
//! - wait for an outcome: [`eventually`] (panics naming what it waited for), [`poll_until`];
//! - wait for the outbox relay: [`outbox_drained`];
//! - read a topic: [`read_topic`], [`read_to_end`], a background [`Collector`], and
//!   [`RecordExt`] for a record's headers and JSON;
//! - produce as another producer would: [`TestProducer`], [`produce_raw`];
//! - a PostgreSQL server of the test's own, to restart: [`PrivateCluster`];
//! - the pieces: [`LocalKafka`] (isolated topic prefixes), [`fresh_database_url`], [`unique`].

mod app;
mod database;
mod local_kafka;
mod outbox;
mod port;
mod postgres;
mod produce;
mod records;
pub mod smtp;
mod wait;

pub use app::{service_config, Reply, RunningService, Starter, TestApp};
pub use database::{
    connect, fresh_database, fresh_database_on, fresh_database_url, tls_cluster, unique, TlsCluster,
};
pub use local_kafka::{kafka_env_path, LocalKafka};
pub use outbox::outbox_drained;
pub use port::free_port;
pub use postgres::{ClusterError, PrivateCluster};
pub use produce::{produce_raw, TestProducer};
pub use records::{partition_count, read_to_end, read_topic, Collector, RecordExt};
pub use smtp::{Mail, SmtpMode, SmtpServer};
pub use wait::{eventually, poll_until, DEADLINE};

use std::path::PathBuf;

/// Prints `line` and, when `EMS_SUMMARY_FILE` names a file, appends it there: how a test hands
/// a line to the closing summary of `cargo xtask test` (libtest captures a passing test's
/// output).
pub fn summary_line(line: &str) {
    println!("{line}");
    if let Some(path) = std::env::var_os("EMS_SUMMARY_FILE") {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = appended {
            panic!(
                "EMS_SUMMARY_FILE {}: {error}",
                PathBuf::from(path).display()
            );
        }
    }
}
