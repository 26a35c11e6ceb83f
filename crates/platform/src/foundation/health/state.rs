//! What the registry knows of each consumer and of the relay, and the verdict on each
//! ([`ConsumerState::check`], [`RelayState::check`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::check::{Check, SESSION_TIMEOUT};
use super::stall;

/// Where a part is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    WaitingForBroker,
    Running,
    Stopped,
}

/// One consumer, as its statistics and callbacks report it.
#[derive(Debug)]
pub(super) struct ConsumerState {
    pub(super) phase: Phase,
    pub(super) assigned: usize,
    /// Since when it has had no partitions (it started, or lost its assignment).
    pub(super) unassigned_since: Instant,
    /// The group is stable (`join_state` steady): no partitions means none are left for it.
    pub(super) settled: bool,
    pub(super) last_report: Instant,
    pub(super) partitions: HashMap<(String, i32), Progress>,
    /// Partitions whose lane is publishing a dead letter: since when, and the last error.
    pub(super) dead_letters: BTreeMap<(String, i32), DeadLetterAttempt>,
}

/// A dead letter being published.
#[derive(Debug)]
pub(super) struct DeadLetterAttempt {
    pub(super) since: Instant,
    pub(super) error: Option<String>,
}

/// One assigned partition's progress.
#[derive(Debug)]
pub(super) struct Progress {
    pub(super) committed: i64,
    pub(super) lag: i64,
    /// When the committed offset last moved, or nothing was waiting.
    pub(super) since: Instant,
}

/// The outbox relay.
#[derive(Debug)]
pub(super) struct RelayState {
    pub(super) phase: Phase,
    pub(super) holds_lease: bool,
    pub(super) pending: i64,
    pub(super) progress_at: Instant,
}

impl ConsumerState {
    /// A consumer in `phase` that has no partitions yet and reported just now.
    pub(super) fn new(phase: Phase) -> Self {
        let now = Instant::now();
        Self {
            phase,
            assigned: 0,
            unassigned_since: now,
            settled: false,
            last_report: now,
            partitions: HashMap::new(),
            dead_letters: BTreeMap::new(),
        }
    }

    /// The verdict on this consumer when work may wait `stall` without progress.
    pub(super) fn check(&self, stall: Duration) -> Check {
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
    pub(super) fn stalled_for(&self) -> Duration {
        self.partitions
            .values()
            .filter(|p| p.lag > 0)
            .map(|p| p.since.elapsed())
            .max()
            .unwrap_or_default()
    }
}

impl RelayState {
    /// A relay in `phase` that holds no lease, counted no rows and progressed just now.
    pub(super) fn new(phase: Phase) -> Self {
        Self {
            phase,
            holds_lease: false,
            pending: 0,
            progress_at: Instant::now(),
        }
    }

    /// The verdict on the relay when work may wait `stall` without progress.
    pub(super) fn check(&self, stall: Duration) -> Check {
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
