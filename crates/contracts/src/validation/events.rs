//! The rules of whole events and requests ([`Validate`]): a transaction request as the API checks
//! it, a processed transaction's balances, a declined transaction's message, a new customer.

use crate::events::{
    CustomerCreated, FailureReason, TransactionFailed, TransactionProcessed, TransactionRequested,
};
use crate::money::Money;

use super::fields::{
    check_account_id, check_customer_id, check_email, check_name, check_transaction_id, infer_kind,
    parse_amount, parse_currency, Invalid, MAX_MESSAGE_LEN,
};

/// An event with rules of its own, which every consumer checks before applying it (a
/// consumer's `decode` refuses, and so dead-letters, an event that breaks them).
pub trait Validate {
    /// Checks the event: the first field that breaks a rule, if any.
    fn validate(&self) -> Result<(), Invalid>;
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
    use crate::events::TransactionKind;
    use crate::money::Currency;
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
