//! A real single-node Apache Kafka broker (KRaft, combined broker + controller) run from the jars
//! that `tools/kafka/pom.xml` brings from Maven Central. No Docker, no tarball.
//!
//! Layout of `<cache root>/kafka` (see [`crate::paths`]):
//! - `lib/`     the jars (fetched once with Maven; `lib/.pom` records which pom they came from);
//! - `config/`  `server.properties` (0600, holds the SASL/PLAIN password), log4j2 configurations,
//!   `secrets.env` (0600, the generated passwords), `format.state` (what the storage was formatted
//!   with);
//! - `data/`    the broker's log and metadata directory;
//! - `tls/`     CA and broker certificate ([`tls`]);
//! - `logs/`    `server.log` (log4j2) and `kafka.out` (the JVM's own stdout/stderr);
//! - `kafka.pid`, `kafka.env` (the credentials contract with the rest of the workspace).

//!
//! Modules, by what they do: [`home`] names the broker's files and ports; [`broker`] starts,
//! stops and watches the JVM; [`download`] fetches the jars; [`config`] writes the credentials
//! and configuration files; [`storage`] formats the KRaft storage; [`tls`] makes the
//! certificates; [`topics`] creates and deletes topics.

mod broker;
mod cluster;
mod config;
mod download;
mod home;
mod storage;
mod tls;
mod topics;

pub use cluster::Cluster;
pub use home::{Kafka, Ports, Started};
pub use tls::issue as issue_certificate;
pub use topics::{create_topics, delete_test_topics, delete_topics_with_prefix};
