//! The inbox: event ids a consumer has applied. Claiming an id happens in the same transaction as
//! the effect, so a redelivered event is recognised and skipped.
//!
//! [`Inboxed`] is the consumer side of effectively-once: it applies a batch of records with an
//! [`Apply`] implementation, each event with its inbox claim, all in ONE database transaction.
//! An event that has to wait for another one is parked ([`crate::parking`]) and the partition
//! moves on.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use contracts::EventMetadata;
use tracing::Instrument;

use crate::db::{timestamp, Conn, Database, DbError};
use crate::kafka::consumer::consume_span;
use crate::kafka::consumer::BoxError;
use crate::kafka::{HandleError, Handler, Record, Rejected};
use crate::parking::{self, ParkingLot};
use crate::telemetry;

/// Records that `consumer` applies `event_id`; `false` when it already did (skip the event).
/// Call inside the transaction that applies the event.
pub async fn claim(conn: &mut Conn, consumer: &str, event_id: &str) -> Result<bool, DbError> {
    Ok(claim_all(conn, consumer, &[event_id])
        .await?
        .contains(event_id))
}

/// Records that `consumer` applies each of `event_ids` (one statement per few hundred ids);
/// returns the ids it had not applied before. Call inside the transaction that applies them.
pub async fn claim_all(
    conn: &mut Conn,
    consumer: &str,
    event_ids: &[&str],
) -> Result<HashSet<String>, DbError> {
    let now = timestamp(Utc::now());
    let mut claimed = HashSet::with_capacity(event_ids.len());
    for chunk in event_ids.chunks(300) {
        let values: Vec<String> = (0..chunk.len())
            .map(|n| format!("($1, ${}, $2)", n + 3))
            .collect();
        let sql = format!(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES {} \
             ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
            values.join(", ")
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql)
            .bind(consumer)
            .bind(&now);
        for id in chunk {
            query = query.bind(*id);
        }
        claimed.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(claimed)
}

/// How long an event has waited, and whether it may wait longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When the event was first read.
    pub since: DateTime<Utc>,
    /// The wait is over: decide now ([`Applied::Wait`] is not an option).
    pub last: bool,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied<D> {
    /// Applied (or decided); the value goes to [`Apply::committed`] after the commit.
    Done(D),
    /// The event waits for others: it is parked and applied again when the lot is woken or its
    /// deadline passes. Meanwhile later events touching one of the `awaiting` keys wait behind
    /// it; events touching other keys go ahead.
    Wait {
        /// Why, for the log.
        reason: String,
        /// The keys (e.g. accounts) whose events it waits for.
        awaiting: Vec<String>,
    },
}

/// A consumer's domain logic: how to read an event and apply it inside a transaction.
pub trait Apply: Send + Sync + 'static {
    /// The decoded event.
    type Event: Send + Sync;
    /// What an applied event leaves for [`Apply::committed`].
    type Done: Send;

    /// Decodes and validates `record`; a permanent error dead-letters it.
    fn decode(&self, record: &Record) -> Result<(EventMetadata, Self::Event), HandleError>;

    /// The keys (e.g. accounts) the event touches: while an earlier parked event awaits one of
    /// them, this one waits behind it, so the events of an awaited key apply in order.
    fn keys(&self, _event: &Self::Event) -> Vec<String> {
        Vec::new()
    }

    /// Runs once per transaction before its events are applied, e.g. to lock every row the
    /// batch touches in one global order, so that concurrent batches (other partitions, other
    /// replicas) queue instead of deadlocking.
    fn prepare(
        &self,
        _conn: &mut Conn,
        _events: &[&Self::Event],
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        async { Ok(()) }
    }

    /// Applies `event` within the caller's transaction (its inbox claim is already made).
    fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        event: &Self::Event,
        attempt: Attempt,
    ) -> impl Future<Output = Result<Applied<Self::Done>, HandleError>> + Send;

    /// Runs after the transaction that applied events committed (wake the relay, announce).
    fn committed(&self, _done: Vec<Self::Done>) {}
}

/// A transient database error (`database: <error>`, the error kept as the source).
pub fn transient(error: impl Into<BoxError>) -> HandleError {
    HandleError::transient(error).context("database")
}

/// The [`Handler`] of an [`Apply`]: one transaction per batch, inbox claims, parking.
pub struct Inboxed<A> {
    db: Database,
    inner: Arc<A>,
    lot: ParkingLot,
}

impl<A: Apply> Inboxed<A> {
    /// Applies `inner`'s events to `db`, parking those that wait in `lot`.
    pub fn new(db: Database, inner: Arc<A>, lot: ParkingLot) -> Self {
        Self { db, inner, lot }
    }
}

/// A decoded record: the record, its CloudEvents attributes, the event.
type Decoded<'r, E> = (&'r Record, EventMetadata, E);

impl<A: Apply> Inboxed<A> {
    /// Decodes `records`; those that can never be decoded are rejected.
    #[allow(clippy::type_complexity)]
    fn decode_all<'r>(
        &self,
        records: &'r [Record],
    ) -> Result<(Vec<Decoded<'r, A::Event>>, Vec<Rejected>), HandleError> {
        let mut rejected = Vec::new();
        let mut decoded = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match self.inner.decode(record) {
                Ok((metadata, event)) => decoded.push((record, metadata, event)),
                Err(error) if error.is_permanent() => rejected.push(Rejected {
                    index,
                    reason: error.reason(),
                }),
                Err(error) => return Err(error),
            }
        }
        Ok((decoded, rejected))
    }

    /// What to do with a fresh event: wait behind an earlier parked event touching one of its
    /// keys, else apply it (in the consume span of its record).
    async fn outcome(
        &self,
        tx: &mut Conn,
        (record, metadata, event): &Decoded<'_, A::Event>,
        waiting: &HashSet<String>,
        now: DateTime<Utc>,
    ) -> Result<Applied<A::Done>, HandleError> {
        let behind: Vec<String> = self
            .inner
            .keys(event)
            .into_iter()
            .filter(|k| waiting.contains(k))
            .collect();
        if let Some(key) = behind.first() {
            return Ok(Applied::Wait {
                reason: format!("an earlier event for `{key}` is waiting"),
                awaiting: behind.clone(),
            });
        }
        let attempt = Attempt {
            since: now,
            last: self.lot.grace().is_zero(),
        };
        telemetry::consumed(
            record.traceparent(),
            self.inner.apply(tx, metadata, event, attempt),
        )
        .instrument(consume_span(record, self.lot.group()))
        .await
    }
}

impl<A: Apply> Handler for Inboxed<A> {
    async fn handle(&self, records: &[Record]) -> Result<Vec<Rejected>, HandleError> {
        let (decoded, rejected) = self.decode_all(records)?;
        if decoded.is_empty() {
            return Ok(rejected);
        }
        let consumer = self.lot.consumer();
        let now = Utc::now();
        let mut tx = self.db.begin().await.map_err(transient)?;
        let mut waiting: HashSet<String> = parking::waiting_keys(&mut tx, consumer)
            .await
            .map_err(transient)?;
        let ids: Vec<&str> = decoded.iter().map(|(_, m, _)| m.id.as_str()).collect();
        // Each id is claimed once: a second copy in the same batch finds it taken.
        let mut claimed = claim_all(&mut tx, consumer, &ids)
            .await
            .map_err(transient)?;
        let fresh: Vec<&A::Event> = decoded
            .iter()
            .filter(|(_, m, _)| claimed.contains(&m.id))
            .map(|(_, _, event)| event)
            .collect();
        self.inner.prepare(&mut tx, &fresh).await?;
        let mut done = Vec::with_capacity(decoded.len());
        let mut parked = 0;
        for (n, item) in decoded.iter().enumerate() {
            if n == 1 {
                crate::failpoint!("consumer.mid_batch");
            }
            let (record, metadata, _) = item;
            if !claimed.remove(&metadata.id) {
                tracing::debug!(event_id = %metadata.id, "event already applied; skipped");
                continue;
            }
            match self.outcome(&mut tx, item, &waiting, now).await? {
                Applied::Done(value) => done.push(value),
                Applied::Wait { reason, awaiting } => {
                    tracing::info!(event_id = %metadata.id, %reason, "event parked");
                    self.lot
                        .park(&mut tx, record, &awaiting, &reason, now)
                        .await
                        .map_err(transient)?;
                    waiting.extend(awaiting);
                    parked += 1;
                }
            }
        }
        tx.commit().await.map_err(transient)?;
        if parked > 0 {
            metrics::counter!("events_parked_total", "consumer" => consumer).increment(parked);
            self.lot.wake();
        }
        self.inner.committed(done);
        Ok(rejected)
    }
}
