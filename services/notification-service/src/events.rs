//! Event handlers. Each applies its event in ONE database transaction with the inbox claim: the
//! projection update and the delivery rows (`pending`) are written together, so a redelivered
//! event changes nothing and each notification is recorded once. Sending is the sender's job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use contracts::envelope::EventMetadata;
use contracts::topics;
use contracts::{CustomerCreated, TransactionFailed, TransactionProcessed};
use platform::kafka::{HandleError, Handler, Record};
use platform::{inbox, Database};
use tracing::Instrument;

use crate::feed::Hub;
use crate::messages::{self, Contact, Notice};
use crate::storage;

/// Inbox name of the `Customer.created` consumer.
pub const CUSTOMERS_CONSUMER: &str = "notification-service.customers";
/// Inbox name of the `transaction.processed` / `transaction.failed` consumer.
pub const TRANSACTIONS_CONSUMER: &str = "notification-service.transactions";

fn transient(error: impl std::fmt::Display) -> HandleError {
    HandleError::Transient(format!("database: {error}"))
}

/// `Customer.created`: updates the projection and records the welcome message.
pub struct CustomerEvents {
    db: Database,
    hub: Hub,
}

impl CustomerEvents {
    /// A handler writing to `db` and announcing on `hub`.
    pub fn new(db: Database, hub: Hub) -> Self {
        Self { db, hub }
    }

    async fn apply(
        &self,
        metadata: &EventMetadata,
        customer: &CustomerCreated,
    ) -> Result<(), HandleError> {
        let mut tx = self.db.begin().await.map_err(transient)?;
        if !inbox::claim(&mut tx, CUSTOMERS_CONSUMER, &metadata.id)
            .await
            .map_err(transient)?
        {
            tx.rollback().await.map_err(transient)?;
            tracing::debug!("event already applied; skipped");
            return Ok(());
        }
        storage::upsert_customer(&mut tx, &Contact::from(customer))
            .await
            .map_err(transient)?;
        let recorded = storage::record(&mut tx, &metadata.id, &messages::welcome(customer), None)
            .await
            .map_err(transient)?;
        tx.commit().await.map_err(transient)?;
        tracing::info!("customer projected; welcome message recorded");
        self.hub.recorded(recorded.into_iter().collect());
        Ok(())
    }
}

impl Handler for CustomerEvents {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let (metadata, customer) = record.decode::<CustomerCreated>()?;
        let span = tracing::info_span!("customer_created", event_id = %metadata.id,
            customer_id = %customer.id);
        self.apply(&metadata, &customer).instrument(span).await
    }
}

/// `transaction.processed` and `transaction.failed`: records an alert for each customer
/// involved. A recipient missing from the projection makes the record wait (transient error,
/// retried with backoff by the consumer) for up to `customer_wait`: its `Customer.created` is
/// on another topic, consumed by another consumer, and may simply lag. After that (or at once
/// when the event itself reports an unknown account) the alert is recorded as `failed`.
pub struct TransactionEvents {
    db: Database,
    hub: Hub,
    customer_wait: Duration,
    /// When this process first saw each event still waiting for a customer.
    waiting: Mutex<HashMap<String, Instant>>,
}

impl TransactionEvents {
    /// A handler writing to `db`, announcing on `hub`, waiting up to `customer_wait`.
    pub fn new(db: Database, hub: Hub, customer_wait: Duration) -> Self {
        Self {
            db,
            hub,
            customer_wait,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// How long `event_id` has been waiting (starting now on the first call).
    fn waited(&self, event_id: &str) -> Duration {
        let Ok(mut waiting) = self.waiting.lock() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        // Forget entries another consumer instance took over long ago.
        let horizon = self.customer_wait * 4;
        waiting.retain(|_, since| now.duration_since(*since) < horizon);
        now.duration_since(*waiting.entry(event_id.to_string()).or_insert(now))
    }

    fn done_waiting(&self, event_id: &str) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(event_id);
        }
    }

    async fn apply(&self, metadata: &EventMetadata, notice: &Notice) -> Result<(), HandleError> {
        let mut tx = self.db.begin().await.map_err(transient)?;
        if !inbox::claim(&mut tx, TRANSACTIONS_CONSUMER, &metadata.id)
            .await
            .map_err(transient)?
        {
            tx.rollback().await.map_err(transient)?;
            self.done_waiting(&metadata.id);
            tracing::debug!("event already applied; skipped");
            return Ok(());
        }
        let mut contacts = HashMap::new();
        for id in notice.parties() {
            if let Some(contact) = storage::find_customer(&mut tx, &id)
                .await
                .map_err(transient)?
            {
                contacts.insert(id, contact);
            }
        }
        let recipients = notice.recipients();
        let missing: Vec<&str> = recipients
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !contacts.contains_key(*id))
            .collect();
        let mut gave_up = None;
        if !missing.is_empty() {
            let waited = self.waited(&metadata.id);
            if notice.reports_unknown_account() {
                gave_up = Some("the transaction failed with unknown_account".to_string());
            } else if waited < self.customer_wait {
                tx.rollback().await.map_err(transient)?;
                return Err(HandleError::Transient(format!(
                    "customer {} not seen yet; waiting for its Customer.created",
                    missing.join(", ")
                )));
            } else {
                gave_up = Some(format!(
                    "no Customer.created arrived within {} s",
                    waited.as_secs()
                ));
            }
        }
        let mut recorded = Vec::new();
        for (id, kind) in &recipients {
            let (contact, failure) = match contacts.get(id) {
                Some(contact) => (contact.clone(), None),
                None => (
                    Contact {
                        id: id.clone(),
                        name: id.clone(),
                        email: String::new(),
                    },
                    Some(format!(
                        "customer {id} is unknown: {}",
                        gave_up.as_deref().unwrap_or("not in the projection")
                    )),
                ),
            };
            let draft = notice.render(&contact, *kind, &contacts);
            if let Some(delivery) =
                storage::record(&mut tx, &metadata.id, &draft, failure.as_deref())
                    .await
                    .map_err(transient)?
            {
                recorded.push(delivery);
            }
        }
        tx.commit().await.map_err(transient)?;
        self.done_waiting(&metadata.id);
        match gave_up {
            Some(reason) => tracing::warn!(missing = ?missing, %reason,
                "alerts for unknown customers recorded as failed"),
            None => tracing::info!(alerts = recorded.len(), "transaction alerts recorded"),
        }
        self.hub.recorded(recorded);
        Ok(())
    }
}

impl Handler for TransactionEvents {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let (metadata, notice) = match record.topic.as_str() {
            topics::TRANSACTION_PROCESSED => {
                let (metadata, event) = record.decode::<TransactionProcessed>()?;
                (metadata, Notice::Processed(event))
            }
            topics::TRANSACTION_FAILED => {
                let (metadata, event) = record.decode::<TransactionFailed>()?;
                (metadata, Notice::Failed(event))
            }
            other => {
                return Err(HandleError::Permanent(format!(
                    "notification-service does not handle topic {other}"
                )))
            }
        };
        let span = tracing::info_span!("transaction_event", event_id = %metadata.id,
            topic = %record.topic, transaction_id = %notice.request().transaction_id);
        self.apply(&metadata, &notice).instrument(span).await
    }
}
