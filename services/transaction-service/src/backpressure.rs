//! Backpressure on `POST /transactions`: when the apply side (the consumer of
//! `transaction.requested`) has fallen behind past `MAX_APPLY_BACKLOG` accepted requests, a new
//! request is refused with `503 Service Unavailable`, `Retry-After` and a problem+json body
//! rather than joining a backlog of minutes.
//!
//! # The measure: transactions in status `requested`
//!
//! "Behind" is the number of accepted requests not yet applied: the rows of `transactions` whose
//! status is still `requested`. It is the one measure that stays right whatever the topology:
//!
//! - **Replicas.** Every replica of transaction-service shares the database, so every replica
//!   sees the same count, however the partitions of `transaction.requested` are spread. The
//!   consumer lag that librdkafka reports is known only to the replica whose consumer holds the
//!   partition (a replica with no partition would see no lag and accept everything), arrives
//!   every 5 s, and is not reported at all by a consumer that is stopped or rebalancing.
//! - **Every stage.** It counts what waits in the outbox (the relay is behind), on the topic (the
//!   consumer is behind) and in the parking lot (a request waiting for its account), not just one
//!   of them. The outbox backlog alone misses the consumer, which is the usual bottleneck: the
//!   relay publishes a thousand rows a round.
//! - **Its blind spot**: requests other producers write straight to `transaction.requested` are
//!   recorded only when the consumer reaches them, so they do not count while they wait on the
//!   topic (they never pass through `POST /transactions`); `kafka_consumer_lag` shows them.
//!
//! # Cost: no database round trip per request
//!
//! A background task ([`ApplyBacklog::sample`]) counts the rows every [`SAMPLE_EVERY`] with
//! one query on the `transactions_status` index, reading at most [`COUNT_CAP_FACTOR`] times the
//! bound (so its cost stays bounded however large the backlog grows). Between two samples each
//! replica adds the requests it admitted itself, so a burst on one replica is bounded at once;
//! what *other* replicas accepted since the last sample is seen at the next one (at most
//! [`SAMPLE_EVERY`] of their traffic beyond the bound). The check itself is a few atomic
//! operations.
//!
//! # Idempotent retries
//!
//! A refused request stored nothing. A request whose `transactionId` was accepted before is not
//! new work: when the service is overloaded it is looked up (one query, only then) and answered
//! as usual — `202` for the same request, `409` for another body under that id — so a client
//! retrying after a lost answer learns its outcome even while new requests are refused. Only
//! requests the ledger does not know yet get the 503.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use platform::Database;
use tokio_util::sync::CancellationToken;

/// How often the backlog is counted.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The count reads at most this many times the bound (the gauge saturates there).
pub const COUNT_CAP_FACTOR: u64 = 4;
/// The `Retry-After` of a refused request, in seconds: several samples later, long enough for the
/// consumer to have applied some hundreds of requests.
pub const RETRY_AFTER_SECS: u64 = 2;

/// A request refused because the ledger is too far behind (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the ledger is {backlog} accepted requests behind in applying them (the bound, \
     MAX_APPLY_BACKLOG, is {limit}); this request was not stored: retry after {retry_after_secs} \
     s with the same transactionId"
)]
pub struct Overloaded {
    /// Accepted requests not yet applied, as estimated.
    pub backlog: i64,
    /// The bound (`MAX_APPLY_BACKLOG`).
    pub limit: u64,
    /// How long the client should wait (`Retry-After`).
    pub retry_after_secs: u64,
}

/// The admission gate of `POST /transactions` (cheap to clone; clones share the state).
#[derive(Debug, Clone)]
pub struct ApplyBacklog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: the check is off.
    limit: Option<NonZeroU64>,
    /// Rows in status `requested` at the last sample.
    sampled: AtomicI64,
    /// Requests this replica stored since the last sample.
    accepted: AtomicI64,
    /// Requests this replica admitted that are not stored (or refused) yet.
    in_flight: AtomicI64,
}

impl ApplyBacklog {
    /// A gate refusing new requests while `limit` or more accepted requests wait to be applied;
    /// `None` admits everything.
    pub fn new(limit: Option<NonZeroU64>) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit,
                sampled: AtomicI64::new(0),
                accepted: AtomicI64::new(0),
                in_flight: AtomicI64::new(0),
            }),
        }
    }

    /// Whether the check is on.
    pub fn is_on(&self) -> bool {
        self.inner.limit.is_some()
    }

    /// The estimated backlog: the last sample plus what this replica admitted since.
    pub fn estimate(&self) -> i64 {
        let inner = &self.inner;
        inner.sampled.load(Ordering::SeqCst)
            + inner.accepted.load(Ordering::SeqCst)
            + inner.in_flight.load(Ordering::SeqCst)
    }

    /// Admits a new request while the backlog is below the bound: the [`Admission`] counts it
    /// in until it is stored ([`Admission::stored`]) or dropped. Refused: [`Overloaded`], counted
    /// in `transactions_apply_backlog_rejected_total`.
    pub fn admit(&self) -> Result<Admission, Overloaded> {
        let admission = Admission {
            inner: Arc::clone(&self.inner),
        };
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        let Some(limit) = self.inner.limit else {
            return Ok(admission);
        };
        // This request included: at most `limit` may wait.
        let backlog = self.estimate();
        let bound = i64::try_from(limit.get()).unwrap_or(i64::MAX);
        if backlog <= bound {
            return Ok(admission);
        }
        drop(admission);
        metrics::counter!("transactions_apply_backlog_rejected_total").increment(1);
        Err(Overloaded {
            backlog: backlog - 1,
            limit: limit.get(),
            retry_after_secs: RETRY_AFTER_SECS,
        })
    }

    /// Takes a new sample: `requested` rows counted now (`count`, called once), with this
    /// replica's requests stored before the count folded into it.
    async fn resample<F, E>(&self, count: F) -> Result<i64, E>
    where
        F: std::future::Future<Output = Result<i64, E>>,
    {
        // Requests stored from here on until the count's snapshot are counted twice until the
        // next sample: the estimate errs on the side of refusing.
        let before = self.inner.accepted.load(Ordering::SeqCst);
        let counted = count.await?;
        self.inner.sampled.store(counted, Ordering::SeqCst);
        self.inner.accepted.fetch_sub(before, Ordering::SeqCst);
        metrics::gauge!("transactions_apply_backlog").set(counted as f64);
        Ok(counted)
    }

    /// Counts the backlog in `db` every [`SAMPLE_EVERY`] until `shutdown` (nothing when the
    /// check is off). A failed count keeps the last sample and logs a warning (once an outage).
    /// Exports the bound (`transactions_apply_backlog_limit`, 0 when off) and the rejection
    /// counter at once.
    pub async fn sample(self, db: Database, shutdown: CancellationToken) {
        // The service's recorder, installed now if serving has not installed it yet.
        platform::telemetry::metrics_handle();
        let bound = self.inner.limit.map_or(0, NonZeroU64::get);
        metrics::gauge!("transactions_apply_backlog_limit").set(bound as f64);
        metrics::counter!("transactions_apply_backlog_rejected_total").increment(0);
        let Some(limit) = self.inner.limit else {
            return;
        };
        let cap = limit.get().saturating_mul(COUNT_CAP_FACTOR);
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let mut failing = false;
        loop {
            match self.resample(count_requested(&db, cap)).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("counting the apply backlog works again");
                }
                Ok(_) => {}
                // Once per outage, not every sample.
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "counting the apply backlog failed; keeping the last count");
                }
                Err(error) => tracing::debug!(%error, "counting the apply backlog failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }
}

/// An admitted request, counted in the backlog estimate until it is stored or dropped.
#[derive(Debug)]
#[must_use = "an admission counts the request until it is stored or dropped"]
pub struct Admission {
    inner: Arc<Inner>,
}

impl Admission {
    /// The request was stored: it counts as accepted until the next sample counts its row.
    pub fn stored(self) {
        self.inner.accepted.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Transactions in status `requested`, counting at most `cap` (an index range scan on
/// `transactions_status`). Here rather than in [`crate::storage`]: it is the gate's own query.
async fn count_requested(db: &Database, cap: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 AS one FROM transactions WHERE status = 'requested' \
         LIMIT $1) AS waiting",
    )
    .bind(cap)
    .fetch_one(db.reads())
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(n)
    }

    #[tokio::test]
    async fn admits_up_to_the_bound_then_refuses() {
        let gate = ApplyBacklog::new(limit(2));
        gate.admit().unwrap().stored();
        let second = gate.admit().unwrap();
        let refused = gate.admit().unwrap_err();
        assert_eq!(
            refused,
            Overloaded {
                backlog: 2,
                limit: 2,
                retry_after_secs: RETRY_AFTER_SECS
            }
        );
        assert!(refused.to_string().contains("MAX_APPLY_BACKLOG"));
        // An admission that stores nothing frees its place.
        drop(second);
        assert_eq!(gate.estimate(), 1);
        gate.admit().unwrap().stored();
        assert!(gate.admit().is_err());
    }

    #[tokio::test]
    async fn a_sample_replaces_what_this_replica_counted() {
        let gate = ApplyBacklog::new(limit(3));
        for _ in 0..3 {
            gate.admit().unwrap().stored();
        }
        assert!(gate.admit().is_err());
        // The consumer applied two of them (and another replica added one).
        gate.resample(async { Ok::<_, ()>(2) }).await.unwrap();
        assert_eq!(gate.estimate(), 2);
        gate.admit().unwrap().stored();
        assert!(gate.admit().is_err());
        gate.resample(async { Ok::<_, ()>(0) }).await.unwrap();
        assert_eq!(gate.estimate(), 0);
        // A failed count keeps the last sample.
        assert!(gate.resample(async { Err::<i64, _>(()) }).await.is_err());
        assert_eq!(gate.estimate(), 0);
    }

    #[tokio::test]
    async fn off_admits_everything() {
        let gate = ApplyBacklog::new(None);
        assert!(!gate.is_on());
        for _ in 0..10 {
            gate.admit().unwrap().stored();
        }
        gate.admit().unwrap().stored();
    }
}
