//! The inbox: event ids a consumer has applied. Claiming an id happens in the same transaction as
//! the effect, so a redelivered event is recognised and skipped.
//!
//! [`Inboxed`] is the consumer side of effectively-once: it applies a batch of records with an
//! [`Apply`] implementation, each event with its inbox claim, all in ONE database transaction.
//! An event that has to wait for another one is parked ([`crate::events::parking`]) and the partition
//! moves on.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use contracts::EventMetadata;

pub use crate::events::apply::{transient, Applied, Apply, Attempt, Batch, Fresh};
use crate::events::parking::{self, ParkingLot};
use crate::kafka::{HandleError, Handler, Record, Rejected};
use crate::store::db::{json_param, timestamp, Backend, Conn, Database, DbError};

/// Records that `consumer` applies `event_id`; `false` when it already did (skip the event).
/// Call inside the transaction that applies the event.
pub async fn claim(conn: &mut Conn, consumer: &str, event_id: &str) -> Result<bool, DbError> {
    Ok(claim_all(conn, consumer, &[event_id])
        .await?
        .contains(event_id))
}

/// Records that `consumer` applies each of `event_ids` (one statement); returns the ids it had
/// not applied before. Call inside the transaction that applies them.
pub async fn claim_all(
    conn: &mut Conn,
    consumer: &str,
    event_ids: &[&str],
) -> Result<HashSet<String>, DbError> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    // `WHERE true` tells SQLite's parser that `ON CONFLICT` is the upsert clause.
    let sql = format!(
        "INSERT INTO inbox (consumer, event_id, processed_at) SELECT $1, l.value, $2 \
         FROM ({}) AS l WHERE true \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
        Backend::of(conn).json_list(3)
    );
    let claimed = sqlx::query_scalar::<_, String>(&sql)
        .bind(consumer)
        .bind(timestamp(Utc::now()))
        .bind(json_param(event_ids)?)
        .fetch_all(&mut *conn)
        .await?;
    Ok(claimed.into_iter().collect())
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
        let waiting: HashSet<String> = parking::waiting_keys(&mut tx, consumer)
            .await
            .map_err(transient)?;
        let ids: Vec<&str> = decoded.iter().map(|(_, m, _)| m.id.as_str()).collect();
        // Each id is claimed once: a second copy in the same batch finds it taken.
        let mut claimed = claim_all(&mut tx, consumer, &ids)
            .await
            .map_err(transient)?;
        let fresh: Vec<Fresh<'_, A::Event>> = decoded
            .iter()
            .filter(|(_, metadata, _)| {
                let first = claimed.remove(&metadata.id);
                if !first {
                    tracing::debug!(event_id = %metadata.id, "event already applied; skipped");
                }
                first
            })
            .map(|(record, metadata, event)| Fresh {
                record,
                metadata,
                event,
            })
            .collect();
        let events: Vec<&A::Event> = fresh.iter().map(|f| f.event).collect();
        self.inner.prepare(&mut tx, &events).await?;
        let attempt = Attempt {
            since: now,
            last: self.lot.grace().is_zero(),
        };
        let mut batch = Batch::new(fresh, waiting, attempt, self.lot.group());
        let outcomes = self.inner.apply_batch(&mut tx, &mut batch).await?;
        if batch.events.len() > 1 {
            crate::failpoint!("consumer.mid_batch");
        }
        let mut done = Vec::with_capacity(outcomes.len());
        let mut parked = 0;
        for (fresh, outcome) in batch.events.iter().zip(outcomes) {
            match outcome {
                Applied::Done(value) => done.push(value),
                Applied::Wait { reason, awaiting } => {
                    tracing::info!(event_id = %fresh.metadata.id, %reason, "event parked");
                    self.lot
                        .park(&mut tx, fresh.record, &awaiting, &reason, now)
                        .await
                        .map_err(transient)?;
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
