//! Registering a customer: the row and its `Customer.created` event are written in ONE database
//! transaction (the outbox relay publishes the event after the commit); concurrent
//! registrations share that transaction (group commit).

use chrono::{DateTime, SubsecRound, Utc};
use contracts::CustomerCreated;
use platform::db::{Conn, DbError};
use platform::group_commit::Write;
use platform::Outbox;

use crate::domain::{Customer, CustomerError, NewCustomer};
use crate::storage;

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// A new customer was stored and its event queued.
    Created(Customer),
    /// The same id, name and email were registered before: nothing changed.
    Repeated(Customer),
}

/// Registers customers through the group committer: concurrent registrations share one
/// database transaction.
#[derive(Debug, Clone)]
pub struct Registrations {
    outbox: Outbox,
}

impl Registrations {
    /// Registrations whose events go to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }
}

/// A registration to perform: the customer and the caller's `traceparent`.
pub type RegisterInput = (NewCustomer, Option<String>);

impl Write for Registrations {
    type Input = RegisterInput;
    type Output = Result<Registration, CustomerError>;

    /// Stores the customer and queues `Customer.created`, or recognises an idempotent repeat
    /// (same id, name and email), or refuses an id taken by another customer. Two concurrent
    /// registrations of one id cannot both create it: the insert is `ON CONFLICT DO NOTHING`,
    /// and the loser reads the winner's row.
    async fn write(
        &self,
        conn: &mut Conn,
        (new, traceparent): &RegisterInput,
    ) -> Result<Self::Output, DbError> {
        let customer = new.clone().into_customer(now());
        if storage::insert(conn, &customer).await? {
            let event = CustomerCreated {
                id: customer.id.clone(),
                name: customer.name.clone(),
                email: customer.email.clone(),
                created_at: customer.created_at,
            };
            let metadata = self
                .outbox
                .enqueue(conn, &event, traceparent.as_deref())
                .await?;
            tracing::info!(customer_id = %customer.id, event_id = %metadata.id, "customer registered");
            return Ok(Ok(Registration::Created(customer)));
        }
        match storage::find(&mut *conn, &new.id).await? {
            Some(existing) if new.matches(&existing) => Ok(Ok(Registration::Repeated(existing))),
            Some(_) => Ok(Err(CustomerError::Conflict(new.id.clone()))),
            // The conflicting row vanished (rows are never deleted: a broken database).
            None => Err(DbError::Query(sqlx::Error::RowNotFound)),
        }
    }

    fn committed(&self) {
        self.outbox.notify();
    }
}

/// Now, at the millisecond precision timestamps are stored with.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
