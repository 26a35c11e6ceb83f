//! Settings of the notifier, from the environment: `SMTP_URL` (unset: write `.eml` files to
//! `MAIL_DIR`, default `./data/mail`) and `MAIL_FROM` (default `notifications@localhost`).

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use platform::config::{ConfigError, Env, Secret};

use crate::mailer::{check_smtp_url, MailTarget};
use crate::sender::RetryPolicy;

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
}

impl Settings {
    /// Defaults with mail going to `mail`.
    pub fn new(mail: MailTarget) -> Self {
        Self {
            mail,
            from: default_from(),
            retry: RetryPolicy::default(),
            customer_wait: DEFAULT_CUSTOMER_WAIT,
        }
    }

    /// Reads `SMTP_URL`, `MAIL_DIR`, `MAIL_FROM` and `CUSTOMER_WAIT_SECS`; a bad value fails with one clear line that
    /// never shows the SMTP password.
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
        let customer_wait = platform::config::positive(
            env,
            "CUSTOMER_WAIT_SECS",
            DEFAULT_CUSTOMER_WAIT.as_secs() as usize,
        )?;
        Ok(Self {
            from,
            customer_wait: Duration::from_secs(customer_wait as u64),
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
}
