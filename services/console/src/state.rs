//! What the console shows, in memory: the recent window of events, the accounts and their
//! balances, the latest deliveries and the pipeline's health; and the fan-out of every change
//! to the open pages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, Notify};

use crate::window::{ConsoleEvent, Window};

/// Deliveries kept (the newest by creation time).
pub const MAX_DELIVERIES: usize = 1_000;
/// Accounts kept.
pub const MAX_ACCOUNTS: usize = 5_000;
/// Changes buffered for a slow page before it is sent a fresh snapshot instead.
const UPDATES_CAPACITY: usize = 4_096;

/// An account as the console knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Account id (the customer id).
    pub id: String,
    /// The customer's name, when known.
    pub name: Option<String>,
    /// Balance, a decimal string ("150.00"), when known.
    pub balance: Option<String>,
    /// Currency, when known.
    pub currency: Option<String>,
}

/// Lag of one consumer group on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    /// Consumer group (without the prefix).
    pub group: String,
    /// Topic (without the prefix).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// The partition's end (high watermark).
    pub end: i64,
    /// Records not yet processed by the group.
    pub lag: i64,
}

/// Dead letters on one dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterCount {
    /// `<topic>.DLT` (without the prefix).
    pub topic: String,
    /// Records on it.
    pub count: i64,
}

/// The outbox backlog of one service, as its `/metrics` last reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxBacklog {
    /// The service.
    pub service: String,
    /// Rows not yet published; `None` when the service does not report it.
    pub pending_rows: Option<i64>,
    /// Age of the oldest of them, in seconds; `None` when the service does not report it.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// The pipeline's health, as last measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineHealth {
    /// Lag per partition per consumer group.
    pub lag: Vec<PartitionLag>,
    /// Dead letters per topic.
    pub dead_letters: Vec<DeadLetterCount>,
    /// Outbox backlog per service (read from the services' metrics, apart from the rest).
    pub outbox: Vec<OutboxBacklog>,
    /// When it was measured (RFC 3339), if ever.
    pub checked_at: Option<String>,
    /// Why it could not be measured, if it could not.
    pub error: Option<String>,
}

/// Everything a page needs when it opens.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The recent window, newest first.
    pub events: Vec<ConsoleEvent>,
    /// The accounts, by id.
    pub accounts: Vec<Account>,
    /// The latest deliveries (as notification-service reports them).
    pub deliveries: Vec<Value>,
    /// The pipeline's health.
    pub health: PipelineHealth,
}

/// One change, sent to the open pages as a server-sent event named by [`Update::name`].
#[derive(Debug, Clone)]
pub enum Update {
    /// A new event in the window.
    Event(Box<ConsoleEvent>),
    /// An account changed.
    Account(Account),
    /// A delivery was recorded or changed.
    Delivery(Value),
    /// The health was measured again.
    Health(PipelineHealth),
}

impl Update {
    /// The server-sent event name.
    pub fn name(&self) -> &'static str {
        match self {
            Update::Event(_) => "event",
            Update::Account(_) => "account",
            Update::Delivery(_) => "delivery",
            Update::Health(_) => "health",
        }
    }

    /// The JSON data.
    pub fn data(&self) -> String {
        let json = match self {
            Update::Event(event) => serde_json::to_string(event),
            Update::Account(account) => serde_json::to_string(account),
            Update::Delivery(delivery) => serde_json::to_string(delivery),
            Update::Health(health) => serde_json::to_string(health),
        };
        json.unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }
}

struct Inner {
    window: Window,
    accounts: BTreeMap<String, Account>,
    deliveries: BTreeMap<String, Value>,
    health: PipelineHealth,
}

/// The console's state, shared by the readers and the pages (cheap to clone).
#[derive(Clone)]
pub struct Console {
    inner: Arc<Mutex<Inner>>,
    updates: broadcast::Sender<Update>,
    stale: Arc<Mutex<BTreeSet<String>>>,
    refresh: Arc<Notify>,
}

impl Console {
    /// An empty console whose window keeps `window` events.
    pub fn new(window: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                window: Window::new(window),
                accounts: BTreeMap::new(),
                deliveries: BTreeMap::new(),
                health: PipelineHealth::default(),
            })),
            updates: broadcast::channel(UPDATES_CAPACITY).0,
            stale: Arc::new(Mutex::new(BTreeSet::new())),
            refresh: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, update: Update) {
        // Nobody listening is fine.
        let _ = self.updates.send(update);
    }

    /// A new listener of changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    /// Everything, for a page that opens.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let mut deliveries: Vec<Value> = inner.deliveries.values().cloned().collect();
        deliveries.sort_by(|a, b| created_at(b).cmp(created_at(a)));
        Snapshot {
            events: inner.window.newest_first(),
            accounts: inner.accounts.values().cloned().collect(),
            deliveries,
            health: inner.health.clone(),
        }
    }

    /// Takes a record into the window and applies what it says about accounts: a new customer,
    /// balances after a processed transaction (then read again from transaction-service).
    pub fn record(&self, event: ConsoleEvent) {
        let mut changed = Vec::new();
        let kept = {
            let mut inner = self.lock();
            let payload = &event.payload;
            if event.topic == contracts::topics::CUSTOMER_CREATED {
                if let Some(id) = payload.get("id").and_then(Value::as_str) {
                    let name = payload.get("name").and_then(Value::as_str);
                    let account = account_entry(&mut inner.accounts, id);
                    if let Some(account) = account {
                        if name.is_some() && account.name.as_deref() != name {
                            account.name = name.map(str::to_string);
                            changed.push(account.clone());
                        }
                    }
                }
            }
            if event.topic == contracts::topics::TRANSACTION_PROCESSED {
                let currency = payload.get("currency").and_then(Value::as_str);
                if let Some(balances) = payload.get("balances").and_then(Value::as_object) {
                    for (id, balance) in balances {
                        let Some(account) = account_entry(&mut inner.accounts, id) else {
                            continue;
                        };
                        let balance = balance.as_str().map(str::to_string);
                        if balance.is_some() && account.balance != balance {
                            account.balance = balance;
                            account.currency = currency.map(str::to_string);
                            changed.push(account.clone());
                        }
                    }
                }
            }
            // An event older than the whole window is not shown; its effect on accounts counts.
            inner.window.push(event.clone())
        };
        self.refresh_accounts(event.customers.iter().cloned());
        for account in changed {
            self.publish(Update::Account(account));
        }
        if kept {
            self.publish(Update::Event(Box::new(event)));
        }
    }

    /// An account as transaction-service reports it (the truth: it wins over event balances).
    pub fn account_read(&self, id: &str, name: Option<&str>, balance: &str, currency: &str) {
        let changed = {
            let mut inner = self.lock();
            let Some(account) = account_entry(&mut inner.accounts, id) else {
                return;
            };
            let before = account.clone();
            if let Some(name) = name {
                account.name = Some(name.to_string());
            }
            account.balance = Some(balance.to_string());
            account.currency = Some(currency.to_string());
            (*account != before).then(|| account.clone())
        };
        if let Some(account) = changed {
            self.publish(Update::Account(account));
        }
    }

    /// Records a customer known from customer-service's list.
    pub fn customer_listed(&self, id: &str, name: &str) {
        let changed = {
            let mut inner = self.lock();
            let Some(account) = account_entry(&mut inner.accounts, id) else {
                return;
            };
            (account.name.as_deref() != Some(name)).then(|| {
                account.name = Some(name.to_string());
                account.clone()
            })
        };
        if let Some(account) = changed {
            self.publish(Update::Account(account));
        }
        self.refresh_accounts([id.to_string()]);
    }

    /// A delivery from notification-service (new or changed); the oldest are dropped past
    /// [`MAX_DELIVERIES`].
    pub fn delivery(&self, delivery: Value) {
        let Some(id) = delivery
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        {
            let mut inner = self.lock();
            if inner.deliveries.get(&id) == Some(&delivery) {
                return;
            }
            inner.deliveries.insert(id, delivery.clone());
            if inner.deliveries.len() > MAX_DELIVERIES {
                let oldest = inner
                    .deliveries
                    .iter()
                    .min_by(|a, b| created_at(a.1).cmp(created_at(b.1)))
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    inner.deliveries.remove(&oldest);
                }
            }
        }
        self.publish(Update::Delivery(delivery));
    }

    /// The pipeline's health, measured again (the outbox backlog is kept: it is read apart).
    pub fn health(&self, health: PipelineHealth) {
        let health = {
            let mut inner = self.lock();
            if inner.health.lag == health.lag
                && inner.health.dead_letters == health.dead_letters
                && inner.health.error == health.error
            {
                inner.health.checked_at = health.checked_at;
                return;
            }
            let outbox = std::mem::take(&mut inner.health.outbox);
            inner.health = PipelineHealth { outbox, ..health };
            inner.health.clone()
        };
        self.publish(Update::Health(health));
    }

    /// The services' outbox backlogs, read again (see [`crate::backlogs`]); the pages are told
    /// only of a change.
    pub fn backlogs(&self, backlogs: Vec<OutboxBacklog>) {
        let health = {
            let mut inner = self.lock();
            if inner.health.outbox == backlogs {
                return;
            }
            inner.health.outbox = backlogs;
            inner.health.clone()
        };
        self.publish(Update::Health(health));
    }

    /// Asks for `ids` to be read again from transaction-service.
    pub fn refresh_accounts(&self, ids: impl IntoIterator<Item = String>) {
        let mut stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
        let before = stale.len();
        stale.extend(ids);
        if stale.len() > before {
            self.refresh.notify_one();
        }
    }

    /// Waits until some accounts are to be read again, and takes them.
    pub async fn stale_accounts(&self) -> BTreeSet<String> {
        loop {
            let taken =
                std::mem::take(&mut *self.stale.lock().unwrap_or_else(PoisonError::into_inner));
            if !taken.is_empty() {
                return taken;
            }
            self.refresh.notified().await;
        }
    }
}

/// The entry of account `id`, created when there is room.
fn account_entry<'a>(
    accounts: &'a mut BTreeMap<String, Account>,
    id: &str,
) -> Option<&'a mut Account> {
    if !accounts.contains_key(id) && accounts.len() >= MAX_ACCOUNTS {
        return None;
    }
    Some(accounts.entry(id.to_string()).or_insert_with(|| Account {
        id: id.to_string(),
        ..Account::default()
    }))
}

fn created_at(delivery: &Value) -> &str {
    delivery
        .get("createdAt")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(topic: &str, timestamp: i64, payload: Value) -> ConsoleEvent {
        ConsoleEvent::of(
            topic,
            0,
            timestamp,
            timestamp,
            None,
            Vec::new(),
            Some(payload.to_string().as_bytes()),
        )
    }

    #[tokio::test]
    async fn customers_and_processed_balances_update_accounts_and_pages() {
        let console = Console::new(10);
        let mut updates = console.subscribe();
        console.record(record(
            "Customer.created",
            1,
            json!({"id": "cust-001", "name": "John Doe"}),
        ));
        console.record(record(
            "transaction.processed",
            2,
            json!({"transactionId": "dep-1", "to": "cust-001", "amount": "250.00",
                   "currency": "USD", "balances": {"cust-001": "250.00"}}),
        ));
        let names: Vec<&str> = std::iter::from_fn(|| updates.try_recv().ok())
            .map(|u| u.name())
            .collect();
        assert_eq!(names, ["account", "event", "account", "event"]);
        let snapshot = console.snapshot();
        assert_eq!(
            snapshot.accounts,
            [Account {
                id: "cust-001".into(),
                name: Some("John Doe".into()),
                balance: Some("250.00".into()),
                currency: Some("USD".into()),
            }]
        );
        assert_eq!(snapshot.events[0].transaction_id.as_deref(), Some("dep-1"));
        let stale = console.stale_accounts().await;
        assert!(stale.contains("cust-001"), "read again from the service");
    }

    #[test]
    fn the_service_s_balance_wins_and_only_changes_are_sent() {
        let console = Console::new(10);
        let mut updates = console.subscribe();
        console.account_read("a", Some("Ann"), "1.00", "USD");
        console.account_read("a", None, "1.00", "USD");
        assert_eq!(updates.try_recv().unwrap().name(), "account");
        assert!(
            updates.try_recv().is_err(),
            "nothing changed the second time"
        );
    }

    #[test]
    fn the_outbox_backlog_survives_a_new_lag_measurement_and_only_changes_are_sent() {
        let console = Console::new(10);
        let mut updates = console.subscribe();
        let backlog = vec![OutboxBacklog {
            service: "customer-service".into(),
            pending_rows: Some(4),
            oldest_pending_age_seconds: None,
        }];
        console.backlogs(backlog.clone());
        console.backlogs(backlog.clone());
        assert_eq!(updates.try_recv().unwrap().name(), "health");
        assert!(
            updates.try_recv().is_err(),
            "nothing changed the second time"
        );
        console.health(PipelineHealth {
            error: Some("broker down".into()),
            ..PipelineHealth::default()
        });
        let Update::Health(sent) = updates.try_recv().unwrap() else {
            panic!("a health update was expected");
        };
        assert_eq!(sent.outbox, backlog);
        assert_eq!(console.snapshot().health.outbox, backlog);
    }

    #[test]
    fn deliveries_are_kept_newest_and_bounded() {
        let console = Console::new(10);
        for i in 0..(MAX_DELIVERIES + 5) {
            console.delivery(
                json!({"id": format!("d{i:05}"), "createdAt": format!("2024-01-01T00:00:{i:05}Z")}),
            );
        }
        let deliveries = console.snapshot().deliveries;
        assert_eq!(deliveries.len(), MAX_DELIVERIES);
        assert_eq!(deliveries[0]["id"], format!("d{:05}", MAX_DELIVERIES + 4));
        assert!(deliveries.iter().all(|d| d["id"] != "d00000"));
    }
}
