//! Retention: the tables that would otherwise grow with traffic are pruned in the background, each
//! by a [`Rule`] that says what it guards and for how long.
//!
//! - **Inbox keys** ([`Rule::inbox`]) live as long as their topics can redeliver the record: the
//!   topic's `retention.ms` (from [`contracts::topics::configs`], the table every place creating
//!   topics applies) plus a margin (`INBOX_RETENTION_MARGIN_SECS`, one day). The keys of a
//!   compacted topic (`Customer.created`) are kept: compaction can redeliver a key's latest record
//!   at any time, and there is one record per customer, so these keys grow with the customers
//!   (like the projection they guard), not with traffic.
//! - Services add rules of their own ([`crate::runtime::service::Service::retain`]), e.g. notification-service
//!   drops a delivery's body after its resend window.
//!
//! The pruner runs every `RETENTION_PRUNE_EVERY_SECS` (60 s) and handles at most
//! `RETENTION_PRUNE_BATCH` rows (1,000) per statement, each statement its own short transaction
//! with a pause after it: on SQLite the one writer connection is never held for long and the
//! consumers' transactions get it between two batches. Rows pruned are counted in
//! `retention_pruned_rows_total{rule}`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::foundation::env::{positive, seconds, ConfigError, Env};
use crate::store::db::{timestamp, Database, DbError};

/// Margin added to a topic's retention for its inbox keys by default (1 day).
pub const DEFAULT_INBOX_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// How often the pruner runs by default.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most rows one pruning statement handles by default.
pub const DEFAULT_PRUNE_BATCH: usize = 1_000;
/// The pause after each batch, so that other writers get the connection.
const PAUSE_BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// How the pruner runs, from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Added to a topic's retention for its inbox keys (`INBOX_RETENTION_MARGIN_SECS`).
    pub inbox_margin: Duration,
    /// Replaces retention + margin for the inbox keys of topics deleted by age
    /// (`INBOX_RETENTION_SECS`; unset: follow the topics). For a soak, or a broker whose topics
    /// keep records for less than the table says.
    pub inbox_override: Option<Duration>,
    /// How often the pruner runs (`RETENTION_PRUNE_EVERY_SECS`).
    pub every: Duration,
    /// Most rows per statement (`RETENTION_PRUNE_BATCH`).
    pub batch: usize,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            inbox_margin: DEFAULT_INBOX_MARGIN,
            inbox_override: None,
            every: DEFAULT_PRUNE_EVERY,
            batch: DEFAULT_PRUNE_BATCH,
        }
    }
}

impl RetentionSettings {
    /// Reads `INBOX_RETENTION_MARGIN_SECS`, `INBOX_RETENTION_SECS`, `RETENTION_PRUNE_EVERY_SECS`
    /// and `RETENTION_PRUNE_BATCH`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let inbox_override = match env.var("INBOX_RETENTION_SECS") {
            Some(_) => Some(seconds(env, "INBOX_RETENTION_SECS", Duration::ZERO)?),
            None => None,
        };
        Ok(Self {
            inbox_margin: seconds(env, "INBOX_RETENTION_MARGIN_SECS", DEFAULT_INBOX_MARGIN)?,
            inbox_override,
            every: seconds(env, "RETENTION_PRUNE_EVERY_SECS", DEFAULT_PRUNE_EVERY)?,
            batch: positive(env, "RETENTION_PRUNE_BATCH", DEFAULT_PRUNE_BATCH)?,
        })
    }

    /// How long the inbox keys of a consumer of `topics` (names without prefix) are kept;
    /// `None` (forever) when one of them can redeliver any record at any time (compacted, or
    /// a topic the contracts do not know).
    pub fn inbox_window(&self, topics: &[String]) -> Option<Duration> {
        let mut longest = Duration::ZERO;
        for topic in topics {
            longest = longest.max(redelivery_window(topic)?);
        }
        Some(self.inbox_override.unwrap_or(longest + self.inbox_margin))
    }
}

/// How long `topic` (a name without prefix) can redeliver a record: its `retention.ms` when it
/// deletes by age; `None` when compacted or unknown (any time).
pub fn redelivery_window(topic: &str) -> Option<Duration> {
    let configs = contracts::topics::configs(topic)?;
    let value = |key: &str| configs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    if value("cleanup.policy")? != "delete" {
        return None;
    }
    let ms: u64 = value("retention.ms")?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// A retention rule: one statement that prunes at most a batch of rows older than a cut-off.
/// The statement takes the cut-off (a stored timestamp) as `$1`, the batch size as `$2`, and
/// [`Rule::binds`] as `$3`, `$4`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The `rule` label of `retention_pruned_rows_total`, e.g. `inbox:transaction-service`.
    pub name: String,
    /// How long a row is kept.
    pub keep: Duration,
    /// The statement (a `DELETE`, or an `UPDATE` that drops a column's content).
    pub statement: String,
    /// Text parameters after the cut-off and the batch size.
    pub binds: Vec<String>,
}

impl Rule {
    /// The inbox keys of `consumer`, kept for `keep` after they were claimed.
    pub fn inbox(consumer: &str, keep: Duration) -> Self {
        Self {
            name: format!("inbox:{consumer}"),
            keep,
            statement: "DELETE FROM inbox WHERE consumer = $3 AND event_id IN \
                        (SELECT event_id FROM inbox WHERE consumer = $3 AND processed_at < $1 \
                         LIMIT $2)"
                .to_string(),
            binds: vec![consumer.to_string()],
        }
    }

    /// Runs one statement with the cut-off of `now`; returns the rows it pruned.
    pub async fn prune_batch(
        &self,
        db: &Database,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<u64, DbError> {
        let cutoff = chrono::Duration::from_std(self.keep)
            .ok()
            .and_then(|keep| now.checked_sub_signed(keep))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut query = sqlx::query(&self.statement)
            .bind(timestamp(cutoff))
            .bind(i64::try_from(batch).unwrap_or(i64::MAX));
        for value in &self.binds {
            query = query.bind(value.as_str());
        }
        Ok(query.execute(db.pool()).await?.rows_affected())
    }

    /// Prunes everything older than the cut-off of `now`, `batch` rows per statement with a
    /// pause between statements; returns the rows pruned.
    pub async fn prune(
        &self,
        db: &Database,
        now: DateTime<Utc>,
        batch: usize,
    ) -> Result<u64, DbError> {
        let mut total = 0;
        loop {
            let pruned = self.prune_batch(db, now, batch).await?;
            total += pruned;
            metrics::counter!("retention_pruned_rows_total", "rule" => self.name.clone())
                .increment(pruned);
            if pruned < batch as u64 {
                return Ok(total);
            }
            tokio::time::sleep(PAUSE_BETWEEN_BATCHES).await;
        }
    }
}

/// Runs `rules` on `db` every `settings.every` until `shutdown`. A failure is logged (a warning:
/// the next round tries again) and counted in `retention_prune_failures_total`.
pub async fn run_pruner(
    db: Database,
    rules: Vec<Rule>,
    settings: RetentionSettings,
    shutdown: CancellationToken,
) {
    if rules.is_empty() {
        return;
    }
    for rule in &rules {
        tracing::info!(rule = %rule.name, keep_s = rule.keep.as_secs(), "retention rule");
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.every) => {}
        }
        for rule in &rules {
            let pruned = tokio::select! {
                _ = shutdown.cancelled() => return,
                pruned = rule.prune(&db, Utc::now(), settings.batch) => pruned,
            };
            match pruned {
                Ok(0) => {}
                Ok(rows) => tracing::debug!(rule = %rule.name, rows, "pruned"),
                Err(error) => {
                    metrics::counter!("retention_prune_failures_total", "rule" => rule.name.clone())
                        .increment(1);
                    tracing::warn!(rule = %rule.name, %error, "pruning failed; next round retries");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_keys_follow_their_topics() {
        let settings = RetentionSettings::default();
        let week = Duration::from_secs(7 * 24 * 3600);
        let topics = |names: &[&str]| names.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            settings.inbox_window(&topics(&["transaction.requested"])),
            Some(week + DEFAULT_INBOX_MARGIN)
        );
        assert_eq!(
            settings.inbox_window(&topics(&["transaction.processed", "transaction.failed"])),
            Some(week + DEFAULT_INBOX_MARGIN)
        );
        assert_eq!(
            settings.inbox_window(&topics(&["Customer.created"])),
            None,
            "compacted: kept"
        );
        assert_eq!(settings.inbox_window(&topics(&["unknown"])), None);
        let short = RetentionSettings::from_env(&[
            ("INBOX_RETENTION_SECS", "300"),
            ("RETENTION_PRUNE_EVERY_SECS", "5"),
        ])
        .unwrap();
        assert_eq!(
            short.inbox_window(&topics(&["transaction.requested"])),
            Some(Duration::from_secs(300))
        );
        assert_eq!(short.inbox_window(&topics(&["Customer.created"])), None);
        assert_eq!(short.every, Duration::from_secs(5));
        for (variable, bad) in [
            ("INBOX_RETENTION_SECS", "0"),
            ("RETENTION_PRUNE_BATCH", "0"),
            ("INBOX_RETENTION_MARGIN_SECS", "soon"),
        ] {
            let error = RetentionSettings::from_env(&[(variable, bad)]).unwrap_err();
            assert_eq!(error.variable, variable);
        }
    }
}
