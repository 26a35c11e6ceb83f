//! transaction-service is killed with SIGKILL in the middle of a burst of transfers and started
//! again: every request still has exactly one outcome, balances are exact and conserved, and
//! every notification is sent exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use contracts::{Currency, Money};
use platform::testing::eventually;
use serde_json::json;
use system_tests::{get, post, read_outcomes, Lcg, Stack};

const CUSTOMERS: usize = 6;
const TRANSFERS: usize = 240;
const DEPOSIT_MINOR: i64 = 50_000; // 500.00

fn minor(text: &str) -> i64 {
    Money::parse(text, Currency::USD)
        .expect("decimal amount")
        .minor_units()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_and_duplicates_nothing() {
    let mut stack = Stack::start(&[]).await;
    let client = reqwest::Client::new();
    let customers_url = format!("{}/app/customers", stack.url("customer-service"));
    let transactions_url = format!("{}/transactions", stack.url("transaction-service"));
    let accounts: Vec<String> = (0..CUSTOMERS).map(|n| format!("acct-{n}")).collect();

    for (n, id) in accounts.iter().enumerate() {
        let (status, body) = post(
            &client,
            &customers_url,
            json!({"id": id, "name": format!("Customer {n}"), "email": format!("c{n}@example.com")}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    for id in &accounts {
        let url = format!("{}/accounts/{id}", stack.url("transaction-service"));
        let opened = eventually(Duration::from_secs(60), || {
            let request = get(&client, &url);
            async move { (request.await.0 == 200).then_some(()) }
        })
        .await;
        assert!(opened.is_some(), "account {id} opened");
    }

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
    // Deposits first so most transfers can succeed.
    let (deposits, transfers): (Vec<_>, Vec<_>) =
        requests.iter().partition(|(id, _)| id.starts_with("dep-"));
    for (id, body) in deposits.into_iter().chain(transfers) {
        let mut body = body.clone();
        body["transactionId"] = json!(id);
        let (status, answer) = post(&client, &transactions_url, body).await;
        assert_eq!(status, 202, "{id}: {answer}");
    }

    // Kill transaction-service while it is working through the burst, then start it again.
    let probe = format!("{transactions_url}/t0030");
    let some_done = eventually(Duration::from_secs(60), || {
        let request = get(&client, &probe);
        async move { (request.await.1["status"] != "requested").then_some(()) }
    })
    .await;
    assert!(some_done.is_some(), "processing started");
    stack.service("transaction-service").kill().await;
    stack.service("transaction-service").restart().await;

    // Exactly one outcome per request (a re-published event keeps its id).
    let outcomes = read_outcomes(
        &stack.kafka,
        requests.len(),
        Duration::from_secs(120),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        outcomes.len(),
        requests.len(),
        "every request has an outcome"
    );
    let mut expected_balance: BTreeMap<&str, i64> =
        accounts.iter().map(|a| (a.as_str(), 0)).collect();
    let mut expected_emails = CUSTOMERS; // welcomes
    let mut processed_transfers = 0;
    for (id, events) in &outcomes {
        assert!(
            requests.contains_key(id),
            "outcome for an unknown request {id}"
        );
        let first = &events[0];
        assert!(
            events
                .iter()
                .all(|e| e.event_id == first.event_id && e.topic == first.topic),
            "{id} has more than one distinct outcome: {events:?}"
        );
        let payload = &first.payload;
        let amount = minor(payload["amount"].as_str().expect("amount"));
        match (
            first.topic.as_str(),
            payload["from"].as_str(),
            payload["to"].as_str(),
        ) {
            ("transaction.processed", from, to) => {
                if let Some(from) = from {
                    *expected_balance.get_mut(from).expect("known account") -= amount;
                    expected_emails += 1;
                }
                if let Some(to) = to {
                    *expected_balance.get_mut(to).expect("known account") += amount;
                    expected_emails += 1;
                }
                processed_transfers += usize::from(from.is_some());
            }
            ("transaction.failed", _, _) => {
                assert_eq!(payload["reason"], "insufficient_funds", "{id}: {payload}");
                expected_emails += 1;
            }
            (topic, _, _) => panic!("unexpected topic {topic}"),
        }
    }
    assert!(
        processed_transfers > TRANSFERS / 3,
        "a meaningful share succeeded: {processed_transfers}"
    );

    // Balances: exact per account, never negative, and money is conserved.
    let mut total = 0;
    for (account, expected) in &expected_balance {
        let (status, body) = get(
            &client,
            &format!("{}/accounts/{account}", stack.url("transaction-service")),
        )
        .await;
        assert_eq!(status, 200);
        let actual = minor(body["balance"].as_str().expect("balance"));
        assert_eq!(actual, *expected, "{account}");
        assert!(actual >= 0, "{account} went negative");
        total += actual;
    }
    assert_eq!(
        total,
        DEPOSIT_MINOR * CUSTOMERS as i64,
        "money is conserved"
    );

    // Every notification exactly once.
    let delivered = eventually(Duration::from_secs(90), || {
        let n = stack.smtp.messages().len();
        async move { (n >= expected_emails).then_some(n) }
    })
    .await;
    assert_eq!(delivered, Some(expected_emails), "all emails delivered");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.smtp.messages().len(),
        expected_emails,
        "no email twice"
    );
}
