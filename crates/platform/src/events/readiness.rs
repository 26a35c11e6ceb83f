//! `/readyz`: whether this replica can serve HTTP. The database (one query within
//! [`DATABASE_BUDGET`]) and shutdown decide it; the broker, the consumers and the relay are
//! reported in the body, in `service_ready{check}` and in the alert rules, but they never take a
//! replica out of routing: the outbox exists so that requests are taken while Kafka is away, and
//! with one instance a 503 would close the whole API while the database is fine.
//!
//! A probe opens no Kafka client and waits on nothing but the database: the broker's state is
//! refreshed in the background ([`Readiness::watch`]), at most one metadata round trip per
//! [`BROKER_CHECK_EVERY`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::foundation::health::{Check, Health};
use crate::kafka::{self, KafkaConfig};
use crate::store::db::Database;

/// The longest a probe waits for the database's answer. Probe timeouts in the deploy files are
/// longer (2 s and more).
pub const DATABASE_BUDGET: Duration = Duration::from_millis(800);
/// How often the background task asks the brokers for metadata.
pub const BROKER_CHECK_EVERY: Duration = Duration::from_secs(10);
/// How long one metadata round trip may take.
const BROKER_BUDGET: Duration = Duration::from_secs(3);
/// The checks that decide whether the replica takes traffic.
const DECIDING: [&str; 2] = ["database", "shutdown"];

/// What `/readyz` checks (cheap to clone): the database (when the process has one), shutdown
/// and, for the body, the brokers and what a service's consumers and relay report (see
/// [`crate::foundation::health`]).
#[derive(Clone)]
pub struct Readiness {
    db: Option<Database>,
    kafka: KafkaConfig,
    health: Health,
    /// The last broker check, written by [`Readiness::refresh_broker`].
    broker: Arc<Mutex<Check>>,
    shutdown: CancellationToken,
}

/// The verdict of `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every check passes (200).
    Ready,
    /// Serving, with trouble in the broker, a consumer or the relay (200; see the checks).
    Degraded,
    /// The database does not answer or the replica is shutting down (503).
    NotReady,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    /// `ready`, `degraded` or `not_ready`.
    pub status: Status,
    /// Each check by name: `database`, `kafka`, `consumer:<group>`, `relay` (and `shutdown` while
    /// the replica stops).
    pub checks: BTreeMap<String, Check>,
}

impl ReadinessReport {
    /// Judges `checks`: not ready when a deciding check fails, degraded when another one does.
    fn of(checks: BTreeMap<String, Check>) -> Self {
        let failing = |name: &String, check: &Check| !check.ok && DECIDING.contains(&name.as_str());
        let status = if checks.iter().any(|(n, c)| failing(n, c)) {
            Status::NotReady
        } else if checks.values().all(|c| c.ok) {
            Status::Ready
        } else {
            Status::Degraded
        };
        Self { status, checks }
    }

    /// Whether the replica takes traffic (`ready` or `degraded`).
    pub fn is_ready(&self) -> bool {
        self.status != Status::NotReady
    }
}

impl Readiness {
    /// Readiness of a service: `db`, the brokers of `kafka`, what `health` holds, and
    /// `shutdown`.
    pub fn new(
        db: Database,
        kafka: KafkaConfig,
        health: Health,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with(Some(db), kafka, health, shutdown)
    }

    /// Readiness of a service without a database (the console): shutdown decides; the brokers
    /// of `kafka` and what `health` holds are reported.
    pub fn without_database(
        kafka: KafkaConfig,
        health: Health,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with(None, kafka, health, shutdown)
    }

    fn with(
        db: Option<Database>,
        kafka: KafkaConfig,
        health: Health,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            db,
            kafka,
            health,
            broker: Arc::new(Mutex::new(Check::ok_with("not checked yet"))),
            shutdown,
        }
    }

    /// The checks as of now: one database query (at most [`DATABASE_BUDGET`]), the rest from
    /// state already held. Sets the `service_ready{check}` gauges.
    pub async fn report(&self) -> ReadinessReport {
        let mut checks = BTreeMap::new();
        if let Some(db) = &self.db {
            let check = match tokio::time::timeout(DATABASE_BUDGET, db.ping()).await {
                Ok(Ok(())) => Check::ok(),
                Ok(Err(error)) => Check::failed(error.to_string()),
                Err(_) => Check::failed(format!(
                    "no answer within {} ms",
                    DATABASE_BUDGET.as_millis()
                )),
            };
            checks.insert("database".to_string(), check);
        }
        checks.insert("kafka".to_string(), self.broker_check());
        checks.extend(self.health.checks());
        for (name, check) in &checks {
            metrics::gauge!("service_ready", "check" => name.clone()).set(if check.ok {
                1.0
            } else {
                0.0
            });
        }
        if self.shutdown.is_cancelled() {
            checks.insert(
                "shutdown".to_string(),
                Check::failed("shutting down: finishing in-flight work"),
            );
        }
        ReadinessReport::of(checks)
    }

    fn broker_check(&self) -> Check {
        if let Some(waiting) = self.health.broker_check() {
            return waiting;
        }
        self.broker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One metadata round trip to the brokers; its outcome is what probes report until the next.
    pub async fn refresh_broker(&self) {
        let check = match kafka::check_connection(&self.kafka, BROKER_BUDGET).await {
            Ok(_) => Check::ok(),
            Err(error) => Check::failed(error.to_string()),
        };
        *self.broker.lock().unwrap_or_else(PoisonError::into_inner) = check;
    }

    /// Until `stop`: refreshes the broker check every [`BROKER_CHECK_EVERY`] and, with it, the
    /// `service_ready` gauges (probes refresh them too).
    pub async fn watch(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.refresh_broker() => {}
            }
            self.report().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(BROKER_CHECK_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(list: &[(&str, bool)]) -> BTreeMap<String, Check> {
        list.iter()
            .map(|(name, ok)| {
                let check = if *ok {
                    Check::ok()
                } else {
                    Check::failed("down")
                };
                (name.to_string(), check)
            })
            .collect()
    }

    #[test]
    fn only_the_database_and_shutdown_take_a_replica_out_of_routing() {
        let all_ok = ReadinessReport::of(checks(&[("database", true), ("kafka", true)]));
        assert_eq!(all_ok.status, Status::Ready);
        let broker_down = ReadinessReport::of(checks(&[
            ("database", true),
            ("kafka", false),
            ("consumer:g", false),
            ("relay", false),
        ]));
        assert_eq!(broker_down.status, Status::Degraded);
        assert!(broker_down.is_ready());
        let database_down = ReadinessReport::of(checks(&[("database", false), ("kafka", true)]));
        assert_eq!(database_down.status, Status::NotReady);
        assert!(!database_down.is_ready());
        let stopping = ReadinessReport::of(checks(&[("kafka", true), ("shutdown", false)]));
        assert_eq!(stopping.status, Status::NotReady);
    }

    #[test]
    fn the_status_is_written_in_snake_case() {
        let report = ReadinessReport::of(checks(&[("database", false)]));
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["status"], "not_ready");
    }
}
