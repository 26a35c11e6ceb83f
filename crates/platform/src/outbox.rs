//! The transactional outbox. A service writes its event in the same database transaction as the
//! state change ([`Outbox::enqueue`]); the relay ([`run_relay`]) publishes unsent rows in order
//! with the idempotent producer and marks them sent only after the broker acknowledged them.
//! A crash between publish and mark means the event is published again: consumers dedupe by id.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use contracts::envelope::{Event, EventMetadata};
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{timestamp, Conn, Database, DbError};
use crate::kafka::{OutgoingRecord, Producer};
use crate::telemetry;

/// Rows published per relay round.
const BATCH: i64 = 1000;
/// Sent rows are kept this long (for inspection), then deleted.
const RETENTION: Duration = Duration::from_secs(3600);

/// Writes events into the outbox and wakes the relay.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
    wake: Arc<Notify>,
}

impl Outbox {
    /// An outbox for events produced by `source` (the service name).
    pub fn new(source: &str) -> Self {
        Self {
            source: format!("/{source}"),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Adds `event` to the outbox inside the caller's transaction; returns its metadata.
    ///
    /// The event carries `traceparent` (W3C) when given; with `None` it carries the current
    /// span's (when spans are exported), else the one of the record being consumed, else a new
    /// trace's (see [`telemetry`](crate::telemetry)).
    pub async fn enqueue<E: Event>(
        &self,
        conn: &mut Conn,
        event: &E,
        traceparent: Option<&str>,
    ) -> Result<EventMetadata, DbError> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut metadata = EventMetadata::new(id, E::TYPE, self.source.clone());
        metadata.traceparent = Some(
            traceparent
                .map(str::to_string)
                .or_else(telemetry::current_traceparent)
                .unwrap_or_else(telemetry::new_traceparent),
        );
        let headers: Vec<(&str, String)> = metadata.to_headers();
        let payload = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let headers =
            serde_json::to_string(&headers).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "INSERT INTO outbox (id, topic, record_key, payload, headers, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&metadata.id)
        .bind(E::TYPE.topic())
        .bind(event.key())
        .bind(payload)
        .bind(headers)
        .bind(timestamp(metadata.time))
        .execute(&mut *conn)
        .await?;
        Ok(metadata)
    }

    /// Tells the relay that new rows are committed (call after the commit).
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

/// Publishes outbox rows until `shutdown`, then drains what is left and flushes the producer.
pub async fn run_relay(
    db: Database,
    producer: Producer,
    outbox: Outbox,
    shutdown: CancellationToken,
) {
    let mut last_cleanup = std::time::Instant::now();
    loop {
        let published = match publish_batch(&db, &producer).await {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "outbox relay round failed; retrying");
                0
            }
        };
        if shutdown.is_cancelled() && published == 0 {
            break;
        }
        if published > 0 {
            continue;
        }
        if last_cleanup.elapsed() > Duration::from_secs(60) {
            last_cleanup = std::time::Instant::now();
            if let Err(error) = delete_old_rows(&db).await {
                tracing::warn!(%error, "outbox cleanup failed");
            }
        }
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    if let Err(error) = producer.flush(Duration::from_secs(10)) {
        tracing::warn!(%error, "producer flush on shutdown");
    }
    tracing::info!("outbox relay stopped");
}

/// Error of one relay round.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("outbox row {id} has malformed headers: {source}")]
    Headers {
        id: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
}

/// Publishes up to one batch; returns how many rows were marked sent.
async fn publish_batch(db: &Database, producer: &Producer) -> Result<usize, RelayError> {
    let rows = sqlx::query(
        "SELECT id, topic, record_key, payload, headers FROM outbox \
         WHERE sent_at IS NULL ORDER BY id LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(db.pool())
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get("id")?;
        let headers: String = row.try_get("headers")?;
        let headers: Vec<(String, String)> =
            serde_json::from_str(&headers).map_err(|source| RelayError::Headers {
                id: id.clone(),
                source,
            })?;
        let record = OutgoingRecord {
            topic: row.try_get("topic")?,
            key: row.try_get("record_key")?,
            payload: row.try_get("payload")?,
            headers,
        };
        // Enqueue everything first (in order), then await: one round trip per batch.
        pending.push((id, producer.enqueue(&record)?));
    }
    let mut sent = Vec::with_capacity(pending.len());
    let mut failure = None;
    for (id, delivery) in pending {
        match delivery.await {
            Ok(()) => sent.push(id),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if !sent.is_empty() {
        crate::failpoint!("relay.after_publish");
        mark_sent(db, &sent).await?;
        metrics::counter!("outbox_published_total").increment(sent.len() as u64);
    }
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(sent.len()),
    }
}

/// Marks the rows `ids` sent, in one statement.
async fn mark_sent(db: &Database, ids: &[String]) -> Result<(), sqlx::Error> {
    let placeholders: Vec<String> = (2..ids.len() + 2).map(|n| format!("${n}")).collect();
    let sql = format!(
        "UPDATE outbox SET sent_at = $1 WHERE id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(timestamp(Utc::now()));
    for id in ids {
        query = query.bind(id);
    }
    query.execute(db.pool()).await?;
    Ok(())
}

async fn delete_old_rows(db: &Database) -> Result<(), sqlx::Error> {
    let cutoff = Utc::now() - chrono::Duration::from_std(RETENTION).unwrap_or_default();
    sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
        .bind(timestamp(cutoff))
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Number of rows not yet published (for metrics and tests).
pub async fn pending(db: &Database) -> Result<i64, DbError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get::<i64, _>("n")?)
}
