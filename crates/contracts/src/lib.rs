//! Event contracts shared by every service: topic names, the CloudEvents envelope carried in Kafka
//! headers, the JSON payloads of each topic, and money. This crate is the single source of truth;
//! the JSON Schemas under `schemas/` and the AsyncAPI 3.0 document `schemas/asyncapi.json`
//! ([`asyncapi::document`]) are generated from these types and checked by a test.

pub mod asyncapi;
pub mod envelope;
pub mod events;
pub mod money;
#[cfg(any(test, feature = "samples"))]
pub mod samples;
pub mod topics;
pub mod validation;

pub use envelope::{EventMetadata, EventType};
pub use events::{
    CustomerCreated, FailureReason, TransactionFailed, TransactionKind, TransactionProcessed,
    TransactionRequested,
};
pub use money::{Currency, Money, MoneyError};
pub use validation::{Invalid, Validate};
