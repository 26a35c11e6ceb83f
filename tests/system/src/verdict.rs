//! The judgement of a run: outcomes per request ([`Verdict`]), e-mails ([`MailReport`]), and
//! what the services' databases still hold.

use std::collections::BTreeMap;
use std::time::Duration;

use platform::testing::{poll_until, SmtpServer};

use platform::kafka::KafkaConfig;

use crate::topics::{lag, read_outcomes, Outcome};
use crate::Stack;

/// Counts rows in the database at `url`: `sql` is a `SELECT COUNT(*) AS n ...`.
pub async fn count_rows(url: &str, sql: &str) -> i64 {
    use sqlx::Row;
    let db = platform::Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", platform::db::redact_url(url)));
    let row = sqlx::query(sql)
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = row.try_get::<i64, _>("n").expect("a count named n");
    db.close().await;
    n
}

/// Deliveries notification-service has not settled yet (pending, retrying or sending), in its
/// database at `url`.
pub async fn unsent_deliveries(url: &str) -> i64 {
    count_rows(
        url,
        "SELECT COUNT(*) AS n FROM deliveries \
         WHERE status IN ('pending', 'retrying', 'sending')",
    )
    .await
}

/// Work transaction-service had not finished: requests not yet decided, events not yet
/// published (read from its database, e.g. right after it was killed), and requests its
/// consumer group has not committed.
pub async fn transaction_backlog(stack: &Stack) -> i64 {
    let url = stack.services["transaction-service"].database_url();
    lag(
        &stack.kafka,
        "transaction-service",
        contracts::topics::TRANSACTION_REQUESTED,
    ) + count_rows(
        url,
        "SELECT COUNT(*) AS n FROM transactions WHERE status = 'requested'",
    )
    .await
        + count_rows(
            url,
            "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL",
        )
        .await
}

/// A decimal amount in minor units (USD).
pub fn minor(text: &str) -> i64 {
    contracts::Money::parse(text, contracts::Currency::USD)
        .expect("decimal amount")
        .minor_units()
}

/// What the outcome events say about a set of requests.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Requests without an outcome (lost or skipped).
    pub missing: Vec<String>,
    /// Requests with more than one distinct outcome (event id or topic).
    pub conflicting: Vec<String>,
    /// Outcomes of transactions nobody requested.
    pub unknown: Vec<String>,
    /// Extra copies of an outcome carrying the same event id (a re-publish after a crash).
    pub copies: usize,
    /// The balance each account must have, from zero, by the processed outcomes.
    pub balances: BTreeMap<String, i64>,
    /// Processed credits minus processed debits: what the sum of all balances must be.
    pub net_deposits: i64,
    /// Processed transfers.
    pub processed_transfers: usize,
    /// Failed outcomes by reason.
    pub failures: BTreeMap<String, usize>,
    /// Alerts notification-service e-mails for these outcomes (one per processed side, one to
    /// the requester of a failure).
    pub alerts: usize,
}

impl Verdict {
    /// Panics unless every request has exactly one distinct outcome and no outcome is unknown.
    pub fn assert_one_outcome_each(&self) {
        assert!(self.missing.is_empty(), "no outcome: {:?}", self.missing);
        assert!(
            self.conflicting.is_empty(),
            "more than one distinct outcome: {:?}",
            self.conflicting
        );
        assert!(self.unknown.is_empty(), "{:?}", self.unknown);
    }

    /// Reads the outcome events of the requests `ids` ([`read_outcomes`]: until each has one or
    /// `timeout` passes, then until the topics are quiet for 3 s) and judges them.
    pub async fn read<'a>(
        kafka: &KafkaConfig,
        ids: impl IntoIterator<Item = &'a String>,
        timeout: Duration,
    ) -> Self {
        let ids: Vec<&String> = ids.into_iter().collect();
        let outcomes = read_outcomes(kafka, ids.len(), timeout, Duration::from_secs(3)).await;
        Self::judge(ids, &outcomes)
    }

    /// Judges `outcomes` (by transaction id) against the requests `ids`.
    pub fn judge<'a>(
        ids: impl IntoIterator<Item = &'a String>,
        outcomes: &BTreeMap<String, Vec<Outcome>>,
    ) -> Self {
        let ids: std::collections::BTreeSet<&String> = ids.into_iter().collect();
        let mut verdict = Verdict {
            missing: ids
                .iter()
                .filter(|id| !outcomes.contains_key(id.as_str()))
                .map(|id| id.to_string())
                .collect(),
            ..Verdict::default()
        };
        for (id, events) in outcomes {
            if !ids.contains(id) {
                verdict.unknown.push(id.clone());
                continue;
            }
            let first = &events[0];
            if events
                .iter()
                .any(|e| e.event_id != first.event_id || e.topic != first.topic)
            {
                verdict.conflicting.push(id.clone());
            }
            verdict.copies += events.len() - 1;
            let payload = &first.payload;
            let amount = minor(payload["amount"].as_str().expect("amount"));
            let (from, to) = (payload["from"].as_str(), payload["to"].as_str());
            if first.topic == contracts::topics::TRANSACTION_PROCESSED {
                if let Some(from) = from {
                    *verdict.balances.entry(from.to_string()).or_default() -= amount;
                    verdict.alerts += 1;
                }
                if let Some(to) = to {
                    *verdict.balances.entry(to.to_string()).or_default() += amount;
                    verdict.alerts += 1;
                }
                match (from, to) {
                    (Some(_), Some(_)) => verdict.processed_transfers += 1,
                    (None, Some(_)) => verdict.net_deposits += amount,
                    (Some(_), None) => verdict.net_deposits -= amount,
                    (None, None) => {}
                }
            } else {
                let reason = payload["reason"].as_str().unwrap_or("").to_string();
                // An unknown account has nobody to alert.
                if reason != "unknown_account" {
                    verdict.alerts += 1;
                }
                *verdict.failures.entry(reason).or_default() += 1;
            }
        }
        verdict
    }
}

/// E-mails received, judged by Message-ID.
#[derive(Debug, Default)]
pub struct MailReport {
    /// Distinct messages (Message-IDs).
    pub distinct: usize,
    /// Message-IDs received more than once.
    pub double_sent: Vec<String>,
}

impl MailReport {
    /// Judges what `smtp` received.
    pub fn of(smtp: &SmtpServer) -> Self {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for mail in smtp.messages() {
            assert!(!mail.message_id.is_empty(), "a mail without Message-ID");
            *seen.entry(mail.message_id).or_default() += 1;
        }
        Self {
            distinct: seen.len(),
            double_sent: seen
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(id, _)| id)
                .collect(),
        }
    }
}

/// Waits up to `timeout` until notification-service has settled every delivery it recorded
/// (none pending, retrying or sending) and, when `expected` is given, has recorded exactly that
/// many; false when it had not by then.
pub async fn deliveries_settled(stack: &Stack, expected: Option<usize>, timeout: Duration) -> bool {
    let url = stack.services["notification-service"]
        .database_url()
        .to_string();
    poll_until(timeout, || {
        let url = url.clone();
        async move {
            let recorded = match expected {
                Some(expected) => {
                    count_rows(&url, "SELECT COUNT(*) AS n FROM deliveries").await
                        == expected as i64
                }
                None => true,
            };
            let unsent = unsent_deliveries(&url).await;
            (recorded && unsent == 0).then_some(())
        }
    })
    .await
    .is_some()
}

/// Waits until notification-service has recorded exactly `expected` deliveries and settled them
/// all (none pending, retrying or sending: a delivery whose send a crash interrupted is settled
/// as failed, never sent twice); then judges the mailbox. Panics after `timeout`.
pub async fn settled_mail(stack: &Stack, expected: usize, timeout: Duration) -> MailReport {
    let settled = deliveries_settled(stack, Some(expected), timeout).await;
    let report = MailReport::of(&stack.smtp);
    assert!(
        settled,
        "notification-service did not send all {expected} e-mails within {timeout:?} \
         (mailbox: {report:?})"
    );
    report
}
