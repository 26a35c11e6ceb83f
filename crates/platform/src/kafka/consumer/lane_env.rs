//! What a lane is given: the records on their way to it ([`Envelope`]) and everything it needs
//! ([`LaneEnv`]).

use std::sync::{Arc, Mutex};

use rdkafka::consumer::BaseConsumer;
use tokio_util::sync::CancellationToken;

use super::context::LaneContext;
use super::options::ConsumerOptions;
use super::record::Record;
use crate::foundation::health::ConsumerHealth;
use crate::kafka::producer::Producer;

pub(super) type KafkaConsumer = BaseConsumer<LaneContext>;

/// A record on its way to a lane, with the partition's generation when it was read and its
/// timestamp (ms since the epoch, when the broker gave one).
pub(super) struct Envelope {
    pub(super) generation: u64,
    pub(super) record: Record,
    pub(super) timestamp_ms: Option<i64>,
}

/// Everything a lane needs.
pub(super) struct LaneEnv<H> {
    pub(super) handler: H,
    pub(super) options: ConsumerOptions,
    /// Replaced when it hits a fatal error (fenced or out-of-sequence idempotent producer).
    pub(super) dead_letters: Mutex<Producer>,
    pub(super) consumer: Arc<KafkaConsumer>,
    /// Where a lane reports a dead letter it cannot publish.
    pub(super) health: ConsumerHealth,
    pub(super) shutdown: CancellationToken,
}
