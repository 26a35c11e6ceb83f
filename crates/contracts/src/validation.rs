//! The rules every event and request is checked against, in one place: what the HTTP APIs accept
//! is what the consumers accept. A consumer decodes an event with `Record::decode_valid` (its [`Validate`] rules), and a
//! refused event is dead-lettered (never applied, never mailed).

use std::str::FromStr;

use lettre::message::Mailbox;

use crate::events::{
    CustomerCreated, FailureReason, TransactionFailed, TransactionKind, TransactionProcessed,
    TransactionRequested,
};
use crate::money::{Currency, Money, MoneyError};

/// Longest transaction id.
pub const MAX_TRANSACTION_ID_LEN: usize = 64;
/// Longest account id named by a transaction.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;
/// Longest customer id (also the id of the customer's account).
pub const MAX_CUSTOMER_ID_LEN: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// Longest email address, in characters (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest explanation of a declined transaction, in characters.
pub const MAX_MESSAGE_LEN: usize = 1000;

/// An event with rules of its own, which every consumer checks before applying it (a
/// consumer's `decode` refuses, and so dead-letters, an event that breaks them).
pub trait Validate {
    /// Checks the event: the first field that breaks a rule, if any.
    fn validate(&self) -> Result<(), Invalid>;
}

/// A field that breaks the rules, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct Invalid {
    /// The offending field (camelCase, as on the wire).
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

impl Invalid {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

/// Checks that `value` (of `field`) has at most `max` characters, counted as sent (before any
/// trimming).
pub fn check_length(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.chars().count() <= max {
        return Ok(());
    }
    Err(Invalid::new(
        field,
        format!("`{field}` must be at most {max} characters long"),
    ))
}

/// Checks a transaction id: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn check_transaction_id(id: &str) -> Result<(), Invalid> {
    let valid = !id.is_empty()
        && id.len() <= MAX_TRANSACTION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Invalid::new(
            "transactionId",
            format!(
                "`{id}` is not a valid transaction id: 1 to {MAX_TRANSACTION_ID_LEN} characters \
                 of letters, digits, '.', '_' and '-'"
            ),
        ))
    }
}

/// Checks an account id named by a transaction: 1–128 characters, no spaces or control
/// characters.
pub fn check_account_id(field: &'static str, id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err(Invalid::new(field, format!("`{field}` must not be empty")));
    }
    if id.chars().count() > MAX_ACCOUNT_ID_LEN
        || id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Invalid::new(
            field,
            format!(
                "`{field}` is not a valid account id: at most {MAX_ACCOUNT_ID_LEN} characters, \
                 no spaces or control characters"
            ),
        ));
    }
    Ok(())
}

/// The kind implied by the accounts named, which must differ.
pub fn infer_kind(from: Option<&str>, to: Option<&str>) -> Result<TransactionKind, Invalid> {
    if from.is_some() && from == to {
        return Err(Invalid::new(
            "to",
            "`from` and `to` name the same account; a transfer needs two different accounts",
        ));
    }
    TransactionKind::infer(from, to).ok_or_else(|| {
        Invalid::new(
            "to",
            "name `to` (a credit), `from` (a debit), or both (a transfer)",
        )
    })
}

/// Parses a currency code.
pub fn parse_currency(code: &str) -> Result<Currency, Invalid> {
    code.parse::<Currency>().map_err(|_| {
        Invalid::new(
            "currency",
            format!("`{code}` is not a three-letter ISO 4217 currency code"),
        )
    })
}

/// Parses a positive amount with at most the currency's decimals. Exponent notation (`1e2`) is
/// refused: amounts are plain decimals, whether a JSON number or a string.
pub fn parse_amount(text: &str, currency: Currency) -> Result<Money, Invalid> {
    Money::parse_positive(text, currency).map_err(|e| {
        let detail = match e {
            MoneyError::NotANumber(_) if text.contains(['e', 'E']) => format!(
                "`{text}` is in exponent notation; write the amount as a plain decimal, \
                 e.g. 100 or \"100.50\""
            ),
            MoneyError::NotANumber(_) => {
                format!("`{text}` is not a decimal amount (e.g. 100 or \"100.50\")")
            }
            other => other.to_string(),
        };
        Invalid::new("amount", detail)
    })
}

/// Checks a customer id: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn check_customer_id(id: &str) -> Result<(), Invalid> {
    let len = id.chars().count();
    if len == 0 || len > MAX_CUSTOMER_ID_LEN {
        return Err(Invalid::new(
            "id",
            format!("id must be 1 to {MAX_CUSTOMER_ID_LEN} characters long"),
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Invalid::new(
            "id",
            "id may contain only letters, digits, `-`, `_` and `.`",
        ));
    }
    Ok(())
}

/// Checks a display name: not blank, at most 200 characters, no control characters.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() {
        return Err(Invalid::new(
            "name",
            "name is required and must not be blank",
        ));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(Invalid::new(
            "name",
            format!("name must be at most {MAX_NAME_LEN} characters long"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid::new(
            "name",
            "name must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks an email address: a plain ASCII `local@domain.tld` of at most 254 characters that the
/// mailer (lettre) accepts as a recipient, so that a message to it never fails for its address.
pub fn check_email(email: &str) -> Result<(), Invalid> {
    let invalid = |why: &str| Invalid::new("email", format!("not a valid email address: {why}"));
    if email.is_empty() {
        return Err(Invalid::new("email", "email is required"));
    }
    if email.chars().count() > MAX_EMAIL_LEN {
        return Err(Invalid::new(
            "email",
            format!("email must be at most {MAX_EMAIL_LEN} characters long"),
        ));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains spaces"));
    }
    if !email.is_ascii() {
        return Err(invalid("only ASCII addresses can be mailed"));
    }
    let (local, domain) = match email.split_once('@') {
        Some((local, domain)) if !domain.contains('@') => (local, domain),
        _ => return Err(invalid("it needs exactly one `@`")),
    };
    if local.is_empty() {
        return Err(invalid("nothing before the `@`"));
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err(invalid("the domain needs a dot between non-empty labels"));
    }
    match Mailbox::from_str(email) {
        Ok(mailbox) if mailbox.name.is_none() && AsRef::<str>::as_ref(&mailbox.email) == email => {
            Ok(())
        }
        _ => Err(invalid("the mail server cannot be given it as a recipient")),
    }
}

impl TransactionRequested {
    /// Checks the request as the API does: ids, a kind matching the accounts named (two
    /// different accounts for a transfer), a known currency, an amount greater than zero with
    /// at most the currency's decimals. Returns the amount.
    pub fn validate(&self) -> Result<Money, Invalid> {
        check_transaction_id(&self.transaction_id)?;
        if let Some(from) = &self.from {
            check_account_id("from", from)?;
        }
        if let Some(to) = &self.to {
            check_account_id("to", to)?;
        }
        let kind = infer_kind(self.from.as_deref(), self.to.as_deref())?;
        if kind != self.kind {
            return Err(Invalid::new(
                "kind",
                format!(
                    "kind `{}` does not match the accounts named (that is a {})",
                    self.kind.as_str(),
                    kind.as_str()
                ),
            ));
        }
        let currency = parse_currency(&self.currency)?;
        parse_amount(&self.amount, currency)
    }
}

/// A valid request, and a balance (zero or more, in the request's currency) for each account it
/// names and no other.
impl Validate for TransactionProcessed {
    fn validate(&self) -> Result<(), Invalid> {
        let amount = self.request.validate()?;
        let accounts: Vec<&str> = [&self.request.from, &self.request.to]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let reported: Vec<&str> = self.balances.keys().map(String::as_str).collect();
        let mut expected = accounts.clone();
        expected.sort_unstable();
        if reported != expected {
            return Err(Invalid::new(
                "balances",
                format!(
                    "balances must be given for exactly the accounts named ({}), not for ({})",
                    expected.join(", "),
                    reported.join(", ")
                ),
            ));
        }
        for (account, text) in &self.balances {
            match Money::parse(text, amount.currency()) {
                Ok(balance) if balance.minor_units() >= 0 => {}
                _ => {
                    return Err(Invalid::new(
                        "balances",
                        format!(
                            "the balance of `{account}` is not an amount of zero or more {}",
                            amount.currency()
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// A `transaction.failed` with reason `invalid` reports a malformed request as it came, so its
/// request is not checked (see [`TransactionFailed::describes_a_valid_request`]); for any other
/// reason the request is valid and the message one line of at most 1000 characters.
impl Validate for TransactionFailed {
    fn validate(&self) -> Result<(), Invalid> {
        if self.reason == FailureReason::Invalid {
            return Ok(());
        }
        self.request.validate()?;
        self.check_message()
    }
}

impl TransactionFailed {
    /// True when the declined request itself is valid (always, unless the reason is `invalid`)
    /// and so is the message: only then does the event name a customer to tell and an amount
    /// worth showing.
    pub fn describes_a_valid_request(&self) -> bool {
        self.request.validate().is_ok() && self.check_message().is_ok()
    }

    fn check_message(&self) -> Result<(), Invalid> {
        if self.message.chars().count() > MAX_MESSAGE_LEN
            || self.message.chars().any(char::is_control)
        {
            return Err(Invalid::new(
                "message",
                format!(
                    "message must be one line of at most {MAX_MESSAGE_LEN} characters, \
                     without control characters"
                ),
            ));
        }
        Ok(())
    }
}

/// As the API checks a registration: the id, a sane name, and an email address the mailer
/// accepts.
impl Validate for CustomerCreated {
    fn validate(&self) -> Result<(), Invalid> {
        check_customer_id(&self.id)?;
        check_name(&self.name)?;
        if self.name.trim() != self.name {
            return Err(Invalid::new("name", "name must be trimmed"));
        }
        check_email(&self.email)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    fn request(from: Option<&str>, to: Option<&str>, amount: &str) -> TransactionRequested {
        let kind = TransactionKind::infer(from, to).unwrap_or(TransactionKind::Credit);
        samples::requested("t-1", kind, from, to, amount)
    }

    fn processed(request: TransactionRequested, balances: &[(&str, &str)]) -> TransactionProcessed {
        samples::processed(request, balances)
    }

    fn failed(request: TransactionRequested, reason: FailureReason) -> TransactionFailed {
        let message = "account `a` has 0.00 USD, less than the 5.00 USD requested";
        samples::failed(request, reason, message)
    }

    fn field(result: Result<impl std::fmt::Debug, Invalid>) -> String {
        result.expect_err("refused").field
    }

    #[test]
    fn requests_are_checked_like_the_api_checks_them() {
        assert_eq!(
            request(Some("a"), Some("b"), "5").validate().unwrap(),
            Money::from_minor(500, Currency::USD)
        );
        assert_eq!(field(request(None, Some("b"), "-5").validate()), "amount");
        assert_eq!(field(request(None, Some("b"), "0").validate()), "amount");
        assert_eq!(field(request(Some("a"), Some("a"), "5").validate()), "to");
        let mut wrong_kind = request(Some("a"), None, "5");
        wrong_kind.kind = TransactionKind::Credit;
        assert_eq!(field(wrong_kind.validate()), "kind");
        let mut bad_currency = request(None, Some("b"), "5");
        bad_currency.currency = "DOLLARS".into();
        assert_eq!(field(bad_currency.validate()), "currency");
        let mut long_id = request(None, Some("b"), "5");
        long_id.transaction_id = "x".repeat(65);
        assert_eq!(field(long_id.validate()), "transactionId");
        assert_eq!(
            field(request(None, Some(&"b".repeat(129)), "5").validate()),
            "to"
        );
    }

    #[test]
    fn processed_events_report_the_balances_of_their_accounts() {
        let transfer = request(Some("a"), Some("b"), "5");
        assert!(processed(transfer.clone(), &[("a", "1.00"), ("b", "5")])
            .validate()
            .is_ok());
        for balances in [
            &[("a", "1.00")][..],
            &[("a", "1.00"), ("b", "5"), ("c", "0")],
            &[("a", "-1.00"), ("b", "5")],
            &[("a", "1.001"), ("b", "5")],
        ] {
            assert_eq!(
                field(processed(transfer.clone(), balances).validate()),
                "balances",
                "{balances:?}"
            );
        }
        let negative = processed(request(None, Some("b"), "-100"), &[("b", "0")]);
        assert_eq!(field(negative.validate()), "amount");
        let to_self = processed(request(Some("a"), Some("a"), "1"), &[("a", "0")]);
        assert_eq!(field(to_self.validate()), "to");
    }

    #[test]
    fn failed_events_carry_a_valid_request_unless_it_was_invalid() {
        let declined = failed(
            request(Some("a"), None, "5"),
            FailureReason::InsufficientFunds,
        );
        assert!(declined.validate().is_ok());
        assert!(declined.describes_a_valid_request());
        let forged = failed(
            request(Some("a"), None, "-5"),
            FailureReason::InsufficientFunds,
        );
        assert_eq!(field(forged.validate()), "amount");
        let mut multiline = declined.clone();
        multiline.message = "line\nanother".into();
        assert_eq!(field(multiline.validate()), "message");
        let reported = failed(request(Some("a"), None, "-5"), FailureReason::Invalid);
        assert!(reported.validate().is_ok());
        assert!(!reported.describes_a_valid_request());
        let too_large = failed(request(None, Some("b"), "5"), FailureReason::Invalid);
        assert!(too_large.describes_a_valid_request());
    }

    #[test]
    fn emails_are_what_the_mailer_accepts() {
        for good in [
            "john@example.com",
            "a.b+tag@mail.example.org",
            "x_y-z@sub.example.co",
        ] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "plain",
            "a@@b.io",
            "a@b@c.io",
            "@b.io",
            "a@localhost",
            "a@.io",
            "a@b.",
            "a b@c.io",
            " a@b.io",
            "jos\u{e9}@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a@-example.com",
            "Ann <a@b.io>",
        ] {
            let refused = check_email(bad).expect_err(bad);
            // The address itself never appears: the reason goes to logs and dead letters.
            assert!(
                bad.is_empty() || !refused.detail.contains(bad) && !refused.detail.contains("@ex"),
                "{bad:?}: {}",
                refused.detail
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(field(check_email(&long_local)), "email");
        let too_long = format!("a@{}.com", "b".repeat(250));
        assert_eq!(field(check_email(&too_long)), "email");
    }

    #[test]
    fn customers_are_checked_like_registrations() {
        let customer = samples::customer("cust-1", "Ann Lee");
        assert_eq!(customer.validate(), Ok(()));
        let with = |change: fn(&mut CustomerCreated)| {
            let mut c = customer.clone();
            change(&mut c);
            field(c.validate())
        };
        assert_eq!(with(|c| c.id = "has space".into()), "id");
        assert_eq!(with(|c| c.id = "x".repeat(65)), "id");
        assert_eq!(with(|c| c.name = " ".into()), "name");
        assert_eq!(with(|c| c.name = "Ann\r\nBcc: x@y.io".into()), "name");
        assert_eq!(with(|c| c.name = "n".repeat(201)), "name");
        assert_eq!(with(|c| c.email = "a..b@example.com".into()), "email");
    }
}
