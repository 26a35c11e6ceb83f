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
//!
//! Modules, by what they do: `check` holds the verdict and its times; `registry` the shared
//! [`Health`] and the broker's state; `consumer` and `relay` what those parts report; `state`
//! what is known of each part and the verdict on it; [`stall`] the short stalls.

mod check;
mod consumer;
mod registry;
mod relay;
pub mod stall;
mod state;
#[cfg(test)]
mod tests;

pub use check::{Check, DEFAULT_STALL, SESSION_TIMEOUT};
pub use consumer::ConsumerHealth;
pub use registry::Health;
