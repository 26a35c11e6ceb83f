//! Kafka event handlers ([`platform::inbox::Apply`]). The platform applies a batch of a partition's events in ONE database
//! transaction with their inbox claims: the projection update and the delivery rows (`pending`)
//! are written together, so a redelivered event changes nothing and each notification is
//! recorded once. Sending is the sender's job.
//!
//! Every event is checked against its contract (`validate()`) when decoded: one that breaks it
//! (a negative amount, a self-transfer, an unsendable address...) is dead-lettered. Alerts are
//! recorded at most once per (transaction, customer, kind), whatever the event id: a replayed
//! outcome changes nothing.
//!
//! A transaction event for a customer missing from the projection is parked (its
//! `Customer.created` is on another topic and may lag): the partition moves on, and the event is
//! decided when the customer arrives or the wait ends; then the alert is recorded as `failed`.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use contracts::envelope::EventMetadata;
use contracts::topics;
use contracts::{CustomerCreated, TransactionFailed, TransactionProcessed};
use platform::db::Conn;
use platform::inbox::{transient, Applied, Apply, Attempt};
use platform::kafka::{HandleError, Record};
use platform::parking::ParkingLot;

use crate::domain::{Contact, Delivery, Notice};
use crate::feed::Hub;
use crate::messages;
use crate::storage;

/// Inbox name of the `Customer.created` consumer.
pub const CUSTOMERS_CONSUMER: &str = contracts::topics::groups::NOTIFICATION_CUSTOMERS;
/// Inbox name of the `transaction.processed` / `transaction.failed` consumer.
pub const TRANSACTIONS_CONSUMER: &str = contracts::topics::groups::NOTIFICATION_TRANSACTIONS;

/// `Customer.created`: updates the projection and records the welcome message.
pub struct CustomerEvents {
    hub: Hub,
    waiting_alerts: ParkingLot,
}

impl CustomerEvents {
    /// A handler announcing on `hub` and waking the alerts parked in `waiting_alerts`.
    pub fn new(hub: Hub, waiting_alerts: ParkingLot) -> Self {
        Self {
            hub,
            waiting_alerts,
        }
    }
}

impl Apply for CustomerEvents {
    type Event = CustomerCreated;
    type Done = Option<Delivery>;

    fn decode(&self, record: &Record) -> Result<(EventMetadata, CustomerCreated), HandleError> {
        record.decode_valid()
    }

    async fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        customer: &CustomerCreated,
        _attempt: Attempt,
    ) -> Result<Applied<Option<Delivery>>, HandleError> {
        storage::upsert_customer(conn, &Contact::from(customer))
            .await
            .map_err(transient)?;
        let recorded = storage::record(conn, &metadata.id, &messages::welcome(customer), None)
            .await
            .map_err(transient)?;
        tracing::info!(customer_id = %customer.id, "customer projected; welcome message recorded");
        Ok(Applied::Done(recorded))
    }

    fn committed(&self, done: Vec<Option<Delivery>>) {
        if done.is_empty() {
            return;
        }
        self.hub.recorded(done.into_iter().flatten().collect());
        self.waiting_alerts.wake();
    }
}

/// `transaction.processed` and `transaction.failed`: records an alert for each customer
/// involved. A recipient missing from the projection parks the event for up to the lot's grace
/// (`customer_wait`); after that (or at once when the event itself reports an unknown account)
/// the alert is recorded as `failed`.
pub struct TransactionEvents {
    hub: Hub,
}

impl TransactionEvents {
    /// A handler announcing on `hub`.
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }

    /// The parking lot of alerts waiting for their customer, for up to `customer_wait`.
    pub fn parking_lot(customer_wait: Duration) -> ParkingLot {
        ParkingLot::new(TRANSACTIONS_CONSUMER, customer_wait)
    }
}

impl Apply for TransactionEvents {
    type Event = Notice;
    type Done = Vec<Delivery>;

    fn decode(&self, record: &Record) -> Result<(EventMetadata, Notice), HandleError> {
        match record.topic.as_str() {
            topics::TRANSACTION_PROCESSED => {
                let (metadata, event) = record.decode_valid::<TransactionProcessed>()?;
                Ok((metadata, Notice::Processed(event)))
            }
            topics::TRANSACTION_FAILED => {
                let (metadata, event) = record.decode_valid::<TransactionFailed>()?;
                Ok((metadata, Notice::Failed(event)))
            }
            other => Err(HandleError::permanent(format!(
                "notification-service does not handle topic {other}"
            ))),
        }
    }

    async fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        notice: &Notice,
        attempt: Attempt,
    ) -> Result<Applied<Vec<Delivery>>, HandleError> {
        let transaction_id = &notice.request().transaction_id;
        let contacts = known_parties(conn, notice).await?;
        let recipients = notice.recipients();
        let missing: Vec<&str> = recipients
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !contacts.contains_key(*id))
            .collect();
        let gave_up = match give_up_or_wait(notice, &missing, attempt) {
            ControlFlow::Continue(gave_up) => gave_up,
            ControlFlow::Break(wait) => return Ok(wait),
        };
        let mut recorded = Vec::new();
        for (id, kind) in &recipients {
            let (contact, failure) = match contacts.get(id) {
                Some(contact) => (contact.clone(), None),
                None => stand_in(id, gave_up.as_deref()),
            };
            let draft = notice.render(&contact, *kind, &contacts);
            if let Some(delivery) = storage::record(conn, &metadata.id, &draft, failure.as_deref())
                .await
                .map_err(transient)?
            {
                recorded.push(delivery);
            }
        }
        match gave_up {
            Some(reason) => tracing::warn!(%transaction_id, missing = ?missing, %reason,
                "alerts for unknown customers recorded as failed"),
            None => tracing::info!(%transaction_id, alerts = recorded.len(),
                "transaction alerts recorded"),
        }
        Ok(Applied::Done(recorded))
    }

    fn committed(&self, done: Vec<Vec<Delivery>>) {
        self.hub.recorded(done.into_iter().flatten().collect());
    }
}

/// The accounts `notice` names that the projection knows, by id.
async fn known_parties(
    conn: &mut Conn,
    notice: &Notice,
) -> Result<HashMap<String, Contact>, HandleError> {
    let mut contacts = HashMap::new();
    for id in notice.parties() {
        if let Some(contact) = storage::find_customer(&mut *conn, &id)
            .await
            .map_err(transient)?
        {
            contacts.insert(id, contact);
        }
    }
    Ok(contacts)
}

/// What to do when recipients are `missing` from the projection: nothing (`Continue(None)`) when
/// none is; wait for their `Customer.created` (`Break`) unless this is the last attempt or the
/// event itself reports an unknown account; then give up (`Continue(Some(reason))`).
fn give_up_or_wait(
    notice: &Notice,
    missing: &[&str],
    attempt: Attempt,
) -> ControlFlow<Applied<Vec<Delivery>>, Option<String>> {
    if missing.is_empty() {
        ControlFlow::Continue(None)
    } else if notice.reports_unknown_account() {
        ControlFlow::Continue(Some(
            "the transaction failed with unknown_account".to_string(),
        ))
    } else if !attempt.last {
        ControlFlow::Break(Applied::Wait {
            reason: format!(
                "customer {} not seen yet; waiting for its Customer.created",
                missing.join(", ")
            ),
            awaiting: missing.iter().map(|id| id.to_string()).collect(),
        })
    } else {
        ControlFlow::Continue(Some("no Customer.created arrived in time".to_string()))
    }
}

/// The contact of customer `id`, unknown to the projection, and why its alert fails.
fn stand_in(id: &str, gave_up: Option<&str>) -> (Contact, Option<String>) {
    let contact = Contact {
        id: id.to_string(),
        name: id.to_string(),
        email: String::new(),
    };
    let failure = format!(
        "customer {id} is unknown: {}",
        gave_up.unwrap_or("not in the projection")
    );
    (contact, Some(failure))
}
