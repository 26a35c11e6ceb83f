//! transaction-service is killed with SIGKILL in the middle of a burst of transfers (its
//! database proves work was in flight) and started again: every request still has exactly one
//! outcome, balances are exact and conserved, and every notification is sent exactly once. Runs
//! on SQLite, or on PostgreSQL when `TEST_DATABASE_URL` names a server.

use std::collections::BTreeMap;
use std::time::Duration;

use platform::testing::poll_until;
use serde_json::json;
use system_tests::{
    balances, post, register_accounts, settled_mail, transaction_backlog, try_post, Lcg, Stack,
    Verdict,
};

const CUSTOMERS: usize = 6;
const TRANSFERS: usize = 240;
const DEPOSIT_MINOR: i64 = 50_000; // 500.00

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_and_duplicates_nothing() {
    let _turn = crate::exclusive().await;
    let mut stack = Stack::start(&[]).await;
    let client = reqwest::Client::new();
    let transactions_url = format!("{}/transactions", stack.url("transaction-service"));
    let accounts: Vec<String> = (0..CUSTOMERS).map(|n| format!("acct-{n}")).collect();

    register_accounts(&client, &stack, &accounts).await;

    // Deposits, then a burst of random transfers (some overdraw).
    let mut requests: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for id in &accounts {
        requests.insert(format!("dep-{id}"), json!({"to": id, "amount": "500.00"}));
    }
    let mut random = Lcg::new(20_261_125);
    for n in 0..TRANSFERS {
        let from = random.below(CUSTOMERS as u64) as usize;
        let to = (from + 1 + random.below(CUSTOMERS as u64 - 1) as usize) % CUSTOMERS;
        let cents = 1 + random.below(30_000);
        requests.insert(
            format!("t{n:04}"),
            json!({"from": accounts[from], "to": accounts[to], "amount": format!("{}.{:02}", cents / 100, cents % 100)}),
        );
    }
    // Deposits first so most transfers can succeed; posted in the background while the test
    // waits for processing to start and kills the service in the middle of the burst.
    let (deposits, transfers): (Vec<_>, Vec<_>) =
        requests.iter().partition(|(id, _)| id.starts_with("dep-"));
    let bodies: Vec<serde_json::Value> = deposits
        .into_iter()
        .chain(transfers)
        .map(|(id, body)| {
            let mut body = body.clone();
            body["transactionId"] = json!(id);
            body
        })
        .collect();
    let sender = {
        let (client, url, bodies) = (client.clone(), transactions_url.clone(), bodies.clone());
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
    };

    // Kill transaction-service while it is working through the burst, then start it again.
    let probe = format!("{transactions_url}/t0030");
    let some_done = poll_until(Duration::from_secs(60), || {
        let request = client.get(&probe).send();
        async move {
            let body: serde_json::Value = request.await.ok()?.json().await.ok()?;
            (body["status"] == "processed" || body["status"] == "failed").then_some(())
        }
    })
    .await;
    assert!(some_done.is_some(), "processing started");
    stack.service("transaction-service").kill().await;
    // The kill landed mid-flight: its database holds undecided requests or unpublished events.
    let backlog = transaction_backlog(&stack).await;
    assert!(backlog > 0, "the kill found no work in flight");
    let unanswered = sender.await.expect("sender");
    println!(
        "killed with {backlog} requests undecided or events unpublished, {} requests unanswered",
        unanswered.len()
    );
    stack.service("transaction-service").restart().await;
    for body in &unanswered {
        let (status, answer) = post(&client, &transactions_url, body.clone()).await;
        assert!(matches!(status, 200 | 202), "{body}: {answer}");
    }

    // Exactly one outcome per request (a re-published event keeps its id).
    let verdict = Verdict::read(&stack.kafka, requests.keys(), Duration::from_secs(120)).await;
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
    let actual = balances(&client, &stack, &accounts).await;
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
    let mail = settled_mail(&stack, expected_emails, Duration::from_secs(90)).await;
    assert_eq!(mail.distinct, expected_emails, "all emails delivered");
    assert!(
        mail.double_sent.is_empty(),
        "sent twice: {:?}",
        mail.double_sent
    );
}
