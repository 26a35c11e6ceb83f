//! What a partition's lane shares with the dispatcher and the rebalance callback ([`LaneState`]),
//! and the lanes by partition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

/// What a partition's lane shares with the dispatcher and the rebalance callback.
#[derive(Debug)]
pub(super) struct LaneState {
    /// Bumped when the partition is revoked: records of an older generation are dropped.
    pub(super) generation: AtomicU64,
    /// The lane is inside a batch (set before it checks the generation).
    pub(super) busy: AtomicBool,
    /// The timestamp (ms since the epoch) of the first record of the batch the lane started
    /// last, [`NO_TIMESTAMP`] before the first: while the partition has lag, the oldest record
    /// not yet processed is no older than it (the `kafka_consumer_lag_age_seconds` gauge).
    pub(super) batch_timestamp_ms: AtomicI64,
}

/// [`LaneState::batch_timestamp_ms`] when no batch was started (or its record had no timestamp).
pub(super) const NO_TIMESTAMP: i64 = -1;

impl Default for LaneState {
    fn default() -> Self {
        Self {
            generation: AtomicU64::default(),
            busy: AtomicBool::default(),
            batch_timestamp_ms: AtomicI64::new(NO_TIMESTAMP),
        }
    }
}

pub(super) type LaneKey = (String, i32);
pub(super) type LaneStates = Arc<Mutex<HashMap<LaneKey, Arc<LaneState>>>>;
