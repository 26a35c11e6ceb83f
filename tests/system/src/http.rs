//! Calling the services over HTTP: JSON requests, customers and accounts, balances.

use std::collections::BTreeMap;
use std::time::Duration;

use platform::testing::poll_until;

use crate::verdict::minor;
use crate::Stack;

/// A client that sends `Authorization: Bearer <key>` with every request.
pub fn keyed_client(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"));
    headers.insert(
        reqwest::header::AUTHORIZATION,
        bearer.expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// POSTs JSON and returns the status and the JSON body.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// GETs JSON and returns the status and the JSON body.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// POSTs JSON to a service that may crash meanwhile: the status and JSON body, or the transport
/// error (no answer).
pub async fn try_post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let response = client.post(url).json(body).send().await?;
    let status = response.status().as_u16();
    Ok((
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    ))
}

/// Registers customer `id` (name and e-mail derived from it); `Err` when no answer came.
pub async fn register_customer(
    client: &reqwest::Client,
    stack: &Stack,
    id: &str,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    try_post(
        client,
        &format!("{}/app/customers", stack.url("customer-service")),
        &serde_json::json!({"id": id, "name": format!("Customer {id}"), "email": email(id)}),
    )
    .await
}

/// The e-mail address of customer `id`.
pub fn email(id: &str) -> String {
    format!("{id}@example.com")
}

/// Waits until transaction-service has opened every account in `ids`; panics after `timeout`.
pub async fn wait_accounts(
    client: &reqwest::Client,
    stack: &Stack,
    ids: &[String],
    timeout: Duration,
) {
    for id in ids {
        let url = format!("{}/accounts/{id}", stack.url("transaction-service"));
        assert!(wait_ok(client, &url, timeout).await, "account {id} opened");
    }
}

/// Registers customers `ids` (each must be created: 201) and waits until transaction-service has
/// opened their accounts (up to 60 s each).
pub async fn register_accounts(client: &reqwest::Client, stack: &Stack, ids: &[String]) {
    for id in ids {
        let (status, body) = register_customer(client, stack, id)
            .await
            .expect("customer-service answers");
        assert_eq!(status, 201, "{body}");
    }
    wait_accounts(client, stack, ids, Duration::from_secs(60)).await;
}

/// A stack started with the default environment and `customers` customers `acct-0`, … with
/// their accounts (see [`register_accounts`]); with the ids.
pub async fn stack_with_accounts(
    client: &reqwest::Client,
    customers: usize,
) -> (Stack, Vec<String>) {
    let stack = Stack::start(&[]).await;
    let accounts: Vec<String> = (0..customers).map(|n| format!("acct-{n}")).collect();
    register_accounts(client, &stack, &accounts).await;
    (stack, accounts)
}

/// Sends `GET url` until it answers with a success status; false when none came within
/// `timeout`.
pub async fn wait_ok(client: &reqwest::Client, url: &str, timeout: Duration) -> bool {
    poll_until(timeout, || {
        let request = client.get(url).send();
        async move {
            request
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await
    .is_some()
}

/// Balances of `accounts` in minor units, as transaction-service reports them.
pub async fn balances(
    client: &reqwest::Client,
    stack: &Stack,
    accounts: &[String],
) -> BTreeMap<String, i64> {
    let mut balances = BTreeMap::new();
    for account in accounts {
        let url = format!("{}/accounts/{account}", stack.url("transaction-service"));
        let (status, body) = get(client, &url).await;
        assert_eq!(status, 200, "{account}: {body}");
        balances.insert(
            account.clone(),
            minor(body["balance"].as_str().expect("balance")),
        );
    }
    balances
}

/// The balance of `account`, as transaction-service reports it.
pub async fn balance(client: &reqwest::Client, stack: &Stack, account: &str) -> String {
    let (status, body) = get(
        client,
        &format!("{}/accounts/{account}", stack.url("transaction-service")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["balance"].as_str().expect("balance").to_string()
}

/// Posts `body` to `path` of one replica after another (four rounds, 200 ms apart) until one
/// answers 200 or 201 (a load balancer's retry); false when none did.
pub async fn post_to_any(
    client: &reqwest::Client,
    urls: &[String],
    path: &str,
    body: &serde_json::Value,
) -> bool {
    for attempt in 0..urls.len() * 4 {
        let url = format!("{}{path}", urls[attempt % urls.len()]);
        if let Ok((status, _)) = try_post(client, &url, body).await {
            if matches!(status, 200 | 201) {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

/// Waits until `GET url` (one transaction) says `processed` or `failed`; `false` when it has not
/// within `timeout` (no answer or an unreadable one counts as not yet).
pub async fn wait_decided(client: &reqwest::Client, url: &str, timeout: Duration) -> bool {
    poll_until(timeout, || {
        let request = client.get(url).send();
        async move {
            let body: serde_json::Value = request.await.ok()?.json().await.ok()?;
            (body["status"] == "processed" || body["status"] == "failed").then_some(())
        }
    })
    .await
    .is_some()
}

/// The `transactionId` of each request of `bodies`.
pub fn transaction_ids<'a>(bodies: impl IntoIterator<Item = &'a serde_json::Value>) -> Vec<String> {
    bodies
        .into_iter()
        .map(|b| b["transactionId"].as_str().expect("id").to_string())
        .collect()
}
