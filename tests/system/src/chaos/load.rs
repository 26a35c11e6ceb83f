//! The load of a chaos run: the replicas it spreads over, the funded accounts, the clients sending
//! transfers (and now and then a new customer), and the [`Ledger`] of what was sent and accepted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::{register_accounts, try_post, Lcg, Stack};

pub(super) const ACCOUNTS: usize = 10;
const DEPOSIT: &str = "1000.00";
const CLIENTS: usize = 4;
/// Pause between a client's requests: a steady load, not a flood.
const PACE: Duration = Duration::from_millis(250);
/// How long outcomes (and deliveries) are waited for.
pub(super) const DRAIN: Duration = Duration::from_secs(150);
/// The services' replicas.
pub(super) const REPLICAS: [(&str, usize); 3] = [
    ("transaction-service", 3),
    ("notification-service", 3),
    ("customer-service", 2),
];

/// Requests and what became of them, shared by the load's clients.
#[derive(Default)]
pub(super) struct Ledger {
    pub(super) sent: Vec<String>,
    pub(super) accepted: Vec<String>,
    /// When each request was first sent.
    pub(super) sent_at: BTreeMap<String, SystemTime>,
}

/// Where the load goes and what became of it: the HTTP client, every replica's URL of
/// transaction-service and customer-service, the shared [`Ledger`].
pub(super) struct Targets {
    pub(super) client: reqwest::Client,
    pub(super) transactions: Vec<String>,
    pub(super) customers: Vec<String>,
    pub(super) ledger: Arc<Mutex<Ledger>>,
}

/// The stack for replicas, with [`REPLICAS`] processes of each service.
pub(super) async fn start_stack(database_server: Option<&str>) -> Stack {
    let mut stack = Stack::start_for_replicas_on(database_server).await;
    for (name, count) in REPLICAS {
        stack.scale_to(name, count).await;
    }
    stack
}

/// Registers `accounts` and deposits [`DEPOSIT`] into each.
pub(super) async fn fund(targets: &Targets, stack: &Stack, accounts: &[String]) {
    register_accounts(&targets.client, stack, accounts).await;
    for account in accounts {
        let body = json!({"transactionId": format!("dep-{account}"), "to": account,
                          "amount": DEPOSIT});
        assert!(
            send(
                &targets.client,
                &targets.transactions,
                "/transactions",
                &body,
                &targets.ledger
            )
            .await,
            "deposit accepted"
        );
    }
}

/// The load: [`CLIENTS`] clients sending transfers among the funded accounts, and now and then
/// a new customer, until stopped.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients; client `n` draws from a sequence derived from `seed` and `n`.
    pub(super) fn start(targets: &Targets, accounts: &[String], seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for n in 0..CLIENTS {
            let (client, ledger, stop) = (
                targets.client.clone(),
                Arc::clone(&targets.ledger),
                Arc::clone(&stop),
            );
            let (transaction_urls, customer_urls) =
                (targets.transactions.clone(), targets.customers.clone());
            let accounts = accounts.to_vec();
            let mut random = Lcg::new(seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9));
            clients.push(tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    if i.is_multiple_of(10) {
                        let id = format!("chaos-new-{n}-{i}");
                        let body = json!({"id": id, "name": format!("Customer {id}"),
                                          "email": crate::email(&id)});
                        let _ = crate::http::post_to_any(
                            &client,
                            &customer_urls,
                            "/app/customers",
                            &body,
                        )
                        .await;
                    }
                    let from = random.below(ACCOUNTS as u64) as usize;
                    let to = (from + 1 + random.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                    let cents = 1 + random.below(5_000);
                    let body = json!({"transactionId": format!("c{n}-{i:05}"),
                        "from": accounts[from], "to": accounts[to],
                        "amount": format!("{}.{:02}", cents / 100, cents % 100)});
                    send(&client, &transaction_urls, "/transactions", &body, &ledger).await;
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        Self { stop, clients }
    }

    /// Stops the clients and waits until they have.
    pub(super) async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("load client");
        }
    }
}

/// Every replica's base URL (running or not: a request to a dead one goes to the next).
pub(super) fn all_urls(stack: &mut Stack, name: &str) -> Vec<String> {
    let count = REPLICAS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(1, |(_, c)| *c);
    (0..count).map(|n| stack.replica(name, n).url()).collect()
}

/// Posts `body` to replica after replica until one accepts it (a load balancer's retry); notes
/// it sent, and accepted when it was. False when none did.
pub(super) async fn send(
    client: &reqwest::Client,
    urls: &[String],
    path: &str,
    body: &Value,
    ledger: &Mutex<Ledger>,
) -> bool {
    let id = body["transactionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    {
        let mut ledger = ledger.lock().expect("ledger");
        ledger.sent.push(id.clone());
        ledger
            .sent_at
            .entry(id.clone())
            .or_insert_with(SystemTime::now);
    }
    let start = id.len() % urls.len();
    for attempt in 0..urls.len() * 4 {
        let url = format!("{}{path}", urls[(start + attempt) % urls.len()]);
        if let Ok((status, _)) = try_post(client, &url, body).await {
            if matches!(status, 200 | 202) {
                ledger.lock().expect("ledger").accepted.push(id);
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
