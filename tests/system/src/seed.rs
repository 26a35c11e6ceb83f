//! The seed's flow (the README's walk-through) through a running stack, step by step.

use std::time::Duration;

use platform::testing::poll_until;

use crate::http::{balance, get, post};
use crate::Stack;

/// How long the seed flow waits for each asynchronous result.
const SEED_TIMEOUT: Duration = Duration::from_secs(60);

/// The seed's customers: `(id, name, email)`.
pub const SEED_CUSTOMERS: [(&str, &str, &str); 2] = [
    ("cust-001", "John Doe", "john@example.com"),
    ("cust-002", "Jane Roe", "jane@example.com"),
];

/// The e-mails [`seed_flow`] causes: 2 welcomes + txn-123 (1) + dep-1 (1) + txn-124 (2) +
/// txn-125 (1).
pub const SEED_EMAILS: usize = 7;

/// POSTs transaction `body` (it must be accepted: 202) and waits for its outcome.
pub async fn request_outcome(
    client: &reqwest::Client,
    stack: &Stack,
    body: serde_json::Value,
) -> serde_json::Value {
    let url = format!("{}/transactions", stack.url("transaction-service"));
    let id = body["transactionId"]
        .as_str()
        .expect("transactionId")
        .to_string();
    let (status, answer) = post(client, &url, body).await;
    assert_eq!(status, 202, "{id}: {answer}");
    wait_outcome(client, stack, &id).await
}

/// Waits until transaction `id` has an outcome (`GET /transactions/{id}` is no longer
/// `requested`) and returns it.
pub async fn wait_outcome(client: &reqwest::Client, stack: &Stack, id: &str) -> serde_json::Value {
    let url = format!("{}/transactions/{id}", stack.url("transaction-service"));
    poll_until(SEED_TIMEOUT, || {
        let request = get(client, &url);
        async move {
            let (status, body) = request.await;
            (status == 200 && body["status"] != "requested").then_some(body)
        }
    })
    .await
    .unwrap_or_else(|| panic!("transaction {id} got no outcome"))
}

/// The seed's flow through `stack`, asserting every step: the customers (each opens an account
/// and gets a welcome e-mail), the seed's transfer (fails: insufficient funds), a deposit, a
/// transfer that succeeds and an overdraft that fails; the balances; the [`SEED_EMAILS`]
/// e-mails delivered over SMTP. `client` sends every request (give it default headers for API
/// keys).
pub async fn seed_flow(client: &reqwest::Client, stack: &Stack) {
    use serde_json::json;
    let customers = format!("{}/app/customers", stack.url("customer-service"));
    let transactions = format!("{}/transactions", stack.url("transaction-service"));
    for (id, name, email) in SEED_CUSTOMERS {
        let (status, body) = post(
            client,
            &customers,
            json!({"id": id, "name": name, "email": email}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    for (account, _, _) in SEED_CUSTOMERS {
        let url = format!("{}/accounts/{account}", stack.url("transaction-service"));
        let opened = poll_until(SEED_TIMEOUT, || {
            let request = get(client, &url);
            async move { (request.await.0 == 200).then_some(()) }
        })
        .await;
        assert!(
            opened.is_some(),
            "account {account} opened from Customer.created"
        );
    }
    let (status, body) = post(
        client,
        &transactions,
        json!({"from": "cust-001", "to": "cust-002", "amount": 100, "transactionId": "txn-123"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"transactionId": "txn-123", "status": "requested"})
    );
    let seed = wait_outcome(client, stack, "txn-123").await;
    assert_eq!(seed["status"], "failed");
    assert_eq!(seed["reason"], "insufficient_funds");

    let dep_1 = request_outcome(
        client,
        stack,
        json!({"to": "cust-001", "amount": "250.00", "transactionId": "dep-1"}),
    )
    .await;
    assert_eq!(dep_1["status"], "processed");
    let txn_124 = request_outcome(
        client,
        stack,
        json!({"from": "cust-001", "to": "cust-002", "amount": 100, "transactionId": "txn-124"}),
    )
    .await;
    assert_eq!(txn_124["status"], "processed");
    let txn_125 = request_outcome(
        client,
        stack,
        json!({"from": "cust-002", "to": "cust-001", "amount": 500, "transactionId": "txn-125"}),
    )
    .await;
    assert_eq!(txn_125["status"], "failed");
    assert_eq!(txn_125["reason"], "insufficient_funds");
    assert_eq!(balance(client, stack, "cust-001").await, "150.00");
    assert_eq!(balance(client, stack, "cust-002").await, "100.00");

    let delivered = poll_until(SEED_TIMEOUT, || {
        let n = stack.smtp.messages().len();
        async move { (n >= SEED_EMAILS).then_some(n) }
    })
    .await;
    assert_eq!(delivered, Some(SEED_EMAILS), "emails delivered over SMTP");
    for (_, _, email) in SEED_CUSTOMERS {
        assert!(
            !stack.smtp.messages_to(email).is_empty(),
            "{email} got its mail"
        );
    }
}
