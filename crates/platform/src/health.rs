//! What the running parts of a service report about themselves, for `/readyz`: whether the
//! broker has come (topics created), each consumer's assignment and per-partition progress
//! (from librdkafka statistics), and the outbox relay's progress. The parts publish into one
//! shared [`Health`]; [`Health::checks`] judges it (see `Readiness` in [`crate::http`]).
//!
//! A consumer is not ready when it has been without partitions for longer than a session
//! timeout (unless its group is settled and simply has none for this replica), when a partition
//! has records waiting while the committed offset has not moved for the stall time (a wedged
//! record; parked records are committed past and do not count), or when it stopped reporting.
//! The relay is not ready when it holds the lease, the outbox has rows, and nothing was
//! published for the stall time; a standby relay is ready.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

pub mod stall;

/// The consumers' session timeout: how long a consumer may be without partitions before it is
/// not ready (and librdkafka's `session.timeout.ms`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of `READY_STALL_SECS`: how long work may wait without progress.
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);

/// The verdict on one part of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether this part is ready.
    pub ok: bool,
    /// Why not (or what it is doing), for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    /// Ready.
    pub fn ok() -> Self {
        Self {
            ok: true,
            detail: None,
        }
    }

    /// Ready, with a note.
    pub fn ok_with(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: Some(detail.into()),
        }
    }

    /// Not ready, and why.
    pub fn failed(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: Some(detail.into()),
        }
    }
}

/// The shared registry the parts of one service report into (cheap to clone).
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stall_after: Duration,
    /// Whether the broker has come (topics created), and the waiters for it.
    broker: watch::Sender<BrokerState>,
    consumers: Mutex<BTreeMap<String, ConsumerState>>,
    relay: Mutex<Option<RelayState>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BrokerState {
    /// Not reached yet; the last attempt's error.
    Waiting(String),
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WaitingForBroker,
    Running,
    Stopped,
}

#[derive(Debug)]
struct ConsumerState {
    phase: Phase,
    assigned: usize,
    /// Since when it has had no partitions (it started, or lost its assignment).
    unassigned_since: Instant,
    /// The group is stable (`join_state` steady): no partitions means none are left for it.
    settled: bool,
    last_report: Instant,
    partitions: HashMap<(String, i32), Progress>,
    /// Partitions whose lane is publishing a dead letter: since when, and the last error.
    dead_letters: BTreeMap<(String, i32), DeadLetterAttempt>,
}

#[derive(Debug)]
struct DeadLetterAttempt {
    since: Instant,
    error: Option<String>,
}

#[derive(Debug)]
struct Progress {
    committed: i64,
    lag: i64,
    /// When the committed offset last moved, or nothing was waiting.
    since: Instant,
}

#[derive(Debug)]
struct RelayState {
    phase: Phase,
    holds_lease: bool,
    pending: i64,
    progress_at: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(DEFAULT_STALL)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Health {
    /// A registry in which work may wait without progress for at most `stall_after`.
    pub fn new(stall_after: Duration) -> Self {
        let (broker, _) =
            watch::channel(BrokerState::Waiting("first attempt under way".to_string()));
        Self {
            inner: Arc::new(Inner {
                stall_after,
                broker,
                consumers: Mutex::default(),
                relay: Mutex::default(),
            }),
        }
    }

    /// The broker could not be reached (yet): `error` says why.
    pub fn broker_waiting(&self, error: &str) {
        self.inner
            .broker
            .send_replace(BrokerState::Waiting(error.to_string()));
    }

    /// The broker has come and the topics exist: consumers and the relay may start.
    pub fn broker_up(&self) {
        self.inner.broker.send_replace(BrokerState::Up);
    }

    /// Whether the broker has come.
    pub fn is_broker_up(&self) -> bool {
        *self.inner.broker.borrow() == BrokerState::Up
    }

    /// Completes once the broker has come.
    pub async fn broker_ready(&self) {
        let mut up = self.inner.broker.subscribe();
        // The sender lives as long as `self`: this cannot fail while we wait.
        let _ = up.wait_for(|state| *state == BrokerState::Up).await;
    }

    /// Registers consumer `group` (waiting for the broker) and returns its reporting handle.
    pub fn consumer(&self, group: &str) -> ConsumerHealth {
        let now = Instant::now();
        lock(&self.inner.consumers).insert(
            group.to_string(),
            ConsumerState {
                phase: Phase::WaitingForBroker,
                assigned: 0,
                unassigned_since: now,
                settled: false,
                last_report: now,
                partitions: HashMap::new(),
                dead_letters: BTreeMap::new(),
            },
        );
        ConsumerHealth {
            health: self.clone(),
            group: group.to_string(),
        }
    }

    /// Registers the outbox relay (waiting for the broker).
    pub fn register_relay(&self) {
        *lock(&self.inner.relay) = Some(RelayState {
            phase: Phase::WaitingForBroker,
            holds_lease: false,
            pending: 0,
            progress_at: Instant::now(),
        });
    }

    fn relay(&self, update: impl FnOnce(&mut RelayState)) {
        let mut relay = lock(&self.inner.relay);
        let state = relay.get_or_insert_with(|| RelayState {
            phase: Phase::Running,
            holds_lease: false,
            pending: 0,
            progress_at: Instant::now(),
        });
        update(state);
    }

    /// The relay runs (as holder or standby).
    pub fn relay_started(&self) {
        self.relay(|r| {
            r.phase = Phase::Running;
            r.progress_at = Instant::now();
        });
    }

    /// The relay took (`true`) or lost the outbox lease.
    pub fn relay_lease(&self, held: bool) {
        self.relay(|r| {
            r.holds_lease = held;
            r.progress_at = Instant::now();
        });
    }

    /// The relay counted `pending` unsent rows.
    pub fn relay_backlog(&self, pending: i64) {
        self.relay(|r| {
            r.pending = pending;
            if pending == 0 {
                r.progress_at = Instant::now();
            }
        });
    }

    /// The relay published rows.
    pub fn relay_published(&self) {
        self.relay(|r| r.progress_at = Instant::now());
    }

    /// How long the lease holder has had rows waiting (`in_flight`: deliveries it awaits, or
    /// an unsent backlog) without publishing any; reported as `event_stall_seconds{stage="relay"}`.
    pub fn relay_stall(&self, in_flight: bool) -> Duration {
        let stalled = lock(&self.inner.relay)
            .as_ref()
            .map_or(Duration::ZERO, |r| {
                let waiting = in_flight || r.pending > 0;
                if r.phase == Phase::Running && r.holds_lease && waiting {
                    r.progress_at.elapsed()
                } else {
                    Duration::ZERO
                }
            });
        stall::report("relay", stalled);
        stalled
    }

    /// The relay has stopped.
    pub fn relay_stopped(&self) {
        self.relay(|r| r.phase = Phase::Stopped);
    }

    /// The broker's state as a check: `None` once it has come (then it is checked directly).
    pub fn broker_check(&self) -> Option<Check> {
        match &*self.inner.broker.borrow() {
            BrokerState::Up => None,
            BrokerState::Waiting(error) => Some(Check::failed(format!(
                "waiting for the broker (topics not created yet): {error}"
            ))),
        }
    }

    /// The checks of the consumers (`consumer:<group>`) and the relay (`relay`), as of now.
    pub fn checks(&self) -> Vec<(String, Check)> {
        let stall = self.inner.stall_after;
        let mut checks: Vec<(String, Check)> = lock(&self.inner.consumers)
            .iter()
            .map(|(group, state)| (format!("consumer:{group}"), state.check(stall)))
            .collect();
        if let Some(relay) = &*lock(&self.inner.relay) {
            checks.push(("relay".to_string(), relay.check(stall)));
        }
        checks
    }
}

impl ConsumerState {
    fn check(&self, stall: Duration) -> Check {
        match self.phase {
            Phase::WaitingForBroker => return Check::failed("waiting for the broker"),
            Phase::Stopped => return Check::failed("stopped"),
            Phase::Running => {}
        }
        let silent = self.last_report.elapsed();
        if silent > stall {
            return Check::failed(format!(
                "no statistics from the consumer for {} s (is its poll loop stuck?)",
                silent.as_secs()
            ));
        }
        if let Some(((topic, partition), attempt)) = self
            .dead_letters
            .iter()
            .filter(|(_, a)| a.since.elapsed() > stall)
            .max_by_key(|(_, a)| a.since.elapsed())
        {
            return Check::failed(format!(
                "{topic}/{partition}: a record's dead letter has not been published for {} s; \
                 the partition waits for it ({})",
                attempt.since.elapsed().as_secs(),
                attempt
                    .error
                    .as_deref()
                    .unwrap_or("no answer from the broker yet")
            ));
        }
        if let Some(((topic, partition), p)) = self
            .partitions
            .iter()
            .filter(|(_, p)| p.lag > 0 && p.since.elapsed() > stall)
            .max_by_key(|(_, p)| p.since.elapsed())
        {
            return Check::failed(format!(
                "{topic}/{partition}: {} records waiting and the committed offset ({}) has not \
                 moved for {} s",
                p.lag,
                p.committed,
                p.since.elapsed().as_secs()
            ));
        }
        if self.assigned > 0 {
            let assigned = format!("{} partitions assigned", self.assigned);
            return Check::ok_with(
                self.stall_note()
                    .map_or(assigned.clone(), |stalled| format!("{stalled}; {assigned}")),
            );
        }
        let waited = self.unassigned_since.elapsed();
        if self.settled {
            Check::ok_with("in a settled group with no partition for this replica")
        } else if waited > SESSION_TIMEOUT {
            Check::failed(format!("no partitions assigned for {} s", waited.as_secs()))
        } else {
            Check::ok_with("joining its group")
        }
    }
}

impl ConsumerState {
    /// The longest short stall of an assigned partition, named (see [`stall::note`]).
    fn stall_note(&self) -> Option<String> {
        let ((topic, partition), p) = self
            .partitions
            .iter()
            .filter(|(_, p)| p.lag > 0)
            .max_by_key(|(_, p)| p.since.elapsed())?;
        stall::note(p.since.elapsed(), || {
            format!(
                "{topic}/{partition}: {} records waiting, the committed offset ({}) does not move",
                p.lag, p.committed
            )
        })
    }

    /// How long the most stalled partition with records waiting has not moved.
    fn stalled_for(&self) -> Duration {
        self.partitions
            .values()
            .filter(|p| p.lag > 0)
            .map(|p| p.since.elapsed())
            .max()
            .unwrap_or_default()
    }
}

impl RelayState {
    fn check(&self, stall: Duration) -> Check {
        match self.phase {
            Phase::WaitingForBroker => Check::failed("waiting for the broker"),
            Phase::Stopped => Check::failed("stopped"),
            Phase::Running if !self.holds_lease => {
                Check::ok_with("standing by: another replica holds the outbox lease")
            }
            Phase::Running => {
                let idle = self.progress_at.elapsed();
                if self.pending > 0 && idle > stall {
                    Check::failed(format!(
                        "{} outbox rows waiting and nothing published for {} s",
                        self.pending,
                        idle.as_secs()
                    ))
                } else if self.pending > 0 {
                    stall::note(idle, || {
                        format!("{} outbox rows waiting, nothing published", self.pending)
                    })
                    .map_or_else(Check::ok, Check::ok_with)
                } else {
                    Check::ok()
                }
            }
        }
    }
}

/// One consumer's reporting handle.
#[derive(Debug, Clone)]
pub struct ConsumerHealth {
    health: Health,
    group: String,
}

impl ConsumerHealth {
    /// A handle whose reports nobody reads (a consumer outside a [`crate::Service`]).
    pub fn detached(group: &str) -> Self {
        Health::default().consumer(group)
    }

    fn update(&self, update: impl FnOnce(&mut ConsumerState)) {
        if let Some(state) = lock(&self.health.inner.consumers).get_mut(&self.group) {
            update(state);
        }
    }

    /// The consumer has subscribed and polls.
    pub fn started(&self) {
        self.update(|c| {
            let now = Instant::now();
            c.phase = Phase::Running;
            c.unassigned_since = now;
            c.last_report = now;
        });
    }

    /// The consumer's whole assignment is now `partitions` (unprefixed topic names).
    pub fn assignment(&self, partitions: &[(String, i32)]) {
        self.update(|c| {
            if partitions.is_empty() && c.assigned > 0 {
                c.unassigned_since = Instant::now();
            }
            c.assigned = partitions.len();
            c.partitions.retain(|key, _| partitions.contains(key));
            c.dead_letters.retain(|key, _| partitions.contains(key));
        });
    }

    /// Statistics arrived: whether the group is settled, and each assigned partition's
    /// committed offset and lag (negative lag: unknown).
    pub fn statistics(&self, settled: bool, partitions: &[((String, i32), i64, i64)]) {
        self.update(|c| {
            let now = Instant::now();
            c.last_report = now;
            c.settled = settled;
            for ((topic, partition), committed, lag) in partitions {
                let key = (topic.clone(), *partition);
                let progress = c.partitions.entry(key).or_insert(Progress {
                    committed: *committed,
                    lag: *lag,
                    since: now,
                });
                if progress.committed != *committed || *lag <= 0 {
                    progress.since = now;
                }
                progress.committed = *committed;
                progress.lag = *lag;
            }
            stall::report(&format!("consumer:{}", self.group), c.stalled_for());
        });
    }

    /// The lane of `topic`/`partition` (unprefixed) started publishing a dead letter; it waits
    /// until [`ConsumerHealth::dead_letter_published`].
    pub fn dead_letter_started(&self, topic: &str, partition: i32) {
        self.update(|c| {
            c.dead_letters.insert(
                (topic.to_string(), partition),
                DeadLetterAttempt {
                    since: Instant::now(),
                    error: None,
                },
            );
        });
    }

    /// An attempt to publish the dead letter of `topic`/`partition` failed with `error`.
    pub fn dead_letter_failed(&self, topic: &str, partition: i32, error: &str) {
        self.update(|c| {
            if let Some(attempt) = c.dead_letters.get_mut(&(topic.to_string(), partition)) {
                attempt.error = Some(error.to_string());
            }
        });
    }

    /// The dead letter of `topic`/`partition` is published (or its lane gave up the partition).
    pub fn dead_letter_published(&self, topic: &str, partition: i32) {
        self.update(|c| {
            c.dead_letters.remove(&(topic.to_string(), partition));
        });
    }

    /// The consumer has stopped.
    pub fn stopped(&self) {
        self.update(|c| c.phase = Phase::Stopped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(checks: &[(String, Check)], name: &str) -> Check {
        checks
            .iter()
            .find(|(n, _)| n == name)
            .expect(name)
            .1
            .clone()
    }

    #[tokio::test]
    async fn the_broker_signal_releases_waiters() {
        let health = Health::default();
        assert!(health.broker_check().is_some());
        health.broker_waiting("connection refused");
        let detail = health.broker_check().unwrap().detail.unwrap();
        assert!(detail.contains("connection refused"), "{detail}");
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.broker_ready().await }
        });
        health.broker_up();
        waiter.await.unwrap();
        assert!(health.broker_check().is_none());
    }

    #[test]
    fn a_consumer_is_ready_while_it_joins_and_when_assigned_and_not_when_stopped() {
        let health = Health::default();
        let consumer = health.consumer("g");
        assert_eq!(
            check(&health.checks(), "consumer:g").detail.as_deref(),
            Some("waiting for the broker")
        );
        consumer.started();
        assert!(check(&health.checks(), "consumer:g").ok);
        consumer.assignment(&[("t".into(), 0)]);
        assert!(check(&health.checks(), "consumer:g").ok);
        consumer.stopped();
        let stopped = check(&health.checks(), "consumer:g");
        assert!(!stopped.ok);
        assert_eq!(stopped.detail.as_deref(), Some("stopped"));
    }

    #[test]
    fn a_partition_whose_committed_offset_does_not_move_while_records_wait_is_wedged() {
        let health = Health::new(Duration::from_millis(50));
        let consumer = health.consumer("g");
        consumer.started();
        consumer.assignment(&[("t".into(), 1)]);
        consumer.statistics(true, &[(("t".into(), 1), 10, 3)]);
        std::thread::sleep(Duration::from_millis(80));
        consumer.statistics(true, &[(("t".into(), 1), 10, 3)]);
        let wedged = check(&health.checks(), "consumer:g");
        assert!(!wedged.ok);
        assert!(
            wedged
                .detail
                .as_deref()
                .unwrap()
                .starts_with("t/1: 3 records waiting"),
            "{wedged:?}"
        );
        consumer.statistics(true, &[(("t".into(), 1), 11, 2)]);
        assert!(
            check(&health.checks(), "consumer:g").ok,
            "progress clears it"
        );
    }

    #[test]
    fn a_dead_letter_that_is_not_published_for_the_stall_time_is_named() {
        let health = Health::new(Duration::from_millis(50));
        let consumer = health.consumer("g");
        consumer.started();
        consumer.assignment(&[("t".into(), 2)]);
        consumer.dead_letter_started("t", 2);
        assert!(check(&health.checks(), "consumer:g").ok, "not yet");
        consumer.dead_letter_failed("t", 2, "Broker: Unknown topic or partition");
        std::thread::sleep(Duration::from_millis(80));
        consumer.statistics(true, &[]);
        let blocked = check(&health.checks(), "consumer:g");
        assert!(!blocked.ok);
        let detail = blocked.detail.unwrap_or_default();
        assert!(
            detail.starts_with("t/2: a record's dead letter has not been published")
                && detail.ends_with("(Broker: Unknown topic or partition)"),
            "{detail}"
        );
        consumer.dead_letter_published("t", 2);
        assert!(
            check(&health.checks(), "consumer:g").ok,
            "published clears it"
        );
        // A partition given up (revoked) takes its attempt with it.
        consumer.dead_letter_started("t", 2);
        std::thread::sleep(Duration::from_millis(80));
        consumer.statistics(true, &[]);
        consumer.assignment(&[]);
        let after = check(&health.checks(), "consumer:g");
        assert!(!after.detail.unwrap_or_default().contains("dead letter"));
    }

    #[test]
    fn the_relay_must_publish_when_it_holds_the_lease_and_rows_wait() {
        let health = Health::new(Duration::from_millis(50));
        health.register_relay();
        assert!(!check(&health.checks(), "relay").ok);
        health.relay_started();
        health.relay_backlog(5);
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            check(&health.checks(), "relay").ok,
            "a standby relay is ready"
        );
        health.relay_lease(true);
        std::thread::sleep(Duration::from_millis(80));
        health.relay_backlog(5);
        let stalled = check(&health.checks(), "relay");
        assert!(!stalled.ok, "{stalled:?}");
        health.relay_published();
        assert!(check(&health.checks(), "relay").ok);
    }
}
