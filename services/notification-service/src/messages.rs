//! The text of each message: plain text, amounts with their currency, the other party, the new
//! balance or the reason, the transaction. Who gets which message is [`crate::domain`]'s rule.

use std::collections::HashMap;

use contracts::{
    CustomerCreated, FailureReason, Money, TransactionFailed, TransactionKind,
    TransactionProcessed, TransactionRequested,
};

use crate::domain::{Contact, Draft, Kind, Notice};

/// A message before its greeting and signature: the subject and the lines of the body.
type Text = (String, Vec<String>);

impl Notice {
    /// The message for `recipient` (a contact from `contacts`, or a stand-in when unknown);
    /// `contacts` also names the other party.
    pub fn render(
        &self,
        recipient: &Contact,
        kind: Kind,
        contacts: &HashMap<String, Contact>,
    ) -> Draft {
        let (subject, lines) = match self {
            Notice::Processed(processed) => {
                processed_alert(processed, &recipient.id, kind, contacts)
            }
            Notice::Failed(failed) => failure_alert(failed, contacts),
        };
        Draft {
            customer_id: recipient.id.clone(),
            kind,
            transaction_id: Some(self.request().transaction_id.clone()),
            recipient: recipient.email.clone(),
            subject,
            body: letter(&recipient.name, &lines),
        }
    }
}

/// A debit or credit alert for `recipient_id`: what moved, to or from whom, the new balance.
fn processed_alert(
    processed: &TransactionProcessed,
    recipient_id: &str,
    kind: Kind,
    contacts: &HashMap<String, Contact>,
) -> Text {
    let request = &processed.request;
    let amount = amount(request);
    let (subject, what) = match (request.kind, kind) {
        (TransactionKind::Transfer, Kind::CreditAlert) => {
            let (name, full) = party(contacts, &request.from);
            (
                format!("You received {amount} from {name}"),
                format!("You received {amount} from {full}."),
            )
        }
        (TransactionKind::Transfer, _) => {
            let (name, full) = party(contacts, &request.to);
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
    let lines = vec![
        what,
        format!("Your new balance is {}.", balance(processed, recipient_id)),
        String::new(),
        format!("Transaction: {}", request.transaction_id),
        format!("Processed at: {}", processed.processed_at.to_rfc3339()),
    ];
    (subject, lines)
}

/// A failure alert: what was declined, and why; no money moved.
fn failure_alert(failed: &TransactionFailed, contacts: &HashMap<String, Contact>) -> Text {
    let request = &failed.request;
    let amount = amount(request);
    let (short, full) = match request.kind {
        TransactionKind::Transfer => {
            let (name, full) = party(contacts, &request.to);
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
    let lines = vec![
        format!("Your {full} was declined."),
        format!("Reason: {reason}."),
        "No money was moved.".to_string(),
        String::new(),
        format!("Transaction: {}", request.transaction_id),
        format!("Declined at: {}", failed.failed_at.to_rfc3339()),
    ];
    (format!("Transaction declined: {short}"), lines)
}

/// How a message names the other party: its name (for the subject) and its name with its id
/// (for the body); the id alone when the customer is unknown, `nobody` when there is none.
fn party(contacts: &HashMap<String, Contact>, id: &Option<String>) -> (String, String) {
    match id {
        Some(id) => match contacts.get(id) {
            Some(contact) => (contact.name.clone(), format!("{} ({id})", contact.name)),
            None => (id.clone(), id.clone()),
        },
        None => ("nobody".to_string(), "nobody".to_string()),
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
