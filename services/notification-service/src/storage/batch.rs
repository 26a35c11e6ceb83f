//! Set-based statements of the event handlers: a consumer batch reads the contacts it needs and
//! writes its customers and deliveries with one statement each, whatever its size. The rows of a
//! statement travel as one JSON parameter ([`Backend::json_rows`]), so its text never changes
//! and is prepared once per connection.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use platform::db::{json_param, timestamp, Backend, Conn, SqlType};
use serde::Serialize;
use sqlx::Row;

use super::{from_row, DELIVERY_COLUMNS};
use crate::domain::{Contact, Delivery, Draft, Status};

/// The customers among `ids` that the projection knows, by id (one statement).
pub async fn find_customers(
    conn: &mut Conn,
    ids: &[&str],
) -> Result<HashMap<String, Contact>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT id, name, email FROM customers WHERE id IN ({})",
        Backend::of(conn).json_list(1)
    );
    sqlx::query(&sql)
        .bind(json_param(ids)?)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            let contact = Contact {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                email: row.try_get("email")?,
            };
            Ok((contact.id.clone(), contact))
        })
        .collect()
}

/// A customer as bound to the set-based upsert.
#[derive(Serialize)]
struct CustomerRow<'a> {
    id: &'a str,
    name: &'a str,
    email: &'a str,
}

/// Stores (or refreshes) `contacts` in the projection (one statement). When an id repeats, the
/// last contact wins, as if they were stored one after the other.
pub async fn upsert_customers(conn: &mut Conn, contacts: &[Contact]) -> Result<(), sqlx::Error> {
    if contacts.is_empty() {
        return Ok(());
    }
    // One row per id (PostgreSQL refuses to update a row twice in one statement): the last.
    let mut seen = HashSet::new();
    let mut rows: Vec<CustomerRow<'_>> = contacts
        .iter()
        .rev()
        .filter(|c| seen.insert(c.id.as_str()))
        .map(|c| CustomerRow {
            id: &c.id,
            name: &c.name,
            email: &c.email,
        })
        .collect();
    rows.reverse();
    let source = Backend::of(conn).json_rows(
        1,
        "j",
        &[
            ("id", SqlType::Text),
            ("name", SqlType::Text),
            ("email", SqlType::Text),
        ],
    );
    // `WHERE true` tells SQLite's parser that `ON CONFLICT` is the upsert clause.
    let sql = format!(
        "INSERT INTO customers (id, name, email, updated_at) SELECT j.id, j.name, j.email, $2 \
         FROM {source} WHERE true ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
         email = excluded.email, updated_at = excluded.updated_at"
    );
    sqlx::query(&sql)
        .bind(json_param(&rows)?)
        .bind(timestamp(Utc::now()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A message to record for an event: `pending` and due now, or already `failed` with
/// `failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The event (`ce_id`) it is recorded for.
    pub event_id: String,
    /// The message.
    pub draft: Draft,
    /// Why it failed before any attempt (an unknown customer), if it did.
    pub failure: Option<String>,
}

/// A delivery as bound to the set-based insert.
#[derive(Serialize)]
struct DeliveryRow<'a> {
    id: String,
    event_id: &'a str,
    customer_id: &'a str,
    kind: &'static str,
    transaction_id: Option<&'a str>,
    recipient: &'a str,
    subject: &'a str,
    body: &'a str,
    status: &'static str,
    last_error: Option<&'a str>,
    once_key: &'a str,
}

impl<'a> DeliveryRow<'a> {
    fn new(delivery: &'a NewDelivery) -> Self {
        let draft = &delivery.draft;
        let status = match delivery.failure {
            Some(_) => Status::Failed,
            None => Status::Pending,
        };
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            event_id: &delivery.event_id,
            customer_id: &draft.customer_id,
            kind: draft.kind.as_str(),
            transaction_id: draft.transaction_id.as_deref(),
            recipient: &draft.recipient,
            subject: &draft.subject,
            body: &draft.body,
            status: status.as_str(),
            last_error: delivery.failure.as_deref(),
            once_key: draft.transaction_id.as_deref().unwrap_or_default(),
        }
    }

    /// What a delivery is recorded at most once for: (customer, kind, transaction).
    fn meaning(&self) -> (&'a str, &'static str, &'a str) {
        (self.customer_id, self.kind, self.once_key)
    }
}

/// Records `new` deliveries (one statement); returns the rows recorded, in the order given.
/// A delivery is recorded at most once per (customer, kind, transaction), whatever the event
/// (one welcome per customer likewise): one recorded before, or earlier in `new`, wins; the
/// others are no-ops.
pub async fn record_all(
    conn: &mut Conn,
    new: &[NewDelivery],
) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut seen = HashSet::new();
    let rows: Vec<DeliveryRow<'_>> = new
        .iter()
        .map(DeliveryRow::new)
        .filter(|row| seen.insert(row.meaning()))
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let source = Backend::of(conn).json_rows(
        1,
        "j",
        &[
            ("id", SqlType::Text),
            ("event_id", SqlType::Text),
            ("customer_id", SqlType::Text),
            ("kind", SqlType::Text),
            ("transaction_id", SqlType::Text),
            ("recipient", SqlType::Text),
            ("subject", SqlType::Text),
            ("body", SqlType::Text),
            ("status", SqlType::Text),
            ("last_error", SqlType::Text),
            ("once_key", SqlType::Text),
        ],
    );
    // `WHERE true` tells SQLite's parser that `ON CONFLICT` is the upsert clause.
    let sql = format!(
        "INSERT INTO deliveries (id, event_id, customer_id, kind, transaction_id, recipient, \
         subject, body, status, attempts, last_error, next_attempt_at, created_at, updated_at, \
         once_key) \
         SELECT j.id, j.event_id, j.customer_id, j.kind, j.transaction_id, j.recipient, \
         j.subject, j.body, j.status, 0, j.last_error, $2, $2, $2, j.once_key \
         FROM {source} WHERE true ON CONFLICT DO NOTHING RETURNING {DELIVERY_COLUMNS}"
    );
    let mut recorded: HashMap<String, Delivery> = sqlx::query(&sql)
        .bind(json_param(&rows)?)
        .bind(timestamp(Utc::now()))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| from_row(row).map(|d| (d.id.clone(), d)))
        .collect::<Result<_, _>>()?;
    Ok(rows.iter().filter_map(|r| recorded.remove(&r.id)).collect())
}

/// Records `draft` for `event_id`: `pending` and due now, or already `failed` with `failure`.
/// Returns the new row, or `None` when this (customer, kind, transaction) was recorded before,
/// whatever the event: the first event of a transaction wins, a replay is a no-op (one welcome
/// per customer likewise). A batch records its deliveries with [`record_all`].
pub async fn record(
    conn: &mut Conn,
    event_id: &str,
    draft: &Draft,
    failure: Option<&str>,
) -> Result<Option<Delivery>, sqlx::Error> {
    let new = NewDelivery {
        event_id: event_id.to_string(),
        draft: draft.clone(),
        failure: failure.map(str::to_string),
    };
    Ok(record_all(conn, &[new]).await?.pop())
}
