//! Queries of the customer projection and the `deliveries` table (portable SQL); the
//! set-based statements of the event handlers are in [`batch`].

pub mod batch;

use chrono::{DateTime, Utc};
use platform::db::{json_param, parse_timestamp, timestamp, Backend, Conn, SqlType};
use serde::Serialize;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Executor, Row};

use crate::domain::{Delivery, Kind, Status};

const DELIVERY_COLUMNS: &str = "id, event_id, customer_id, kind, transaction_id, recipient, \
    subject, body, status, attempts, last_error, next_attempt_at, created_at, updated_at, sent_at";

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

/// How a send attempt on delivery `id` ended, to record: `sent`, `retrying` (due at
/// `next_attempt_at`) or `failed` with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempted<'a> {
    /// The delivery.
    pub id: &'a str,
    /// Where it stands now.
    pub status: Status,
    /// The error, unless sent.
    pub error: Option<&'a str>,
    /// When a retry is due (the attempt's end otherwise).
    pub next_attempt_at: DateTime<Utc>,
}

/// A delivery to take for one attempt: `sending` until `until`, if it is still as `delivery`
/// (not taken by another sender).
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// The delivery, as found due.
    pub delivery: &'a Delivery,
    /// When the lease ends.
    pub until: DateTime<Utc>,
}

/// A row of [`settle`]'s statement: a finished attempt, or the lease.
#[derive(Serialize)]
struct SettleRow<'a> {
    id: &'a str,
    op: &'static str,
    status: &'static str,
    last_error: Option<&'a str>,
    next_attempt_at: String,
    sent_at: Option<&'a str>,
    expected: Option<String>,
}

/// Records the `finished` attempts and takes `lease`, in ONE statement; returns the finished
/// rows as updated and whether the lease was taken (`false` when another sender took it first).
///
/// Should this process die mid-attempt, a leased row is found again when its lease ends, still
/// `sending`. The sender takes one lease per send, so only the send under way can be cut short.
pub async fn settle(
    conn: &mut Conn,
    finished: &[Attempted<'_>],
    lease: Option<Lease<'_>>,
) -> Result<(Vec<Delivery>, bool), sqlx::Error> {
    let now = timestamp(Utc::now());
    let mut rows: Vec<SettleRow<'_>> = finished
        .iter()
        .map(|a| SettleRow {
            id: a.id,
            op: "finish",
            status: a.status.as_str(),
            last_error: a.error,
            next_attempt_at: timestamp(a.next_attempt_at),
            sent_at: (a.status == Status::Sent).then_some(now.as_str()),
            expected: None,
        })
        .collect();
    rows.extend(lease.map(|l| SettleRow {
        id: &l.delivery.id,
        op: "lease",
        status: Status::Sending.as_str(),
        last_error: None,
        next_attempt_at: timestamp(l.until),
        sent_at: None,
        expected: Some(timestamp(l.delivery.next_attempt_at)),
    }));
    if rows.is_empty() {
        return Ok((Vec::new(), false));
    }
    let sql = settle_sql(Backend::of(conn));
    let query = sqlx::query(&sql).bind(json_param(&rows)?).bind(now);
    let updated = deliveries(&mut *conn, query).await?;
    let leased_id = lease.map(|l| l.delivery.id.as_str());
    let (leased, updated): (Vec<Delivery>, Vec<Delivery>) = updated
        .into_iter()
        .partition(|d| Some(d.id.as_str()) == leased_id);
    Ok((updated, !leased.is_empty()))
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

/// The text of [`settle`]'s statement: a finished attempt is counted and recorded; the lease
/// marks its row `sending` until the lease ends, only if it is still as found due.
fn settle_sql(backend: Backend) -> String {
    let source = backend.json_rows(
        1,
        "j",
        &[
            ("id", SqlType::Text),
            ("op", SqlType::Text),
            ("status", SqlType::Text),
            ("last_error", SqlType::Text),
            ("next_attempt_at", SqlType::Text),
            ("sent_at", SqlType::Text),
            ("expected", SqlType::Text),
        ],
    );
    let returning: Vec<String> = DELIVERY_COLUMNS
        .split(", ")
        .map(|column| format!("deliveries.{column}"))
        .collect();
    format!(
        "UPDATE deliveries SET status = j.status, \
         attempts = deliveries.attempts + CASE WHEN j.op = 'finish' THEN 1 ELSE 0 END, \
         last_error = CASE WHEN j.op = 'finish' THEN j.last_error ELSE deliveries.last_error END, \
         next_attempt_at = j.next_attempt_at, \
         updated_at = CASE WHEN j.op = 'finish' THEN $2 ELSE deliveries.updated_at END, \
         sent_at = CASE WHEN j.op = 'finish' THEN j.sent_at ELSE deliveries.sent_at END \
         FROM {source} WHERE deliveries.id = j.id AND (j.op = 'finish' \
         OR (deliveries.next_attempt_at = j.expected \
         AND deliveries.status IN ('pending', 'retrying'))) \
         RETURNING {}",
        returning.join(", ")
    )
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
