//! [`Dispatcher`]: polls the consumer on a thread of its own and hands each record to its
//! partition's lane, pausing a partition whose lane is full.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::handler::Handler;
use super::lane::run_lane;
use super::lane_env::{Envelope, KafkaConsumer, LaneEnv};
use super::lanes::{LaneKey, LaneState, LaneStates};
use super::record::Record;

/// A lane as the dispatcher sees it.
struct Slot {
    sender: mpsc::Sender<Envelope>,
    state: Arc<LaneState>,
    /// Records read while the lane was full; the partition is paused meanwhile.
    stash: VecDeque<Envelope>,
    paused: bool,
    task: tokio::task::JoinHandle<()>,
}

/// Polls the consumer on a thread of its own and hands each record to its partition's lane.
pub(super) struct Dispatcher<H> {
    env: Arc<LaneEnv<H>>,
    lanes: LaneStates,
    prefix: String,
    runtime: tokio::runtime::Handle,
    slots: HashMap<LaneKey, Slot>,
}

impl<H: Handler> Dispatcher<H> {
    /// A dispatcher to lanes that run on the current runtime; `prefix` is the topic prefix.
    pub(super) fn new(env: Arc<LaneEnv<H>>, lanes: LaneStates, prefix: String) -> Self {
        Self {
            env,
            lanes,
            prefix,
            runtime: tokio::runtime::Handle::current(),
            slots: HashMap::new(),
        }
    }

    /// Runs until `stop`; returns the lanes' tasks.
    pub(super) fn run(mut self, stop: &AtomicBool) -> Vec<tokio::task::JoinHandle<()>> {
        while !stop.load(Ordering::SeqCst) {
            self.forget_revoked();
            self.flush_stashes();
            let wait = if self.slots.values().any(|s| !s.stash.is_empty()) {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            match self.env.consumer.poll(wait) {
                None => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, group = %self.env.options.group_id, "consumer error");
                }
                Some(Ok(message)) => {
                    use rdkafka::message::Message;
                    let timestamp_ms = message.timestamp().to_millis();
                    let mut record = Record::from_message(&message);
                    let key = (std::mem::take(&mut record.topic), record.partition);
                    record.topic = key
                        .0
                        .strip_prefix(&self.prefix)
                        .unwrap_or(&key.0)
                        .to_string();
                    self.route(key, record, timestamp_ms);
                }
            }
        }
        self.slots.into_values().map(|slot| slot.task).collect()
    }

    fn route(&mut self, key: LaneKey, record: Record, timestamp_ms: Option<i64>) {
        let slot = match self.slots.entry(key.clone()) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(vacant) => {
                let state = Arc::new(LaneState::default());
                self.lanes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(vacant.key().clone(), Arc::clone(&state));
                let (sender, receiver) = mpsc::channel(self.env.options.max_batch.max(1) * 2);
                let (topic, partition) = vacant.key().clone();
                let metrics = crate::foundation::metrics_scope::current();
                let task = self.runtime.spawn(metrics.scope(run_lane(
                    Arc::clone(&self.env),
                    Arc::clone(&state),
                    topic,
                    partition,
                    receiver,
                )));
                vacant.insert(Slot {
                    sender,
                    state,
                    stash: VecDeque::new(),
                    paused: false,
                    task,
                })
            }
        };
        let envelope = Envelope {
            generation: slot.state.generation.load(Ordering::SeqCst),
            record,
            timestamp_ms,
        };
        if !slot.stash.is_empty() {
            slot.stash.push_back(envelope);
            return;
        }
        if let Err(TrySendError::Full(envelope)) = slot.sender.try_send(envelope) {
            // The lane is busy (a big backlog, or retrying): hold this partition, not the others.
            slot.stash.push_back(envelope);
            if !slot.paused {
                slot.paused = true;
                pause(&self.env.consumer, &key);
            }
        }
    }

    /// Moves stashed records into their lanes as they make room; resumes drained partitions.
    fn flush_stashes(&mut self) {
        for slot in self.slots.values_mut().filter(|s| !s.stash.is_empty()) {
            while let Some(envelope) = slot.stash.pop_front() {
                match slot.sender.try_send(envelope) {
                    Ok(()) => {}
                    Err(TrySendError::Full(envelope)) => {
                        slot.stash.push_front(envelope);
                        break;
                    }
                    Err(TrySendError::Closed(_)) => slot.stash.clear(),
                }
            }
        }
        for (key, slot) in self.slots.iter_mut() {
            if slot.paused && slot.stash.is_empty() {
                slot.paused = false;
                resume(&self.env.consumer, key);
            }
        }
    }

    /// Drops what was stashed for partitions that were revoked (their lanes drop the rest).
    fn forget_revoked(&mut self) {
        let revoked = std::mem::take(
            &mut *self
                .env
                .consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for key in revoked {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.stash.clear();
                slot.paused = false;
            }
        }
    }
}

fn pause(consumer: &KafkaConsumer, (topic, partition): &LaneKey) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, *partition);
    if let Err(error) = consumer.pause(&tpl) {
        tracing::debug!(%error, topic, partition, "pause");
    }
}

fn resume(consumer: &KafkaConsumer, (topic, partition): &LaneKey) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, *partition);
    if let Err(error) = consumer.resume(&tpl) {
        tracing::debug!(%error, topic, partition, "resume");
    }
}
