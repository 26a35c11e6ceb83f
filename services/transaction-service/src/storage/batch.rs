//! Set-based writes of the ledger: a consumer batch is loaded and written with a fixed number
//! of statements whatever its size. Each statement's rows travel as one JSON parameter
//! ([`Backend::json_rows`]), so its text never changes and is prepared once per connection.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use platform::db::{json_param, timestamp, Backend, Conn, SqlType};
use serde::Serialize;
use sqlx::Row;

use super::{Completion, NewTransaction, Status};

/// An account as the ledger applies to it: locked, with its journal position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Account id.
    pub id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Balance in minor units.
    pub balance: i64,
    /// Position of its last journal entry.
    pub last_seq: i64,
}

/// A transaction already recorded: where it stands and what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Where it stands.
    pub status: Status,
    /// Canonical request content.
    pub fingerprint: String,
}

/// A journal entry to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewEntry {
    /// The account.
    pub account_id: String,
    /// Its position in the account's journal.
    pub seq: i64,
    /// The transaction.
    pub transaction_id: String,
    /// Signed change in minor units.
    pub delta: i64,
    /// The balance after it.
    pub balance_after: i64,
}

/// Locks accounts `ids` for the rest of the transaction, in id order (so two batches touching
/// the same accounts queue instead of deadlocking), and reads them: `FOR UPDATE` on PostgreSQL;
/// SQLite has one writer at a time. Accounts that do not exist are absent.
pub async fn lock_accounts(conn: &mut Conn, ids: &[&str]) -> Result<Vec<Held>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = Backend::of(conn);
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "SELECT id, currency, balance, last_seq FROM accounts WHERE id IN ({}) ORDER BY id{lock}",
        backend.json_list(1)
    );
    sqlx::query(&sql)
        .bind(json_param(ids)?)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            Ok(Held {
                id: row.try_get("id")?,
                currency: row.try_get("currency")?,
                balance: row.try_get("balance")?,
                last_seq: row.try_get("last_seq")?,
            })
        })
        .collect()
}

/// The transactions among `ids` that are recorded, by id.
pub async fn find_known(
    conn: &mut Conn,
    ids: &[&str],
) -> Result<HashMap<String, Known>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT transaction_id, status, fingerprint FROM transactions \
         WHERE transaction_id IN ({})",
        Backend::of(conn).json_list(1)
    );
    sqlx::query(&sql)
        .bind(json_param(ids)?)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            let known = Known {
                status: Status::parse(&row.try_get::<String, _>("status")?)?,
                fingerprint: row.try_get("fingerprint")?,
            };
            Ok((row.try_get("transaction_id")?, known))
        })
        .collect()
}

/// A transaction row as bound to the set-based insert.
#[derive(Serialize)]
struct TransactionRow<'a> {
    transaction_id: &'a str,
    kind: &'a str,
    from_account: Option<&'a str>,
    to_account: Option<&'a str>,
    amount: Option<i64>,
    amount_text: &'a str,
    currency: &'a str,
    fingerprint: &'a str,
    source: &'a str,
    requested_at: String,
}

/// Records `new` transactions with status `requested` (one statement); returns the ids that
/// were new (an id already recorded is left as it is).
pub async fn insert_transactions(
    conn: &mut Conn,
    new: &[NewTransaction<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    if new.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<TransactionRow<'_>> = new
        .iter()
        .map(|t| TransactionRow {
            transaction_id: t.transaction_id,
            kind: t.kind,
            from_account: t.from,
            to_account: t.to,
            amount: t.amount,
            amount_text: t.amount_text,
            currency: t.currency,
            fingerprint: t.fingerprint,
            source: t.source,
            requested_at: timestamp(t.requested_at),
        })
        .collect();
    let source = Backend::of(conn).json_rows(
        1,
        "j",
        &[
            ("transaction_id", SqlType::Text),
            ("kind", SqlType::Text),
            ("from_account", SqlType::Text),
            ("to_account", SqlType::Text),
            ("amount", SqlType::BigInt),
            ("amount_text", SqlType::Text),
            ("currency", SqlType::Text),
            ("fingerprint", SqlType::Text),
            ("source", SqlType::Text),
            ("requested_at", SqlType::Text),
        ],
    );
    // `WHERE true` tells SQLite's parser that `ON CONFLICT` is the upsert clause.
    let sql = format!(
        "INSERT INTO transactions (transaction_id, kind, from_account, to_account, amount, \
         amount_text, currency, fingerprint, status, source, requested_at) \
         SELECT j.transaction_id, j.kind, j.from_account, j.to_account, j.amount, \
         j.amount_text, j.currency, j.fingerprint, 'requested', j.source, j.requested_at \
         FROM {source} WHERE true ON CONFLICT (transaction_id) DO NOTHING \
         RETURNING transaction_id"
    );
    let inserted = sqlx::query_scalar::<_, String>(&sql)
        .bind(json_param(&rows)?)
        .fetch_all(&mut *conn)
        .await?;
    Ok(inserted.into_iter().collect())
}

/// A completion as bound to the set-based update.
#[derive(Serialize)]
struct CompletionRow<'a> {
    transaction_id: &'a str,
    status: &'static str,
    reason: Option<&'static str>,
    message: Option<&'a str>,
    balances: Option<&'a str>,
    completed_at: String,
}

/// Records `completions` on transactions still `requested` (one statement); returns how many
/// were (fewer than given means another writer completed one first).
pub async fn complete_transactions(
    conn: &mut Conn,
    completions: &[Completion],
) -> Result<u64, sqlx::Error> {
    if completions.is_empty() {
        return Ok(0);
    }
    let rows: Vec<CompletionRow<'_>> = completions
        .iter()
        .map(|c| CompletionRow {
            transaction_id: &c.transaction_id,
            status: c.status.as_str(),
            reason: c.reason,
            message: c.message.as_deref(),
            balances: c.balances.as_deref(),
            completed_at: timestamp(c.completed_at),
        })
        .collect();
    let source = Backend::of(conn).json_rows(
        1,
        "j",
        &[
            ("transaction_id", SqlType::Text),
            ("status", SqlType::Text),
            ("reason", SqlType::Text),
            ("message", SqlType::Text),
            ("balances", SqlType::Text),
            ("completed_at", SqlType::Text),
        ],
    );
    // `status || ''` keeps SQLite's planner off the status index: with it, SQLite scans every
    // `requested` row (the whole backlog) for each row of the batch instead of looking the
    // batch's ids up by key.
    let sql = format!(
        "UPDATE transactions SET status = j.status, reason = j.reason, message = j.message, \
         balances = j.balances, completed_at = j.completed_at FROM {source} \
         WHERE transactions.transaction_id = j.transaction_id \
         AND transactions.status || '' = 'requested'"
    );
    let result = sqlx::query(&sql)
        .bind(json_param(&rows)?)
        .execute(&mut *conn)
        .await?;
    Ok(result.rows_affected())
}

/// A balance as bound to the set-based update.
#[derive(Serialize)]
struct BalanceRow<'a> {
    id: &'a str,
    balance: i64,
    last_seq: i64,
}

/// Writes the balances and journal positions of `accounts` (locked by [`lock_accounts`]; one
/// statement).
pub async fn update_balances(
    conn: &mut Conn,
    accounts: &[&Held],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if accounts.is_empty() {
        return Ok(());
    }
    let rows: Vec<BalanceRow<'_>> = accounts
        .iter()
        .map(|a| BalanceRow {
            id: &a.id,
            balance: a.balance,
            last_seq: a.last_seq,
        })
        .collect();
    let source = Backend::of(conn).json_rows(
        1,
        "j",
        &[
            ("id", SqlType::Text),
            ("balance", SqlType::BigInt),
            ("last_seq", SqlType::BigInt),
        ],
    );
    let sql = format!(
        "UPDATE accounts SET balance = j.balance, last_seq = j.last_seq, updated_at = $2 \
         FROM {source} WHERE accounts.id = j.id"
    );
    sqlx::query(&sql)
        .bind(json_param(&rows)?)
        .bind(timestamp(now))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends journal `entries` (one statement).
pub async fn insert_entries(
    conn: &mut Conn,
    entries: &[NewEntry],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let source = Backend::of(conn).json_rows(
        1,
        "j",
        &[
            ("account_id", SqlType::Text),
            ("seq", SqlType::BigInt),
            ("transaction_id", SqlType::Text),
            ("delta", SqlType::BigInt),
            ("balance_after", SqlType::BigInt),
        ],
    );
    let sql = format!(
        "INSERT INTO entries (account_id, seq, transaction_id, entry_kind, delta, \
         balance_after, created_at) \
         SELECT j.account_id, j.seq, j.transaction_id, \
         CASE WHEN j.delta < 0 THEN 'debit' ELSE 'credit' END, j.delta, j.balance_after, $2 \
         FROM {source}"
    );
    sqlx::query(&sql)
        .bind(json_param(entries)?)
        .bind(timestamp(now))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
