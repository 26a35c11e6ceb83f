//! Two replicas of transaction-service on one PostgreSQL database and one consumer group:
//! opposing transfers (A→B on one partition while B→A is applied on the other) neither lose nor
//! create money and never wedge a partition. A batch that deadlocks is rolled back and applied
//! again record by record (every database error is transient). PostgreSQL only: replicas share a
//! database server, a SQLite file belongs to one process.

use std::collections::HashMap;

use crate::helpers::{replicas_can_share_the_database, Ledger, Random};
use platform::testing::{eventually, DEADLINE};
use serde_json::{json, Value};
use sqlx::Row;
use transaction_service::LedgerSettings;

const ACCOUNTS: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
const OPENING: i64 = 10_000;
/// Pairs of opposing transfers.
const PAIRS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposing_transfers_on_two_replicas_conserve_money_and_all_complete() {
    if !replicas_can_share_the_database() {
        return;
    }
    let settings = || LedgerSettings {
        opening_balance: OPENING,
        ..LedgerSettings::default()
    };
    let first = Ledger::start(settings()).await;
    let second = first.replica(settings()).await;
    first.open_accounts(&ACCOUNTS).await;

    let bodies = opposing_pairs();
    post_to_both(&first, &second, &bodies).await;
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| b["transactionId"].as_str().expect("id").to_string())
        .collect();
    let outcomes = one_outcome_each(&first, &ids).await;
    assert_money_conserved(&first).await;
    let url = first.database_url.clone();
    second.stop().await;
    first.stop().await;
    assert_no_deadlock(&url, ids.len(), &outcomes).await;
}

/// `PAIRS` pairs of transfers, each moving money both ways between two accounts.
fn opposing_pairs() -> Vec<Value> {
    let mut random = Random::new();
    let mut bodies = Vec::new();
    for i in 0..PAIRS {
        let a = ACCOUNTS[random.below(ACCOUNTS.len() as u64) as usize];
        let mut b = ACCOUNTS[random.below(ACCOUNTS.len() as u64) as usize];
        while b == a {
            b = ACCOUNTS[random.below(ACCOUNTS.len() as u64) as usize];
        }
        for (n, (from, to)) in [(a, b), (b, a)].into_iter().enumerate() {
            // Never 0.00 (refused with 422): the cents run from 01 to 99.
            let amount = format!("{}.{:02}", random.below(60), 1 + random.below(99));
            bodies.push(
                json!({"transactionId": format!("op-{i}-{n}"), "from": from, "to": to,
                               "amount": amount}),
            );
        }
    }
    bodies
}

/// Posts `bodies` in eight chunks at once, the chunks alternating between the replicas; each is
/// accepted (202).
async fn post_to_both(first: &Ledger, second: &Ledger, bodies: &[Value]) {
    let mut clients = Vec::new();
    for (n, chunk) in bodies.chunks(bodies.len() / 8 + 1).enumerate() {
        let replica = if n % 2 == 0 { first } else { second };
        let (http, url, chunk) = (
            replica.http.clone(),
            replica.url("/transactions"),
            chunk.to_vec(),
        );
        clients.push(tokio::spawn(async move {
            for body in chunk {
                let response = http.post(&url).json(&body).send().await.expect("POST");
                let status = response.status().as_u16();
                let answer = response.text().await.unwrap_or_default();
                assert_eq!(status, 202, "{body} was answered {answer}");
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
}

/// Waits for an outcome of every request of `ids` and asserts there is one each (a failure
/// only for insufficient funds); returns the outcomes as `(topic, payload)`.
async fn one_outcome_each(first: &Ledger, ids: &[String]) -> Vec<(String, Value)> {
    let outcomes = eventually("an outcome for every request", DEADLINE, || async {
        let outcomes: Vec<(String, Value)> =
            ids.iter().flat_map(|id| first.outcomes_for(id)).collect();
        (outcomes.len() >= ids.len()).then_some(outcomes)
    })
    .await;
    let mut per_request: HashMap<&str, usize> = HashMap::new();
    for (topic, payload) in &outcomes {
        if topic == contracts::topics::TRANSACTION_FAILED {
            assert_eq!(payload["reason"], "insufficient_funds", "{payload}");
        }
        *per_request
            .entry(payload["transactionId"].as_str().expect("id"))
            .or_default() += 1;
    }
    assert_eq!(per_request.len(), ids.len());
    assert!(per_request.values().all(|n| *n == 1), "one outcome each");
    outcomes
}

/// Money is conserved, and every balance is its journal's sum.
async fn assert_money_conserved(first: &Ledger) {
    let total: i64 = sqlx::query_scalar("SELECT CAST(SUM(balance) AS BIGINT) FROM accounts")
        .fetch_one(first.db.pool())
        .await
        .expect("sum");
    assert_eq!(total, OPENING * ACCOUNTS.len() as i64);
    let mismatched = sqlx::query(
        "SELECT a.id FROM accounts a JOIN (SELECT account_id, SUM(delta) AS total FROM entries \
         GROUP BY account_id) e ON e.account_id = a.id WHERE e.total <> a.balance",
    )
    .fetch_all(first.db.pool())
    .await
    .expect("journal");
    assert!(mismatched.is_empty(), "balances differ from their journals");
}

/// No batch deadlocked on the database at `url` (`requests` transfers, their `outcomes`), counted once both replicas have ended (a
/// backend reports its counts at the latest when it exits). Every batch locks its accounts and
/// inbox keys in id order before changing any, so batches queue for each other: none deadlocks.
async fn assert_no_deadlock(url: &str, requests: usize, outcomes: &[(String, Value)]) {
    let db = platform::Database::connect(url).await.expect("database");
    let deadlocks: i64 = sqlx::query(
        "SELECT CAST(deadlocks AS BIGINT) AS n FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(db.pool())
    .await
    .and_then(|row| row.try_get("n"))
    .expect("deadlock count");
    println!(
        "{} opposing transfers on two replicas: {} processed, {deadlocks} deadlocks retried",
        requests,
        outcomes
            .iter()
            .filter(|(t, _)| t == contracts::topics::TRANSACTION_PROCESSED)
            .count()
    );
    assert_eq!(
        deadlocks, 0,
        "batches lock in id order: they queue, never deadlock"
    );
    db.close().await;
}
