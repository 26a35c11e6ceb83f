//! The seed's flow across the three services as real processes: customers, the seed's transfer,
//! a deposit, a transfer that succeeds and one that fails; outcomes, balances, notifications and
//! emails; then a graceful SIGTERM shutdown of every service.

use std::time::Duration;

use platform::testing::eventually;
use serde_json::{json, Value};
use system_tests::{get, post, Stack, SERVICES};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn outcome(client: &reqwest::Client, stack: &Stack, id: &str) -> Value {
    let url = format!("{}/transactions/{id}", stack.url("transaction-service"));
    eventually(TIMEOUT, || {
        let request = get(client, &url);
        async move {
            let (status, body) = request.await;
            (status == 200 && body["status"] != "requested").then_some(body)
        }
    })
    .await
    .unwrap_or_else(|| panic!("transaction {id} got no outcome"))
}

async fn balance(client: &reqwest::Client, stack: &Stack, account: &str) -> String {
    let (status, body) = get(
        client,
        &format!("{}/accounts/{account}", stack.url("transaction-service")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["balance"].as_str().expect("balance").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flow_end_to_end() {
    let mut stack = Stack::start(&[]).await;
    let client = reqwest::Client::new();
    let customers = format!("{}/app/customers", stack.url("customer-service"));
    let transactions = format!("{}/transactions", stack.url("transaction-service"));

    // The seed's own requests.
    let (status, body) = post(
        &client,
        &customers,
        json!({"id": "cust-001", "name": "John Doe", "email": "john@example.com"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = post(
        &client,
        &customers,
        json!({"id": "cust-002", "name": "Jane Roe", "email": "jane@example.com"}),
    )
    .await;
    assert_eq!(status, 201);
    for account in ["cust-001", "cust-002"] {
        let url = format!("{}/accounts/{account}", stack.url("transaction-service"));
        let opened = eventually(TIMEOUT, || {
            let request = get(&client, &url);
            async move { (request.await.0 == 200).then_some(()) }
        })
        .await;
        assert!(
            opened.is_some(),
            "account {account} opened from Customer.created"
        );
    }
    let (status, body) = post(
        &client,
        &transactions,
        json!({"from": "cust-001", "to": "cust-002", "amount": 100, "transactionId": "txn-123"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"transactionId": "txn-123", "status": "requested"})
    );
    let seed = outcome(&client, &stack, "txn-123").await;
    assert_eq!(seed["status"], "failed");
    assert_eq!(seed["reason"], "insufficient_funds");

    // A deposit, a transfer that succeeds, one that fails.
    let (status, _) = post(
        &client,
        &transactions,
        json!({"to": "cust-001", "amount": "250.00", "transactionId": "dep-1"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        outcome(&client, &stack, "dep-1").await["status"],
        "processed"
    );
    let (status, _) = post(
        &client,
        &transactions,
        json!({"from": "cust-001", "to": "cust-002", "amount": 100, "transactionId": "txn-124"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        outcome(&client, &stack, "txn-124").await["status"],
        "processed"
    );
    let (status, _) = post(
        &client,
        &transactions,
        json!({"from": "cust-002", "to": "cust-001", "amount": 500, "transactionId": "txn-125"}),
    )
    .await;
    assert_eq!(status, 202);
    let overdraft = outcome(&client, &stack, "txn-125").await;
    assert_eq!(overdraft["status"], "failed");
    assert_eq!(overdraft["reason"], "insufficient_funds");
    assert_eq!(balance(&client, &stack, "cust-001").await, "150.00");
    assert_eq!(balance(&client, &stack, "cust-002").await, "100.00");

    // Notifications: 2 welcomes + txn-123 (1) + dep-1 (1) + txn-124 (2) + txn-125 (1).
    let expected_emails = 7;
    let delivered = eventually(TIMEOUT, || {
        let n = stack.smtp.messages().len();
        async move { (n >= expected_emails).then_some(n) }
    })
    .await;
    assert_eq!(
        delivered,
        Some(expected_emails),
        "emails delivered over SMTP"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.smtp.messages().len(), expected_emails, "and no more");
    let log_url = format!(
        "{}/notifications?customerId=cust-001",
        stack.url("notification-service")
    );
    let (status, log) = get(&client, &log_url).await;
    assert_eq!(status, 200, "{log}");
    let kinds: Vec<&str> = log["items"]
        .as_array()
        .expect("delivery log items")
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "sent", "{d}");
            d["kind"].as_str().expect("kind")
        })
        .collect();
    // cust-001, newest first: debit of txn-124, txn-123 failure and the deposit, welcome.
    assert_eq!(kinds.len(), 4, "{log}");
    assert_eq!(kinds[0], "debit_alert");
    assert_eq!(kinds[3], "welcome");

    // SIGTERM: every service stops cleanly.
    for name in SERVICES {
        assert_eq!(
            stack.service(name).terminate().await,
            Some(0),
            "{name} exits 0 on SIGTERM"
        );
    }
}
