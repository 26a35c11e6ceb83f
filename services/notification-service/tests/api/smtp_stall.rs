//! A mail server that stalls after DATA: it takes the whole message and never answers it, so
//! the sender cannot know whether it was accepted. The delivery is recorded `failed` after one
//! attempt and never sent again: not by the running sender, not after a restart, not when the
//! event is delivered again.
//!
//! The server is a small SMTP speaker in the test (aiosmtpd cannot stall mid-exchange): it
//! answers every command, keeps every message it is sent, and leaves the first message's end of
//! DATA unanswered; later messages are accepted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;
use notification_service::delivery::RetryPolicy;
use notification_service::mailer::MailTarget;
use notification_service::NotificationService;
use platform::config::Secret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An SMTP server stalling on the end of its first message's DATA.
struct StallingSmtp {
    port: u16,
    /// Each message's text (headers and body) as it came in, stalled or accepted.
    messages: Arc<Mutex<Vec<String>>>,
}

impl StallingSmtp {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&messages);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(converse(socket, Arc::clone(&kept)));
            }
        });
        Self { port, messages }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages addressed to `address`.
    fn messages_to(&self, address: &str) -> usize {
        let messages = self.messages.lock().unwrap();
        messages.iter().filter(|m| m.contains(address)).count()
    }
}

/// One SMTP session: every command answered, but the end of DATA of the first message the
/// server ever got, which is left unanswered (the connection stays open, silent).
async fn converse(socket: TcpStream, messages: Arc<Mutex<Vec<String>>>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write.write_all(b"220 stalling ESMTP\r\n").await;
    while let Ok(Some(line)) = lines.next_line().await {
        let verb = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
        let answer: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 stalling\r\n",
            "DATA" => {
                let _ = write.write_all(b"354 go ahead\r\n").await;
                let mut text = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "." {
                        break;
                    }
                    text.push_str(&line);
                    text.push('\n');
                }
                let first = {
                    let mut messages = messages.lock().unwrap();
                    messages.push(text);
                    messages.len() == 1
                };
                if first {
                    // Stall: read on (so the socket stays open) and never answer.
                    while let Ok(Some(_)) = lines.next_line().await {}
                    return;
                }
                b"250 queued\r\n"
            }
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"250 ok\r\n",
        };
        if write.write_all(answer).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_stalling_after_data_gets_the_delivery_failed_and_never_resent() {
    // Arm: the stalling server; a short send timeout; retries that would resend were the
    // stall taken for a transient failure.
    let smtp = StallingSmtp::start().await;
    let mut settings = settings(MailTarget::Smtp(Secret::new(smtp.url())));
    settings.send_timeout = Duration::from_secs(1);
    settings.send_lease = Duration::from_secs(3);
    settings.retry = RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
    };
    let app = start(settings.clone()).await;

    // Load: one welcome; the server takes it and stalls.
    let event = customer("cust-stall", "Sal Stall");
    let event_id = app.publish_in_order(&event).await;
    let log = app
        .wait_log("cust-stall", "the stalled delivery failed", |log| {
            log.len() == 1 && log[0]["status"] == "failed"
        })
        .await;
    let failed = log[0].clone();
    assert_eq!(failed["attempts"], 1, "one attempt, no retry: {failed}");
    let error = failed["lastError"].as_str().unwrap();
    assert!(error.contains("not sent again"), "{error}");
    assert!(failed["sentAt"].is_null(), "{failed}");
    assert_eq!(smtp.messages_to("cust-stall@example.com"), 1);

    // Restart on the same database and topics; the event comes again (a redelivery), then a
    // new customer, on the same partition: once the new welcome is sent, the redelivery was
    // handled and the sender has run rounds past the failed delivery.
    let (kafka, database_url) = (app.kafka.clone(), app.database_url.clone());
    app.stop().await;
    let app = TestApp::of::<NotificationService>()
        .kafka(kafka)
        .database_url(database_url)
        .run(settings)
        .await;
    app.replay(&event_id, &event).await;
    app.publish_in_order(&customer("cust-after", "Al After"))
        .await;
    app.wait_sent("cust-after", 1).await;

    // Judge: still one delivery, failed after its one attempt; the server got it once.
    let log = app.log("cust-stall").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["id"], failed["id"]);
    assert_eq!(log[0]["status"], "failed", "{log:?}");
    assert_eq!(log[0]["attempts"], 1, "{log:?}");
    assert_eq!(
        smtp.messages_to("cust-stall@example.com"),
        1,
        "never resent"
    );
    assert_eq!(smtp.messages_to("cust-after@example.com"), 1);
    app.stop().await;
}
