//! Registering a customer: the row and its `Customer.created` event are written in ONE database
//! transaction (the outbox relay publishes the event after the commit).

use chrono::{DateTime, SubsecRound, Utc};
use contracts::CustomerCreated;
use platform::db::DbError;
use platform::{Database, Outbox, Problem};

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

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A rule refused it (conflict).
    #[error(transparent)]
    Customer(#[from] CustomerError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for RegisterError {
    fn from(error: sqlx::Error) -> Self {
        RegisterError::Db(DbError::Query(error))
    }
}

impl From<RegisterError> for Problem {
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::Customer(e) => e.into(),
            RegisterError::Db(e) => e.into(),
        }
    }
}

/// Registers `new`: stores it and queues `Customer.created`, or recognises an idempotent repeat
/// (same id, name and email), or refuses an id taken by another customer. Two concurrent
/// registrations of one id cannot both create it: the insert is `ON CONFLICT DO NOTHING`, and the
/// loser re-reads the winner's row.
pub async fn register(
    db: &Database,
    outbox: &Outbox,
    new: NewCustomer,
    traceparent: Option<&str>,
) -> Result<Registration, RegisterError> {
    let customer = new.clone().into_customer(now());
    let mut tx = db.begin().await?;
    if storage::insert(&mut tx, &customer).await? {
        let event = CustomerCreated {
            id: customer.id.clone(),
            name: customer.name.clone(),
            email: customer.email.clone(),
            created_at: customer.created_at,
        };
        let metadata = outbox.enqueue(&mut tx, &event, traceparent).await?;
        tx.commit().await?;
        platform::failpoint!("http.after_commit");
        outbox.notify();
        tracing::info!(customer_id = %customer.id, event_id = %metadata.id, "customer registered");
        return Ok(Registration::Created(customer));
    }
    let existing = storage::find(&mut *tx, &new.id).await?;
    tx.rollback().await?;
    match existing {
        Some(existing) if new.matches(&existing) => Ok(Registration::Repeated(existing)),
        Some(_) => Err(CustomerError::Conflict(new.id).into()),
        // The conflicting row vanished (rows are never deleted, so this is a broken database).
        None => Err(RegisterError::Db(DbError::Query(sqlx::Error::RowNotFound))),
    }
}

/// Now, at the millisecond precision timestamps are stored with.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
