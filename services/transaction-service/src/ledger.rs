//! Applying requested transactions to the balances: the consumer's domain step, in memory. The
//! accounts a batch touches are locked and loaded once ([`Book::new`]); each request is then
//! decided in order against the balances the earlier ones left, and the batch's writes (journal
//! entries, balances) are taken from the book in one go. Accepting a request over HTTP is
//! [`crate::acceptance`]'s.

use std::collections::{BTreeMap, BTreeSet};

use contracts::money::format_minor;
use contracts::{Currency, FailureReason, TransactionRequested};

use crate::domain::{check_amount_limit, validate_event, ValidRequest};
use crate::storage::batch::{Held, NewEntry};

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

/// The locked accounts of a batch, as the requests decided so far left them, and the journal
/// entries those requests appended.
#[derive(Debug, Default)]
pub struct Book {
    /// Largest amount a request may carry (`MAX_AMOUNT_MINOR`): requests that come straight
    /// through Kafka are held to it too.
    max_amount_minor: i64,
    accounts: BTreeMap<String, Held>,
    changed: BTreeSet<String>,
    entries: Vec<NewEntry>,
}

impl Book {
    /// A book of the `accounts` a batch locked, taking amounts up to `max_amount_minor`.
    pub fn new(accounts: Vec<Held>, max_amount_minor: i64) -> Self {
        Self {
            max_amount_minor,
            accounts: accounts.into_iter().map(|a| (a.id.clone(), a)).collect(),
            ..Self::default()
        }
    }

    /// Decides `request` against the balances as they stand and, when it is processed, applies
    /// it to them (debit, then credit, a journal entry each). `grace_over` says whether an
    /// unknown account is final (`unknown_account`) or waited for.
    pub fn apply(&mut self, request: &TransactionRequested, grace_over: bool) -> Decision {
        let valid = match validate_event(request).and_then(|valid| {
            check_amount_limit(valid.amount, self.max_amount_minor).map(|()| valid)
        }) {
            Ok(valid) => valid,
            Err(invalid) => return Decision::failed(FailureReason::Invalid, invalid.detail),
        };
        if let Some(refused) = self.refusal(&valid, grace_over) {
            return refused;
        }
        self.post(valid)
    }

    /// The accounts whose balance changed, to write back.
    pub fn changed(&self) -> Vec<&Held> {
        self.changed
            .iter()
            .filter_map(|id| self.accounts.get(id))
            .collect()
    }

    /// The journal entries of the processed requests, in order.
    pub fn entries(&self) -> &[NewEntry] {
        &self.entries
    }

    /// Why `valid` cannot be applied, if it cannot: an account not open yet (wait, or fail once
    /// `grace_over`), another currency, or a balance the ledger cannot hold.
    fn refusal(&self, valid: &ValidRequest, grace_over: bool) -> Option<Decision> {
        let mut ids: Vec<&str> = valid.accounts().collect();
        ids.sort_unstable();
        ids.dedup();
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !self.accounts.contains_key(**id))
            .map(|id| id.to_string())
            .collect();
        if !missing.is_empty() {
            let quoted: Vec<String> = missing.iter().map(|id| format!("`{id}`")).collect();
            let message = format!("unknown account {}", quoted.join(" and "));
            return Some(if grace_over {
                Decision::failed(FailureReason::UnknownAccount, message)
            } else {
                Decision::Wait { missing, message }
            });
        }
        let currency = valid.amount.currency();
        if let Some(account) = ids
            .iter()
            .filter_map(|id| self.accounts.get(*id))
            .find(|account| account.currency != currency.code())
        {
            return Some(Decision::failed(
                FailureReason::CurrencyMismatch,
                format!(
                    "account `{}` holds {}, the request is in {currency}",
                    account.id, account.currency
                ),
            ));
        }
        let to = valid.to.as_deref()?;
        let balance = self.accounts.get(to).map_or(0, |a| a.balance);
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

    /// Debits then credits `valid`'s accounts and appends the journal entries: processed with
    /// the balances after it, or failed when the debit would take the balance below zero. The
    /// debit comes first: when it is refused nothing has changed, so a transfer is all or
    /// nothing.
    fn post(&mut self, valid: ValidRequest) -> Decision {
        let amount = valid.amount.minor_units();
        if let Some(from) = valid.from.as_deref() {
            let balance = self.accounts.get(from).map_or(0, |a| a.balance);
            if balance < amount {
                return insufficient_funds(from, balance, &valid);
            }
        }
        let mut balances = BTreeMap::new();
        let moves = [
            (valid.from.as_deref(), -amount),
            (valid.to.as_deref(), amount),
        ];
        for (account, delta) in moves {
            let Some(account) = account.and_then(|id| self.accounts.get_mut(id)) else {
                continue;
            };
            account.balance += delta;
            account.last_seq += 1;
            self.entries.push(NewEntry {
                account_id: account.id.clone(),
                seq: account.last_seq,
                transaction_id: valid.transaction_id.clone(),
                delta,
                balance_after: account.balance,
            });
            self.changed.insert(account.id.clone());
            balances.insert(account.id.clone(), account.balance);
        }
        Decision::Processed {
            request: valid,
            balances,
        }
    }
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
