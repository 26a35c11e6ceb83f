//! `cargo xtask demo`: the seed's flow against the running stack: two customers, a deposit, a
//! transfer that succeeds and one that fails (insufficient funds); then the event timeline read
//! back from Kafka and the notifications the notification-service recorded. [`flow`] is the same
//! run against any three base URLs, checking the outcomes (`cargo xtask images --smoke` uses it).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::kafka::Ports;
use crate::process;
use crate::stack;

/// The base URLs of the three services the flow talks to.
pub struct Endpoints {
    /// customer-service, e.g. `http://127.0.0.1:3001`.
    pub customers: String,
    /// transaction-service.
    pub transactions: String,
    /// notification-service.
    pub notifications: String,
}

impl Endpoints {
    /// The three on 127.0.0.1 at the given ports.
    pub fn local(customers: u16, transactions: u16, notifications: u16) -> Self {
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        Self {
            customers: url(customers),
            transactions: url(transactions),
            notifications: url(notifications),
        }
    }
}

/// What a passed flow saw.
pub struct Outcome {
    /// The two customers it created.
    pub customers: [String; 2],
    /// Their notifications, sent or not (each has a sent welcome e-mail).
    pub notifications: usize,
}

/// A small JSON-over-HTTP client (errors are statuses, not failures), with the key of
/// `API_KEYS` that may do what the demo does.
pub(crate) struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// A client with a 10 s timeout.
    pub(crate) fn new() -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self { agent }
    }

    /// `GET url`: the status and JSON body.
    pub(crate) fn get(&self, url: &str) -> Result<(u16, Value)> {
        let resp = self
            .agent
            .get(url)
            .header("Authorization", api_key_header())
            .call()
            .with_context(|| format!("GET {url}"))?;
        Ok(answer(resp))
    }

    /// `POST url` with `body`: the status and JSON body.
    pub(crate) fn post(&self, url: &str, body: &Value) -> Result<(u16, Value)> {
        let resp = self
            .agent
            .post(url)
            .header("Authorization", api_key_header())
            .send_json(body)
            .with_context(|| format!("POST {url}"))?;
        Ok(answer(resp))
    }
}

/// The status and JSON body of an answer (`null` when the body is not JSON).
fn answer(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The scopes the demo's flow uses: it registers, moves money, reads the ledger and
/// the notifications.
const DEMO_SCOPES: [&str; 4] = [
    "customers:write",
    "transactions:write",
    "transactions:read",
    "notifications:read",
];

/// `Bearer <first key with every scope the flow uses>` when `API_KEYS` is set (the services then
/// require a key for every request).
fn api_key_header() -> String {
    let key = stack::api_key_with(&DEMO_SCOPES).unwrap_or_default();
    format!("Bearer {key}")
}

/// `cargo xtask demo`: the seed's flow against the running stack (started detached when it is
/// not running).
pub fn demo() -> Result<()> {
    stack::check_port_setting()?;
    if !stack::SERVICES.iter().all(|s| stack::ready(s.port())) {
        println!("the stack is not running; starting it (detached)…");
        stack::up(true)?;
    }
    run()
}

/// Runs the demo flow against the stack of `cargo xtask up`.
pub fn run() -> Result<()> {
    let [customers, transactions, notifications, console] = stack::SERVICES;
    let at = Endpoints::local(customers.port(), transactions.port(), notifications.port());
    flow(&at, true)?;
    println!(
        "\nconsole:   {}/  (every topic, each transaction's path, balances)",
        console.url()
    );
    println!(
        "dashboard: {}/  (cargo xtask down stops a detached stack)",
        at.notifications
    );
    Ok(())
}

/// The seed's flow against `at`, printing what happens; `timeline` also reads the events back
/// from the local broker (`EMS_KAFKA_*` ports). Fails unless both accounts open, the deposit and
/// the transfer are processed, the overdraft fails, and each customer's welcome e-mail is sent.
pub fn flow(at: &Endpoints, timeline: bool) -> Result<Outcome> {
    let http = Http::new();
    let started_ms = now_ms().saturating_sub(1000);
    let suffix = process::random_string(6, b"abcdefghijklmnopqrstuvwxyz0123456789")?;
    let alice = format!("alice-{suffix}");
    let bob = format!("bob-{suffix}");

    println!("\n1. customers");
    create_customers(&http, at, [&alice, &bob])?;

    println!("\n2. transactions");
    transactions(&http, &at.transactions, &alice, &bob)?;
    for id in [&alice, &bob] {
        let (_, v) = http.get(&format!("{}/accounts/{id}", at.transactions))?;
        println!("   GET /accounts/{id} -> {v}");
    }

    if timeline {
        println!("\n3. event timeline (from Kafka)");
        let keys: BTreeSet<String> = [alice.clone(), bob.clone()].into_iter().collect();
        match read_timeline(started_ms, &keys) {
            Ok(lines) if lines.is_empty() => println!("   (no events found)"),
            Ok(lines) => lines.iter().for_each(|l| println!("   {l}")),
            Err(e) => println!("   (could not read the topics: {e:#})"),
        }
    }

    println!("\n4. notifications");
    let mut total = 0;
    for id in [&alice, &bob] {
        total += notifications(&http, &at.notifications, id)?;
    }
    Ok(Outcome {
        customers: [alice, bob],
        notifications: total,
    })
}

/// Creates the two customers and waits until transaction-service has opened their accounts.
fn create_customers(http: &Http, at: &Endpoints, ids: [&String; 2]) -> Result<()> {
    for (id, name) in ids.into_iter().zip(["Alice Example", "Bob Example"]) {
        let body = json!({ "id": id, "name": name, "email": format!("{id}@example.com") });
        let (status, answer) = http.post(&format!("{}/app/customers", at.customers), &body)?;
        if status != 201 && status != 200 {
            bail!("POST /app/customers answered {status}: {answer}");
        }
        println!("   POST /app/customers {body} -> {status}");
    }
    for id in ids {
        wait_for(&format!("account {id}"), Duration::from_secs(60), || {
            Ok(http.get(&format!("{}/accounts/{id}", at.transactions))?.0 == 200)
        })?;
    }
    println!("   transaction-service opened both accounts (from Customer.created)");
    Ok(())
}

/// A deposit to `alice`, a transfer to `bob` and an overdraft back, each waited for and checked.
fn transactions(http: &Http, transactions_url: &str, alice: &str, bob: &str) -> Result<()> {
    let flows = [
        (
            "deposit",
            json!({ "to": alice, "amount": 100 }),
            "processed",
        ),
        (
            "transfer",
            json!({ "from": alice, "to": bob, "amount": "30.00" }),
            "processed",
        ),
        (
            "transfer (too much)",
            json!({ "from": bob, "to": alice, "amount": 1000 }),
            "failed",
        ),
    ];
    for (label, body, expected) in flows {
        let (status, answer) = http.post(&format!("{transactions_url}/transactions"), &body)?;
        if status != 202 {
            bail!("POST /transactions answered {status}: {answer}");
        }
        let id = answer["transactionId"]
            .as_str()
            .context("no transactionId in the answer")?
            .to_string();
        let view = settled(http, transactions_url, &id)?;
        let outcome = match view["status"].as_str() {
            Some("failed") => format!(
                "failed: {} ({})",
                view["reason"].as_str().unwrap_or("?"),
                view["message"].as_str().unwrap_or("")
            ),
            Some(s) => format!("{s}, balances {}", view["balances"]),
            None => view.to_string(),
        };
        println!("   {label:<20} {body} -> 202 {id}: {outcome}");
        if view["status"].as_str() != Some(expected) {
            bail!("{label}: expected {expected}, got {outcome}");
        }
    }
    Ok(())
}

/// Transaction `id` once it is no longer `requested`.
fn settled(http: &Http, transactions_url: &str, id: &str) -> Result<Value> {
    let mut view = Value::Null;
    wait_for(
        &format!("transaction {id}"),
        Duration::from_secs(60),
        || {
            let (s, v) = http.get(&format!("{transactions_url}/transactions/{id}"))?;
            let done = s == 200 && v["status"].as_str().is_some_and(|s| s != "requested");
            view = v;
            Ok(done)
        },
    )?;
    Ok(view)
}

/// Prints the notifications of customer `id` once they include a sent welcome e-mail and have
/// settled; fails without one. Returns how many there are.
fn notifications(http: &Http, notifications_url: &str, id: &str) -> Result<usize> {
    let url = format!("{notifications_url}/notifications?customerId={id}");
    // Done when the list is non-empty and has not changed for two seconds.
    let mut items = Vec::new();
    let mut changed = Instant::now();
    let _ = wait_for(
        &format!("notifications of {id}"),
        Duration::from_secs(30),
        || {
            let (s, v) = http.get(&url)?;
            let now = list_of(&v);
            if now.len() != items.len() {
                changed = Instant::now();
            }
            items = now;
            Ok(s == 200 && welcome_sent(&items) && changed.elapsed() >= Duration::from_secs(2))
        },
    );
    println!("   {id}: {} notification(s)", items.len());
    for n in &items {
        println!("     {}", summarize_notification(n));
    }
    if !welcome_sent(&items) {
        bail!("no sent welcome e-mail for {id}");
    }
    Ok(items.len())
}

/// The records of the business topics keyed by one of `keys`, since `since_ms`, oldest first.
fn read_timeline(since_ms: u64, keys: &BTreeSet<String>) -> Result<Vec<String>> {
    let brokers = Ports::from_env()?.brokers();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "xtask-demo")
        .set("enable.auto.commit", "false")
        .set("log_level", "0")
        .create()?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        if contracts::topics::ALL.contains(&t.name()) {
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut rows: Vec<(i64, String)> = Vec::new();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(2) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                let ts = m.timestamp().to_millis().unwrap_or(0);
                let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                if u64::try_from(ts).unwrap_or(0) < since_ms || !keys.contains(key.as_ref()) {
                    continue;
                }
                let ce_type = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "ce_type")
                            .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                    })
                    .unwrap_or_default();
                let payload: Value = m
                    .payload()
                    .and_then(|p| serde_json::from_slice(p).ok())
                    .unwrap_or(Value::Null);
                rows.push((
                    ts,
                    format!(
                        "{} {:<22} key={:<13} {:<26} {}",
                        clock(ts),
                        m.topic(),
                        key,
                        ce_type,
                        summarize_event(&payload)
                    ),
                ));
            }
            Some(Err(e)) => bail!("{e}"),
            None => {}
        }
    }
    rows.sort_by_key(|(ts, _)| *ts);
    Ok(rows.into_iter().map(|(_, l)| l).collect())
}

/// A one-line summary of an event payload.
fn summarize_event(v: &Value) -> String {
    let field = |k: &str| v[k].as_str().map(str::to_string);
    if let Some(email) = field("email") {
        return format!("{} <{email}>", field("name").unwrap_or_default());
    }
    let mut s = format!(
        "{} {}{} {}",
        field("kind").unwrap_or_default(),
        field("amount").unwrap_or_default(),
        field("currency")
            .map(|c| format!(" {c}"))
            .unwrap_or_default(),
        match (field("from"), field("to")) {
            (Some(f), Some(t)) => format!("{f} -> {t}"),
            (Some(f), None) => format!("from {f}"),
            (None, Some(t)) => format!("to {t}"),
            (None, None) => String::new(),
        }
    );
    if let Some(r) = field("reason") {
        s.push_str(&format!(" [{r}]"));
    }
    s
}

/// The items of a list answer (a bare array, or an object holding one).
fn list_of(v: &Value) -> Vec<Value> {
    if let Some(a) = v.as_array() {
        return a.clone();
    }
    v.as_object()
        .and_then(|o| o.values().find_map(|x| x.as_array().cloned()))
        .unwrap_or_default()
}

/// Whether a sent welcome e-mail is among the notifications.
fn welcome_sent(items: &[Value]) -> bool {
    items
        .iter()
        .any(|n| n["kind"] == "welcome" && n["status"] == "sent")
}

/// A one-line summary of a notification record.
fn summarize_notification(n: &Value) -> String {
    let pick = |keys: &[&str]| keys.iter().find_map(|k| n[*k].as_str().map(str::to_string));
    match pick(&["subject", "message", "text"]) {
        Some(text) => format!(
            "[{}] {text}",
            pick(&["status", "deliveryStatus", "state"]).unwrap_or_else(|| "?".into())
        ),
        None => n.to_string(),
    }
}

/// Polls `check` every 300 ms until it returns true or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

/// `HH:MM:SS.mmm` (UTC) of a millisecond timestamp.
fn clock(ms: i64) -> String {
    let ms = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        assert_eq!(clock(3_723_004), "01:02:03.004");
        let v = json!({"kind": "transfer", "amount": "30.00", "currency": "USD", "from": "a", "to": "b"});
        assert_eq!(summarize_event(&v), "transfer 30.00 USD a -> b");
        assert_eq!(list_of(&json!({"items": [1, 2]})).len(), 2);
        assert_eq!(list_of(&json!([1])).len(), 1);
    }
}
