//! Domain rules of a transaction request: which fields are valid, what kind a request is, and the
//! canonical fingerprint that makes requests idempotent. Shared by the HTTP API and the consumer
//! of `transaction.requested` (requests may come from other producers, straight into Kafka). The
//! field rules themselves are `contracts::validation`'s, shared with every consumer of an event.

use contracts::{Money, TransactionKind, TransactionRequested};
use serde_json::Value;

pub use contracts::validation::{
    check_account_id, check_transaction_id, infer_kind, parse_amount, parse_currency, Invalid,
    MAX_ACCOUNT_ID_LEN, MAX_TRANSACTION_ID_LEN,
};

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

/// The decimal text of a JSON amount: a number (kept as written, never through a float
/// computation) or a string.
pub fn amount_text(value: &Value) -> Result<String, Invalid> {
    match value {
        Value::Number(number) => Ok(number.to_string()),
        Value::String(text) => Ok(text.clone()),
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
    use serde_json::json;

    fn event(from: Option<&str>, to: Option<&str>, amount: &str) -> TransactionRequested {
        TransactionRequested {
            transaction_id: "t-1".into(),
            kind: TransactionKind::infer(from, to).unwrap_or(TransactionKind::Credit),
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            amount: amount.into(),
            currency: "USD".into(),
            requested_at: chrono::Utc::now(),
        }
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

    #[test]
    fn amounts_come_from_numbers_or_strings() {
        assert_eq!(amount_text(&json!(100)).unwrap(), "100");
        assert_eq!(amount_text(&json!(12.5)).unwrap(), "12.5");
        assert_eq!(amount_text(&json!("7.25")).unwrap(), "7.25");
        assert_eq!(amount_text(&json!(true)).unwrap_err().field, "amount");
        let usd = Currency::USD;
        assert_eq!(parse_amount("100", usd).unwrap().minor_units(), 10_000);
        for bad in ["0", "-5", "1.001", "abc", "1e3"] {
            assert_eq!(parse_amount(bad, usd).unwrap_err().field, "amount", "{bad}");
        }
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
