//! Queries of the customer projection and the `deliveries` table (portable SQL); the
//! set-based statements of the event handlers are in [`batch`].

pub mod batch;

use chrono::{DateTime, Utc};
use platform::db::{parse_timestamp, timestamp, Conn};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Executor, Row};

use crate::domain::{Delivery, Draft, Kind, Status};

const DELIVERY_COLUMNS: &str = "id, event_id, customer_id, kind, transaction_id, recipient, \
    subject, body, status, attempts, last_error, next_attempt_at, created_at, updated_at, sent_at";

/// Records `draft` for `event_id`: `pending` and due now, or already `failed` with `failure`.
/// Returns the new row, or `None` when this (customer, kind, transaction) was recorded before,
/// whatever the event: the first event of a transaction wins, a replay is a no-op (one welcome
/// per customer likewise). A batch records its deliveries with [`batch::record_all`].
pub async fn record(
    conn: &mut Conn,
    event_id: &str,
    draft: &Draft,
    failure: Option<&str>,
) -> Result<Option<Delivery>, sqlx::Error> {
    let new = batch::NewDelivery {
        event_id: event_id.to_string(),
        draft: draft.clone(),
        failure: failure.map(str::to_string),
    };
    Ok(batch::record_all(conn, &[new]).await?.pop())
}

/// Deliveries due for an attempt at `now` (pending or retrying), oldest due first.
pub async fn due<'c, E>(
    executor: E,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    let sql = select(
        "WHERE status IN ('pending', 'retrying', 'sending') AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at, id LIMIT $2",
    );
    let query = sqlx::query(&sql).bind(timestamp(now)).bind(limit);
    deliveries(executor, query).await
}

/// Takes `delivery` for one attempt: marks it `sending` until `lease_until`; `false` when
/// another sender took it first. Should this process die mid-attempt, the row is found again
/// when the lease ends, still `sending`.
pub async fn lease<'c, E>(
    executor: E,
    delivery: &Delivery,
    lease_until: DateTime<Utc>,
) -> Result<bool, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    let result = sqlx::query(
        "UPDATE deliveries SET next_attempt_at = $1, status = 'sending' \
         WHERE id = $2 AND next_attempt_at = $3 AND status IN ('pending', 'retrying')",
    )
    .bind(timestamp(lease_until))
    .bind(&delivery.id)
    .bind(timestamp(delivery.next_attempt_at))
    .execute(executor)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Records the outcome of one attempt: `sent`, `retrying` (due at `next_attempt_at`) or
/// `failed`; returns the updated row.
pub async fn finish_attempt<'c, E>(
    executor: E,
    id: &str,
    status: Status,
    error: Option<&str>,
    next_attempt_at: DateTime<Utc>,
) -> Result<Option<Delivery>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    let now = timestamp(Utc::now());
    let sent_at = (status == Status::Sent).then_some(now.as_str());
    let row = sqlx::query(&format!(
        "UPDATE deliveries SET status = $1, attempts = attempts + 1, last_error = $2, \
         next_attempt_at = $3, updated_at = $4, sent_at = $5 WHERE id = $6 \
         RETURNING {DELIVERY_COLUMNS}"
    ))
    .bind(status.as_str())
    .bind(error)
    .bind(timestamp(next_attempt_at))
    .bind(&now)
    .bind(sent_at)
    .bind(id)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The delivery log of a customer, newest first.
pub async fn for_customer<'c, E>(
    executor: E,
    customer_id: &str,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    let sql = select("WHERE customer_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2");
    deliveries(executor, sqlx::query(&sql).bind(customer_id).bind(limit)).await
}

/// The latest deliveries of every customer, newest first.
pub async fn latest<'c, E>(executor: E, limit: i64) -> Result<Vec<Delivery>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    let sql = select("ORDER BY created_at DESC, id DESC LIMIT $1");
    deliveries(executor, sqlx::query(&sql).bind(limit)).await
}

/// `SELECT` of every delivery column, followed by `tail` (conditions, order, limit).
fn select(tail: &str) -> String {
    format!("SELECT {DELIVERY_COLUMNS} FROM deliveries {tail}")
}

/// Runs `query`, a [`select`], and decodes its rows.
async fn deliveries<'q, 'c, E>(
    executor: E,
    query: Query<'q, Any, AnyArguments<'q>>,
) -> Result<Vec<Delivery>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    query
        .fetch_all(executor)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

fn from_row(row: &AnyRow) -> Result<Delivery, sqlx::Error> {
    let time = |column: &str| -> Result<DateTime<Utc>, sqlx::Error> {
        parse_timestamp(&row.try_get::<String, _>(column)?)
    };
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        customer_id: row.try_get("customer_id")?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| decode_error(format!("unknown notification kind `{kind}`")))?,
        transaction_id: row.try_get("transaction_id")?,
        recipient: row.try_get("recipient")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        status: Status::parse(&status)
            .ok_or_else(|| decode_error(format!("unknown delivery status `{status}`")))?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        next_attempt_at: time("next_attempt_at")?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        sent_at: row
            .try_get::<Option<String>, _>("sent_at")?
            .map(|t| parse_timestamp(&t))
            .transpose()?,
    })
}

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}
