//! What a consumer reports into [`Health`], through its [`ConsumerHealth`] handle: its phase,
//! its assignment, its statistics and the dead letters its lanes wait for.

use std::time::Instant;

use super::registry::{lock, Health};
use super::stall;
use super::state::{ConsumerState, DeadLetterAttempt, Phase, Progress};

impl Health {
    /// Registers consumer `group` (waiting for the broker) and returns its reporting handle.
    pub fn consumer(&self, group: &str) -> ConsumerHealth {
        lock(&self.inner.consumers).insert(
            group.to_string(),
            ConsumerState::new(Phase::WaitingForBroker),
        );
        ConsumerHealth {
            health: self.clone(),
            group: group.to_string(),
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
    /// A handle whose reports nobody reads (a consumer outside a [`crate::runtime::service::Service`]).
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
