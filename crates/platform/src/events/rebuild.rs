//! Rebuilding a service's view from a compacted topic: a service whose database holds none of
//! the view (new, or a read model dropped to be rebuilt) reads again, from the topic's start,
//! what its consumer group had already consumed (up to the group's committed offsets), through a
//! handler of its own, before any of its consumers takes work. What the group has not consumed
//! yet is left to the consumer, which handles it as usual. The inbox makes records seen before
//! harmless, so a replay is always safe; the compacted topic keeps the last record of every key,
//! so the view comes back whole. The records are read into memory at once (a compacted topic
//! holds one per key: one per customer).

use std::time::Duration;

use tokio::sync::watch;

use crate::kafka::{self, Handler, KafkaConfig, KafkaError, Record};
use crate::store::db::Database;

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The view's table could not be read.
    #[error("cannot tell whether {table} is empty: {source}")]
    Database {
        /// The table.
        table: &'static str,
        /// The database error.
        source: sqlx::Error,
    },
    /// The topic could not be read.
    #[error("cannot read {topic} from its start: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// The Kafka error.
        source: KafkaError,
    },
}

/// Holds the service's consumers back while rebuilds run: open when none is pending.
#[derive(Debug, Clone)]
pub(crate) struct Gate(watch::Sender<usize>);

impl Default for Gate {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Gate {
    /// Closes the gate until the returned guard is dropped.
    pub(crate) fn hold(&self) -> Held {
        self.0.send_modify(|pending| *pending += 1);
        Held(self.0.clone())
    }

    /// Returns once no rebuild is pending.
    pub(crate) async fn opened(&self) {
        let mut pending = self.0.subscribe();
        // The sender lives in the gate itself: waiting cannot fail.
        let _ = pending.wait_for(|n| *n == 0).await;
    }
}

/// A pending rebuild; dropping it lets the consumers start (once no other is pending).
#[derive(Debug)]
pub(crate) struct Held(watch::Sender<usize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0
            .send_modify(|pending| *pending = pending.saturating_sub(1));
    }
}

/// Whether `table` has no row.
async fn is_empty(db: &Database, table: &'static str) -> Result<bool, RebuildError> {
    let sql = format!("SELECT COUNT(*) FROM (SELECT 1 AS one FROM {table} LIMIT 1) AS t");
    let rows: i64 = sqlx::query_scalar(&sql)
        .fetch_one(db.pool())
        .await
        .map_err(|source| RebuildError::Database { table, source })?;
    Ok(rows == 0)
}

/// When `table` is empty, hands every record of `topic` that consumer group `group` has consumed
/// (from the start up to its committed offsets) to `handler`, in batches of at most `max_batch` consecutive records of one partition,
/// retrying a batch that fails transiently until it is applied. Returns how many records were
/// replayed (`None`: the table was not empty, nothing was read).
pub(crate) async fn rebuild_when_empty(
    db: &Database,
    kafka: &KafkaConfig,
    table: &'static str,
    topic: &str,
    group: &str,
    handler: &impl Handler,
    max_batch: usize,
) -> Result<Option<usize>, RebuildError> {
    if !is_empty(db, table).await? {
        return Ok(None);
    }
    tracing::info!(%table, %topic, %group, "empty: rebuilding it from what the group consumed");
    let records = kafka::replay::read_consumed(kafka, topic, group)
        .await
        .map_err(|source| RebuildError::Kafka {
            topic: topic.to_string(),
            source,
        })?;
    let mut start = 0;
    while start < records.len() {
        let partition = records[start].partition;
        let end = records[start..]
            .iter()
            .take(max_batch.max(1))
            .take_while(|r| r.partition == partition)
            .count()
            + start;
        apply_batch(handler, &records[start..end]).await;
        start = end;
    }
    tracing::info!(%table, %topic, records = records.len(), "rebuilt from the topic");
    Ok(Some(records.len()))
}

/// Applies one batch, retrying transient failures with backoff; rejected records were
/// dead-lettered when they were first consumed, so they are only logged.
async fn apply_batch(handler: &impl Handler, batch: &[Record]) {
    let mut delay = Duration::from_millis(200);
    loop {
        match handler.handle(batch).await {
            Ok(rejected) => {
                for rejected in rejected {
                    tracing::warn!(reason = %rejected.reason, "record skipped while rebuilding");
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, records = batch.len(), retry_in_ms = delay.as_millis() as u64,
                    "rebuild batch failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::time::Duration;

    #[tokio::test]
    async fn the_gate_opens_when_every_rebuild_is_done() {
        let gate = Gate::default();
        gate.opened().await;
        let (first, second) = (gate.hold(), gate.hold());
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.opened().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "one rebuild still runs");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("open")
            .expect("task");
    }
}
