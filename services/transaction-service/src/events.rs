//! Event handlers: `Customer.created` opens accounts; `transaction.requested` is applied to the
//! ledger. Each event is applied with its inbox claim and its outcome event (outbox) in ONE
//! database transaction, so a redelivery is harmless.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use contracts::{
    CustomerCreated, EventMetadata, TransactionFailed, TransactionProcessed, TransactionRequested,
};
use platform::kafka::{HandleError, Handler, Record};
use platform::{inbox, Database, Outbox};
use tracing::Instrument;

use crate::domain::{check_account_id, event_fingerprint};
use crate::ledger::{self, Decision};
use crate::settings::LedgerSettings;
use crate::storage::{self, Completion, NewTransaction, Status};

/// Consumer group (and inbox name) that applies `transaction.requested`.
pub const REQUESTS_GROUP: &str = "transaction-service";
/// Consumer group (and inbox name) that opens accounts from `Customer.created`; a separate loop,
/// so accounts keep opening while a request waits for its account.
pub const ACCOUNTS_GROUP: &str = "transaction-service.accounts";
/// Longest transaction id a record may carry before it is dead-lettered.
const MAX_EVENT_TRANSACTION_ID_LEN: usize = 256;

fn transient(error: impl std::fmt::Display) -> HandleError {
    HandleError::Transient(error.to_string())
}

/// Opens an account for each new customer, idempotently.
#[derive(Debug, Clone)]
pub struct OpenAccounts {
    db: Database,
    settings: LedgerSettings,
}

impl OpenAccounts {
    /// A handler writing to `db` with the opening balance and currency of `settings`.
    pub fn new(db: Database, settings: LedgerSettings) -> Self {
        Self { db, settings }
    }

    async fn open(
        &self,
        metadata: &EventMetadata,
        customer: &CustomerCreated,
    ) -> Result<(), HandleError> {
        let mut tx = self.db.begin().await.map_err(transient)?;
        if !inbox::claim(&mut tx, ACCOUNTS_GROUP, &metadata.id)
            .await
            .map_err(transient)?
        {
            tracing::debug!("event already applied; skipped");
            return Ok(());
        }
        let opened = storage::open_account(
            &mut tx,
            &customer.id,
            self.settings.account_currency.code(),
            self.settings.opening_balance,
            &metadata.id,
            Utc::now(),
        )
        .await
        .map_err(transient)?;
        tx.commit().await.map_err(transient)?;
        if opened {
            tracing::info!(
                currency = %self.settings.account_currency,
                balance = %self.settings.opening_balance_text(),
                "account opened"
            );
        } else {
            tracing::info!("account already open");
        }
        Ok(())
    }
}

impl Handler for OpenAccounts {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let (metadata, customer) = record.decode::<CustomerCreated>()?;
        check_account_id("id", &customer.id)
            .map_err(|e| HandleError::Permanent(format!("customer {e}")))?;
        let span = tracing::info_span!("customer_created", event_id = %metadata.id,
            account_id = %customer.id);
        self.open(&metadata, &customer).instrument(span).await
    }
}

/// Applies transaction requests to the ledger and writes their outcome events.
#[derive(Debug, Clone)]
pub struct ApplyTransactions {
    db: Database,
    outbox: Outbox,
    settings: LedgerSettings,
    /// When this consumer first read each event it is still retrying. The grace period of an
    /// unknown account runs from then: that is `requestedAt` (give or take the relay's
    /// milliseconds) for a live request, and later for a request read from a backlog (after
    /// downtime), where the lagging `Customer.created` still gets the whole period; a
    /// `requestedAt` in the future cannot extend it.
    first_seen: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
}

impl ApplyTransactions {
    /// A handler writing to `db` and `outbox`.
    pub fn new(db: Database, outbox: Outbox, settings: LedgerSettings) -> Self {
        Self {
            db,
            outbox,
            settings,
            first_seen: Arc::default(),
        }
    }

    fn first_seen(&self, event_id: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.first_seen.lock() {
            Ok(mut map) => *map.entry(event_id.to_string()).or_insert(now),
            Err(_) => now,
        }
    }

    fn forget(&self, event_id: &str) {
        if let Ok(mut map) = self.first_seen.lock() {
            map.remove(event_id);
        }
    }

    async fn apply(
        &self,
        metadata: &EventMetadata,
        request: &TransactionRequested,
    ) -> Result<(), HandleError> {
        let now = Utc::now();
        let waiting_since = self.first_seen(&metadata.id, now);
        let grace = chrono::Duration::from_std(self.settings.unknown_account_grace)
            .unwrap_or(chrono::Duration::MAX);
        let grace_over = now.signed_duration_since(waiting_since) >= grace;

        let mut tx = self.db.begin().await.map_err(transient)?;
        if !inbox::claim(&mut tx, REQUESTS_GROUP, &metadata.id)
            .await
            .map_err(transient)?
        {
            tracing::debug!("event already applied; skipped");
            return Ok(());
        }
        let fingerprint = event_fingerprint(request);
        match storage::find_transaction(&mut *tx, &request.transaction_id)
            .await
            .map_err(transient)?
        {
            Some(stored) if stored.status != Status::Requested => {
                tracing::info!(
                    status = stored.status.as_str(),
                    "transaction already has an outcome; duplicate request skipped"
                );
                tx.commit().await.map_err(transient)?;
                return Ok(());
            }
            Some(stored) if stored.fingerprint != fingerprint => {
                tracing::warn!(
                    "transaction id already names a different request; this request is ignored"
                );
                tx.commit().await.map_err(transient)?;
                return Ok(());
            }
            Some(_) => {}
            None => {
                let amount = request.money().ok().map(|m| m.minor_units());
                let source = if metadata.source.is_empty() {
                    "kafka"
                } else {
                    metadata.source.as_str()
                };
                let new = NewTransaction {
                    transaction_id: &request.transaction_id,
                    kind: request.kind.as_str(),
                    from: request.from.as_deref(),
                    to: request.to.as_deref(),
                    amount,
                    amount_text: &request.amount,
                    currency: &request.currency,
                    fingerprint: &fingerprint,
                    source,
                    requested_at: request.requested_at,
                };
                if !storage::insert_transaction(&mut tx, &new)
                    .await
                    .map_err(transient)?
                {
                    return Err(transient("transaction inserted concurrently; retrying"));
                }
            }
        }

        let decision = ledger::apply(&mut tx, request, grace_over, now)
            .await
            .map_err(transient)?;
        let (completion_status, reason, message, balances) = match &decision {
            Decision::Retry(message) => {
                // Rolls back the claim too: the event is applied later, once.
                drop(tx);
                return Err(HandleError::Transient(format!(
                    "{message}; waiting for its Customer.created"
                )));
            }
            Decision::Processed {
                request: valid,
                balances,
            } => {
                let balances = ledger::balances_text(balances, valid.amount.currency().decimals());
                let event = TransactionProcessed {
                    request: ledger::normalized(request, valid),
                    balances: balances.clone(),
                    processed_at: now,
                };
                self.outbox
                    .enqueue(&mut tx, &event, metadata.traceparent.as_deref())
                    .await
                    .map_err(transient)?;
                (Status::Processed, None, None, Some(balances))
            }
            Decision::Failed { reason, message } => {
                let event = TransactionFailed {
                    request: request.clone(),
                    reason: *reason,
                    message: message.clone(),
                    failed_at: now,
                };
                self.outbox
                    .enqueue(&mut tx, &event, metadata.traceparent.as_deref())
                    .await
                    .map_err(transient)?;
                (
                    Status::Failed,
                    Some(reason.as_str()),
                    Some(message.as_str()),
                    None,
                )
            }
        };
        let balances_json = balances
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(transient)?;
        let completion = Completion {
            status: completion_status,
            reason,
            message,
            balances: balances_json.as_deref(),
            completed_at: now,
        };
        if !storage::complete_transaction(&mut tx, &request.transaction_id, &completion)
            .await
            .map_err(transient)?
        {
            return Err(transient("transaction completed concurrently; retrying"));
        }
        tx.commit().await.map_err(transient)?;
        self.outbox.notify();
        match (reason, message) {
            (Some(reason), Some(message)) => {
                tracing::info!(status = "failed", reason, message, "transaction failed");
            }
            _ => tracing::info!(status = "processed", ?balances, "transaction processed"),
        }
        Ok(())
    }
}

impl Handler for ApplyTransactions {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let (metadata, request) = record.decode::<TransactionRequested>()?;
        if request.transaction_id.trim().is_empty()
            || request.transaction_id.len() > MAX_EVENT_TRANSACTION_ID_LEN
        {
            return Err(HandleError::Permanent(format!(
                "transactionId must hold 1 to {MAX_EVENT_TRANSACTION_ID_LEN} characters"
            )));
        }
        let span = tracing::info_span!("transaction_requested", event_id = %metadata.id,
            transaction_id = %request.transaction_id, kind = request.kind.as_str());
        let outcome = self.apply(&metadata, &request).instrument(span).await;
        if !matches!(outcome, Err(HandleError::Transient(_))) {
            self.forget(&metadata.id);
        }
        outcome
    }
}
