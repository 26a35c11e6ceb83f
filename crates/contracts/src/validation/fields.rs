//! The rules of single fields ([`Invalid`] names the first one broken): ids, accounts, the kind
//! implied by the accounts, currencies and amounts, customer names and email addresses.

use std::str::FromStr;

use lettre::message::Mailbox;

use crate::events::TransactionKind;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn field(result: Result<impl std::fmt::Debug, Invalid>) -> String {
        result.expect_err("refused").field
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
}
