//! Kafka event handlers: `Customer.created` opens accounts; `transaction.requested` is applied to the
//! ledger. The platform applies a batch of a partition's events in ONE database transaction with
//! their inbox claims and outcome events (outbox), so a redelivery is harmless. A request naming
//! an account not open yet is parked (not retried in place): the partition moves on, and the
//! request is decided when the account opens or its grace period ends.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use contracts::envelope::Event;
use contracts::{
    CustomerCreated, EventMetadata, FailureReason, TransactionFailed, TransactionProcessed,
    TransactionRequested,
};
use platform::db::Conn;
use platform::inbox::{transient, Applied, Apply, Attempt, Batch};
use platform::kafka::{HandleError, Record};
use platform::outbox::{self, Draft};
use platform::parking::ParkingLot;
use platform::Outbox;

use crate::domain::{event_fingerprint, ValidRequest, MAX_EVENT_TRANSACTION_ID_LEN};
use crate::ledger::{self, Book, Decision};
use crate::settings::LedgerSettings;
use crate::storage::batch::{self, Known};
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
    max_amount_minor: i64,
}

impl ApplyTransactions {
    /// A handler writing outcome events to `outbox`, taking amounts up to `max_amount_minor`
    /// (`MAX_AMOUNT_MINOR`, as over HTTP: a larger request fails as invalid).
    pub fn new(outbox: Outbox, max_amount_minor: i64) -> Self {
        Self {
            outbox,
            max_amount_minor,
        }
    }

    /// The parking lot of requests waiting for their accounts (`UNKNOWN_ACCOUNT_GRACE_SECS`).
    pub fn parking_lot(settings: &LedgerSettings) -> ParkingLot {
        ParkingLot::new(REQUESTS_GROUP, settings.unknown_account_grace)
    }
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

    /// Locks every account the requests touch, in id order, before any is changed: batches of
    /// other partitions (or replicas) wait for each other instead of deadlocking.
    async fn prepare(
        &self,
        conn: &mut Conn,
        requests: &[&TransactionRequested],
    ) -> Result<(), HandleError> {
        storage::batch::lock_accounts(conn, &account_ids(requests))
            .await
            .map_err(transient)?;
        Ok(())
    }

    /// Applies the whole batch with a fixed number of statements: see [`Pass`].
    async fn apply_batch(
        &self,
        conn: &mut Conn,
        batch: &mut Batch<'_, TransactionRequested>,
    ) -> Result<Vec<Applied<()>>, HandleError> {
        let requests: Vec<&TransactionRequested> = batch.events.iter().map(|f| f.event).collect();
        let mut pass = Pass::load(conn, &requests, self).await?;
        let outcomes = batch.decide_each(
            |request| self.keys(request),
            |fresh, attempt| pass.decide(fresh.metadata, fresh.event, attempt.last),
        )?;
        pass.write(conn).await?;
        Ok(outcomes)
    }

    /// Applies one request (a parked one, decided again): a batch of one.
    async fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        request: &TransactionRequested,
        attempt: Attempt,
    ) -> Result<Applied<()>, HandleError> {
        let mut pass = Pass::load(conn, &[request], self).await?;
        let outcome = pass.decide(metadata, request, attempt.last)?;
        pass.write(conn).await?;
        Ok(outcome)
    }

    fn committed(&self, done: Vec<()>) {
        if !done.is_empty() {
            self.outbox.notify();
        }
    }
}

/// The accounts `requests` touch, in id order, once each.
fn account_ids<'r>(requests: &[&'r TransactionRequested]) -> Vec<&'r str> {
    let mut ids: Vec<&str> = requests
        .iter()
        .flat_map(|r| r.from.iter().chain(r.to.iter()))
        .map(String::as_str)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// One set-based pass over a batch of requests: what is recorded and the locked accounts are
/// loaded once, each request is decided in memory in order ([`Pass::decide`]), and everything
/// is written with a fixed number of statements ([`Pass::write`]).
struct Pass<'r> {
    outbox: &'r Outbox,
    known: HashMap<String, Known>,
    book: Book,
    new: Vec<Recorded<'r>>,
    completions: Vec<Completion>,
    drafts: Vec<Draft>,
    now: DateTime<Utc>,
}

impl<'r> Pass<'r> {
    /// Loads the recorded transactions among `requests` and locks their accounts.
    async fn load(
        conn: &mut Conn,
        requests: &[&'r TransactionRequested],
        handler: &'r ApplyTransactions,
    ) -> Result<Pass<'r>, HandleError> {
        let ids: Vec<&str> = requests.iter().map(|r| r.transaction_id.as_str()).collect();
        let known = storage::batch::find_known(conn, &ids)
            .await
            .map_err(transient)?;
        let accounts = storage::batch::lock_accounts(conn, &account_ids(requests))
            .await
            .map_err(transient)?;
        Ok(Pass {
            outbox: &handler.outbox,
            known,
            book: Book::new(accounts, handler.max_amount_minor),
            new: Vec::new(),
            completions: Vec::new(),
            drafts: Vec::new(),
            now: Utc::now(),
        })
    }

    /// Decides `request` against what the requests before it left: skipped when it already
    /// has an outcome or its id names another request, parked while an account is not open
    /// yet, else processed or failed, with its outcome event.
    fn decide(
        &mut self,
        metadata: &EventMetadata,
        request: &'r TransactionRequested,
        grace_over: bool,
    ) -> Result<Applied<()>, HandleError> {
        let fingerprint = event_fingerprint(request);
        let id = &request.transaction_id;
        match self.known.get(id) {
            Some(known) if known.status != Status::Requested => {
                tracing::info!(transaction_id = %id, status = known.status.as_str(),
                    "transaction already has an outcome; duplicate request skipped");
                return Ok(Applied::Done(()));
            }
            Some(known) if known.fingerprint != fingerprint => {
                tracing::warn!(transaction_id = %id,
                    "transaction id already names a different request; this request is ignored");
                return Ok(Applied::Done(()));
            }
            Some(_) => {}
            None => self.record(metadata, request, fingerprint),
        }
        let outcome = match self.book.apply(request, grace_over) {
            Decision::Wait { missing, message } => {
                return Ok(Applied::Wait {
                    reason: format!("{message}; waiting for its Customer.created"),
                    awaiting: missing,
                })
            }
            Decision::Processed {
                request: valid,
                balances,
            } => self.processed(metadata, request, &valid, &balances)?,
            Decision::Failed { reason, message } => {
                self.failed(metadata, request, reason, message)?
            }
        };
        self.complete(id, outcome)?;
        Ok(Applied::Done(()))
    }

    /// Records a request not seen before with status `requested`, its source the producer's
    /// `ce_source` (`kafka` without one).
    fn record(
        &mut self,
        metadata: &EventMetadata,
        request: &'r TransactionRequested,
        fingerprint: String,
    ) {
        let source = if metadata.source.is_empty() {
            "kafka".to_string()
        } else {
            metadata.source.clone()
        };
        self.known.insert(
            request.transaction_id.clone(),
            Known {
                status: Status::Requested,
                fingerprint: fingerprint.clone(),
            },
        );
        self.new.push(Recorded {
            request,
            amount: request.money().ok().map(|m| m.minor_units()),
            fingerprint,
            source,
        });
    }

    /// Writes the outcome event of a processed request and returns its outcome.
    fn processed(
        &mut self,
        metadata: &EventMetadata,
        request: &TransactionRequested,
        valid: &ValidRequest,
        balances: &BTreeMap<String, i64>,
    ) -> Result<Outcome, HandleError> {
        let balances = ledger::balances_text(balances, valid.amount.currency().decimals());
        let event = TransactionProcessed {
            request: ledger::normalized(request, valid),
            balances: balances.clone(),
            processed_at: self.now,
        };
        self.enqueue(metadata, &event)?;
        tracing::info!(transaction_id = %request.transaction_id, status = "processed",
            ?balances, "transaction processed");
        Ok(Outcome::processed(balances))
    }

    /// Writes the outcome event of a failed request and returns its outcome.
    fn failed(
        &mut self,
        metadata: &EventMetadata,
        request: &TransactionRequested,
        reason: FailureReason,
        message: String,
    ) -> Result<Outcome, HandleError> {
        let event = TransactionFailed {
            request: request.clone(),
            reason,
            message: message.clone(),
            failed_at: self.now,
        };
        self.enqueue(metadata, &event)?;
        tracing::info!(transaction_id = %request.transaction_id, status = "failed",
            reason = reason.as_str(), %message, "transaction failed");
        Ok(Outcome::failed(reason, message))
    }

    /// Adds `event` to the outbox rows to write, carrying the request's `traceparent`.
    fn enqueue<E: Event>(
        &mut self,
        metadata: &EventMetadata,
        event: &E,
    ) -> Result<(), HandleError> {
        let draft = self
            .outbox
            .draft(event, metadata.traceparent.as_deref())
            .map_err(transient)?;
        self.drafts.push(draft);
        Ok(())
    }

    /// Records `outcome` on transaction `id` (written by [`Pass::write`]).
    fn complete(&mut self, id: &str, outcome: Outcome) -> Result<(), HandleError> {
        let balances = outcome
            .balances
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(transient)?;
        if let Some(known) = self.known.get_mut(id) {
            known.status = outcome.status;
        }
        self.completions.push(Completion {
            transaction_id: id.to_string(),
            status: outcome.status,
            reason: outcome.reason,
            message: outcome.message,
            balances,
            completed_at: self.now,
        });
        Ok(())
    }

    /// Writes what the pass decided: new transactions, balances, journal entries, outcomes and
    /// their events, one statement each. A transaction recorded or completed concurrently (by
    /// another writer) fails the pass transiently: it is applied again.
    async fn write(self, conn: &mut Conn) -> Result<(), HandleError> {
        let new: Vec<NewTransaction<'_>> = self
            .new
            .iter()
            .map(|r| NewTransaction::requested(r.request, r.amount, &r.fingerprint, &r.source))
            .collect();
        let inserted = batch::insert_transactions(conn, &new)
            .await
            .map_err(transient)?;
        if inserted.len() != new.len() {
            return Err(HandleError::Transient(
                "transaction inserted concurrently; retrying".into(),
            ));
        }
        batch::update_balances(conn, &self.book.changed(), self.now)
            .await
            .map_err(transient)?;
        batch::insert_entries(conn, self.book.entries(), self.now)
            .await
            .map_err(transient)?;
        let completed = batch::complete_transactions(conn, &self.completions)
            .await
            .map_err(transient)?;
        if completed != self.completions.len() as u64 {
            return Err(HandleError::Transient(
                "transaction completed concurrently; retrying".into(),
            ));
        }
        outbox::insert_all(conn, &self.drafts)
            .await
            .map_err(transient)?;
        Ok(())
    }
}

/// A request recorded by a pass, to insert with status `requested`.
struct Recorded<'r> {
    request: &'r TransactionRequested,
    amount: Option<i64>,
    fingerprint: String,
    source: String,
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
