//! Settings of the notifier, from the environment: `SMTP_URL` (unset: write `.eml` files to
//! `MAIL_DIR`, default `./data/mail`), `MAIL_FROM` (default `notifications@localhost`), and the
//! sender's `NOTIFY_SEND_TIMEOUT_SECS` (60) and `NOTIFY_SEND_LEASE_SECS` (120; longer than the
//! timeout), what a delivery keeps for how long (`DELIVERY_BODY_RETENTION_SECS`,
//! `DELIVERY_RETENTION_SECS`, see [`crate::retention`]) and how many messages the mail folder
//! keeps (`MAIL_KEEP_FILES`, see [`crate::mailbox`]).

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use platform::config::{positive, seconds, ConfigError, Env, Secret};

use crate::delivery::{RetryPolicy, DEFAULT_LEASE, DEFAULT_SEND_TIMEOUT};
use crate::mailer::{check_smtp_url, MailTarget};
use crate::retention::DeliveryRetention;

/// Sender address when `MAIL_FROM` is unset.
pub const DEFAULT_MAIL_FROM: &str = "notifications@localhost";
/// Mail folder when neither `SMTP_URL` nor `MAIL_DIR` is set.
pub const DEFAULT_MAIL_DIR: &str = "data/mail";
/// How long a transaction event waits (parked) for its customer's `Customer.created`
/// (`CUSTOMER_WAIT_SECS`).
pub const DEFAULT_CUSTOMER_WAIT: Duration = Duration::from_secs(120);

/// Everything the notifier needs besides the platform's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where mail goes.
    pub mail: MailTarget,
    /// The `From` of every message.
    pub from: Mailbox,
    /// Retries of transient send failures.
    pub retry: RetryPolicy,
    /// How long a transaction event for a customer not seen yet is retried before its alert is
    /// recorded as failed.
    pub customer_wait: Duration,
    /// How long one send attempt owns its delivery (`NOTIFY_SEND_LEASE_SECS`): after a crash
    /// between the SMTP server's acceptance and the record, the delivery is sent again (same
    /// Message-ID) once the lease has ended.
    pub send_lease: Duration,
    /// Longest a single send may take (`NOTIFY_SEND_TIMEOUT_SECS`); a timeout is transient.
    pub send_timeout: Duration,
    /// What an ended delivery keeps, for how long.
    pub retention: DeliveryRetention,
    /// Messages the mail folder keeps (`MAIL_KEEP_FILES`; the oldest are deleted).
    pub mail_keep: usize,
}

impl Settings {
    /// Defaults with mail going to `mail`.
    pub fn new(mail: MailTarget) -> Self {
        Self {
            mail,
            from: default_from(),
            retry: RetryPolicy::default(),
            customer_wait: DEFAULT_CUSTOMER_WAIT,
            send_lease: DEFAULT_LEASE,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            retention: DeliveryRetention::default(),
            mail_keep: crate::mailbox::DEFAULT_KEEP_FILES,
        }
    }

    /// Reads `SMTP_URL`, `MAIL_DIR`, `MAIL_FROM`, `CUSTOMER_WAIT_SECS`,
    /// `NOTIFY_SEND_TIMEOUT_SECS`, `NOTIFY_SEND_LEASE_SECS`, the retention variables and
    /// `MAIL_KEEP_FILES`; a bad value fails with one clear
    /// line that never shows the SMTP password.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let mail = match env.var("SMTP_URL") {
            Some(url) => {
                let url = Secret::new(url.trim());
                check_smtp_url(&url).map_err(|problem| ConfigError::new("SMTP_URL", problem))?;
                MailTarget::Smtp(url)
            }
            None => MailTarget::Folder(PathBuf::from(
                env.var("MAIL_DIR")
                    .unwrap_or_else(|| DEFAULT_MAIL_DIR.to_string()),
            )),
        };
        let from = match env.var("MAIL_FROM") {
            Some(text) => text.trim().parse().map_err(|e| {
                ConfigError::new(
                    "MAIL_FROM",
                    format!("`{text}` is not an email address: {e}"),
                )
            })?,
            None => default_from(),
        };
        let send_timeout = seconds(env, "NOTIFY_SEND_TIMEOUT_SECS", DEFAULT_SEND_TIMEOUT)?;
        let send_lease = seconds(env, "NOTIFY_SEND_LEASE_SECS", DEFAULT_LEASE)?;
        if send_lease <= send_timeout {
            return Err(ConfigError::new(
                "NOTIFY_SEND_LEASE_SECS",
                format!(
                    "the lease ({} s) must be longer than the send timeout \
                     NOTIFY_SEND_TIMEOUT_SECS ({} s)",
                    send_lease.as_secs(),
                    send_timeout.as_secs()
                ),
            ));
        }
        let customer_wait = seconds(env, "CUSTOMER_WAIT_SECS", DEFAULT_CUSTOMER_WAIT)?;
        Ok(Self {
            from,
            customer_wait,
            send_lease,
            send_timeout,
            retention: DeliveryRetention::from_env(env)?,
            mail_keep: positive(env, "MAIL_KEEP_FILES", crate::mailbox::DEFAULT_KEEP_FILES)?,
            ..Self::new(mail)
        })
    }
}

fn default_from() -> Mailbox {
    Mailbox::new(
        Some("Notifications".to_string()),
        lettre::Address::new("notifications", "localhost").unwrap_or_else(|_| unreachable!()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_write_files() {
        let settings = Settings::from_env(&[("PORT", "1")]).unwrap();
        assert!(
            matches!(settings.mail, MailTarget::Folder(ref d) if d == &PathBuf::from("data/mail"))
        );
        assert_eq!(settings.from.email.to_string(), DEFAULT_MAIL_FROM);
        let settings = Settings::from_env(&[("MAIL_DIR", "/tmp/m")]).unwrap();
        assert!(
            matches!(settings.mail, MailTarget::Folder(ref d) if d == &PathBuf::from("/tmp/m"))
        );
    }

    #[test]
    fn smtp_and_from_are_validated_without_leaking_the_password() {
        let settings = Settings::from_env(&[
            ("SMTP_URL", "smtps://u:s3cret@mail.example.com"),
            ("MAIL_FROM", "Bank <bank@example.com>"),
        ])
        .unwrap();
        assert!(matches!(settings.mail, MailTarget::Smtp(_)));
        assert!(!format!("{settings:?}").contains("s3cret"));
        assert_eq!(settings.from.email.to_string(), "bank@example.com");

        let error = Settings::from_env(&[("SMTP_URL", "ftp://u:s3cret@host")]).unwrap_err();
        assert_eq!(error.variable, "SMTP_URL");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        let error = Settings::from_env(&[("MAIL_FROM", "not an address")]).unwrap_err();
        assert_eq!(error.variable, "MAIL_FROM");
    }

    #[test]
    fn the_lease_and_the_send_timeout_are_configurable_and_checked() {
        let settings = Settings::from_env(&[("PORT", "1")]).unwrap();
        assert_eq!(settings.send_lease, Duration::from_secs(120));
        assert_eq!(settings.send_timeout, Duration::from_secs(60));
        let settings = Settings::from_env(&[
            ("NOTIFY_SEND_LEASE_SECS", "5"),
            ("NOTIFY_SEND_TIMEOUT_SECS", " 2 "),
        ])
        .unwrap();
        assert_eq!(settings.send_lease, Duration::from_secs(5));
        assert_eq!(settings.send_timeout, Duration::from_secs(2));
        let error = Settings::from_env(&[("NOTIFY_SEND_LEASE_SECS", "5")]).unwrap_err();
        assert_eq!(error.variable, "NOTIFY_SEND_LEASE_SECS");
        assert!(
            error.to_string().contains("NOTIFY_SEND_TIMEOUT_SECS"),
            "{error}"
        );
        for bad in ["0", "-3", "soon"] {
            let error = Settings::from_env(&[("NOTIFY_SEND_TIMEOUT_SECS", bad)]).unwrap_err();
            assert_eq!(error.variable, "NOTIFY_SEND_TIMEOUT_SECS", "{bad}");
        }
    }
}
