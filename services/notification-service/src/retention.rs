//! How long a delivery keeps what: its row (key, status, timestamps) stops a second send of the
//! same (customer, kind, transaction) and is the audit of what was sent; its body is needed only
//! while it may still be sent.
//!
//! - `DELIVERY_BODY_RETENTION_SECS` (7 days): after a delivery ended (`sent` or `failed`: the
//!   sender never sends those again) and this long without change, its body is emptied. A
//!   delivery that is still due keeps its body whatever its age.
//! - `DELIVERY_RETENTION_SECS` (90 days, at least the body's window): ended alerts older than this
//!   are deleted. Keep it longer than the inbox keys of the transaction topics (their 7 days +
//!   `INBOX_RETENTION_MARGIN_SECS`): until then the row also stops an outcome replayed under a new
//!   event id. Welcome rows are kept (one per customer, like the projection): a compacted
//!   `Customer.created` can be redelivered at any time, and the row is what stops a second welcome.
//!
//! Both run in the platform's pruner ([`platform::retention`]), in bounded batches.

use std::time::Duration;

use platform::config::seconds;
use platform::retention::Rule;
use platform::{ConfigError, Env};

/// How long an ended delivery keeps its body by default.
pub const DEFAULT_BODY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an ended alert is kept by default.
pub const DEFAULT_ROW_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// What a delivery keeps, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRetention {
    /// How long an ended delivery keeps its body (`DELIVERY_BODY_RETENTION_SECS`).
    pub body: Duration,
    /// How long an ended alert is kept at all (`DELIVERY_RETENTION_SECS`).
    pub rows: Duration,
}

impl Default for DeliveryRetention {
    fn default() -> Self {
        Self {
            body: DEFAULT_BODY_RETENTION,
            rows: DEFAULT_ROW_RETENTION,
        }
    }
}

impl DeliveryRetention {
    /// Reads `DELIVERY_BODY_RETENTION_SECS` and `DELIVERY_RETENTION_SECS` (not shorter than the
    /// body's window).
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let body = seconds(env, "DELIVERY_BODY_RETENTION_SECS", DEFAULT_BODY_RETENTION)?;
        let rows = seconds(
            env,
            "DELIVERY_RETENTION_SECS",
            DEFAULT_ROW_RETENTION.max(body),
        )?;
        if rows < body {
            return Err(ConfigError::new(
                "DELIVERY_RETENTION_SECS",
                format!(
                    "a delivery ({} s) cannot be kept for less than its body \
                     (DELIVERY_BODY_RETENTION_SECS, {} s)",
                    rows.as_secs(),
                    body.as_secs()
                ),
            ));
        }
        Ok(Self { body, rows })
    }

    /// The pruner's rules: empty the bodies, delete the old alerts.
    pub fn rules(&self) -> [Rule; 2] {
        [
            Rule {
                name: "deliveries:body".to_string(),
                keep: self.body,
                statement: "UPDATE deliveries SET body = '' WHERE id IN \
                            (SELECT id FROM deliveries WHERE body <> '' \
                             AND status IN ('sent', 'failed') AND updated_at < $1 LIMIT $2)"
                    .to_string(),
                binds: Vec::new(),
            },
            Rule {
                name: "deliveries:row".to_string(),
                keep: self.rows,
                statement: "DELETE FROM deliveries WHERE id IN \
                            (SELECT id FROM deliveries WHERE created_at < $1 \
                             AND status IN ('sent', 'failed') AND kind <> 'welcome' LIMIT $2)"
                    .to_string(),
                binds: Vec::new(),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_have_defaults_and_are_checked() {
        let retention = DeliveryRetention::from_env(&[("PORT", "1")]).unwrap();
        assert_eq!(retention, DeliveryRetention::default());
        let short = DeliveryRetention::from_env(&[("DELIVERY_BODY_RETENTION_SECS", "60")]).unwrap();
        assert_eq!(short.body, Duration::from_secs(60));
        assert_eq!(short.rows, DEFAULT_ROW_RETENTION);
        let long =
            DeliveryRetention::from_env(&[("DELIVERY_BODY_RETENTION_SECS", "9999999999")]).unwrap();
        assert_eq!(
            long.rows, long.body,
            "rows are kept at least as long as bodies"
        );
        let error = DeliveryRetention::from_env(&[
            ("DELIVERY_BODY_RETENTION_SECS", "600"),
            ("DELIVERY_RETENTION_SECS", "60"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "DELIVERY_RETENTION_SECS");
        assert!(error.to_string().contains("DELIVERY_BODY_RETENTION_SECS"));
    }
}
