//! Parking: an event that has to wait for another one (an account or a customer not known yet)
//! is stored in `parked` with its inbox claim, so its partition moves on. The lot's resolver
//! applies it again when woken (the awaited event arrived) or when its deadline passes, then
//! the event must be decided. Events touching a key a parked event awaits wait behind it; the
//! others go ahead, so a missing account delays nothing but its own events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::events::apply::{transient, Applied, Apply, Attempt};
use crate::foundation::telemetry;
use crate::kafka::consumer::consume_span;
use crate::kafka::{HandleError, Record};
use crate::store::db::{parse_timestamp, timestamp, Conn, Database, DbError};

/// Parked events looked at per resolver round.
const ROUND: i64 = 1000;
/// Longest sleep of the resolver (it also serves events parked by other replicas).
const IDLE: Duration = Duration::from_secs(1);

/// Where one consumer's waiting events are kept, and how long they may wait.
#[derive(Debug, Clone)]
pub struct ParkingLot {
    consumer: &'static str,
    grace: Duration,
    wake: Arc<Notify>,
    group: Option<Arc<str>>,
}

impl ParkingLot {
    /// The lot of `consumer` (its inbox name); events wait at most `grace`.
    pub fn new(consumer: &'static str, grace: Duration) -> Self {
        Self {
            consumer,
            grace,
            wake: Arc::new(Notify::new()),
            group: None,
        }
    }

    /// The lot of a consumer of Kafka consumer group `group` (named on the `consume` spans).
    pub fn in_group(mut self, group: &str) -> Self {
        self.group = Some(Arc::from(group));
        self
    }

    /// The Kafka consumer group, when known.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The consumer (inbox) name.
    pub fn consumer(&self) -> &'static str {
        self.consumer
    }

    /// How long an event may wait.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Tells the resolver to look again (an awaited event may have arrived). Call after the
    /// commit that made it visible.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Parks `record`, awaiting `keys`, inside the caller's transaction.
    pub async fn park(
        &self,
        conn: &mut Conn,
        record: &Record,
        keys: &[String],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let id = uuid::Uuid::now_v7().to_string();
        let deadline = now + chrono::Duration::from_std(self.grace).unwrap_or_default();
        let headers: Vec<(&str, String)> = record
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), String::from_utf8(v.clone()).ok()?)))
            .collect();
        let headers = serde_json::to_string(&headers).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let payload = String::from_utf8_lossy(&record.payload);
        insert(
            conn,
            self.consumer,
            &id,
            record,
            &payload,
            &headers,
            reason,
            now,
            deadline,
        )
        .await?;
        insert_keys(conn, self.consumer, &id, keys).await
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    conn: &mut Conn,
    consumer: &str,
    id: &str,
    record: &Record,
    payload: &str,
    headers: &str,
    reason: &str,
    parked_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO parked (id, consumer, topic, partition_no, record_offset, record_key, \
         payload, headers, reason, parked_at, deadline) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(consumer)
    .bind(&record.topic)
    .bind(i64::from(record.partition))
    .bind(record.offset)
    .bind(record.key.as_deref())
    .bind(payload)
    .bind(headers)
    .bind(reason)
    .bind(timestamp(parked_at))
    .bind(timestamp(deadline))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_keys(
    conn: &mut Conn,
    consumer: &str,
    id: &str,
    keys: &[String],
) -> Result<(), DbError> {
    for key in keys.iter().collect::<HashSet<_>>() {
        sqlx::query(
            "INSERT INTO parked_keys (consumer, record_key, parked_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(key)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The keys `consumer`'s parked events await.
pub async fn waiting_keys(conn: &mut Conn, consumer: &str) -> Result<HashSet<String>, DbError> {
    let rows = sqlx::query("SELECT DISTINCT record_key FROM parked_keys WHERE consumer = $1")
        .bind(consumer)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>("record_key").ok())
        .collect())
}

/// Number of events `consumer` has parked (metrics, tests).
pub async fn parked_count(db: &Database, consumer: &str) -> Result<i64, DbError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM parked WHERE consumer = $1")
        .bind(consumer)
        .fetch_one(db.reads())
        .await?;
    Ok(row.try_get::<i64, _>("n")?)
}

/// Decides parked events until `shutdown`: when woken, and when a deadline passes.
pub async fn run_resolver<A: Apply>(
    db: Database,
    inner: Arc<A>,
    lot: ParkingLot,
    shutdown: CancellationToken,
) {
    loop {
        let next = match resolve(&db, inner.as_ref(), &lot).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, consumer = lot.consumer, "parked events not resolved; retrying");
                None
            }
        };
        let sleep = next
            .and_then(|deadline| (deadline - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .min(IDLE);
        let sleep = if next.is_none() { IDLE } else { sleep };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = lot.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One round: applies again each parked event that is not behind another; returns the earliest
/// deadline of those still waiting.
async fn resolve<A: Apply>(
    db: &Database,
    inner: &A,
    lot: &ParkingLot,
) -> Result<Option<DateTime<Utc>>, HandleError> {
    let now = Utc::now();
    let mut tx = db.begin().await.map_err(transient)?;
    let round = fetch_round(&mut tx, lot.consumer).await?;
    if round.is_empty() {
        return Ok(None);
    }
    // Lock what the round may touch first, in the same global order as the consumers do.
    let events: Vec<A::Event> = round
        .iter()
        .filter_map(|parked| inner.decode(&parked.record()).ok())
        .map(|(_, event)| event)
        .collect();
    let refs: Vec<&A::Event> = events.iter().collect();
    inner.prepare(&mut tx, &refs).await?;
    let mut blocked: HashSet<String> = HashSet::new();
    let mut earliest: Option<DateTime<Utc>> = None;
    let mut done = Vec::new();
    for parked in &round {
        let waits = match retry(&mut tx, inner, lot, parked, &blocked, now).await? {
            Retried::Skipped => false,
            Retried::Blocked => true,
            Retried::Done(value) => {
                done.push(value);
                false
            }
            Retried::Waits(awaiting) => {
                blocked.extend(awaiting);
                true
            }
        };
        if waits {
            earliest = Some(earliest.map_or(parked.deadline, |e| e.min(parked.deadline)));
        }
    }
    tx.commit().await.map_err(transient)?;
    inner.committed(done);
    if round.len() as i64 == ROUND {
        // More than a round's worth: look again soon.
        return Ok(Some(now));
    }
    Ok(earliest)
}

/// The oldest [`ROUND`] events `consumer` parked.
async fn fetch_round(conn: &mut Conn, consumer: &str) -> Result<Vec<Parked>, HandleError> {
    let rows = sqlx::query(
        "SELECT id, topic, partition_no, record_offset, record_key, payload, headers, reason, \
         parked_at, deadline FROM parked WHERE consumer = $1 ORDER BY id LIMIT $2",
    )
    .bind(consumer)
    .bind(ROUND)
    .fetch_all(&mut *conn)
    .await
    .map_err(transient)?;
    rows.iter()
        .map(Parked::from_row)
        .collect::<Result<_, _>>()
        .map_err(transient)
}

/// What became of a parked event in a round.
enum Retried<D> {
    /// Left as it was: it no longer decodes, or another resolver took it.
    Skipped,
    /// Left as it was: an earlier event of the round with one of its keys still waits.
    Blocked,
    /// Applied.
    Done(D),
    /// Parked again, awaiting these keys.
    Waits(Vec<String>),
}

/// Applies `parked` again unless it is behind a `blocked` key; parks it again if it still waits.
async fn retry<A: Apply>(
    tx: &mut Conn,
    inner: &A,
    lot: &ParkingLot,
    parked: &Parked,
    blocked: &HashSet<String>,
    now: DateTime<Utc>,
) -> Result<Retried<A::Done>, HandleError> {
    let record = parked.record();
    let (metadata, event) = match inner.decode(&record) {
        Ok(decoded) => decoded,
        Err(error) => {
            // It decoded when it was parked; a newer build may disagree. Keep it visible.
            tracing::error!(%error, id = %parked.id, "parked event no longer decodes; left parked");
            return Ok(Retried::Skipped);
        }
    };
    if inner.keys(&event).iter().any(|k| blocked.contains(k)) {
        return Ok(Retried::Blocked);
    }
    // Take the row first: of two resolvers (replicas), one decides each event.
    if !take(tx, lot.consumer, &parked.id)
        .await
        .map_err(transient)?
    {
        return Ok(Retried::Skipped);
    }
    let attempt = Attempt {
        since: parked.parked_at,
        last: now >= parked.deadline,
    };
    let outcome = telemetry::consumed(
        record.traceparent(),
        inner.apply(tx, &metadata, &event, attempt),
    )
    .instrument(consume_span(&record, lot.group()))
    .await?;
    match outcome {
        Applied::Done(value) => {
            tracing::info!(event_id = %metadata.id, waited_ms =
                (now - parked.parked_at).num_milliseconds(), "parked event decided");
            Ok(Retried::Done(value))
        }
        Applied::Wait { reason, awaiting } => {
            if attempt.last {
                tracing::error!(event_id = %metadata.id, %reason,
                    "a parked event past its deadline still waits; kept parked");
            }
            repark(tx, lot.consumer, parked, &record, &reason, &awaiting).await?;
            Ok(Retried::Waits(awaiting))
        }
    }
}

/// Parks `parked` again (same id, time and deadline) with a new reason and awaited keys.
async fn repark(
    tx: &mut Conn,
    consumer: &str,
    parked: &Parked,
    record: &Record,
    reason: &str,
    awaiting: &[String],
) -> Result<(), HandleError> {
    insert(
        tx,
        consumer,
        &parked.id,
        record,
        &parked.payload,
        &parked.headers,
        reason,
        parked.parked_at,
        parked.deadline,
    )
    .await
    .map_err(transient)?;
    insert_keys(tx, consumer, &parked.id, awaiting)
        .await
        .map_err(transient)
}

/// Deletes parked row `id` (and its keys); `false` when another resolver took it.
async fn take(conn: &mut Conn, consumer: &str, id: &str) -> Result<bool, DbError> {
    let deleted = sqlx::query("DELETE FROM parked WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM parked_keys WHERE consumer = $1 AND parked_id = $2")
        .bind(consumer)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// A parked row.
struct Parked {
    id: String,
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    payload: String,
    headers: String,
    parked_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
}

impl Parked {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            topic: row.try_get("topic")?,
            partition: i32::try_from(row.try_get::<i64, _>("partition_no")?).unwrap_or_default(),
            offset: row.try_get("record_offset")?,
            key: row.try_get("record_key")?,
            payload: row.try_get("payload")?,
            headers: row.try_get("headers")?,
            parked_at: parse_timestamp(&row.try_get::<String, _>("parked_at")?)?,
            deadline: parse_timestamp(&row.try_get::<String, _>("deadline")?)?,
        })
    }

    fn record(&self) -> Record {
        let headers: Vec<(String, String)> =
            serde_json::from_str(&self.headers).unwrap_or_default();
        Record {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            key: self.key.clone(),
            payload: self.payload.clone().into_bytes(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect(),
        }
    }
}
