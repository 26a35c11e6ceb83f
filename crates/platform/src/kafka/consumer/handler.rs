//! [`Handler`]: what the consumer hands batches of records to, and [`Rejected`], a record it
//! rejects for good.

use std::future::Future;

use super::error::HandleError;
use super::record::Record;

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
