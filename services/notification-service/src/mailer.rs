//! Sending email: over SMTP when `SMTP_URL` is set, otherwise into `.eml` files in a folder.
//! The SMTP URL may carry a password: only its redacted form is ever logged.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use platform::config::Secret;

use crate::domain::Delivery;

/// How long one SMTP exchange may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum MailTarget {
    /// An SMTP server: `smtp://host:port`, `smtps://user:pass@host`, `smtp://host:587?tls=required`.
    Smtp(Secret),
    /// A folder receiving one `.eml` file per message.
    Folder(PathBuf),
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (server down, 4xx, timeout, disk full).
    #[error("{0}")]
    Transient(String),
    /// Will never succeed (5xx, a malformed address).
    #[error("{0}")]
    Permanent(String),
}

/// The configured mail transport.
#[derive(Clone)]
pub enum Mailer {
    /// Sends over SMTP.
    Smtp {
        /// The transport (pooled connections).
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The URL without its password, for logs.
        redacted: String,
    },
    /// Writes `.eml` files.
    Folder {
        /// The transport.
        transport: AsyncFileTransport<Tokio1Executor>,
        /// The folder.
        dir: PathBuf,
    },
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Mailer {
    /// The transport for `target` (the folder is created when missing). Call within the Tokio
    /// runtime: the SMTP connection pool runs on it.
    pub fn new(target: &MailTarget) -> Result<Self, String> {
        match target {
            MailTarget::Smtp(url) => Ok(Mailer::Smtp {
                transport: smtp_builder(url)?.timeout(Some(SMTP_TIMEOUT)).build(),
                redacted: platform::db::redact_url(url.expose()),
            }),
            MailTarget::Folder(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create mail folder {}: {e}", dir.display()))?;
                Ok(Mailer::Folder {
                    transport: AsyncFileTransport::new(dir),
                    dir: dir.clone(),
                })
            }
        }
    }

    /// Where mail goes, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Mailer::Smtp { redacted, .. } => format!("SMTP {redacted}"),
            Mailer::Folder { dir, .. } => format!("folder {}", dir.display()),
        }
    }

    /// Checks that the mail server answers (an SMTP `NOOP` on a pooled connection); nothing is
    /// sent, so a failure here is safe to retry.
    pub async fn check(&self) -> Result<(), SendError> {
        match self {
            Mailer::Smtp { transport, .. } => match transport.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err(SendError::Transient(
                    "SMTP: the mail server does not answer".to_string(),
                )),
                Err(error) => Err(SendError::Transient(format!("SMTP: {error}"))),
            },
            Mailer::Folder { .. } => Ok(()),
        }
    }

    /// Sends `message`.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Mailer::Smtp { transport, .. } => match transport.send(message).await {
                Ok(_) => Ok(()),
                Err(error) if error.is_permanent() => Err(SendError::Permanent(format!(
                    "mail server refused the message: {error}"
                ))),
                Err(error) => Err(SendError::Transient(format!("SMTP: {error}"))),
            },
            Mailer::Folder { transport, .. } => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|error| SendError::Transient(format!("mail folder: {error}"))),
        }
    }
}

/// Checks an SMTP URL (scheme, host, TLS mode) without connecting.
pub fn check_smtp_url(url: &Secret) -> Result<(), String> {
    smtp_builder(url).map(|_| ())
}

fn smtp_builder(
    url: &Secret,
) -> Result<lettre::transport::smtp::AsyncSmtpTransportBuilder, String> {
    // lettre's errors do not repeat the URL, so they cannot leak its password.
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
        .map_err(|e| format!("not a usable smtp:// or smtps:// URL ({e})"))
}

/// The email of `delivery`, from `from`. Its Message-ID is derived from the delivery id, so a
/// rare resend (crash between send and record) carries the same id and can be recognised.
pub fn compose(from: &Mailbox, delivery: &Delivery) -> Result<Message, SendError> {
    let to: Mailbox = delivery.recipient.parse().map_err(|e| {
        SendError::Permanent(format!(
            "recipient `{}` is not a valid address: {e}",
            platform::redact::mask_email(&delivery.recipient)
        ))
    })?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(delivery.subject.clone())
        .message_id(Some(format!("<{}@notification-service>", delivery.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(delivery.body.clone())
        .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn smtp_urls_are_checked_and_never_shown_with_their_password() {
        let url = Secret::new("smtps://user:hunter2@smtp.example.com:465");
        check_smtp_url(&url).unwrap();
        let mailer = Mailer::new(&MailTarget::Smtp(url)).unwrap();
        let shown = format!("{} {mailer:?}", mailer.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("smtp.example.com"));
        let error = check_smtp_url(&Secret::new("http://pw:hunter2@x")).unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(check_smtp_url(&Secret::new("smtp://127.0.0.1:2525")).is_ok());
        assert!(check_smtp_url(&Secret::new("smtp://host:587?tls=required")).is_ok());
    }
}
