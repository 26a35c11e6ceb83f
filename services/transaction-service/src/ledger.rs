//! Applying a requested transaction to the balances: the consumer's domain step. It runs inside
//! the consumer's database transaction (with the inbox claim and the outcome event) and awaits
//! nothing but that transaction. Accepting a request over HTTP is [`crate::acceptance`]'s.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::money::format_minor;
use contracts::{Currency, FailureReason, TransactionRequested};
use platform::db::Conn;

use crate::domain::{validate_event, ValidRequest};
use crate::error::Error;
use crate::storage::{self, Account, NewEntry};

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
) -> Result<Decision, Error> {
    let valid = match validate_event(request) {
        Ok(valid) => valid,
        Err(invalid) => return Ok(Decision::failed(FailureReason::Invalid, invalid.detail)),
    };
    let accounts = lock(conn, &valid).await?;
    if let Some(refused) = refusal(&valid, &accounts, grace_over) {
        return Ok(refused);
    }
    post(conn, valid, &accounts.found, now).await
}

/// The accounts of a request, locked for the rest of the transaction.
struct Locked {
    /// The open accounts, by id.
    found: BTreeMap<String, Account>,
    /// The ids of the accounts not open yet.
    missing: Vec<String>,
}

/// Locks the accounts `valid` touches, in id order, and reads them.
async fn lock(conn: &mut Conn, valid: &ValidRequest) -> Result<Locked, Error> {
    let mut ids: Vec<&str> = valid.accounts().collect();
    ids.sort_unstable();
    ids.dedup();
    let locked = storage::lock_accounts(conn, &ids).await?;
    let found: BTreeMap<String, Account> = locked
        .into_iter()
        .filter(|account| ids.contains(&account.id.as_str()))
        .map(|account| (account.id.clone(), account))
        .collect();
    let missing = ids
        .iter()
        .filter(|id| !found.contains_key(**id))
        .map(|id| id.to_string())
        .collect();
    Ok(Locked { found, missing })
}

/// Why `valid` cannot be applied to its locked accounts, if it cannot: an account not open yet
/// (wait, or fail once `grace_over`), another currency, or a balance the ledger cannot hold.
fn refusal(valid: &ValidRequest, accounts: &Locked, grace_over: bool) -> Option<Decision> {
    if !accounts.missing.is_empty() {
        let quoted: Vec<String> = accounts
            .missing
            .iter()
            .map(|id| format!("`{id}`"))
            .collect();
        let message = format!("unknown account {}", quoted.join(" and "));
        return Some(if grace_over {
            Decision::failed(FailureReason::UnknownAccount, message)
        } else {
            Decision::Wait {
                missing: accounts.missing.clone(),
                message,
            }
        });
    }
    let currency = valid.amount.currency();
    if let Some((id, account)) = accounts
        .found
        .iter()
        .find(|(_, account)| account.currency != currency.code())
    {
        return Some(Decision::failed(
            FailureReason::CurrencyMismatch,
            format!(
                "account `{id}` holds {}, the request is in {currency}",
                account.currency
            ),
        ));
    }
    let to = valid.to.as_deref()?;
    let balance = accounts.found.get(to).map_or(0, |a| a.balance);
    balance
        .checked_add(valid.amount.minor_units())
        .is_none()
        .then(|| {
            Decision::failed(
                FailureReason::Invalid,
                format!("the balance of account `{to}` would exceed what the ledger can hold"),
            )
        })
}

/// Debits then credits `valid`'s locked `accounts` and appends the journal entries: processed
/// with the balances after it, or failed when the debit would take the balance below zero. The
/// debit comes first: when it is refused nothing has changed, so a transfer is all or nothing.
async fn post(
    conn: &mut Conn,
    valid: ValidRequest,
    accounts: &BTreeMap<String, Account>,
    now: DateTime<Utc>,
) -> Result<Decision, Error> {
    let amount = valid.amount.minor_units();
    let mut balances = BTreeMap::new();
    let mut entries = Vec::with_capacity(2);
    if let Some(from) = valid.from.as_deref() {
        let Some(applied) = storage::debit(conn, from, amount, now).await? else {
            let balance = accounts.get(from).map_or(0, |a| a.balance);
            return Ok(insufficient_funds(from, balance, &valid));
        };
        entries.push(NewEntry {
            account_id: from,
            delta: -amount,
            applied,
        });
        balances.insert(from.to_string(), applied.balance_after);
    }
    if let Some(to) = valid.to.as_deref() {
        let applied = storage::credit(conn, to, amount, now)
            .await?
            .ok_or_else(|| {
                Error::Inconsistent(format!("credit of locked account `{to}` not applied"))
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

/// The refusal of a debit of `valid` from account `from`, which holds `balance`.
fn insufficient_funds(from: &str, balance: i64, valid: &ValidRequest) -> Decision {
    let currency: Currency = valid.amount.currency();
    let decimals = currency.decimals();
    Decision::failed(
        FailureReason::InsufficientFunds,
        format!(
            "account `{from}` has {} {currency}, less than the {} {currency} requested",
            format_minor(balance, decimals),
            format_minor(valid.amount.minor_units(), decimals)
        ),
    )
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
