//! Backpressure: with `MAX_APPLY_BACKLOG` at 1, one request the consumer cannot apply yet (its
//! account is not open: it stays `requested`, parked) puts the ledger at its bound. New requests
//! then get a 503 problem with `Retry-After`, a retried request still gets its answer, the
//! refusals are counted in `/metrics`, and requests are accepted again once the backlog drains
//! (the account opens and the request is applied). On PostgreSQL, a second replica that
//! accepted nothing itself refuses too: the measure is shared through the database.

use std::num::NonZeroU64;
use std::time::Duration;

use crate::helpers::{replicas_can_share_the_database, Ledger};
use platform::testing::{eventually, DEADLINE};
use serde_json::{json, Value};
use transaction_service::backpressure::RETRY_AFTER_SECS;
use transaction_service::LedgerSettings;

/// `POST /transactions`: status, `Retry-After`, `content-type` and the JSON body.
async fn post(ledger: &Ledger, body: &Value) -> (u16, Option<String>, String, Value) {
    let answer = ledger.post_answer(body).await;
    (
        answer.status,
        answer.retry_after,
        answer.content_type,
        answer.body,
    )
}

/// The value of the unlabelled series `name` in the `/metrics` text.
fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.split_once(' ')?;
        (series == name).then(|| value.trim().parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_apply_backlog_new_requests_get_503_until_it_drains() {
    let ledger = Ledger::start(LedgerSettings {
        max_apply_backlog: NonZeroU64::new(1),
        unknown_account_grace: Duration::from_secs(600),
        ..LedgerSettings::default()
    })
    .await;
    let rejected_before = eventually("the rejection counter in /metrics", DEADLINE, || async {
        series(
            &ledger.metrics().await,
            "transactions_apply_backlog_rejected_total",
        )
    })
    .await;

    // Accepted, but not applicable until its account opens: the ledger is one request behind.
    let waiting = json!({"to": "late", "amount": "5", "transactionId": "bp-waiting"});
    let (status, _, _, accepted) = post(&ledger, &waiting).await;
    assert_eq!(status, 202, "{accepted}");
    ledger.wait_parked(1).await;

    // A new request is refused, stores nothing, and says when to come back.
    let new = json!({"to": "late", "amount": "1", "transactionId": "bp-new"});
    let (status, retry_after, content_type, problem) = post(&ledger, &new).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(retry_after, Some(RETRY_AFTER_SECS.to_string()));
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["status"], 503);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("behind") && detail.contains("MAX_APPLY_BACKLOG"),
        "{detail}"
    );
    assert_eq!(ledger.get("/transactions/bp-new").await.0, 404);
    // Nor does a request with a generated id get in.
    let (status, _, _, _) = post(&ledger, &json!({"to": "late", "amount": "1"})).await;
    assert_eq!(status, 503);

    // A retry of the accepted request still gets its answer; another body under its id, 409.
    let (status, _, _, again) = post(&ledger, &waiting).await;
    assert_eq!((status, &again), (202, &accepted));
    let other = json!({"to": "late", "amount": "6", "transactionId": "bp-waiting"});
    let (status, _, _, conflict) = post(&ledger, &other).await;
    assert_eq!(status, 409, "{conflict}");

    let metrics = ledger.metrics().await;
    let rejected = series(&metrics, "transactions_apply_backlog_rejected_total").unwrap();
    assert!(rejected >= rejected_before + 2.0, "{rejected}");
    for gauge in [
        "transactions_apply_backlog_limit",
        "transactions_apply_backlog",
    ] {
        assert!(series(&metrics, gauge).is_some(), "{gauge} in {metrics}");
    }

    // The account opens, the request is applied: the backlog drains and requests get in again.
    ledger.customer_created("late").await;
    ledger.processed("bp-waiting").await;
    let (status, _) = eventually("a new request to be accepted again", DEADLINE, || async {
        let (status, _, _, body) = post(&ledger, &new).await;
        (status != 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 202);
    ledger.processed("bp-new").await;
    assert_eq!(ledger.balance("late").await, "6.00");
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_accepted_nothing_sees_the_backlog_of_another() {
    if !replicas_can_share_the_database() {
        return;
    }
    let settings = || LedgerSettings {
        max_apply_backlog: NonZeroU64::new(1),
        unknown_account_grace: Duration::from_secs(600),
        ..LedgerSettings::default()
    };
    let first = Ledger::start(settings()).await;
    let second = first.replica(settings()).await;

    // The first replica accepts a request that waits for its account; the second, which
    // accepted nothing itself, refuses new requests once its sample counts it.
    let waiting = json!({"to": "late", "amount": "5", "transactionId": "bp-r-waiting"});
    let (status, _, _, accepted) = post(&first, &waiting).await;
    assert_eq!(status, 202, "{accepted}");
    // (Before its next sample it may still take one: a generated id each time.)
    let new = json!({"to": "late", "amount": "1"});
    let (_, retry_after, _, _) = eventually("the second replica to refuse", DEADLINE, || async {
        let answer = post(&second, &new).await;
        (answer.0 != 202).then_some(answer)
    })
    .await;
    assert_eq!(retry_after, Some(RETRY_AFTER_SECS.to_string()));
    // It answers a retry of what the first replica accepted.
    let (status, _, _, again) = post(&second, &waiting).await;
    assert_eq!((status, &again), (202, &accepted));

    first.customer_created("late").await;
    first.processed("bp-r-waiting").await;
    let (status, _) = eventually("the second replica to accept again", DEADLINE, || async {
        let (status, _, _, body) = post(&second, &new).await;
        (status != 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 202);
    second.stop().await;
    first.stop().await;
}
