//! Delivery, the use case that writes: the sender, a background task that sends recorded deliveries and records the outcome.
//!
//! Deliveries are written by the event handlers in the same transaction as the event's inbox
//! claim, so each (customer, kind, transaction) is recorded exactly once, and an SMTP outage never
//! blocks a Kafka partition. The sender leases a due row (`sending` until the lease ends),
//! sends, then marks it `sent`, `retrying` (exponential backoff on transient errors) or `failed`
//! (permanent errors, or too many attempts). A crash during a send leaves the row `sending`;
//! when its lease ends it is recorded as `failed` and NOT sent again: the server may have
//! accepted it, and an alert is sent at most once.
//!
//! A round reads its due rows with one statement, then sends them one after the other. Each row
//! is leased just before its send, by the statement that also records the attempts finished
//! before it ([`storage::settle`]); the round's last attempts are recorded when it ends: about
//! one statement per delivery (two before). The round's rows are NOT leased all at once: only
//! the send under way may be `sending` when the process dies, so a crash cuts short that send
//! alone and every other delivery is still sent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use platform::redact::{mask_email, mask_emails_in};
use platform::Database;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{Delivery, Status};
use crate::feed::Hub;
use crate::mailer::{compose, Mailer, SendError};
use crate::storage;

/// Rows taken per round.
const BATCH: i64 = 32;
/// How long an attempt owns its row by default; longer than any send may take.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);
/// Longest a single send may take by default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often due retries are looked for when nothing wakes the sender.
const POLL: Duration = Duration::from_millis(500);

/// Retries of transient send failures: the delay doubles from `initial_backoff` up to
/// `max_backoff`; after `max_attempts` attempts the delivery is `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Delay after the first failure.
    pub initial_backoff: Duration,
    /// Longest delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about ten minutes.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempts`-th failed attempt.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// Where a delivery stands after its `attempts`-th attempt ended with `outcome` at `now`:
    /// `sent`; `failed` on a permanent error or when the attempts are used up; else `retrying`
    /// after the backoff.
    pub fn settle(
        &self,
        outcome: Result<(), SendError>,
        attempts: u32,
        now: DateTime<Utc>,
    ) -> Settled {
        let (status, error, next_attempt_at) = match outcome {
            Ok(()) => (Status::Sent, None, now),
            Err(SendError::Permanent(error)) => (Status::Failed, Some(error), now),
            Err(SendError::Transient(error)) if attempts >= self.max_attempts => (
                Status::Failed,
                Some(format!("{error} (gave up after {attempts} attempts)")),
                now,
            ),
            Err(SendError::Transient(error)) => {
                let delay = self.backoff(attempts);
                (
                    Status::Retrying,
                    Some(error),
                    now + chrono::Duration::from_std(delay).unwrap_or_default(),
                )
            }
        };
        Settled {
            status,
            error,
            next_attempt_at,
        }
    }
}

/// How an attempt ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// `sent`, `retrying` or `failed`.
    pub status: Status,
    /// The error, unless sent.
    pub error: Option<String>,
    /// When a retry is due (the attempt's end otherwise).
    pub next_attempt_at: DateTime<Utc>,
}

/// Sends due deliveries until shutdown.
pub struct Sender {
    /// The database.
    pub db: Database,
    /// The mail transport.
    pub mailer: Mailer,
    /// The `From` of every message.
    pub from: Mailbox,
    /// Where updates are announced (and who wakes us).
    pub hub: Hub,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// How long an attempt owns its row (longer than `send_timeout`).
    pub lease: Duration,
    /// Longest a single send may take.
    pub send_timeout: Duration,
}

impl Sender {
    /// Runs until `shutdown`; an attempt in progress is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(mail = %self.mailer.describe(), "notification sender started");
        while !shutdown.is_cancelled() {
            let sent = match self.round(&shutdown).await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(%error, "sender round failed; retrying");
                    0
                }
            };
            if sent > 0 {
                continue;
            }
            tokio::select! {
                _ = self.hub.woken() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        tracing::info!("notification sender stopped");
    }

    /// Attempts the deliveries due now, one after the other; returns how many were attempted.
    /// Each is leased just before its send, in the statement that records the attempts finished
    /// before it (so only the send under way can be cut short by a crash); the last attempts are
    /// recorded at the end of the round.
    async fn round(&self, shutdown: &CancellationToken) -> Result<usize, sqlx::Error> {
        let due = storage::due(self.db.reads(), Utc::now(), BATCH).await?;
        let (interrupted, due): (Vec<Delivery>, Vec<Delivery>) =
            due.into_iter().partition(|d| d.status == Status::Sending);
        let mut finished: Vec<(String, Settled)> =
            interrupted.iter().map(give_up_interrupted).collect();
        let mut attempted = 0;
        for delivery in &due {
            if shutdown.is_cancelled() {
                break;
            }
            let until = Utc::now() + chrono::Duration::from_std(self.lease).unwrap_or_default();
            let lease = storage::Lease { delivery, until };
            if !self.record(&mut finished, Some(lease)).await? {
                continue;
            }
            let span = tracing::info_span!("delivery", delivery_id = %delivery.id,
                event_id = %delivery.event_id, customer_id = %delivery.customer_id,
                kind = delivery.kind.as_str(),
                transaction_id = delivery.transaction_id.as_deref().unwrap_or(""));
            let settled = self.attempt(delivery).instrument(span).await;
            finished.push((delivery.id.clone(), settled));
            attempted += 1;
        }
        self.record(&mut finished, None).await?;
        Ok(attempted)
    }

    /// Sends `message` within the send timeout. A server that does not answer is retried
    /// later; a send that times out once the exchange has begun is not: the server may have
    /// accepted the message (a stalled process looks just like a slow server), and an alert
    /// goes out at most once.
    async fn send(&self, message: lettre::Message) -> Result<(), SendError> {
        match tokio::time::timeout(self.send_timeout, self.mailer.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(SendError::Transient(
                    "the mail server did not answer: timed out".to_string(),
                ))
            }
        }
        match tokio::time::timeout(self.send_timeout, self.mailer.send(message)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SendError::Permanent(
                "sending timed out during the SMTP exchange; not sent again, as the mail server \
                 may have accepted it"
                    .to_string(),
            )),
        }
    }

    /// Sends `delivery` (leased); returns how the attempt ended.
    async fn attempt(&self, delivery: &Delivery) -> Settled {
        let outcome = match compose(&self.from, delivery) {
            Ok(message) => self.send(message).await,
            Err(error) => Err(error),
        };
        if outcome.is_ok() {
            platform::failpoint!("smtp.after_accept");
        }
        let attempts = u32::try_from(delivery.attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let settled = self.retry.settle(outcome, attempts, Utc::now());
        log_outcome(delivery, attempts, &settled);
        metrics::counter!("notifications_attempted_total", "kind" => delivery.kind.as_str(),
            "outcome" => settled.status.as_str())
        .increment(1);
        settled
    }

    /// Records the `finished` attempts (and empties it) and, with `lease`, takes the next
    /// delivery, in one statement; announces the updated rows; returns whether the lease was
    /// taken. Messages are out: should the statement fail, recording them is retried on its
    /// own, so that a passing database hiccup does not lose them (the lease is then not taken).
    async fn record(
        &self,
        finished: &mut Vec<(String, Settled)>,
        lease: Option<storage::Lease<'_>>,
    ) -> Result<bool, sqlx::Error> {
        let mut tries = 0;
        let mut lease = lease;
        loop {
            match self.settle(finished, lease).await {
                Ok(leased) => {
                    finished.clear();
                    return Ok(leased);
                }
                Err(error) if tries < 5 && !finished.is_empty() => {
                    tries += 1;
                    lease = None;
                    tracing::warn!(%error, "cannot record the attempts; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One [`storage::settle`] statement; announces the updated rows.
    async fn settle(
        &self,
        finished: &[(String, Settled)],
        lease: Option<storage::Lease<'_>>,
    ) -> Result<bool, sqlx::Error> {
        if finished.is_empty() && lease.is_none() {
            return Ok(false);
        }
        let attempted: Vec<storage::Attempted<'_>> = finished
            .iter()
            .map(|(id, settled)| storage::Attempted {
                id,
                status: settled.status,
                error: settled.error.as_deref(),
                next_attempt_at: settled.next_attempt_at,
            })
            .collect();
        let mut conn = self.db.pool().acquire().await?;
        let (updated, leased) = storage::settle(&mut conn, &attempted, lease).await?;
        for delivery in updated {
            self.hub.publish(delivery);
        }
        Ok(leased)
    }
}

/// A delivery whose attempt was cut short by a crash (still `sending` after its lease): the
/// server may have accepted the message, so it is not sent again (at most once) but recorded as
/// `failed`, visible in the delivery log.
fn give_up_interrupted(delivery: &Delivery) -> (String, Settled) {
    tracing::warn!(delivery_id = %delivery.id, "a send was interrupted by a crash; not sent again");
    metrics::counter!("notifications_attempted_total", "kind" => delivery.kind.as_str(),
        "outcome" => "interrupted")
    .increment(1);
    let settled = Settled {
        status: Status::Failed,
        error: Some(
            "the attempt was interrupted by a crash; not sent again, as the mail server may \
             have accepted it"
                .to_string(),
        ),
        next_attempt_at: Utc::now(),
    };
    (delivery.id.clone(), settled)
}

/// The log line of an attempt's outcome (addresses masked).
fn log_outcome(delivery: &Delivery, attempts: u32, settled: &Settled) {
    match (&settled.status, &settled.error) {
        (Status::Sent, _) => {
            tracing::info!(attempts, recipient = %mask_email(&delivery.recipient), "notification sent")
        }
        (Status::Retrying, Some(error)) => {
            tracing::warn!(attempts, error = %mask_emails_in(error), retry_at = %settled.next_attempt_at, "notification not sent; will retry")
        }
        (_, error) => tracing::error!(
            attempts,
            error = %mask_emails_in(error.as_deref().unwrap_or("")),
            "notification failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        };
        let delays: Vec<u64> = (1..=5).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(
            RetryPolicy::default().backoff(100),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn transient_errors_are_retried_until_the_attempts_are_used_up() {
        let policy = RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        };
        let now = Utc::now();
        let busy = || Err(SendError::Transient("451 busy".into()));
        let retry = policy.settle(busy(), 1, now);
        assert_eq!(retry.status, Status::Retrying);
        assert_eq!(retry.next_attempt_at, now + chrono::Duration::seconds(1));
        let failed = policy.settle(busy(), 2, now);
        assert_eq!(failed.status, Status::Failed);
        assert_eq!(
            failed.error.as_deref(),
            Some("451 busy (gave up after 2 attempts)")
        );
        let refused = policy.settle(Err(SendError::Permanent("550".into())), 1, now);
        assert_eq!(
            (refused.status, refused.error.as_deref()),
            (Status::Failed, Some("550"))
        );
        assert_eq!(policy.settle(Ok(()), 1, now).status, Status::Sent);
    }
}
