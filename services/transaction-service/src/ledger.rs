//! The ledger's use cases: accepting a request (HTTP) and applying one (consumer). Both run inside
//! the caller's database transaction; nothing here awaits anything but that transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::money::format_minor;
use contracts::{FailureReason, TransactionRequested};
use platform::db::{Conn, DbError};
use platform::group_commit::Write;
use platform::Outbox;

use crate::domain::{validate_event, ValidRequest};
use crate::storage::{self, Account, NewEntry, NewTransaction};

/// What accepting a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Recorded, with its `transaction.requested` event.
    Created,
    /// The same request was accepted before: nothing changed.
    Repeated,
    /// The transaction id names another request.
    Conflict,
}

/// Accepts requests from the HTTP API: records each with its `transaction.requested` event
/// (outbox) in the caller's transaction; the group committer shares it among concurrent
/// requests. Idempotent by `transactionId`.
#[derive(Debug, Clone)]
pub struct Acceptance {
    outbox: Outbox,
}

impl Acceptance {
    /// Acceptance writing events to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }
}

impl Write for Acceptance {
    /// The request and the caller's `traceparent`.
    type Input = (ValidRequest, Option<String>);
    type Output = AcceptOutcome;

    async fn write(
        &self,
        conn: &mut Conn,
        (request, traceparent): &Self::Input,
    ) -> Result<AcceptOutcome, DbError> {
        let now = Utc::now();
        let fingerprint = request.fingerprint();
        let amount_text = request.amount.to_decimal_string();
        let currency = request.amount.currency();
        let new = NewTransaction {
            transaction_id: &request.transaction_id,
            kind: request.kind.as_str(),
            from: request.from.as_deref(),
            to: request.to.as_deref(),
            amount: Some(request.amount.minor_units()),
            amount_text: &amount_text,
            currency: currency.code(),
            fingerprint: &fingerprint,
            source: "api",
            requested_at: now,
        };
        if !storage::insert_transaction(conn, &new).await? {
            let stored = storage::find_transaction(&mut *conn, &request.transaction_id).await?;
            return Ok(match stored {
                Some(stored) if stored.fingerprint == fingerprint => AcceptOutcome::Repeated,
                _ => AcceptOutcome::Conflict,
            });
        }
        let event = TransactionRequested {
            transaction_id: request.transaction_id.clone(),
            kind: request.kind,
            from: request.from.clone(),
            to: request.to.clone(),
            amount: amount_text,
            currency: currency.code().to_string(),
            requested_at: now,
        };
        self.outbox
            .enqueue(conn, &event, traceparent.as_deref())
            .await?;
        Ok(AcceptOutcome::Created)
    }

    fn committed(&self) {
        self.outbox.notify();
    }
}

/// A failure of the ledger that is not a business outcome: roll back and retry.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The database did not behave as the locks promise (e.g. a concurrent writer without locks).
    #[error("ledger inconsistency: {0}")]
    Inconsistent(String),
}

/// What applying a request decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An account is not known yet and the grace period is still running: wait for it.
    Wait {
        /// The accounts not open yet.
        missing: Vec<String>,
        /// Explanation.
        message: String,
    },
    /// Applied; the balances after it of each touched account, in minor units.
    Processed {
        /// The validated request.
        request: ValidRequest,
        /// Balance after, per touched account.
        balances: BTreeMap<String, i64>,
    },
    /// Rejected; nothing changed.
    Failed {
        /// Machine-readable reason.
        reason: FailureReason,
        /// Human-readable explanation.
        message: String,
    },
}

impl Decision {
    fn failed(reason: FailureReason, message: impl Into<String>) -> Self {
        Decision::Failed {
            reason,
            message: message.into(),
        }
    }
}

/// Applies `request` to the ledger within the caller's transaction: validates it, locks its
/// accounts in id order, and debits then credits with conditional updates and journal entries.
/// `grace_over` says whether an unknown account is final (`unknown_account`) or retried.
pub async fn apply(
    conn: &mut Conn,
    request: &TransactionRequested,
    grace_over: bool,
    now: DateTime<Utc>,
) -> Result<Decision, LedgerError> {
    let valid = match validate_event(request) {
        Ok(valid) => valid,
        Err(invalid) => return Ok(Decision::failed(FailureReason::Invalid, invalid.detail)),
    };
    let amount = valid.amount.minor_units();
    let currency = valid.amount.currency();

    let mut ids: Vec<&str> = valid.accounts().collect();
    ids.sort_unstable();
    ids.dedup();
    let locked = storage::lock_accounts(conn, &ids).await?;
    let accounts: BTreeMap<&str, Account> = ids
        .iter()
        .filter_map(|id| Some((*id, locked.iter().find(|a| a.id == *id)?.clone())))
        .collect();
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !accounts.contains_key(*id))
        .map(|id| id.to_string())
        .collect();
    if !missing.is_empty() {
        let quoted: Vec<String> = missing.iter().map(|id| format!("`{id}`")).collect();
        let message = format!("unknown account {}", quoted.join(" and "));
        return Ok(if grace_over {
            Decision::failed(FailureReason::UnknownAccount, message)
        } else {
            Decision::Wait { missing, message }
        });
    }
    for (id, account) in &accounts {
        if account.currency != currency.code() {
            return Ok(Decision::failed(
                FailureReason::CurrencyMismatch,
                format!(
                    "account `{id}` holds {}, the request is in {currency}",
                    account.currency
                ),
            ));
        }
    }
    if let Some(to) = valid.to.as_deref() {
        let balance = accounts.get(to).map_or(0, |a| a.balance);
        if balance.checked_add(amount).is_none() {
            return Ok(Decision::failed(
                FailureReason::Invalid,
                format!("the balance of account `{to}` would exceed what the ledger can hold"),
            ));
        }
    }

    let decimals = currency.decimals();
    let mut balances = BTreeMap::new();
    // Debit first: when it is refused nothing has changed, so a transfer is all or nothing.
    let mut entries = Vec::with_capacity(2);
    if let Some(from) = valid.from.as_deref() {
        match storage::debit(conn, from, amount, now).await? {
            Some(applied) => {
                entries.push(NewEntry {
                    account_id: from,
                    delta: -amount,
                    applied,
                });
                balances.insert(from.to_string(), applied.balance_after);
            }
            None => {
                let balance = accounts.get(from).map_or(0, |a| a.balance);
                return Ok(Decision::failed(
                    FailureReason::InsufficientFunds,
                    format!(
                        "account `{from}` has {} {currency}, less than the {} {currency} requested",
                        format_minor(balance, decimals),
                        format_minor(amount, decimals)
                    ),
                ));
            }
        }
    }
    if let Some(to) = valid.to.as_deref() {
        let applied = storage::credit(conn, to, amount, now)
            .await?
            .ok_or_else(|| {
                LedgerError::Inconsistent(format!("credit of locked account `{to}` not applied"))
            })?;
        entries.push(NewEntry {
            account_id: to,
            delta: amount,
            applied,
        });
        balances.insert(to.to_string(), applied.balance_after);
    }
    storage::insert_entries(conn, &valid.transaction_id, &entries, now).await?;
    Ok(Decision::Processed {
        request: valid,
        balances,
    })
}

/// The request as it goes into `transaction.processed`: amount and currency normalised.
pub fn normalized(request: &TransactionRequested, valid: &ValidRequest) -> TransactionRequested {
    TransactionRequested {
        transaction_id: valid.transaction_id.clone(),
        kind: valid.kind,
        from: valid.from.clone(),
        to: valid.to.clone(),
        amount: valid.amount.to_decimal_string(),
        currency: valid.amount.currency().code().to_string(),
        requested_at: request.requested_at,
    }
}

/// Balances in minor units as decimal strings of `decimals` places.
pub fn balances_text(balances: &BTreeMap<String, i64>, decimals: u8) -> BTreeMap<String, String> {
    balances
        .iter()
        .map(|(id, minor)| (id.clone(), format_minor(*minor, decimals)))
        .collect()
}
