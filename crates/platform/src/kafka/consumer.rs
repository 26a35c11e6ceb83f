//! The consumer: partition lanes and batches.
//!
//! One thread polls the broker and hands each record to its partition's lane (a task). A lane
//! takes what has arrived, up to `max_batch` records, and gives them to the handler as one
//! batch, which commits their effects in one database transaction; only then is the offset
//! stored (and committed in the background, once more synchronously on shutdown and before a
//! partition is revoked). Partitions run concurrently, each in order. A batch that fails is
//! applied again record by record; a record that fails transiently is retried with backoff
//! while only its partition is paused, and is dead-lettered after `retry_limit`. Records that
//! can never be processed go to `<topic>.DLT` (see [`super::dead_letter`]).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use contracts::envelope::{headers, Event, EventMetadata, EventType};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::dead_letter::DeadLetter;
use super::{KafkaConfig, KafkaError, Producer};
use crate::health::ConsumerHealth;
use crate::telemetry;

/// A consumed record, detached from the client.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic (without the configured prefix).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, when present and UTF-8.
    pub key: Option<String>,
    /// Value.
    pub payload: Vec<u8>,
    /// Headers with UTF-8 names.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The CloudEvents attributes; a record from a producer that sent none gets an id derived
    /// from its position, so a redelivery carries the same id.
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata::from_headers(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .unwrap_or_else(|| {
                let event_type = EventType::for_topic(&self.topic)
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default();
                EventMetadata {
                    id: format!("{}-{}-{}", self.topic, self.partition, self.offset),
                    event_type,
                    source: String::new(),
                    time: chrono::Utc::now(),
                    traceparent: None,
                }
            })
    }

    /// Decodes the payload as `E`, checking the event type and schema version when a `ce_type`
    /// header is present. Failures are permanent: the record goes to the dead-letter topic.
    pub fn decode<E: Event>(&self) -> Result<(EventMetadata, E), HandleError> {
        let metadata = self.metadata();
        if !metadata.event_type.is_empty() && metadata.event_type != E::TYPE.as_str() {
            return Err(HandleError::Permanent(format!(
                "unsupported event type `{}` on {} (expected `{}`)",
                metadata.event_type,
                self.topic,
                E::TYPE.as_str()
            )));
        }
        let event = serde_json::from_slice(&self.payload).map_err(|e| {
            HandleError::Permanent(format!("payload is not a valid {}: {e}", E::TYPE.as_str()))
        })?;
        Ok((metadata, event))
    }

    /// The W3C `traceparent` header, when present and UTF-8 (with or without CloudEvents
    /// headers; not validated).
    pub fn traceparent(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name == headers::TRACEPARENT)
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
            .map(str::trim)
    }

    pub(crate) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_string),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }
}

/// How handling records failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The record can never be processed: it goes to the dead-letter topic.
    #[error("permanent: {0}")]
    Permanent(String),
    /// Try again later (database or SMTP unreachable).
    #[error("transient: {0}")]
    Transient(String),
}

/// A record of a batch that can never be processed: it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the batch.
    pub index: usize,
    /// Why (the `dlt_error` header).
    pub reason: String,
}

/// Applies batches of records.
pub trait Handler: Send + Sync + 'static {
    /// Applies `records` — consecutive records of one partition, in offset order — and commits
    /// their effects (one database transaction) before returning. Returns the records it
    /// rejects for good; they are dead-lettered and the partition moves on. An `Err` means
    /// nothing was applied: the consumer retries the records one by one.
    fn handle(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<Vec<Rejected>, HandleError>> + Send;
}

/// Settings of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Most records handed to the handler at once.
    pub max_batch: usize,
    /// First delay between retries of a transient failure.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// How long a record may keep failing transiently before it is dead-lettered.
    pub retry_limit: Duration,
    /// How often librdkafka reports statistics (consumer lag, assignment).
    pub statistics_interval: Duration,
    /// Where the consumer reports its state for `/readyz` (none: reports go nowhere).
    pub health: Option<ConsumerHealth>,
}

impl ConsumerOptions {
    /// Options with the defaults: batches of up to 500 records, backoff from 100 ms doubling
    /// to 5 s, dead-lettered after 5 minutes of transient failures, statistics every 5 s.
    pub fn new(group_id: impl Into<String>, topics: &[&str]) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            max_batch: 500,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retry_limit: Duration::from_secs(300),
            statistics_interval: Duration::from_secs(5),
            health: None,
        }
    }
}

/// How long a revocation waits for a lane to finish the batch it is in.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// What a partition's lane shares with the dispatcher and the rebalance callback.
#[derive(Debug, Default)]
struct LaneState {
    /// Bumped when the partition is revoked: records of an older generation are dropped.
    generation: AtomicU64,
    /// The lane is inside a batch (set before it checks the generation).
    busy: AtomicBool,
}

type LaneKey = (String, i32);
type LaneStates = Arc<Mutex<HashMap<LaneKey, Arc<LaneState>>>>;

/// The client context: on revocation, lets each lane finish its batch, then commits the
/// stored offsets before the partition goes away; reports the assignment and, from librdkafka's
/// statistics, the lag of each assigned partition (metrics and [`ConsumerHealth`]).
struct LaneContext {
    lanes: LaneStates,
    revoked: Mutex<Vec<LaneKey>>,
    /// The group as the services name it (without the topic prefix).
    group: String,
    prefix: String,
    health: ConsumerHealth,
    /// The current assignment (unprefixed topics), as of the last rebalance.
    assignment: Mutex<Vec<LaneKey>>,
}

impl LaneContext {
    fn states(&self, tpl: &TopicPartitionList) -> Vec<(LaneKey, Arc<LaneState>)> {
        let lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        tpl.elements()
            .iter()
            .filter_map(|e| {
                let key = (e.topic().to_string(), e.partition());
                lanes.get(&key).map(|s| (key, Arc::clone(s)))
            })
            .collect()
    }
}

impl LaneContext {
    /// Records the consumer's whole assignment after a rebalance.
    fn report_assignment(&self, consumer: &BaseConsumer<Self>) {
        let assignment: Vec<LaneKey> = match consumer.assignment() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .map(|e| (self.unprefixed(e.topic()), e.partition()))
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "assignment");
                return;
            }
        };
        metrics::gauge!("kafka_consumer_assigned_partitions", "group" => self.group.clone())
            .set(assignment.len() as f64);
        let mut current = self
            .assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A partition that went elsewhere is no longer this replica's lag.
        for (topic, partition) in current.iter().filter(|key| !assignment.contains(key)) {
            lag_gauge(&self.group, topic, *partition).set(0.0);
        }
        self.health.assignment(&assignment);
        *current = assignment;
    }

    fn unprefixed(&self, topic: &str) -> String {
        topic
            .strip_prefix(&self.prefix)
            .unwrap_or(topic)
            .to_string()
    }
}

fn lag_gauge(group: &str, topic: &str, partition: i32) -> metrics::Gauge {
    metrics::gauge!("kafka_consumer_lag", "group" => group.to_string(),
        "topic" => topic.to_string(), "partition" => partition.to_string())
}

/// The part of librdkafka's statistics the consumer reads (see its STATISTICS.md).
#[derive(serde::Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
    cgrp: Option<GroupStatistics>,
}

#[derive(serde::Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(serde::Deserialize)]
struct PartitionStatistics {
    partition: i32,
    committed_offset: i64,
    consumer_lag: i64,
    lo_offset: i64,
    hi_offset: i64,
}

impl PartitionStatistics {
    /// Records waiting: the lag, or, before the group ever committed on the partition (its
    /// lag is unknown), every record on it (`auto.offset.reset` is `earliest`).
    fn waiting(&self) -> Option<i64> {
        if self.consumer_lag >= 0 {
            Some(self.consumer_lag)
        } else if self.committed_offset < 0 && self.lo_offset >= 0 && self.hi_offset >= 0 {
            Some(self.hi_offset - self.lo_offset)
        } else {
            None
        }
    }
}

#[derive(serde::Deserialize)]
struct GroupStatistics {
    join_state: String,
}

impl rdkafka::ClientContext for LaneContext {
    fn stats_raw(&self, statistics: &[u8]) {
        let statistics: Statistics = match serde_json::from_slice(statistics) {
            Ok(statistics) => statistics,
            Err(error) => {
                tracing::debug!(%error, "unreadable librdkafka statistics");
                return;
            }
        };
        let assignment = self
            .assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut partitions = Vec::new();
        for (name, topic) in &statistics.topics {
            let name = self.unprefixed(name);
            for p in topic.partitions.values() {
                // -1 is librdkafka's internal partition.
                let key = (name.clone(), p.partition);
                if p.partition < 0 || !assignment.contains(&key) {
                    continue;
                }
                // A negative lag is not known yet: no series.
                if p.consumer_lag >= 0 {
                    lag_gauge(&self.group, &name, p.partition).set(p.consumer_lag as f64);
                }
                if let Some(waiting) = p.waiting() {
                    partitions.push((key, p.committed_offset, waiting));
                }
            }
        }
        let settled = statistics.cgrp.is_some_and(|g| g.join_state == "steady");
        self.health.statistics(settled, &partitions);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        super::error_to_tracing(&error, reason);
    }
}

impl ConsumerContext for LaneContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let states = self.states(tpl);
        for (_, state) in &states {
            state.generation.fetch_add(1, Ordering::SeqCst);
        }
        let deadline = Instant::now() + REVOKE_WAIT;
        while states.iter().any(|(_, s)| s.busy.load(Ordering::SeqCst)) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "offset commit on revocation");
        }
        tracing::info!(partitions = tpl.count(), "partitions revoked");
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(states.into_iter().map(|(key, _)| key));
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition paused before it was revoked must not stay paused when it returns.
            if let Err(error) = consumer.resume(tpl) {
                tracing::debug!(%error, "resume of assigned partitions");
            }
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
        self.report_assignment(consumer);
    }
}

type KafkaConsumer = BaseConsumer<LaneContext>;

/// A record on its way to a lane, with the partition's generation when it was read.
struct Envelope {
    generation: u64,
    record: Record,
}

/// Everything a lane needs.
struct LaneEnv<H> {
    handler: H,
    options: ConsumerOptions,
    /// Replaced when it hits a fatal error (fenced or out-of-sequence idempotent producer).
    dead_letters: Mutex<Producer>,
    consumer: Arc<KafkaConsumer>,
    shutdown: CancellationToken,
}

/// Consumes `options.topics` until `shutdown` is cancelled. Each partition has a lane of its
/// own: its records are handed to `handler` in batches, in order; partitions are handled
/// concurrently; a lane that retries pauses only its partition. Returns after each lane
/// finished the batch it was in and the offsets are committed.
pub async fn run_consumer<H: Handler>(
    config: &KafkaConfig,
    options: ConsumerOptions,
    handler: H,
    dead_letters: Producer,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let lanes = LaneStates::default();
    let health = options
        .health
        .clone()
        .unwrap_or_else(|| ConsumerHealth::detached(&options.group_id));
    let consumer: KafkaConsumer = config
        .client_config(&options.group_id)
        // Groups carry the topic prefix too: environments (and tests) sharing a cluster never
        // share a group.
        .set("group.id", config.topic_name(&options.group_id))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            crate::health::SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set(
            "statistics.interval.ms",
            options.statistics_interval.as_millis().max(1).to_string(),
        )
        .set("heartbeat.interval.ms", "2000")
        .set("max.poll.interval.ms", "300000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // Small fetch waits keep latency low when traffic is light; a bounded prefetch keeps
        // memory low when a paused partition's records wait.
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "8192")
        .create_with_context(LaneContext {
            lanes: Arc::clone(&lanes),
            revoked: Mutex::default(),
            group: options.group_id.clone(),
            prefix: config.topic_prefix.clone(),
            health: health.clone(),
            assignment: Mutex::default(),
        })
        .map_err(|source| KafkaError::Client {
            client: "consumer",
            source,
        })?;
    let broker_topics: Vec<String> = options
        .topics
        .iter()
        .map(|t| config.topic_name(t))
        .collect();
    let topic_refs: Vec<&str> = broker_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(|source| KafkaError::Operation {
            operation: format!("subscribe to {topic_refs:?}"),
            source,
        })?;
    tracing::info!(group = %options.group_id, topics = ?options.topics, "consumer started");
    health.started();
    let group = options.group_id.clone();
    let consumer = Arc::new(consumer);
    let env = Arc::new(LaneEnv {
        handler,
        options,
        dead_letters: Mutex::new(dead_letters),
        consumer: Arc::clone(&consumer),
        shutdown: shutdown.clone(),
    });
    let dispatcher = Dispatcher {
        env,
        lanes,
        prefix: config.topic_prefix.clone(),
        runtime: tokio::runtime::Handle::current(),
        slots: HashMap::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("consume-{group}"))
            .spawn(move || dispatcher.run(&stop))
            .map_err(|e| KafkaError::Timeout(format!("consumer thread: {e}")))?
    };

    shutdown.cancelled().await;
    stop.store(true, Ordering::SeqCst);
    health.stopped();
    let lanes = tokio::task::spawn_blocking(move || thread.join().unwrap_or_default())
        .await
        .unwrap_or_default();
    // Each lane finishes the batch it is in (and stores its offsets).
    for lane in lanes {
        let _ = lane.await;
    }
    tokio::task::spawn_blocking(move || {
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "final offset commit");
        }
        drop(consumer);
    })
    .await
    .ok();
    tracing::info!(%group, "consumer stopped");
    Ok(())
}

/// The span around applying one record (OpenTelemetry messaging conventions, operation
/// `process`), a consumer of group `group` when given: a child of the span that produced it
/// when the record carries a valid `traceparent`, else the root of a new trace.
pub fn consume_span(record: &Record, group: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %record.topic,
        messaging.destination.partition.id = %record.partition,
        messaging.kafka.offset = record.offset,
        messaging.kafka.message.key = tracing::field::Empty,
        messaging.consumer.group.name = tracing::field::Empty,
        event_id = %record.metadata().id,
    );
    if let Some(key) = &record.key {
        span.record("messaging.kafka.message.key", key.as_str());
    }
    if let Some(group) = group {
        span.record("messaging.consumer.group.name", group);
    }
    if let Some(traceparent) = record.traceparent() {
        telemetry::set_parent(&span, traceparent);
    }
    span
}

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
struct Dispatcher<H> {
    env: Arc<LaneEnv<H>>,
    lanes: LaneStates,
    prefix: String,
    runtime: tokio::runtime::Handle,
    slots: HashMap<LaneKey, Slot>,
}

impl<H: Handler> Dispatcher<H> {
    /// Runs until `stop`; returns the lanes' tasks.
    fn run(mut self, stop: &AtomicBool) -> Vec<tokio::task::JoinHandle<()>> {
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
                    let mut record = Record::from_message(&message);
                    let key = (std::mem::take(&mut record.topic), record.partition);
                    record.topic = key
                        .0
                        .strip_prefix(&self.prefix)
                        .unwrap_or(&key.0)
                        .to_string();
                    self.route(key, record);
                }
            }
        }
        self.slots.into_values().map(|slot| slot.task).collect()
    }

    fn route(&mut self, key: LaneKey, record: Record) {
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
                let task = self.runtime.spawn(run_lane(
                    Arc::clone(&self.env),
                    Arc::clone(&state),
                    topic,
                    partition,
                    receiver,
                ));
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

/// A partition's lane: takes what has arrived (up to `max_batch` records), applies it as one
/// batch, stores the offset after the commit, and so on, in order.
async fn run_lane<H: Handler>(
    env: Arc<LaneEnv<H>>,
    state: Arc<LaneState>,
    topic: String,
    partition: i32,
    mut receiver: mpsc::Receiver<Envelope>,
) {
    loop {
        let first = tokio::select! {
            _ = env.shutdown.cancelled() => break,
            envelope = receiver.recv() => match envelope {
                Some(envelope) => envelope,
                None => break,
            },
        };
        state.busy.store(true, Ordering::SeqCst);
        let generation = state.generation.load(Ordering::SeqCst);
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(envelope) = next.take() {
            if envelope.generation == generation {
                batch.push(envelope.record);
            }
            if batch.len() < env.options.max_batch {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let lane = Lane {
                env: &env,
                state: &state,
                generation,
                topic: &topic,
                partition,
            };
            lane.process(&batch).await;
        }
        state.busy.store(false, Ordering::SeqCst);
    }
}

/// One batch's work in a lane.
struct Lane<'a, H> {
    env: &'a LaneEnv<H>,
    state: &'a LaneState,
    generation: u64,
    /// The topic as the broker names it (with the prefix).
    topic: &'a str,
    partition: i32,
}

impl<H: Handler> Lane<'_, H> {
    /// Applies `batch` in one go; when that fails, record by record. Stores the offset of
    /// every record that was applied or dead-lettered.
    async fn process(&self, batch: &[Record]) {
        let started = Instant::now();
        let result = self.env.handler.handle(batch).await;
        self.observe(batch, started, &result);
        match result {
            Ok(rejected) => {
                if self.dead_letter_all(batch, &rejected).await {
                    self.done(batch);
                }
            }
            Err(error) if batch.len() > 1 => {
                tracing::warn!(%error, records = batch.len(), topic = self.topic,
                    partition = self.partition, "batch failed; applying its records one by one");
                for record in batch {
                    if !self.process_one(record).await {
                        return;
                    }
                    self.done(std::slice::from_ref(record));
                }
            }
            Err(error) => {
                if self.retry_one(&batch[0], error).await {
                    self.done(batch);
                }
            }
        }
    }

    /// Applies one record until it is applied or dead-lettered (`true`), or the lane must stop.
    async fn process_one(&self, record: &Record) -> bool {
        let started = Instant::now();
        let result = self.env.handler.handle(std::slice::from_ref(record)).await;
        self.observe(std::slice::from_ref(record), started, &result);
        match result {
            Ok(rejected) => {
                self.dead_letter_all(std::slice::from_ref(record), &rejected)
                    .await
            }
            Err(error) => self.retry_one(record, error).await,
        }
    }

    /// Retries `record` after `error` with backoff until it succeeds, fails for good, or has
    /// failed for longer than the retry limit (then it is dead-lettered with the reason).
    async fn retry_one(&self, record: &Record, mut error: HandleError) -> bool {
        let first_failure = Instant::now();
        let mut backoff = self.env.options.initial_backoff;
        let mut attempts = 1u32;
        loop {
            let reason = match error {
                HandleError::Permanent(reason) => reason,
                HandleError::Transient(reason)
                    if first_failure.elapsed() >= self.env.options.retry_limit =>
                {
                    format!(
                        "gave up after {attempts} attempts in {} s: {reason}",
                        first_failure.elapsed().as_secs()
                    )
                }
                HandleError::Transient(reason) => {
                    tracing::warn!(topic = %record.topic, partition = record.partition,
                        offset = record.offset, error = %reason, attempts,
                        retry_in_ms = backoff.as_millis() as u64, "retrying record");
                    if !self.pause_for(backoff).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(self.env.options.max_backoff);
                    attempts += 1;
                    let started = Instant::now();
                    let result = self.env.handler.handle(std::slice::from_ref(record)).await;
                    self.observe(std::slice::from_ref(record), started, &result);
                    match result {
                        Ok(rejected) => {
                            return self
                                .dead_letter_all(std::slice::from_ref(record), &rejected)
                                .await
                        }
                        Err(next) => {
                            error = next;
                            continue;
                        }
                    }
                }
            };
            return self.dead_letter(record, &reason).await;
        }
    }

    async fn dead_letter_all(&self, batch: &[Record], rejected: &[Rejected]) -> bool {
        for r in rejected {
            if let Some(record) = batch.get(r.index) {
                if !self.dead_letter(record, &r.reason).await {
                    return false;
                }
            }
        }
        true
    }

    /// Publishes `record` to its dead-letter topic, retrying until the broker has it (or the
    /// lane must stop).
    async fn dead_letter(&self, record: &Record, reason: &str) -> bool {
        let group = &self.env.options.group_id;
        tracing::error!(topic = %record.topic, partition = record.partition,
            offset = record.offset, error = %reason, "record sent to dead-letter topic");
        let letter = DeadLetter::of(record, group, reason);
        let mut backoff = self.env.options.initial_backoff;
        loop {
            let producer = self.dead_letter_producer();
            let sent = match producer.enqueue_bytes(
                &letter.topic,
                &letter.key,
                &letter.payload,
                &letter.header_refs(),
            ) {
                Ok(delivery) => {
                    crate::failpoint!("consumer.mid_dead_letter");
                    delivery.await
                }
                Err(error) => Err(error),
            };
            match sent {
                Ok(_) => {
                    metrics::counter!("events_dead_lettered_total", "topic" => record.topic.clone())
                        .increment(1);
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, topic = %letter.topic, "dead-letter publish failed; retrying");
                    self.replace_if_fatal(&producer);
                    if !self.pause_for(backoff).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(self.env.options.max_backoff);
                }
            }
        }
    }

    fn dead_letter_producer(&self) -> Producer {
        self.env
            .dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A producer in a fatal state delivers nothing more: build a new one in its place.
    fn replace_if_fatal(&self, producer: &Producer) {
        let Some(fatal) = producer.fatal_error() else {
            return;
        };
        tracing::error!(%fatal, "dead-letter producer hit a fatal error; recreating it");
        match producer.recreate() {
            Ok(fresh) => {
                *self
                    .env
                    .dead_letters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = fresh;
            }
            Err(error) => tracing::error!(%error, "cannot recreate the dead-letter producer"),
        }
    }

    /// Waits `delay`; `false` when the lane must stop instead (shutdown, or its partition was
    /// revoked: the new owner takes over from the committed offset).
    async fn pause_for(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.env.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        self.state.generation.load(Ordering::SeqCst) == self.generation
    }

    /// Stores the offset after the last of `records` (applied or dead-lettered, committed).
    fn done(&self, records: &[Record]) {
        let Some(last) = records.last() else {
            return;
        };
        crate::failpoint!("consumer.after_commit");
        if let Err(error) = self
            .env
            .consumer
            .store_offset(self.topic, self.partition, last.offset)
        {
            tracing::debug!(%error, topic = self.topic, partition = self.partition,
                "offset not stored (partition revoked?)");
        }
    }

    fn observe(
        &self,
        batch: &[Record],
        started: Instant,
        result: &Result<Vec<Rejected>, HandleError>,
    ) {
        let topic = &batch[0].topic;
        let (label, n) = match result {
            Ok(rejected) => ("ok", batch.len() - rejected.len()),
            Err(HandleError::Permanent(_)) => ("dead_letter", batch.len()),
            Err(HandleError::Transient(_)) => ("retry", batch.len()),
        };
        metrics::counter!("events_consumed_total", "topic" => topic.clone(), "outcome" => label)
            .increment(n as u64);
        metrics::histogram!("event_batch_seconds", "topic" => topic.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("event_batch_records", "topic" => topic.clone())
            .record(batch.len() as f64);
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use contracts::topics;
    use contracts::CustomerCreated;

    fn record(headers: Vec<(&str, &str)>, payload: &str) -> Record {
        Record {
            topic: topics::CUSTOMER_CREATED.to_string(),
            partition: 2,
            offset: 17,
            key: Some("c1".into()),
            payload: payload.as_bytes().to_vec(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    const CUSTOMER: &str =
        r#"{"id":"c1","name":"Ann","email":"ann@example.com","createdAt":"2026-01-01T00:00:00Z"}"#;

    #[test]
    fn decodes_records_with_and_without_cloudevents_headers() {
        let with = record(
            vec![(headers::ID, "e-9"), (headers::TYPE, "customer.created.v1")],
            CUSTOMER,
        );
        let (meta, customer) = with.decode::<CustomerCreated>().unwrap();
        assert_eq!(meta.id, "e-9");
        assert_eq!(customer.email, "ann@example.com");

        let plain = record(vec![], CUSTOMER);
        let (meta, _) = plain.decode::<CustomerCreated>().unwrap();
        assert_eq!(meta.id, "Customer.created-2-17");
    }

    #[test]
    fn bad_json_and_unknown_versions_are_permanent() {
        let bad = record(vec![], "{not json");
        assert!(matches!(
            bad.decode::<CustomerCreated>(),
            Err(HandleError::Permanent(_))
        ));
        let v2 = record(
            vec![(headers::ID, "e"), (headers::TYPE, "customer.created.v2")],
            CUSTOMER,
        );
        let err = v2.decode::<CustomerCreated>().unwrap_err();
        assert!(err.to_string().contains("customer.created.v2"));
    }

    /// Collects the spans a test tracer provider ends.
    #[derive(Debug, Clone, Default)]
    struct Collected(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collected {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// Runs `work` under a subscriber with an OpenTelemetry layer; returns its result and the
    /// spans it ended.
    fn traced<T>(work: impl FnOnce() -> T) -> (T, Vec<opentelemetry_sdk::trace::SpanData>) {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let collected = Collected::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(collected.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let out = tracing::subscriber::with_default(subscriber, work);
        provider.force_flush().unwrap();
        let spans = collected.0.lock().unwrap().clone();
        (out, spans)
    }

    fn attribute(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_records_traceparent_is_the_parent_of_the_consume_span() {
        let with = record(
            vec![(headers::ID, "e-7"), (headers::TRACEPARENT, PARENT)],
            CUSTOMER,
        );
        let (handed_on, spans) = traced(|| {
            let span = consume_span(&with, Some("ledger"));
            let _entered = span.enter();
            // What a handler's outbox write would carry on: this span, in the same trace.
            telemetry::current_traceparent()
        });
        assert_eq!(spans.len(), 1);
        let consume = &spans[0];
        assert_eq!(consume.name, "consume");
        assert_eq!(
            consume.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(consume.parent_span_id.to_string(), "b7ad6b7169203331");
        assert!(consume.parent_span_is_remote);
        assert_eq!(consume.span_kind, opentelemetry::trace::SpanKind::Consumer);
        for (name, value) in [
            ("messaging.system", "kafka"),
            ("messaging.operation.type", "process"),
            ("messaging.destination.name", "Customer.created"),
            ("messaging.destination.partition.id", "2"),
            ("messaging.kafka.offset", "17"),
            ("messaging.kafka.message.key", "c1"),
            ("messaging.consumer.group.name", "ledger"),
            ("event_id", "e-7"),
        ] {
            assert_eq!(attribute(consume, name).as_deref(), Some(value), "{name}");
        }
        assert_eq!(
            handed_on,
            Some(format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                consume.span_context.span_id()
            ))
        );
    }

    #[test]
    fn a_record_without_a_valid_traceparent_starts_a_trace() {
        let records = [
            record(vec![(headers::ID, "e-8")], CUSTOMER),
            record(vec![(headers::TRACEPARENT, "00-garbage-01")], CUSTOMER),
        ];
        let ((), spans) = traced(|| {
            for r in &records {
                drop(consume_span(r, None));
            }
        });
        assert_eq!(spans.len(), 2);
        for span in &spans {
            assert!(span.span_context.is_valid());
            assert_eq!(span.parent_span_id, opentelemetry::trace::SpanId::INVALID);
            assert_ne!(
                span.span_context.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c"
            );
        }
        assert_eq!(
            attribute(&spans[1], "event_id").as_deref(),
            Some("Customer.created-2-17")
        );
        assert_eq!(
            attribute(&spans[1], "messaging.consumer.group.name"),
            None,
            "no group, no attribute"
        );
    }
}
