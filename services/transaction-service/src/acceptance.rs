//! Accepting a transaction request: the write use case of the HTTP API. The body is validated
//! into a [`ValidRequest`]; the request and its `transaction.requested` event (outbox) are written
//! in one database transaction that the group committer shares among concurrent requests.
//! Idempotent by `transactionId`: the same request again changes nothing, another request under
//! a taken id is a conflict. A new request is refused while the ledger is too far behind
//! ([`crate::backpressure`]); a repeated one is still answered. Applying a request to the
//! balances is the consumer's ([`crate::ledger`]).

use chrono::{DateTime, Utc};
use contracts::{Currency, TransactionRequested};
use platform::db::{Conn, DbError};
use platform::group_commit::{GroupCommit, Write};
use platform::outbox;
use platform::{Database, Outbox};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::ToSchema;

use crate::backpressure::{ApplyBacklog, Overloaded};
use crate::domain::{self, Invalid, ValidRequest};
use crate::error::Error;
use crate::storage::batch;
use crate::storage::{self, NewTransaction, StoredTransaction};

/// What `POST /transactions` needs to accept a request.
#[derive(Debug, Clone)]
pub struct Intake {
    /// Records requests (with their events), committed in groups.
    pub commit: GroupCommit<Acceptance>,
    /// Refuses new requests while the ledger is too far behind.
    pub backlog: ApplyBacklog,
    /// The ledger database (a repeated request's lookup while overloaded).
    pub db: Database,
    /// Largest amount of a request, in minor units (`MAX_AMOUNT_MINOR`).
    pub max_amount_minor: i64,
}

impl Intake {
    /// Validates `body` and records it with its `transaction.requested` event, carrying the
    /// caller's `traceparent`. Answers the accepted request, new or repeated; a taken id is an
    /// [`Error::Conflict`]; a new request while the ledger is too far behind is an
    /// [`Error::Overloaded`] (nothing stored).
    pub async fn accept(
        &self,
        body: TransactionBody,
        traceparent: Option<String>,
    ) -> Result<ValidRequest, Error> {
        let request = body.validate(self.max_amount_minor)?;
        let admission = match self.backlog.admit() {
            Ok(admission) => admission,
            Err(overloaded) => return self.answer_repeated(request, overloaded).await,
        };
        let outcome = self.commit.submit((request.clone(), traceparent)).await?;
        let created = match outcome {
            AcceptOutcome::Created => {
                admission.stored();
                true
            }
            AcceptOutcome::Repeated => false,
            AcceptOutcome::Conflict => return Err(Error::Conflict(request.transaction_id)),
        };
        let span =
            tracing::info_span!("create_transaction", transaction_id = %request.transaction_id);
        span.in_scope(|| {
            if created {
                tracing::info!(kind = request.kind.as_str(), amount = %request.amount, "transaction requested");
            } else {
                tracing::info!("repeated request answered from the stored transaction");
            }
        });
        Ok(request)
    }

    /// While overloaded: a request accepted before gets its usual answer (the same request, or
    /// a conflict); one the ledger does not know is refused.
    async fn answer_repeated(
        &self,
        request: ValidRequest,
        overloaded: Overloaded,
    ) -> Result<ValidRequest, Error> {
        let stored = storage::find_transaction(self.db.reads(), &request.transaction_id).await?;
        let Some(stored) = stored else {
            tracing::debug!(transaction_id = %request.transaction_id, %overloaded, "request refused");
            return Err(overloaded.into());
        };
        match compare(&stored, &request.fingerprint()) {
            AcceptOutcome::Conflict => Err(Error::Conflict(request.transaction_id)),
            _ => Ok(request),
        }
    }
}

/// The answer to a request whose id is taken by `stored`: the same request (same `fingerprint`)
/// again, or a conflict.
fn compare(stored: &StoredTransaction, fingerprint: &str) -> AcceptOutcome {
    if stored.fingerprint == fingerprint {
        AcceptOutcome::Repeated
    } else {
        AcceptOutcome::Conflict
    }
}

/// What accepting a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Recorded, with its `transaction.requested` event.
    Created,
    /// The same request was accepted before: nothing changed.
    Repeated,
    /// The transaction id names another request.
    Conflict,
}

/// Records requests from the HTTP API, each with its `transaction.requested` event (outbox), in
/// the caller's transaction; the group committer shares it among concurrent requests.
#[derive(Debug, Clone)]
pub struct Acceptance {
    outbox: Outbox,
}

impl Acceptance {
    /// Acceptance writing events to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }
}

impl Write for Acceptance {
    /// The request and the caller's `traceparent`.
    type Input = (ValidRequest, Option<String>);
    type Output = AcceptOutcome;

    async fn write(&self, conn: &mut Conn, input: &Self::Input) -> Result<AcceptOutcome, DbError> {
        let outputs = self.write_all(conn, &[input]).await?;
        outputs
            .into_iter()
            .next()
            .ok_or_else(|| DbError::Query(sqlx::Error::RowNotFound))
    }

    /// Records a group of requests with a fixed number of statements: the new transactions in
    /// one, their events in one, and (only when some id was taken) the stored ones in one.
    async fn write_all(
        &self,
        conn: &mut Conn,
        inputs: &[&Self::Input],
    ) -> Result<Vec<AcceptOutcome>, DbError> {
        let now = Utc::now();
        let requested: Vec<(TransactionRequested, String)> = inputs
            .iter()
            .map(|(request, _)| (requested_event(request, now), request.fingerprint()))
            .collect();
        let new: Vec<NewTransaction<'_>> = requested
            .iter()
            .zip(inputs)
            .map(|((event, fingerprint), (request, _))| {
                let amount = Some(request.amount.minor_units());
                NewTransaction::requested(event, amount, fingerprint, "api")
            })
            .collect();
        let mut inserted = batch::insert_transactions(conn, &new).await?;
        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut drafts = Vec::with_capacity(inserted.len());
        for ((event, _), (_, traceparent)) in requested.iter().zip(inputs) {
            // The first input of an id that was inserted created it; any other is a repeat.
            if inserted.remove(&event.transaction_id) {
                drafts.push(self.outbox.draft(event, traceparent.as_deref())?);
                outcomes.push(Some(AcceptOutcome::Created));
            } else {
                outcomes.push(None);
            }
        }
        outbox::insert_all(conn, &drafts).await?;
        let taken: Vec<&str> = requested
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_none())
            .map(|((event, _), _)| event.transaction_id.as_str())
            .collect();
        let stored = batch::find_known(conn, &taken).await?;
        Ok(requested
            .iter()
            .zip(outcomes)
            .map(|((event, fingerprint), outcome)| {
                outcome.unwrap_or_else(|| match stored.get(&event.transaction_id) {
                    Some(known) if &known.fingerprint == fingerprint => AcceptOutcome::Repeated,
                    _ => AcceptOutcome::Conflict,
                })
            })
            .collect())
    }

    fn committed(&self) {
        self.outbox.notify();
    }
}

/// The `transaction.requested` event of `request`, requested at `now`.
fn requested_event(request: &ValidRequest, now: DateTime<Utc>) -> TransactionRequested {
    TransactionRequested {
        transaction_id: request.transaction_id.clone(),
        kind: request.kind,
        from: request.from.clone(),
        to: request.to.clone(),
        amount: request.amount.to_decimal_string(),
        currency: request.amount.currency().code().to_string(),
        requested_at: now,
    }
}

/// Body of `POST /transactions`. Both accounts: a transfer; only `to`: a credit (deposit); only
/// `from`: a debit (withdrawal). Read member by member (see [`TransactionBody::deserialize`]) so
/// that a number amount keeps its exact text.
#[derive(Debug, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionBody {
    /// Account debited (transfer, debit): at most 128 characters, no spaces or control
    /// characters.
    #[schema(value_type = Option<String>, example = "cust-001", min_length = 1, max_length = 128, pattern = r"^[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f]+$")]
    pub from: Option<Value>,
    /// Account credited (transfer, credit): at most 128 characters, no spaces or control
    /// characters.
    #[schema(value_type = Option<String>, example = "cust-002", min_length = 1, max_length = 128, pattern = r"^[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f]+$")]
    pub to: Option<Value>,
    /// Amount greater than zero, with at most the currency's decimals and at most
    /// `MAX_AMOUNT_MINOR` minor units: a JSON number (`100` means 100.00) or a decimal string
    /// (`"100.00"`). A number is read from its exact text, never through a float; exponents
    /// (`1e2`) are refused in both forms.
    #[schema(schema_with = amount_schema)]
    pub amount: Option<Box<RawValue>>,
    /// Idempotency key, 1–64 characters of `[A-Za-z0-9._-]`; generated (`txn-<uuid>`) when absent.
    #[schema(value_type = Option<String>, example = "txn-123", pattern = r"^[A-Za-z0-9._-]{1,64}$", max_length = 64)]
    pub transaction_id: Option<Value>,
    /// ISO 4217 code; `USD` when absent.
    #[schema(value_type = Option<String>, example = "USD", pattern = r"^[A-Za-z]{3}$")]
    pub currency: Option<Value>,
    /// Any other member: rejected (a typo such as `form` must not turn a transfer into a credit).
    #[schema(ignore)]
    pub unknown: Vec<String>,
}

fn amount_schema() -> utoipa::openapi::schema::Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[0-9]+(\.[0-9]+)?$")),
        )
        .description(Some(
            "A JSON number (100 means 100.00) or a decimal string (\"100.00\"), greater than zero, \
             with at most the currency's decimals and at most MAX_AMOUNT_MINOR minor units",
        ))
        .build()
        .into()
}

impl<'de> Deserialize<'de> for TransactionBody {
    /// A JSON object; `amount` is kept as its raw JSON text, unknown members are listed, and a
    /// member given twice is refused (two parsers could otherwise read two different requests).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = TransactionBody;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object with from, to, amount, transactionId, currency")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TransactionBody, A::Error> {
        fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), E> {
            if slot.replace(value).is_some() {
                return Err(E::custom(format!("member `{name}` is given twice")));
            }
            Ok(())
        }
        let mut body = TransactionBody::default();
        while let Some(name) = map.next_key::<String>()? {
            match name.as_str() {
                "amount" => once(&mut body.amount, map.next_value()?, &name)?,
                "from" => once(&mut body.from, map.next_value()?, &name)?,
                "to" => once(&mut body.to, map.next_value()?, &name)?,
                "transactionId" => once(&mut body.transaction_id, map.next_value()?, &name)?,
                "currency" => once(&mut body.currency, map.next_value()?, &name)?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                    body.unknown.push(name);
                }
            }
        }
        Ok(body)
    }
}

impl TransactionBody {
    /// Validates the body into a request whose amount is at most `max_amount_minor` minor units.
    pub fn validate(self, max_amount_minor: i64) -> Result<ValidRequest, Invalid> {
        if let Some(name) = self.unknown.first() {
            return Err(Invalid::new(
                name.as_str(),
                format!(
                    "unknown member `{name}`; expected from, to, amount, transactionId, currency"
                ),
            ));
        }
        let transaction_id = match string_field("transactionId", self.transaction_id)? {
            Some(id) => {
                domain::check_transaction_id(&id)?;
                id
            }
            None => format!("txn-{}", uuid::Uuid::new_v4()),
        };
        let from = string_field("from", self.from)?;
        let to = string_field("to", self.to)?;
        if let Some(from) = &from {
            domain::check_account_id("from", from)?;
        }
        if let Some(to) = &to {
            domain::check_account_id("to", to)?;
        }
        let kind = domain::infer_kind(from.as_deref(), to.as_deref())?;
        let currency = match string_field("currency", self.currency)? {
            Some(code) => domain::parse_currency(&code)?,
            None => Currency::USD,
        };
        let amount = match self
            .amount
            .as_deref()
            .map(domain::amount_text)
            .transpose()?
            .flatten()
        {
            None => {
                return Err(Invalid::new(
                    "amount",
                    "`amount` is required, e.g. 100 or \"100.00\"",
                ))
            }
            Some(text) => domain::parse_amount(&text, currency)?,
        };
        domain::check_amount_limit(amount, max_amount_minor)?;
        Ok(ValidRequest {
            transaction_id,
            kind,
            from,
            to,
            amount,
        })
    }
}

fn string_field(field: &'static str, value: Option<Value>) -> Result<Option<String>, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(Invalid::new(field, format!("`{field}` must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: i64 = crate::settings::DEFAULT_MAX_AMOUNT_MINOR;

    fn body(value: Value) -> TransactionBody {
        raw_body(&value.to_string())
    }

    fn raw_body(json: &str) -> TransactionBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_seed_request_is_a_transfer_of_100_00() {
        let request = body(json!({"from": "cust-001", "to": "cust-002", "amount": 100,
            "transactionId": "txn-123"}))
        .validate(MAX)
        .unwrap();
        assert_eq!(request.kind, contracts::TransactionKind::Transfer);
        assert_eq!(request.amount.minor_units(), 10_000);
        assert_eq!(request.amount.currency(), Currency::USD);
    }

    #[test]
    fn ids_are_generated_when_absent() {
        let request = body(json!({"to": "a", "amount": "1.5"}))
            .validate(MAX)
            .unwrap();
        assert!(request.transaction_id.starts_with("txn-"));
        domain::check_transaction_id(&request.transaction_id).unwrap();
    }

    #[test]
    fn every_field_is_checked() {
        let cases = [
            (json!({"amount": 1}), "to"),
            (json!({"from": "a", "to": "a", "amount": 1}), "to"),
            (json!({"to": "a"}), "amount"),
            (json!({"to": "a", "amount": null}), "amount"),
            (json!({"to": "a", "amount": 0}), "amount"),
            (json!({"to": "a", "amount": "1.001"}), "amount"),
            (json!({"to": "a", "amount": [1]}), "amount"),
            (
                json!({"to": "a", "amount": 1, "currency": "EURO"}),
                "currency",
            ),
            (json!({"to": "a", "amount": 1, "currency": 5}), "currency"),
            (
                json!({"to": "a", "amount": 1, "transactionId": "a b"}),
                "transactionId",
            ),
            (json!({"to": 7, "amount": 1}), "to"),
            (json!({"to": "", "amount": 1}), "to"),
            (json!({"form": "a", "to": "b", "amount": 1}), "form"),
        ];
        for (value, field) in cases {
            let err = body(value.clone()).validate(MAX).unwrap_err();
            assert_eq!(err.field, field, "{value}");
        }
    }

    #[test]
    fn number_amounts_are_read_from_their_exact_text() {
        for (json, field_detail) in [
            ("100.999999999999999", "decimal places"),
            ("1234567890123456.789", "decimal places"),
            ("1234567890123456.78", "MAX_AMOUNT_MINOR"),
            ("1e2", "exponent"),
        ] {
            for amount in [json.to_string(), format!("\"{json}\"")] {
                let err = raw_body(&format!(r#"{{"to": "a", "amount": {amount}}}"#))
                    .validate(MAX)
                    .unwrap_err();
                assert_eq!(err.field, "amount", "{amount}");
                assert!(
                    err.detail.contains(field_detail),
                    "{amount}: {}",
                    err.detail
                );
            }
        }
        let exact = raw_body(r#"{"to": "a", "amount": 12345678.91}"#)
            .validate(MAX)
            .unwrap();
        assert_eq!(exact.amount.minor_units(), 1_234_567_891);
    }

    #[test]
    fn a_member_given_twice_is_refused() {
        let twice =
            serde_json::from_str::<TransactionBody>(r#"{"to": "a", "amount": 1, "amount": 2}"#);
        assert!(twice.unwrap_err().to_string().contains("twice"));
    }
}
