//! Domain rules of a transaction request: which fields are valid, what kind a request is, and the
//! canonical fingerprint that makes requests idempotent. Shared by the HTTP API and the consumer
//! of `transaction.requested` (requests may come from other producers, straight into Kafka). The
//! field rules themselves are `contracts::validation`'s, shared with every consumer of an event.

use contracts::{Money, TransactionKind, TransactionRequested};
use serde_json::value::RawValue;
use serde_json::Value;

pub use contracts::validation::{
    check_account_id, check_transaction_id, infer_kind, parse_amount, parse_currency, Invalid,
    MAX_ACCOUNT_ID_LEN, MAX_TRANSACTION_ID_LEN,
};

/// Longest transaction id a record may carry before it is dead-lettered (and so the longest id
/// `GET /transactions/{id}` may find).
pub const MAX_EVENT_TRANSACTION_ID_LEN: usize = 256;

/// A valid transaction request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequest {
    /// The idempotency key.
    pub transaction_id: String,
    /// Transfer, credit or debit (implied by the accounts named).
    pub kind: TransactionKind,
    /// The debited account.
    pub from: Option<String>,
    /// The credited account.
    pub to: Option<String>,
    /// The amount, greater than zero.
    pub amount: Money,
}

impl ValidRequest {
    /// The canonical fingerprint of this request (everything but its id).
    pub fn fingerprint(&self) -> String {
        fingerprint(
            self.kind,
            self.from.as_deref(),
            self.to.as_deref(),
            &Value::from(self.amount.minor_units()),
            self.amount.currency().code(),
        )
    }

    /// The accounts the request touches.
    pub fn accounts(&self) -> impl Iterator<Item = &str> {
        self.from.iter().chain(self.to.iter()).map(String::as_str)
    }
}

/// A canonical, unambiguous text of a request's content: two requests with the same id are the
/// same request exactly when their fingerprints are equal (`100` and `"100.00"` are the same).
pub fn fingerprint(
    kind: TransactionKind,
    from: Option<&str>,
    to: Option<&str>,
    amount: &Value,
    currency: &str,
) -> String {
    serde_json::json!([kind.as_str(), from, to, amount, currency]).to_string()
}

/// The fingerprint of a request read from Kafka, valid or not.
pub fn event_fingerprint(request: &TransactionRequested) -> String {
    match validate_event(request) {
        Ok(valid) => valid.fingerprint(),
        Err(_) => fingerprint(
            request.kind,
            request.from.as_deref(),
            request.to.as_deref(),
            &Value::from(request.amount.as_str()),
            &request.currency,
        ),
    }
}

/// Checks that `amount` is at most `max_minor` minor units (`MAX_AMOUNT_MINOR`).
pub fn check_amount_limit(amount: Money, max_minor: i64) -> Result<(), Invalid> {
    if amount.minor_units() <= max_minor {
        return Ok(());
    }
    let max = Money::from_minor(max_minor, amount.currency());
    Err(Invalid::new(
        "amount",
        format!(
            "amount {} is above the largest accepted amount, {max} \
             ({max_minor} minor units, MAX_AMOUNT_MINOR)",
            amount.to_decimal_string()
        ),
    ))
}

/// The decimal text of a raw JSON amount, `None` for `null`: a number exactly as written (never
/// through a float) or the content of a string.
pub fn amount_text(raw: &RawValue) -> Result<Option<String>, Invalid> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Ok(Some(text.to_string())),
        Some(b'"') => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| Invalid::new("amount", format!("`amount` is not a valid string: {e}"))),
        _ if text == "null" => Ok(None),
        _ => Err(Invalid::new(
            "amount",
            "`amount` must be a number or a decimal string, e.g. 100 or \"100.00\"",
        )),
    }
}

/// Validates a request read from `transaction.requested` (any producer). The error's detail is
/// the `message` of the `transaction.failed` event.
pub fn validate_event(request: &TransactionRequested) -> Result<ValidRequest, Invalid> {
    let amount = request.validate()?;
    Ok(ValidRequest {
        transaction_id: request.transaction_id.clone(),
        kind: request.kind,
        from: request.from.clone(),
        to: request.to.clone(),
        amount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::Currency;

    fn event(from: Option<&str>, to: Option<&str>, amount: &str) -> TransactionRequested {
        let kind = TransactionKind::infer(from, to).unwrap_or(TransactionKind::Credit);
        contracts::samples::requested("t-1", kind, from, to, amount)
    }

    #[test]
    fn transaction_ids_are_short_and_plain() {
        assert!(check_transaction_id("txn-123").is_ok());
        assert!(check_transaction_id("a.b_c-D9").is_ok());
        assert!(check_transaction_id(&"x".repeat(64)).is_ok());
        for bad in ["", "has space", "ünï", "a/b", &"x".repeat(65)] {
            assert_eq!(
                check_transaction_id(bad).unwrap_err().field,
                "transactionId"
            );
        }
    }

    #[test]
    fn kind_follows_the_accounts() {
        assert_eq!(
            infer_kind(Some("a"), Some("b")),
            Ok(TransactionKind::Transfer)
        );
        assert_eq!(infer_kind(None, Some("b")), Ok(TransactionKind::Credit));
        assert_eq!(infer_kind(Some("a"), None), Ok(TransactionKind::Debit));
        assert_eq!(infer_kind(None, None).unwrap_err().field, "to");
        assert!(infer_kind(Some("a"), Some("a"))
            .unwrap_err()
            .detail
            .contains("same account"));
    }

    fn raw_amount(json: &str) -> Result<Option<String>, Invalid> {
        amount_text(&serde_json::from_str::<Box<RawValue>>(json).unwrap())
    }

    #[test]
    fn amounts_come_from_numbers_or_strings() {
        assert_eq!(raw_amount("100").unwrap().as_deref(), Some("100"));
        assert_eq!(raw_amount("12.5").unwrap().as_deref(), Some("12.5"));
        assert_eq!(
            raw_amount("100.999999999999999").unwrap().as_deref(),
            Some("100.999999999999999")
        );
        assert_eq!(raw_amount(r#""7.25""#).unwrap().as_deref(), Some("7.25"));
        assert_eq!(raw_amount(r#""\u0037""#).unwrap().as_deref(), Some("7"));
        assert_eq!(raw_amount("null").unwrap(), None);
        for bad in ["true", "[1]", r#"{"a":1}"#] {
            assert_eq!(raw_amount(bad).unwrap_err().field, "amount", "{bad}");
        }
        let usd = Currency::USD;
        assert_eq!(parse_amount("100", usd).unwrap().minor_units(), 10_000);
        for bad in ["0", "-5", "1.001", "abc", "1e3", "100.999999999999999"] {
            assert_eq!(parse_amount(bad, usd).unwrap_err().field, "amount", "{bad}");
        }
        assert!(parse_amount("1E2", usd)
            .unwrap_err()
            .detail
            .contains("exponent"));
    }

    #[test]
    fn amounts_above_the_limit_are_refused() {
        let usd = Currency::USD;
        let at_limit = Money::from_minor(1_000, usd);
        assert!(check_amount_limit(at_limit, 1_000).is_ok());
        let err = check_amount_limit(Money::from_minor(1_001, usd), 1_000).unwrap_err();
        assert_eq!(err.field, "amount");
        assert!(err.detail.contains("10.00 USD"), "{}", err.detail);
        assert!(err.detail.contains("MAX_AMOUNT_MINOR"), "{}", err.detail);
    }

    #[test]
    fn same_content_means_same_fingerprint() {
        let a = validate_event(&event(Some("a"), Some("b"), "100")).unwrap();
        let b = validate_event(&event(Some("a"), Some("b"), "100.00")).unwrap();
        let c = validate_event(&event(Some("a"), Some("b"), "100.01")).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let credit = validate_event(&event(None, Some("b"), "100")).unwrap();
        assert_ne!(a.fingerprint(), credit.fingerprint());
        assert_eq!(
            event_fingerprint(&event(Some("a"), Some("b"), "100.0")),
            a.fingerprint()
        );
    }

    #[test]
    fn events_from_other_producers_are_checked_too() {
        let mut wrong_kind = event(Some("a"), None, "5");
        wrong_kind.kind = TransactionKind::Transfer;
        assert_eq!(validate_event(&wrong_kind).unwrap_err().field, "kind");
        let mut bad_currency = event(None, Some("b"), "5");
        bad_currency.currency = "DOLLARS".into();
        assert_eq!(validate_event(&bad_currency).unwrap_err().field, "currency");
        assert_eq!(
            validate_event(&event(None, Some("b"), "-5"))
                .unwrap_err()
                .field,
            "amount"
        );
        assert_eq!(
            validate_event(&event(Some("a"), Some("a"), "5"))
                .unwrap_err()
                .field,
            "to"
        );
        assert!(event_fingerprint(&event(None, Some("b"), "abc")).contains("abc"));
    }
}
