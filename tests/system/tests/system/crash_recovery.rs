//! transaction-service is killed with SIGKILL in the middle of a burst of transfers (its
//! database proves work was in flight) and started again: every request still has exactly one
//! outcome, balances are exact and conserved, and every notification is sent exactly once. Runs
//! on SQLite, or on PostgreSQL when `TEST_DATABASE_URL` names a server.

use std::time::Duration;

use serde_json::Value;
use system_tests::{
    balances, deposits_and_transfers, post, settled_mail, stack_with_accounts, transaction_backlog,
    transaction_ids, try_post, wait_decided, Stack, Verdict,
};
use tokio::task::JoinHandle;

const CUSTOMERS: usize = 6;
const TRANSFERS: usize = 240;
const DEPOSIT_MINOR: i64 = 50_000; // 500.00

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_and_duplicates_nothing() {
    let _turn = crate::exclusive().await;
    let client = reqwest::Client::new();
    let (mut stack, accounts) = stack_with_accounts(&client, CUSTOMERS).await;
    let transactions_url = format!("{}/transactions", stack.url("transaction-service"));

    // Deposits, then a burst of random transfers (some overdraw).
    let bodies = deposits_and_transfers(&accounts, 20_261_125, TRANSFERS);
    let sender = send_in_background(&client, &transactions_url, &bodies);
    let unanswered = kill_mid_burst(&mut stack, &client, &transactions_url, sender).await;
    stack.service("transaction-service").restart().await;
    for body in &unanswered {
        let (status, answer) = post(&client, &transactions_url, body.clone()).await;
        assert!(matches!(status, 200 | 202), "{body}: {answer}");
    }
    judge(&stack, &client, &accounts, &bodies).await;
}

/// Posts `bodies` one after the other in the background (deposits first, so most transfers can
/// succeed), while the test waits for processing to start and kills the service in the middle
/// of the burst; the task returns the requests that got no answer.
fn send_in_background(
    client: &reqwest::Client,
    url: &str,
    bodies: &[Value],
) -> JoinHandle<Vec<Value>> {
    let (client, url, bodies) = (client.clone(), url.to_string(), bodies.to_vec());
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        for body in bodies {
            match try_post(&client, &url, &body).await {
                Ok((status, answer)) => assert_eq!(status, 202, "{body}: {answer}"),
                Err(_) => unanswered.push(body),
            }
        }
        unanswered
    })
}

/// Kills transaction-service while it is working through the burst (its database proves work
/// was in flight); returns the requests `sender` sent that got no answer.
async fn kill_mid_burst(
    stack: &mut Stack,
    client: &reqwest::Client,
    transactions_url: &str,
    sender: JoinHandle<Vec<Value>>,
) -> Vec<Value> {
    let probe = format!("{transactions_url}/t0030");
    let some_done = wait_decided(client, &probe, Duration::from_secs(60)).await;
    assert!(some_done, "processing started");
    stack.service("transaction-service").kill().await;
    // The kill landed mid-flight: its database holds undecided requests or unpublished events.
    let backlog = transaction_backlog(stack).await;
    assert!(backlog > 0, "the kill found no work in flight");
    let unanswered = sender.await.expect("sender");
    println!(
        "killed with {backlog} requests undecided or events unpublished, {} requests unanswered",
        unanswered.len()
    );
    unanswered
}

/// Exactly one outcome per request of `bodies` (a re-published event keeps its id), exact and
/// conserved balances, every notification exactly once.
async fn judge(stack: &Stack, client: &reqwest::Client, accounts: &[String], bodies: &[Value]) {
    let ids = transaction_ids(bodies);
    let verdict = Verdict::read(&stack.kafka, &ids, Duration::from_secs(120)).await;
    verdict.assert_one_outcome_each();
    assert_eq!(
        verdict.failures.keys().collect::<Vec<_>>(),
        ["insufficient_funds"],
        "{:?}",
        verdict.failures
    );
    assert!(
        verdict.processed_transfers > TRANSFERS / 3,
        "a meaningful share succeeded: {}",
        verdict.processed_transfers
    );

    // Balances: exact per account, never negative, and money is conserved.
    let actual = balances(client, stack, accounts).await;
    for (account, balance) in &actual {
        assert_eq!(Some(balance), verdict.balances.get(account), "{account}");
        assert!(*balance >= 0, "{account} went negative");
    }
    assert_eq!(
        actual.values().sum::<i64>(),
        DEPOSIT_MINOR * CUSTOMERS as i64,
        "money is conserved"
    );
    assert_eq!(verdict.net_deposits, DEPOSIT_MINOR * CUSTOMERS as i64);

    // Every notification exactly once: all deliveries sent, each Message-ID received once.
    let expected_emails = CUSTOMERS + verdict.alerts;
    let mail = settled_mail(stack, expected_emails, Duration::from_secs(90)).await;
    assert_eq!(mail.distinct, expected_emails, "all emails delivered");
    assert!(
        mail.double_sent.is_empty(),
        "sent twice: {:?}",
        mail.double_sent
    );
}
