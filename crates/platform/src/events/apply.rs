//! What a consumer's domain logic implements ([`Apply`]) and what it works with: the events of a
//! batch ([`Batch`], [`Fresh`]), how long they have waited ([`Attempt`]) and what applying one did
//! ([`Applied`]). Shared by the inbox ([`crate::events::inbox`], which runs it) and the parking lot
//! ([`crate::events::parking`], which applies parked events again); imports neither.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Utc};
use contracts::EventMetadata;
use tracing::Instrument;

use crate::foundation::telemetry;
use crate::kafka::consumer::{consume_span, BoxError};
use crate::kafka::{HandleError, Record};
use crate::store::db::Conn;

/// How long an event has waited, and whether it may wait longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When the event was first read.
    pub since: DateTime<Utc>,
    /// The wait is over: decide now ([`Applied::Wait`] is not an option).
    pub last: bool,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied<D> {
    /// Applied (or decided); the value goes to [`Apply::committed`] after the commit.
    Done(D),
    /// The event waits for others: it is parked and applied again when the lot is woken or its
    /// deadline passes. Meanwhile later events touching one of the `awaiting` keys wait behind
    /// it; events touching other keys go ahead.
    Wait {
        /// Why, for the log.
        reason: String,
        /// The keys (e.g. accounts) whose events it waits for.
        awaiting: Vec<String>,
    },
}

/// A consumer's domain logic: how to read an event and apply it inside a transaction.
pub trait Apply: Send + Sync + 'static {
    /// The decoded event.
    type Event: Send + Sync;
    /// What an applied event leaves for [`Apply::committed`].
    type Done: Send;

    /// Decodes and validates `record`; a permanent error dead-letters it.
    fn decode(&self, record: &Record) -> Result<(EventMetadata, Self::Event), HandleError>;

    /// The keys (e.g. accounts) the event touches: while an earlier parked event awaits one of
    /// them, this one waits behind it, so the events of an awaited key apply in order.
    fn keys(&self, _event: &Self::Event) -> Vec<String> {
        Vec::new()
    }

    /// Runs once per transaction before its events are applied, e.g. to lock every row the
    /// batch touches in one global order, so that concurrent batches (other partitions, other
    /// replicas) queue instead of deadlocking.
    fn prepare(
        &self,
        _conn: &mut Conn,
        _events: &[&Self::Event],
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        async { Ok(()) }
    }

    /// Applies `event` within the caller's transaction (its inbox claim is already made).
    fn apply(
        &self,
        conn: &mut Conn,
        metadata: &EventMetadata,
        event: &Self::Event,
        attempt: Attempt,
    ) -> impl Future<Output = Result<Applied<Self::Done>, HandleError>> + Send;

    /// Applies a batch's fresh events in order within the caller's transaction (their inbox
    /// claims made, [`Apply::prepare`] done); returns one outcome per event, in order. An event
    /// behind a key that an earlier one awaits must wait too ([`Batch::behind`]), and one that
    /// waits adds its keys ([`Batch::wait_for`]).
    ///
    /// The default applies each event with [`Apply::apply`]; a consumer with heavy traffic
    /// overrides it to apply the whole batch with a fixed number of statements.
    fn apply_batch(
        &self,
        conn: &mut Conn,
        batch: &mut Batch<'_, Self::Event>,
    ) -> impl Future<Output = Result<Vec<Applied<Self::Done>>, HandleError>> + Send {
        async move {
            let mut outcomes = Vec::with_capacity(batch.events.len());
            for n in 0..batch.events.len() {
                let fresh = batch.events[n];
                let outcome = match batch.behind(&self.keys(fresh.event)) {
                    Some(wait) => wait,
                    None => {
                        telemetry::consumed(
                            fresh.record.traceparent(),
                            self.apply(conn, fresh.metadata, fresh.event, batch.attempt()),
                        )
                        .instrument(batch.span(&fresh))
                        .await?
                    }
                };
                if let Applied::Wait { awaiting, .. } = &outcome {
                    batch.wait_for(awaiting);
                }
                outcomes.push(outcome);
            }
            Ok(outcomes)
        }
    }

    /// Runs after the transaction that applied events committed (wake the relay, announce).
    fn committed(&self, _done: Vec<Self::Done>) {}
}

/// A fresh event of a batch: its record, CloudEvents attributes and decoded event.
#[derive(Debug)]
pub struct Fresh<'b, E> {
    /// The record as read.
    pub record: &'b Record,
    /// Its CloudEvents attributes.
    pub metadata: &'b EventMetadata,
    /// The decoded event.
    pub event: &'b E,
}

impl<E> Clone for Fresh<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Fresh<'_, E> {}

/// The fresh events of one transaction, in offset order, and the keys that earlier (parked)
/// events await.
#[derive(Debug)]
pub struct Batch<'b, E> {
    /// The events to apply, in order.
    pub events: Vec<Fresh<'b, E>>,
    waiting: HashSet<String>,
    attempt: Attempt,
    group: Option<&'b str>,
}

impl<'b, E> Batch<'b, E> {
    /// `events` to apply while the keys in `waiting` are awaited; `attempt` says how long they
    /// may wait; `group` names the consumer group in their spans.
    pub fn new(
        events: Vec<Fresh<'b, E>>,
        waiting: HashSet<String>,
        attempt: Attempt,
        group: Option<&'b str>,
    ) -> Self {
        Self {
            events,
            waiting,
            attempt,
            group,
        }
    }

    /// How long the batch's events have waited, and whether they may wait longer.
    pub fn attempt(&self) -> Attempt {
        self.attempt
    }

    /// The outcome of an event touching `keys` when an earlier event awaits one of them: it
    /// waits behind it (so the events of an awaited key apply in order); `None` otherwise.
    pub fn behind<D>(&self, keys: &[String]) -> Option<Applied<D>> {
        let behind: Vec<String> = keys
            .iter()
            .filter(|k| self.waiting.contains(*k))
            .cloned()
            .collect();
        let key = behind.first()?;
        Some(Applied::Wait {
            reason: format!("an earlier event for `{key}` is waiting"),
            awaiting: behind.clone(),
        })
    }

    /// Decides each event in order with `decide`, synchronously and within the event's span
    /// (for a set-based [`Apply::apply_batch`]): an event touching a key (`keys`) that an
    /// earlier one awaits waits behind it without being decided, and one that waits adds its
    /// keys. Returns one outcome per event, in order.
    pub fn decide_each<D>(
        &mut self,
        keys: impl Fn(&E) -> Vec<String>,
        mut decide: impl FnMut(Fresh<'b, E>, Attempt) -> Result<Applied<D>, HandleError>,
    ) -> Result<Vec<Applied<D>>, HandleError> {
        let mut outcomes = Vec::with_capacity(self.events.len());
        for n in 0..self.events.len() {
            let fresh = self.events[n];
            let outcome = match self.behind(&keys(fresh.event)) {
                Some(wait) => wait,
                None => {
                    let _span = self.span(&fresh).entered();
                    decide(fresh, self.attempt)?
                }
            };
            if let Applied::Wait { awaiting, .. } = &outcome {
                self.wait_for(awaiting);
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Later events touching one of `keys` wait behind the event that awaits them.
    pub fn wait_for(&mut self, keys: &[String]) {
        self.waiting.extend(keys.iter().cloned());
    }

    /// The consume span of `fresh`'s record (enter it while applying the event).
    pub fn span(&self, fresh: &Fresh<'_, E>) -> tracing::Span {
        consume_span(fresh.record, self.group)
    }
}

/// A transient database error (`database: <error>`, the error kept as the source).
pub fn transient(error: impl Into<BoxError>) -> HandleError {
    HandleError::transient(error).context("database")
}
