//! A partition's lane: batches, record-by-record retries with backoff, dead letters, offsets.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tokio::sync::mpsc;

use super::error::HandleError;
use super::handler::{Handler, Rejected};
use super::lane_env::{Envelope, LaneEnv};
use super::lanes::{LaneState, NO_TIMESTAMP};
use super::record::Record;
use crate::foundation::retry::{self, BackoffBuilder};
use crate::kafka::client::KafkaError;
use crate::kafka::dead_letter::DeadLetter;
use crate::kafka::producer::Producer;

/// A partition's lane: takes what has arrived (up to `max_batch` records), applies it as one
/// batch, stores the offset after the commit, and so on, in order.
pub(super) async fn run_lane<H: Handler>(
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
                if batch.is_empty() {
                    state.batch_timestamp_ms.store(
                        envelope.timestamp_ms.unwrap_or(NO_TIMESTAMP),
                        Ordering::SeqCst,
                    );
                }
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
        match self.handle(batch).await {
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

    /// Hands `records` to the handler and records the outcome's metrics.
    async fn handle(&self, records: &[Record]) -> Result<Vec<Rejected>, HandleError> {
        let started = Instant::now();
        let result = self.env.handler.handle(records).await;
        self.observe(records, started, &result);
        result
    }

    /// Applies one record until it is applied or dead-lettered (`true`), or the lane must stop.
    async fn process_one(&self, record: &Record) -> bool {
        let one = std::slice::from_ref(record);
        match self.handle(one).await {
            Ok(rejected) => self.dead_letter_all(one, &rejected).await,
            Err(error) => self.retry_one(record, error).await,
        }
    }

    /// Retries `record` after `error` with backoff until it succeeds, fails for good, or has
    /// failed for longer than the retry limit (then it is dead-lettered with the reason; a
    /// database outage is retried until it passes).
    async fn retry_one(&self, record: &Record, mut error: HandleError) -> bool {
        let options = &self.env.options;
        let one = std::slice::from_ref(record);
        let first_failure = Instant::now();
        let mut delays = retry::exponential(options.initial_backoff, options.max_backoff).build();
        let mut attempts = 1u32;
        loop {
            if error.is_permanent() {
                return self.dead_letter(record, &error.reason()).await;
            }
            // A database outage is waited out however long it lasts: the record is not at
            // fault, and its offset stays unstored until it is applied.
            if first_failure.elapsed() >= options.retry_limit && !error.is_database_outage() {
                let reason = format!(
                    "gave up after {attempts} attempts in {} s: {}",
                    first_failure.elapsed().as_secs(),
                    error.reason()
                );
                return self.dead_letter(record, &reason).await;
            }
            let backoff = delays.next().unwrap_or(options.max_backoff);
            tracing::warn!(topic = %record.topic, partition = record.partition,
                offset = record.offset, error = %error.reason(), attempts,
                retry_in_ms = backoff.as_millis() as u64, "retrying record");
            if !self.pause_for(backoff).await {
                return false;
            }
            attempts += 1;
            match self.handle(one).await {
                Ok(rejected) => return self.dead_letter_all(one, &rejected).await,
                Err(next) => error = next,
            }
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
        let options = &self.env.options;
        tracing::error!(topic = %record.topic, partition = record.partition,
            offset = record.offset, error = %reason, "record sent to dead-letter topic");
        let letter = DeadLetter::of(record, &options.group_id, reason);
        let health = &self.env.health;
        health.dead_letter_started(&record.topic, record.partition);
        let failing = metrics::gauge!("kafka_dead_letter_failing",
            "group" => options.group_id.clone(), "topic" => record.topic.clone(),
            "partition" => record.partition.to_string());
        let mut delays = retry::exponential(options.initial_backoff, options.max_backoff).build();
        // The partition waits here: nothing after the record is applied or committed until its
        // dead letter is published. `/readyz`, `kafka_dead_letter_failing` and the
        // DeadLetterPublishFailing alert say so while it lasts.
        let published = loop {
            let producer = self.dead_letter_producer();
            match self.publish(&producer, &letter).await {
                Ok(()) => {
                    metrics::counter!("events_dead_lettered_total", "topic" => record.topic.clone())
                        .increment(1);
                    break true;
                }
                Err(error) => {
                    tracing::warn!(%error, topic = %letter.topic, "dead-letter publish failed; retrying");
                    failing.set(1.0);
                    health.dead_letter_failed(&record.topic, record.partition, &error.to_string());
                    self.replace_if_fatal(&producer);
                    let backoff = delays.next().unwrap_or(options.max_backoff);
                    if !self.pause_for(backoff).await {
                        break false;
                    }
                }
            }
        };
        failing.set(0.0);
        health.dead_letter_published(&record.topic, record.partition);
        published
    }

    /// One attempt to publish `letter`, until the broker acknowledges it.
    async fn publish(&self, producer: &Producer, letter: &DeadLetter) -> Result<(), KafkaError> {
        let delivery = producer.produce_bytes(
            &letter.topic,
            &letter.key,
            &letter.payload,
            &letter.header_refs(),
        )?;
        crate::failpoint!("consumer.mid_dead_letter");
        delivery.await.map(drop)
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
            Err(error) if error.is_permanent() => ("dead_letter", batch.len()),
            Err(_) => ("retry", batch.len()),
        };
        metrics::counter!("events_consumed_total", "topic" => topic.clone(), "outcome" => label)
            .increment(n as u64);
        metrics::histogram!("event_batch_seconds", "topic" => topic.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("event_batch_records", "topic" => topic.clone())
            .record(batch.len() as f64);
    }
}
