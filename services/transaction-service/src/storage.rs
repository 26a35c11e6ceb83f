//! Storage queries of the ledger: portable SQL through sqlx `Any` (SQLite and PostgreSQL).
//! Writes take a connection borrowed from the caller's transaction (`&mut *tx`); reads take any
//! executor (the pool, or a transaction).

use chrono::{DateTime, Utc};
use contracts::TransactionRequested;
use platform::db::{parse_timestamp, timestamp, Conn};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

pub mod batch;

/// Life cycle of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepted, not applied yet.
    Requested,
    /// Applied to the ledger.
    Processed,
    /// Rejected.
    Failed,
}

impl Status {
    /// The stored (and wire) name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Processed => "processed",
            Status::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "requested" => Ok(Status::Requested),
            "processed" => Ok(Status::Processed),
            "failed" => Ok(Status::Failed),
            other => Err(sqlx::Error::Decode(
                format!("unknown transaction status `{other}`").into(),
            )),
        }
    }
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Account id (the customer id).
    pub id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Balance in minor units.
    pub balance: i64,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
}

/// A transaction to record with status `requested`.
#[derive(Debug, Clone)]
pub struct NewTransaction<'a> {
    /// Idempotency key.
    pub transaction_id: &'a str,
    /// `transfer`, `credit` or `debit`.
    pub kind: &'a str,
    /// Debited account.
    pub from: Option<&'a str>,
    /// Credited account.
    pub to: Option<&'a str>,
    /// Minor units, when the amount is valid.
    pub amount: Option<i64>,
    /// The amount as requested.
    pub amount_text: &'a str,
    /// Currency code as requested.
    pub currency: &'a str,
    /// Canonical request content.
    pub fingerprint: &'a str,
    /// `api` or the producer's `ce_source`.
    pub source: &'a str,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
}

impl<'a> NewTransaction<'a> {
    /// The transaction `request` asks for, recorded as given: its amount in minor units when
    /// valid, its `fingerprint`, and where it came from (`source`).
    pub fn requested(
        request: &'a TransactionRequested,
        amount: Option<i64>,
        fingerprint: &'a str,
        source: &'a str,
    ) -> Self {
        Self {
            transaction_id: &request.transaction_id,
            kind: request.kind.as_str(),
            from: request.from.as_deref(),
            to: request.to.as_deref(),
            amount,
            amount_text: &request.amount,
            currency: &request.currency,
            fingerprint,
            source,
            requested_at: request.requested_at,
        }
    }
}

/// A stored transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransaction {
    /// Idempotency key.
    pub transaction_id: String,
    /// `transfer`, `credit` or `debit`.
    pub kind: String,
    /// Debited account.
    pub from: Option<String>,
    /// Credited account.
    pub to: Option<String>,
    /// Minor units, when the amount was valid.
    pub amount: Option<i64>,
    /// The amount as requested.
    pub amount_text: String,
    /// Currency code.
    pub currency: String,
    /// Canonical request content.
    pub fingerprint: String,
    /// Where it stands.
    pub status: Status,
    /// Failure reason.
    pub reason: Option<String>,
    /// Failure message.
    pub message: Option<String>,
    /// JSON object of balances after the transaction.
    pub balances: Option<String>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When it was processed or failed.
    pub completed_at: Option<DateTime<Utc>>,
}

/// The outcome to record on a transaction that is still `requested`.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The transaction.
    pub transaction_id: String,
    /// `processed` or `failed`.
    pub status: Status,
    /// Failure reason.
    pub reason: Option<&'static str>,
    /// Failure message.
    pub message: Option<String>,
    /// JSON object of balances after the transaction.
    pub balances: Option<String>,
    /// When.
    pub completed_at: DateTime<Utc>,
}

/// A journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The account.
    pub account_id: String,
    /// Position in the account's journal (1 = opening).
    pub seq: i64,
    /// The transaction, absent for the opening entry.
    pub transaction_id: Option<String>,
    /// `opening`, `credit` or `debit`.
    pub entry_kind: String,
    /// Signed change in minor units.
    pub delta: i64,
    /// Balance after the entry.
    pub balance_after: i64,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Totals of the ledger, to check that money is conserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerTotals {
    /// Sum of all balances.
    pub balances: i64,
    /// Sum of all journal deltas.
    pub entries: i64,
}

/// The transaction `id`, if known.
pub async fn find_transaction<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<StoredTransaction>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT transaction_id, kind, from_account, to_account, amount, amount_text, currency, \
         fingerprint, status, reason, message, balances, requested_at, completed_at \
         FROM transactions WHERE transaction_id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?;
    row.map(|row| transaction_from_row(&row)).transpose()
}

fn transaction_from_row(row: &AnyRow) -> Result<StoredTransaction, sqlx::Error> {
    let completed_at: Option<String> = row.try_get("completed_at")?;
    Ok(StoredTransaction {
        transaction_id: row.try_get("transaction_id")?,
        kind: row.try_get("kind")?,
        from: row.try_get("from_account")?,
        to: row.try_get("to_account")?,
        amount: row.try_get("amount")?,
        amount_text: row.try_get("amount_text")?,
        currency: row.try_get("currency")?,
        fingerprint: row.try_get("fingerprint")?,
        status: Status::parse(&row.try_get::<String, _>("status")?)?,
        reason: row.try_get("reason")?,
        message: row.try_get("message")?,
        balances: row.try_get("balances")?,
        requested_at: parse_timestamp(&row.try_get::<String, _>("requested_at")?)?,
        completed_at: completed_at.as_deref().map(parse_timestamp).transpose()?,
    })
}

/// Opens account `id` with its opening journal entry; `false` when it already exists.
pub async fn open_account(
    conn: &mut Conn,
    id: &str,
    currency: &str,
    opening_balance: i64,
    event_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let now = timestamp(now);
    let result = sqlx::query(
        "INSERT INTO accounts (id, currency, balance, last_seq, opened_at, updated_at, \
         customer_event_id) VALUES ($1, $2, $3, 1, $4, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(currency)
    .bind(opening_balance)
    .bind(&now)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO entries (account_id, seq, transaction_id, entry_kind, delta, balance_after, \
         created_at) VALUES ($1, 1, NULL, 'opening', $2, $2, $3)",
    )
    .bind(id)
    .bind(opening_balance)
    .bind(&now)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The account `id`, if it exists.
pub async fn find_account<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    id: &str,
) -> Result<Option<Account>, sqlx::Error> {
    let row = sqlx::query("SELECT id, currency, balance, opened_at FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.map(|row| account_from_row(&row)).transpose()
}

fn account_from_row(row: &AnyRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: row.try_get("id")?,
        currency: row.try_get("currency")?,
        balance: row.try_get("balance")?,
        opened_at: parse_timestamp(&row.try_get::<String, _>("opened_at")?)?,
    })
}

/// Journal entries of `account_id` after position `after`, oldest first, at most `limit`.
pub async fn list_entries<'c, E: Executor<'c, Database = Any>>(
    executor: E,
    account_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT account_id, seq, transaction_id, entry_kind, delta, balance_after, created_at \
         FROM entries WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(account_id)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Entry {
                account_id: row.try_get("account_id")?,
                seq: row.try_get("seq")?,
                transaction_id: row.try_get("transaction_id")?,
                entry_kind: row.try_get("entry_kind")?,
                delta: row.try_get("delta")?,
                balance_after: row.try_get("balance_after")?,
                created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
            })
        })
        .collect()
}

/// Sum of all balances and of all journal deltas (equal when money is conserved).
pub async fn totals<'c, E: Executor<'c, Database = Any>>(
    executor: E,
) -> Result<LedgerTotals, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE((SELECT SUM(balance) FROM accounts), 0) AS BIGINT) AS balances, \
         CAST(COALESCE((SELECT SUM(delta) FROM entries), 0) AS BIGINT) AS entries",
    )
    .fetch_one(executor)
    .await?;
    Ok(LedgerTotals {
        balances: row.try_get("balances")?,
        entries: row.try_get("entries")?,
    })
}
