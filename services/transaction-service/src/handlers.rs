//! Kafka event handlers: `Customer.created` opens accounts; `transaction.requested` is applied to the
//! ledger. The platform applies a batch of a partition's events in ONE database transaction with
//! their inbox claims and outcome events (outbox), so a redelivery is harmless. A request naming
//! an account not open yet is parked (not retried in place): the partition moves on, and the
//! request is decided when the account opens or its grace period ends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use contracts::envelope::Event;
use contracts::{
    CustomerCreated, EventMetadata, FailureReason, TransactionFailed, TransactionProcessed,
    TransactionRequested,
};
use platform::db::Conn;
use platform::inbox::{transient, Applied, Apply, Attempt};
use platform::kafka::{HandleError, Record};
use platform::parking::ParkingLot;
use platform::Outbox;

use crate::domain::{event_fingerprint, MAX_EVENT_TRANSACTION_ID_LEN};
use crate::ledger::{self, Decision};
use crate::settings::LedgerSettings;
use crate::storage::{self, Completion, NewTransaction, Status};

/// Consumer group (and inbox name) that applies `transaction.requested`.
pub const REQUESTS_GROUP: &str = contracts::topics::groups::TRANSACTION_REQUESTS;
/// Consumer group (and inbox name) that opens accounts from `Customer.created`; a separate
/// consumer, so accounts keep opening whatever the requests do.
pub const ACCOUNTS_GROUP: &str = contracts::topics::groups::TRANSACTION_ACCOUNTS;

/// Opens an account for each new customer, idempotently, and wakes the requests waiting for it.
#[derive(Debug, Clone)]
pub struct OpenAccounts {
    settings: LedgerSettings,
    waiting_requests: ParkingLot,
}

impl OpenAccounts {
    /// A handler opening accounts with the balance and currency of `settings`; requests parked
    /// in `waiting_requests` are looked at again after each commit that opened one.
    pub fn new(settings: LedgerSettings, waiting_requests: ParkingLot) -> Self {
        Self {
            settings,
            waiting_requests,
        }
    }
}

impl Apply for OpenAccounts {
    type Event = CustomerCreated;
    type Done = bool;

    fn decode(&self, record: &Record) -> Result<(EventMetadata, CustomerCreated), HandleError> {
        record.decode_valid()
    }

    async fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        customer: &CustomerCreated,
        _attempt: Attempt,
    ) -> Result<Applied<bool>, HandleError> {
        let opened = storage::open_account(
            conn,
            &customer.id,
            self.settings.account_currency.code(),
            self.settings.opening_balance,
            &metadata.id,
            Utc::now(),
        )
        .await
        .map_err(transient)?;
        if opened {
            tracing::info!(account_id = %customer.id, currency = %self.settings.account_currency,
                balance = %self.settings.opening_balance_text(), "account opened");
        } else {
            tracing::info!(account_id = %customer.id, "account already open");
        }
        Ok(Applied::Done(opened))
    }

    fn committed(&self, opened: Vec<bool>) {
        if opened.contains(&true) {
            self.waiting_requests.wake();
        }
    }
}

/// Applies transaction requests to the ledger and writes their outcome events.
#[derive(Debug, Clone)]
pub struct ApplyTransactions {
    outbox: Outbox,
}

impl ApplyTransactions {
    /// A handler writing outcome events to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    /// The parking lot of requests waiting for their accounts (`UNKNOWN_ACCOUNT_GRACE_SECS`).
    pub fn parking_lot(settings: &LedgerSettings) -> ParkingLot {
        ParkingLot::new(REQUESTS_GROUP, settings.unknown_account_grace)
    }

    /// Records the request unless it is known; `None` when it must not be applied (it has an
    /// outcome already, or its id names another request).
    async fn record_request(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        request: &TransactionRequested,
    ) -> Result<Option<()>, HandleError> {
        let fingerprint = event_fingerprint(request);
        match storage::find_transaction(&mut *conn, &request.transaction_id)
            .await
            .map_err(transient)?
        {
            Some(stored) if stored.status != Status::Requested => {
                tracing::info!(transaction_id = %request.transaction_id,
                    status = stored.status.as_str(),
                    "transaction already has an outcome; duplicate request skipped");
                Ok(None)
            }
            Some(stored) if stored.fingerprint != fingerprint => {
                tracing::warn!(transaction_id = %request.transaction_id,
                    "transaction id already names a different request; this request is ignored");
                Ok(None)
            }
            Some(_) => Ok(Some(())),
            None => insert_request(conn, metadata, request, &fingerprint)
                .await
                .map(Some),
        }
    }

    /// Writes the outcome event of `decision` and records it on the transaction.
    async fn complete(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        request: &TransactionRequested,
        decision: Decision,
    ) -> Result<(), HandleError> {
        let now = Utc::now();
        let traceparent = metadata.traceparent.as_deref();
        let outcome = match decision {
            Decision::Wait { message, .. } => {
                return Err(HandleError::transient(format!(
                    "undecided request reached completion: {message}"
                )))
            }
            Decision::Processed {
                request: valid,
                balances,
            } => {
                let balances = ledger::balances_text(&balances, valid.amount.currency().decimals());
                let event = TransactionProcessed {
                    request: ledger::normalized(request, &valid),
                    balances: balances.clone(),
                    processed_at: now,
                };
                self.enqueue(conn, &event, traceparent).await?;
                tracing::info!(transaction_id = %request.transaction_id, status = "processed",
                    ?balances, "transaction processed");
                Outcome::processed(balances)
            }
            Decision::Failed { reason, message } => {
                let event = TransactionFailed {
                    request: request.clone(),
                    reason,
                    message: message.clone(),
                    failed_at: now,
                };
                self.enqueue(conn, &event, traceparent).await?;
                tracing::info!(transaction_id = %request.transaction_id, status = "failed",
                    reason = reason.as_str(), %message, "transaction failed");
                Outcome::failed(reason, message)
            }
        };
        record_outcome(conn, &request.transaction_id, outcome, now).await
    }

    /// Writes `event` to the outbox, carrying `traceparent`.
    async fn enqueue<E: Event>(
        &self,
        conn: &mut Conn,
        event: &E,
        traceparent: Option<&str>,
    ) -> Result<(), HandleError> {
        self.outbox
            .enqueue(conn, event, traceparent)
            .await
            .map_err(transient)?;
        Ok(())
    }
}

/// Records a request not seen before with status `requested`, its source the producer's
/// `ce_source` (`kafka` without one).
async fn insert_request(
    conn: &mut Conn,
    metadata: &EventMetadata,
    request: &TransactionRequested,
    fingerprint: &str,
) -> Result<(), HandleError> {
    let source = if metadata.source.is_empty() {
        "kafka"
    } else {
        metadata.source.as_str()
    };
    let amount = request.money().ok().map(|m| m.minor_units());
    let new = NewTransaction::requested(request, amount, fingerprint, source);
    if !storage::insert_transaction(conn, &new)
        .await
        .map_err(transient)?
    {
        return Err(HandleError::Transient(
            "transaction inserted concurrently; retrying".into(),
        ));
    }
    Ok(())
}

/// The outcome of a request, as recorded on its transaction.
struct Outcome {
    status: Status,
    reason: Option<&'static str>,
    message: Option<String>,
    balances: Option<BTreeMap<String, String>>,
}

impl Outcome {
    fn processed(balances: BTreeMap<String, String>) -> Self {
        Self {
            status: Status::Processed,
            reason: None,
            message: None,
            balances: Some(balances),
        }
    }

    fn failed(reason: FailureReason, message: String) -> Self {
        Self {
            status: Status::Failed,
            reason: Some(reason.as_str()),
            message: Some(message),
            balances: None,
        }
    }
}

/// Records `outcome` on the transaction `transaction_id`, which must still be `requested`.
async fn record_outcome(
    conn: &mut Conn,
    transaction_id: &str,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Result<(), HandleError> {
    let balances = outcome
        .balances
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(transient)?;
    let completion = Completion {
        status: outcome.status,
        reason: outcome.reason,
        message: outcome.message.as_deref(),
        balances: balances.as_deref(),
        completed_at: now,
    };
    if !storage::complete_transaction(conn, transaction_id, &completion)
        .await
        .map_err(transient)?
    {
        return Err(HandleError::Transient(
            "transaction completed concurrently; retrying".into(),
        ));
    }
    Ok(())
}

impl Apply for ApplyTransactions {
    type Event = TransactionRequested;
    type Done = ();

    fn decode(
        &self,
        record: &Record,
    ) -> Result<(EventMetadata, TransactionRequested), HandleError> {
        let (metadata, request) = record.decode::<TransactionRequested>()?;
        if request.transaction_id.trim().is_empty()
            || request.transaction_id.len() > MAX_EVENT_TRANSACTION_ID_LEN
        {
            return Err(HandleError::permanent(format!(
                "transactionId must hold 1 to {MAX_EVENT_TRANSACTION_ID_LEN} characters"
            )));
        }
        Ok((metadata, request))
    }

    fn keys(&self, request: &TransactionRequested) -> Vec<String> {
        request
            .from
            .iter()
            .chain(request.to.iter())
            .cloned()
            .collect()
    }

    /// Locks every account the batch touches, in id order, before any is changed: batches of
    /// other partitions (or replicas) wait for each other instead of deadlocking.
    async fn prepare(
        &self,
        conn: &mut Conn,
        requests: &[&TransactionRequested],
    ) -> Result<(), HandleError> {
        let mut ids: Vec<&str> = requests
            .iter()
            .flat_map(|r| r.from.iter().chain(r.to.iter()))
            .map(String::as_str)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(1000) {
            storage::lock_accounts(conn, chunk)
                .await
                .map_err(transient)?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        request: &TransactionRequested,
        attempt: Attempt,
    ) -> Result<Applied<()>, HandleError> {
        if self
            .record_request(conn, metadata, request)
            .await?
            .is_none()
        {
            return Ok(Applied::Done(()));
        }
        let decision = ledger::apply(conn, request, attempt.last, Utc::now())
            .await
            .map_err(transient)?;
        if let Decision::Wait { missing, message } = decision {
            return Ok(Applied::Wait {
                reason: format!("{message}; waiting for its Customer.created"),
                awaiting: missing,
            });
        }
        self.complete(conn, metadata, request, decision).await?;
        Ok(Applied::Done(()))
    }

    fn committed(&self, done: Vec<()>) {
        if !done.is_empty() {
            self.outbox.notify();
        }
    }
}
