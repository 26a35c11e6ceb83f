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
//! A batch is applied set-based ([`Apply::apply_batch`]): the contacts it needs are loaded with
//! one statement, each event is decided in memory in order, and its customers and deliveries
//! are written with one statement each, whatever its size.
//!
//! A transaction event for a customer missing from the projection is parked (its
//! `Customer.created` is on another topic and may lag): the partition moves on, and the event is
//! decided when the customer arrives or the wait ends; then the alert is recorded as `failed`.

use std::collections::HashMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use contracts::envelope::EventMetadata;
use contracts::topics;
use contracts::{CustomerCreated, TransactionFailed, TransactionProcessed};
use platform::db::Conn;
use platform::inbox::{transient, Applied, Apply, Attempt, Batch};
use platform::kafka::{HandleError, Record};
use platform::parking::ParkingLot;

use crate::domain::{Contact, Delivery, Notice};
use crate::feed::Hub;
use crate::messages;
use crate::storage::batch::{self, NewDelivery};

/// Inbox name of the `Customer.created` consumer.
pub const CUSTOMERS_CONSUMER: &str = contracts::topics::groups::NOTIFICATION_CUSTOMERS;
/// Inbox name of the `transaction.processed` / `transaction.failed` consumer.
pub const TRANSACTIONS_CONSUMER: &str = contracts::topics::groups::NOTIFICATION_TRANSACTIONS;

/// `Customer.created`: updates the projection and records the welcome message.
pub struct CustomerEvents {
    hub: Hub,
    waiting_alerts: ParkingLot,
    /// Whether a welcome is recorded (not while the projection is rebuilt from the topic).
    welcome: bool,
}

impl CustomerEvents {
    /// A handler announcing on `hub` and waking the alerts parked in `waiting_alerts`.
    pub fn new(hub: Hub, waiting_alerts: ParkingLot) -> Self {
        Self {
            hub,
            waiting_alerts,
            welcome: true,
        }
    }

    /// The handler of a rebuild of the projection from the start of `Customer.created`: it
    /// projects the customers but welcomes nobody again.
    pub fn rebuilding(hub: Hub, waiting_alerts: ParkingLot) -> Self {
        Self {
            welcome: false,
            ..Self::new(hub, waiting_alerts)
        }
    }
}

impl Apply for CustomerEvents {
    type Event = CustomerCreated;
    type Done = Option<Delivery>;

    fn decode(&self, record: &Record) -> Result<(EventMetadata, CustomerCreated), HandleError> {
        record.decode_valid()
    }

    /// Projects one customer: a batch of one.
    async fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        customer: &CustomerCreated,
        attempt: Attempt,
    ) -> Result<Applied<Option<Delivery>>, HandleError> {
        apply_one(
            conn,
            metadata,
            customer,
            attempt,
            Welcomes::new(self.welcome),
            first,
        )
        .await
    }

    /// Projects the whole batch with two statements: see `Welcomes`.
    async fn apply_batch(
        &self,
        conn: &mut Conn,
        batch: &mut Batch<'_, CustomerCreated>,
    ) -> Result<Vec<Applied<Option<Delivery>>>, HandleError> {
        apply_in_order(self, conn, batch, Welcomes::new(self.welcome), first).await
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

    /// Records the alerts of one outcome (a parked one, decided again): a batch of one.
    async fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        notice: &Notice,
        attempt: Attempt,
    ) -> Result<Applied<Vec<Delivery>>, HandleError> {
        let alerts = Alerts::load(conn, &[notice]).await?;
        apply_one(conn, metadata, notice, attempt, alerts, all).await
    }

    /// Records the alerts of the whole batch with two statements: see `Alerts`.
    async fn apply_batch(
        &self,
        conn: &mut Conn,
        batch: &mut Batch<'_, Notice>,
    ) -> Result<Vec<Applied<Vec<Delivery>>>, HandleError> {
        let notices: Vec<&Notice> = batch.events.iter().map(|f| f.event).collect();
        let alerts = Alerts::load(conn, &notices).await?;
        apply_in_order(self, conn, batch, alerts, all).await
    }

    fn committed(&self, done: Vec<Vec<Delivery>>) {
        self.hub.recorded(done.into_iter().flatten().collect());
    }
}

/// A set-based pass over a batch: what it needs is loaded once, each event is decided in memory
/// in order ([`Pass::decide`]), and what was decided is written with a fixed number of
/// statements ([`Pass::write`]).
trait Pass<E> {
    /// Decides `event` against what the events before it left; the deliveries it records are
    /// written by [`Pass::write`].
    fn decide(&mut self, metadata: &EventMetadata, event: &E, attempt: Attempt) -> Applied<()>;

    /// Writes what was decided; returns the deliveries recorded, by event id, in order.
    fn write(self, conn: &mut Conn) -> impl Future<Output = Result<Recorded, HandleError>> + Send;
}

/// The deliveries a pass recorded, by event id.
type Recorded = HashMap<String, Vec<Delivery>>;

/// Applies `batch` with `pass`: each event in order, within its span, waiting behind an earlier
/// event awaiting one of its keys; then writes them all. `done` makes an event's recorded
/// deliveries its outcome.
async fn apply_in_order<A: Apply, P: Pass<A::Event> + Send>(
    handler: &A,
    conn: &mut Conn,
    batch: &mut Batch<'_, A::Event>,
    mut pass: P,
    done: fn(Vec<Delivery>) -> A::Done,
) -> Result<Vec<Applied<A::Done>>, HandleError> {
    let outcomes = batch.decide_each(
        |event| handler.keys(event),
        |fresh, attempt| Ok(pass.decide(fresh.metadata, fresh.event, attempt)),
    )?;
    let mut recorded = pass.write(conn).await?;
    Ok(batch
        .events
        .iter()
        .zip(outcomes)
        .map(|(fresh, outcome)| with_recorded(outcome, &fresh.metadata.id, &mut recorded, done))
        .collect())
}

/// Applies one event with `pass` (a batch of one); `done` makes its recorded deliveries its
/// outcome.
async fn apply_one<E: Sync, D, P: Pass<E> + Send>(
    conn: &mut Conn,
    metadata: &EventMetadata,
    event: &E,
    attempt: Attempt,
    mut pass: P,
    done: fn(Vec<Delivery>) -> D,
) -> Result<Applied<D>, HandleError> {
    let outcome = pass.decide(metadata, event, attempt);
    let mut recorded = pass.write(conn).await?;
    Ok(with_recorded(outcome, &metadata.id, &mut recorded, done))
}

/// `outcome` of event `event_id`; when done, with the deliveries `recorded` for it.
fn with_recorded<D>(
    outcome: Applied<()>,
    event_id: &str,
    recorded: &mut Recorded,
    done: fn(Vec<Delivery>) -> D,
) -> Applied<D> {
    match outcome {
        Applied::Done(()) => Applied::Done(done(recorded.remove(event_id).unwrap_or_default())),
        Applied::Wait { reason, awaiting } => Applied::Wait { reason, awaiting },
    }
}

/// A `Customer.created`'s outcome: its welcome, unless one was recorded before.
fn first(recorded: Vec<Delivery>) -> Option<Delivery> {
    recorded.into_iter().next()
}

/// A transaction outcome's: every alert recorded.
fn all(recorded: Vec<Delivery>) -> Vec<Delivery> {
    recorded
}

/// Records `new` deliveries (one statement); returns those recorded, by event id.
async fn record(conn: &mut Conn, new: &[NewDelivery]) -> Result<Recorded, HandleError> {
    let mut recorded = Recorded::new();
    for delivery in batch::record_all(conn, new).await.map_err(transient)? {
        recorded
            .entry(delivery.event_id.clone())
            .or_default()
            .push(delivery);
    }
    Ok(recorded)
}

/// A pass over `Customer.created` events: every customer is projected with one statement
/// (the last event of an id wins), every welcome recorded with another (one per customer; none
/// when `welcome` is off).
struct Welcomes {
    contacts: Vec<Contact>,
    new: Vec<NewDelivery>,
    welcome: bool,
}

impl Welcomes {
    fn new(welcome: bool) -> Self {
        Self {
            contacts: Vec::new(),
            new: Vec::new(),
            welcome,
        }
    }
}

impl Pass<CustomerCreated> for Welcomes {
    fn decide(
        &mut self,
        metadata: &EventMetadata,
        customer: &CustomerCreated,
        _attempt: Attempt,
    ) -> Applied<()> {
        self.contacts.push(Contact::from(customer));
        if !self.welcome {
            tracing::debug!(customer_id = %customer.id, "customer projected (rebuild: no welcome)");
            return Applied::Done(());
        }
        self.new.push(NewDelivery {
            event_id: metadata.id.clone(),
            draft: messages::welcome(customer),
            failure: None,
        });
        tracing::info!(customer_id = %customer.id, "customer projected; welcome message recorded");
        Applied::Done(())
    }

    async fn write(self, conn: &mut Conn) -> Result<Recorded, HandleError> {
        batch::upsert_customers(conn, &self.contacts)
            .await
            .map_err(transient)?;
        record(conn, &self.new).await
    }
}

/// A pass over transaction outcomes: the contacts of every party of the batch are loaded with
/// one statement, every alert recorded with another.
struct Alerts {
    contacts: HashMap<String, Contact>,
    new: Vec<NewDelivery>,
}

impl Alerts {
    /// Loads the contacts of the parties of `notices` that the projection knows.
    async fn load(conn: &mut Conn, notices: &[&Notice]) -> Result<Self, HandleError> {
        let mut parties: Vec<String> = notices.iter().flat_map(|n| n.parties()).collect();
        parties.sort_unstable();
        parties.dedup();
        let ids: Vec<&str> = parties.iter().map(String::as_str).collect();
        let contacts = batch::find_customers(conn, &ids).await.map_err(transient)?;
        Ok(Self {
            contacts,
            new: Vec::new(),
        })
    }
}

impl Pass<Notice> for Alerts {
    /// An alert for each recipient; a recipient missing from the projection parks the event
    /// (see [`give_up_or_wait`]) or, once given up on, gets its alert recorded as `failed`.
    fn decide(
        &mut self,
        metadata: &EventMetadata,
        notice: &Notice,
        attempt: Attempt,
    ) -> Applied<()> {
        let transaction_id = &notice.request().transaction_id;
        let recipients = notice.recipients();
        let missing: Vec<&str> = recipients
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !self.contacts.contains_key(*id))
            .collect();
        let gave_up = match give_up_or_wait(notice, &missing, attempt) {
            ControlFlow::Continue(gave_up) => gave_up,
            ControlFlow::Break(wait) => return wait,
        };
        for (id, kind) in &recipients {
            let (contact, failure) = match self.contacts.get(id) {
                Some(contact) => (contact.clone(), None),
                None => stand_in(id, gave_up.as_deref()),
            };
            self.new.push(NewDelivery {
                event_id: metadata.id.clone(),
                draft: notice.render(&contact, *kind, &self.contacts),
                failure,
            });
        }
        match gave_up {
            Some(reason) => tracing::warn!(%transaction_id, missing = ?missing, %reason,
                "alerts for unknown customers recorded as failed"),
            None => tracing::info!(%transaction_id, alerts = recipients.len(),
                "transaction alerts recorded"),
        }
        Applied::Done(())
    }

    async fn write(self, conn: &mut Conn) -> Result<Recorded, HandleError> {
        record(conn, &self.new).await
    }
}

/// What to do when recipients are `missing` from the projection: nothing (`Continue(None)`) when
/// none is; wait for their `Customer.created` (`Break`) unless this is the last attempt or the
/// event itself reports an unknown account; then give up (`Continue(Some(reason))`).
fn give_up_or_wait(
    notice: &Notice,
    missing: &[&str],
    attempt: Attempt,
) -> ControlFlow<Applied<()>, Option<String>> {
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
