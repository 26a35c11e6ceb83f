//! What to tell whom: the recipients of each event and the text of each message (plain text,
//! amounts with their currency, the other party, the new balance or the reason, the transaction).

use std::collections::HashMap;

use contracts::{
    CustomerCreated, FailureReason, Money, TransactionFailed, TransactionKind,
    TransactionProcessed, TransactionRequested,
};
use serde::Serialize;
use utoipa::ToSchema;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A new customer's welcome message.
    Welcome,
    /// Money left the customer's account (transfer sent, withdrawal).
    DebitAlert,
    /// Money arrived in the customer's account (transfer received, deposit).
    CreditAlert,
    /// A transaction the customer requested was declined.
    FailureAlert,
}

impl Kind {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::DebitAlert => "debit_alert",
            Kind::CreditAlert => "credit_alert",
            Kind::FailureAlert => "failure_alert",
        }
    }

    /// The kind of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Kind::Welcome,
            Kind::DebitAlert,
            Kind::CreditAlert,
            Kind::FailureAlert,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// A customer as this service knows them (the projection of `Customer.created`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Customer id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

impl From<&CustomerCreated> for Contact {
    fn from(customer: &CustomerCreated) -> Self {
        Self {
            id: customer.id.clone(),
            name: customer.name.clone(),
            email: customer.email.clone(),
        }
    }
}

/// A message to record for one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The customer it is for.
    pub customer_id: String,
    /// What it is about.
    pub kind: Kind,
    /// The transaction it is about, if any.
    pub transaction_id: Option<String>,
    /// Email address (empty when the customer is unknown).
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// A transaction outcome worth telling customers about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `transaction.processed`.
    Processed(TransactionProcessed),
    /// `transaction.failed`.
    Failed(TransactionFailed),
}

impl Notice {
    /// The request the outcome is about.
    pub fn request(&self) -> &TransactionRequested {
        match self {
            Notice::Processed(p) => &p.request,
            Notice::Failed(f) => &f.request,
        }
    }

    /// Who gets a message, and which: for a transfer a debit alert to `from` and a credit alert
    /// to `to`; for a failure, a failure alert to the requester (`from`, or `to` for a credit).
    /// A failure reporting a malformed request (reason `invalid`) goes to nobody: no API ever
    /// accepted it, so the accounts it names did not ask for anything.
    pub fn recipients(&self) -> Vec<(String, Kind)> {
        let request = self.request();
        match self {
            Notice::Processed(_) => {
                let mut out = Vec::new();
                if let (Some(from), TransactionKind::Transfer | TransactionKind::Debit) =
                    (&request.from, request.kind)
                {
                    out.push((from.clone(), Kind::DebitAlert));
                }
                if let (Some(to), TransactionKind::Transfer | TransactionKind::Credit) =
                    (&request.to, request.kind)
                {
                    out.push((to.clone(), Kind::CreditAlert));
                }
                out
            }
            Notice::Failed(failed) if !failed.describes_a_valid_request() => Vec::new(),
            Notice::Failed(_) => requester(request)
                .map(|id| vec![(id.to_string(), Kind::FailureAlert)])
                .unwrap_or_default(),
        }
    }

    /// Every account the request names (recipients and other parties).
    pub fn parties(&self) -> Vec<String> {
        let request = self.request();
        let mut out: Vec<String> = [&request.from, &request.to]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        out.dedup();
        out
    }

    /// True when the event itself says an account does not exist: then a recipient missing from
    /// the projection will not appear later, and waiting for it is pointless.
    pub fn reports_unknown_account(&self) -> bool {
        matches!(self, Notice::Failed(f) if f.reason == FailureReason::UnknownAccount)
    }

    /// The message for `recipient` (a contact from `contacts`, or a stand-in when unknown);
    /// `contacts` also names the other party.
    pub fn render(
        &self,
        recipient: &Contact,
        kind: Kind,
        contacts: &HashMap<String, Contact>,
    ) -> Draft {
        let request = self.request();
        let amount = amount(request);
        let party = |id: &Option<String>| match id {
            Some(id) => match contacts.get(id) {
                Some(contact) => (contact.name.clone(), format!("{} ({id})", contact.name)),
                None => (id.clone(), id.clone()),
            },
            None => ("nobody".to_string(), "nobody".to_string()),
        };
        let (subject, lines) = match self {
            Notice::Processed(processed) => {
                let balance = balance(processed, &recipient.id);
                let (subject, what) = match (request.kind, kind) {
                    (TransactionKind::Transfer, Kind::CreditAlert) => {
                        let (name, full) = party(&request.from);
                        (
                            format!("You received {amount} from {name}"),
                            format!("You received {amount} from {full}."),
                        )
                    }
                    (TransactionKind::Transfer, _) => {
                        let (name, full) = party(&request.to);
                        (
                            format!("You sent {amount} to {name}"),
                            format!("You sent {amount} to {full}."),
                        )
                    }
                    (TransactionKind::Credit, _) => (
                        format!("Deposit of {amount} received"),
                        format!("{amount} was deposited to your account."),
                    ),
                    (TransactionKind::Debit, _) => (
                        format!("Withdrawal of {amount}"),
                        format!("{amount} was withdrawn from your account."),
                    ),
                };
                (
                    subject,
                    vec![
                        what,
                        format!("Your new balance is {balance}."),
                        String::new(),
                        format!("Transaction: {}", request.transaction_id),
                        format!("Processed at: {}", processed.processed_at.to_rfc3339()),
                    ],
                )
            }
            Notice::Failed(failed) => {
                let what = match request.kind {
                    TransactionKind::Transfer => {
                        let (name, full) = party(&request.to);
                        (
                            format!("transfer of {amount} to {name}"),
                            format!("transfer of {amount} to {full}"),
                        )
                    }
                    TransactionKind::Credit => (
                        format!("deposit of {amount}"),
                        format!("deposit of {amount}"),
                    ),
                    TransactionKind::Debit => (
                        format!("withdrawal of {amount}"),
                        format!("withdrawal of {amount}"),
                    ),
                };
                let reason = match failed.message.trim() {
                    "" => reason_text(failed.reason).to_string(),
                    message => format!("{} ({message})", reason_text(failed.reason)),
                };
                (
                    format!("Transaction declined: {}", what.0),
                    vec![
                        format!("Your {} was declined.", what.1),
                        format!("Reason: {reason}."),
                        "No money was moved.".to_string(),
                        String::new(),
                        format!("Transaction: {}", request.transaction_id),
                        format!("Declined at: {}", failed.failed_at.to_rfc3339()),
                    ],
                )
            }
        };
        Draft {
            customer_id: recipient.id.clone(),
            kind,
            transaction_id: Some(request.transaction_id.clone()),
            recipient: recipient.email.clone(),
            subject,
            body: letter(&recipient.name, &lines),
        }
    }
}

/// The welcome message of a new customer.
pub fn welcome(customer: &CustomerCreated) -> Draft {
    Draft {
        customer_id: customer.id.clone(),
        kind: Kind::Welcome,
        transaction_id: None,
        recipient: customer.email.clone(),
        subject: format!("Welcome, {}", customer.name),
        body: letter(
            &customer.name,
            &[
                "Welcome aboard!".to_string(),
                format!("Your customer id is {}.", customer.id),
                "We will write to you here about every transaction".to_string(),
                "on your account.".to_string(),
            ],
        ),
    }
}

/// The customer a failure alert goes to: whoever asked (the debited account, or the credited
/// one for a deposit).
fn requester(request: &TransactionRequested) -> Option<&str> {
    match request.kind {
        TransactionKind::Credit => request.to.as_deref().or(request.from.as_deref()),
        _ => request.from.as_deref().or(request.to.as_deref()),
    }
}

/// `"100.00 USD"`; a malformed amount (not expected: events are validated when decoded) is
/// shown as given.
fn amount(request: &TransactionRequested) -> String {
    match request.money() {
        Ok(money) => money.to_string(),
        Err(_) => format!("{} {}", request.amount, request.currency),
    }
}

/// The balance `account` was left with, with its currency.
fn balance(processed: &TransactionProcessed, account: &str) -> String {
    let currency = &processed.request.currency;
    match processed.balances.get(account) {
        Some(text) => match currency.parse().map(|c| Money::parse(text, c)) {
            Ok(Ok(money)) => money.to_string(),
            _ => format!("{text} {currency}"),
        },
        None => "not reported".to_string(),
    }
}

fn reason_text(reason: FailureReason) -> &'static str {
    match reason {
        FailureReason::InsufficientFunds => "insufficient funds",
        FailureReason::UnknownAccount => "unknown account",
        FailureReason::Invalid => "invalid request",
        FailureReason::CurrencyMismatch => "currency mismatch",
    }
}

fn letter(name: &str, lines: &[String]) -> String {
    let mut body = format!("Hello {name},\n\n");
    for line in lines {
        body.push_str(line);
        body.push('\n');
    }
    body.push_str("\n-- \nEvent Bank notifications\n");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::samples;

    fn request(
        kind: TransactionKind,
        from: Option<&str>,
        to: Option<&str>,
    ) -> TransactionRequested {
        samples::requested("txn-1", kind, from, to, "100")
    }

    fn processed(request: TransactionRequested, balances: &[(&str, &str)]) -> Notice {
        Notice::Processed(samples::processed(request, balances))
    }

    fn failed(request: TransactionRequested, reason: FailureReason) -> Notice {
        let message = "balance 0.00 USD is below 100.00 USD";
        Notice::Failed(samples::failed(request, reason, message))
    }

    fn contacts() -> HashMap<String, Contact> {
        [("a", "Ann Lee"), ("b", "Bob Roe")]
            .into_iter()
            .map(|(id, name)| {
                (
                    id.to_string(),
                    Contact {
                        id: id.into(),
                        name: name.into(),
                        email: format!("{id}@example.com"),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn recipients_follow_the_kind() {
        let transfer = processed(
            request(TransactionKind::Transfer, Some("a"), Some("b")),
            &[],
        );
        assert_eq!(
            transfer.recipients(),
            [
                ("a".into(), Kind::DebitAlert),
                ("b".into(), Kind::CreditAlert)
            ]
        );
        let deposit = processed(request(TransactionKind::Credit, None, Some("b")), &[]);
        assert_eq!(deposit.recipients(), [("b".into(), Kind::CreditAlert)]);
        let withdrawal = processed(request(TransactionKind::Debit, Some("a"), None), &[]);
        assert_eq!(withdrawal.recipients(), [("a".into(), Kind::DebitAlert)]);
        let declined = failed(
            request(TransactionKind::Transfer, Some("a"), Some("b")),
            FailureReason::InsufficientFunds,
        );
        assert_eq!(declined.recipients(), [("a".into(), Kind::FailureAlert)]);
        let declined_deposit = failed(
            request(TransactionKind::Credit, None, Some("b")),
            FailureReason::Invalid,
        );
        assert_eq!(
            declined_deposit.recipients(),
            [("b".into(), Kind::FailureAlert)]
        );
    }

    #[test]
    fn transfer_alerts_name_amount_party_balance_and_transaction() {
        let contacts = contacts();
        let notice = processed(
            request(TransactionKind::Transfer, Some("a"), Some("b")),
            &[("a", "400.00"), ("b", "100.00")],
        );
        let debit = notice.render(&contacts["a"], Kind::DebitAlert, &contacts);
        assert_eq!(debit.recipient, "a@example.com");
        assert_eq!(debit.subject, "You sent 100.00 USD to Bob Roe");
        assert!(debit.body.starts_with("Hello Ann Lee,"));
        assert!(debit.body.contains("You sent 100.00 USD to Bob Roe (b)."));
        assert!(debit.body.contains("Your new balance is 400.00 USD."));
        assert!(debit.body.contains("Transaction: txn-1"));
        let credit = notice.render(&contacts["b"], Kind::CreditAlert, &contacts);
        assert_eq!(credit.subject, "You received 100.00 USD from Ann Lee");
        assert!(credit.body.contains("Your new balance is 100.00 USD."));
        assert_eq!(credit.transaction_id.as_deref(), Some("txn-1"));
    }

    #[test]
    fn failure_alerts_give_the_reason() {
        let contacts = contacts();
        let notice = failed(
            request(TransactionKind::Transfer, Some("a"), Some("b")),
            FailureReason::InsufficientFunds,
        );
        let draft = notice.render(&contacts["a"], Kind::FailureAlert, &contacts);
        assert_eq!(
            draft.subject,
            "Transaction declined: transfer of 100.00 USD to Bob Roe"
        );
        assert!(draft
            .body
            .contains("Reason: insufficient funds (balance 0.00 USD is below 100.00 USD)."));
        assert!(notice.parties() == ["a", "b"]);
        assert!(!notice.reports_unknown_account());
    }

    #[test]
    fn a_declined_malformed_request_is_told_to_nobody() {
        let mut bad = request(TransactionKind::Debit, Some("a"), None);
        bad.amount = "-3".into();
        assert!(failed(bad, FailureReason::Invalid).recipients().is_empty());
        // A valid request declined as `invalid` (e.g. a balance beyond the ledger's range) is told.
        let valid = request(TransactionKind::Debit, Some("a"), None);
        assert_eq!(
            failed(valid, FailureReason::Invalid).recipients(),
            [("a".into(), Kind::FailureAlert)]
        );
    }

    #[test]
    fn welcome_greets_by_name() {
        let draft = welcome(&samples::customer("a", "Ann Lee"));
        assert_eq!(draft.subject, "Welcome, Ann Lee");
        assert_eq!(draft.kind, Kind::Welcome);
        assert!(draft.body.contains("Your customer id is a."));
        assert_eq!(Kind::parse(draft.kind.as_str()), Some(Kind::Welcome));
    }
}
