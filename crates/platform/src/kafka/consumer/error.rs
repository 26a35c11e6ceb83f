//! [`HandleError`]: how handling records failed, with the cause kept.

use std::error::Error;

/// A boxed error: the cause a [`HandleError`] keeps.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// How handling records failed. The cause is kept (its [`Error::source`] chain too); the
/// `Display` text names the kind and the whole chain, e.g. `transient: database: database
/// error: pool timed out`.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The record can never be processed: it goes to the dead-letter topic.
    #[error("permanent: {}", chain(.0.as_ref()))]
    Permanent(#[source] BoxError),
    /// Try again later (database or SMTP unreachable).
    #[error("transient: {}", chain(.0.as_ref()))]
    Transient(#[source] BoxError),
}

impl HandleError {
    /// A permanent failure caused by `error` (an error, or a message).
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    /// A transient failure caused by `error` (an error, or a message).
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }

    /// The same failure, its cause wrapped in `message` (`message: cause`).
    #[must_use]
    pub fn context(self, message: impl Into<String>) -> Self {
        let wrap = |source| -> BoxError {
            Box::new(Context {
                message: message.into(),
                source,
            })
        };
        match self {
            Self::Permanent(source) => Self::Permanent(wrap(source)),
            Self::Transient(source) => Self::Transient(wrap(source)),
        }
    }

    /// Whether the record can never be processed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }

    /// Whether the failure is a database outage (full, unreachable; see
    /// [`crate::store::db_outage`]): retried for as long as it lasts, never dead-lettered for it.
    pub fn is_database_outage(&self) -> bool {
        match self {
            Self::Transient(source) => {
                let source: &(dyn Error + 'static) = source.as_ref();
                crate::store::db_outage::Outage::in_chain(source).is_some()
            }
            Self::Permanent(_) => false,
        }
    }

    /// The cause and its sources, `: `-separated (without the kind): the dead-letter reason.
    pub fn reason(&self) -> String {
        match self {
            Self::Permanent(source) | Self::Transient(source) => chain(source.as_ref()),
        }
    }
}

/// A message around a cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Context {
    message: String,
    #[source]
    source: BoxError,
}

/// `error` and its sources, `: `-separated; a source whose text its predecessors already
/// include (most errors here print their source) is not repeated.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("pool timed out")]
    struct Timeout;

    #[derive(Debug, thiserror::Error)]
    #[error("query failed")]
    struct Query(#[source] Timeout);

    #[derive(Debug, thiserror::Error)]
    #[error("database error: {0}")]
    struct Db(#[source] Timeout);

    #[test]
    fn the_cause_chain_is_kept_and_printed_once() {
        let error = HandleError::transient(Query(Timeout)).context("database");
        assert_eq!(error.reason(), "database: query failed: pool timed out");
        assert_eq!(
            error.to_string(),
            "transient: database: query failed: pool timed out"
        );
        assert!(error.source().is_some());
        let printed = HandleError::permanent(Db(Timeout));
        assert_eq!(printed.reason(), "database error: pool timed out");
        assert!(printed.is_permanent());
        assert_eq!(HandleError::permanent("bad").to_string(), "permanent: bad");
    }
}
