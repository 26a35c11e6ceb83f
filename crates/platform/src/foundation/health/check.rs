//! The verdict on one part of a service ([`Check`]), and the times that decide it.

use std::time::Duration;

use serde::Serialize;

/// The consumers' session timeout: how long a consumer may be without partitions before it is
/// not ready (and librdkafka's `session.timeout.ms`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of `READY_STALL_SECS`: how long work may wait without progress.
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);

/// The verdict on one part of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether this part is ready.
    pub ok: bool,
    /// Why not (or what it is doing), for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    /// Ready.
    pub fn ok() -> Self {
        Self {
            ok: true,
            detail: None,
        }
    }

    /// Ready, with a note.
    pub fn ok_with(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: Some(detail.into()),
        }
    }

    /// Not ready, and why.
    pub fn failed(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: Some(detail.into()),
        }
    }
}
