//! The transactional outbox. A service writes its event in the same database transaction as the
//! state change ([`Outbox::enqueue`]); the relay ([`run_relay`]) publishes unsent rows in commit
//! order with the idempotent producer and deletes them only after the broker acknowledged them, so
//! the table holds only what is still to be published. A crash between publish and delete means
//! the event is published again: consumers dedupe by id.
//!
//! Module by module: `writer` adds rows; the relay (`relay`) runs rounds (`round`) that read the
//! rows after a cursor (`rows`), hand them to the producer and wait briefly for the deliveries
//! (`in_flight`); acknowledged rows are deleted beside the loop (`sweep`).
//!
//! Every replica runs a relay, but only the holder of the outbox's lease ([`lease`]) publishes;
//! the others stand by and take over within seconds of the holder dying. Rows are numbered
//! (`seq`) when written and leave in that order; on PostgreSQL, where rows become visible at
//! commit rather than in `seq` order, the relay publishes up to a cut-off only once every
//! transaction that could still commit a row below it has ended (see `Gate`).

mod backlog;
mod in_flight;
pub mod lease;
mod relay;
mod round;
mod rows;
mod sweep;
mod writer;

pub use backlog::pending;
pub use relay::{run_relay, run_relay_with, RelayOptions};
pub use writer::{insert_all, Draft, Outbox};
