//! Sample events for tests (feature `samples`): one place builds them, so that a field added to
//! a contract is added to every test's events at once. Accounts and amounts are the caller's;
//! the currency is USD, e-mails are `<id>@example.com` and timestamps are now.

use chrono::Utc;

use crate::{
    CustomerCreated, FailureReason, TransactionFailed, TransactionKind, TransactionProcessed,
    TransactionRequested,
};

/// A `Customer.created` for `id` named `name` (e-mail `<id>@example.com`).
pub fn customer(id: &str, name: &str) -> CustomerCreated {
    CustomerCreated {
        id: id.to_string(),
        name: name.to_string(),
        email: email(id),
        created_at: Utc::now(),
    }
}

/// The e-mail address of sample customer `id`.
pub fn email(id: &str) -> String {
    format!("{id}@example.com")
}

/// A `transaction.requested` of `amount` USD (its exact text: a sample may be invalid on
/// purpose).
pub fn requested(
    transaction_id: &str,
    kind: TransactionKind,
    from: Option<&str>,
    to: Option<&str>,
    amount: &str,
) -> TransactionRequested {
    TransactionRequested {
        transaction_id: transaction_id.to_string(),
        kind,
        from: from.map(str::to_string),
        to: to.map(str::to_string),
        amount: amount.to_string(),
        currency: "USD".to_string(),
        requested_at: Utc::now(),
    }
}

/// The `transaction.processed` of `request`, with the accounts' new `balances`.
pub fn processed(request: TransactionRequested, balances: &[(&str, &str)]) -> TransactionProcessed {
    TransactionProcessed {
        request,
        balances: balances
            .iter()
            .map(|(account, balance)| (account.to_string(), balance.to_string()))
            .collect(),
        processed_at: Utc::now(),
    }
}

/// The `transaction.failed` of `request`, for `reason`, saying `message`.
pub fn failed(
    request: TransactionRequested,
    reason: FailureReason,
    message: &str,
) -> TransactionFailed {
    TransactionFailed {
        request,
        reason,
        message: message.to_string(),
        failed_at: Utc::now(),
    }
}
