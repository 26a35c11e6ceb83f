//! A real SMTP server for tests: Python's `aiosmtpd` (Debian package `python3-aiosmtpd`) on a
//! loopback port, delivering into a Maildir that tests read back as parsed [`Mail`]s, or, to test
//! failures, answering every message with a 4xx or 5xx, or never answering at all ([`SmtpMode`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::port::free_port;
use super::wait::{eventually, poll_until};

/// How long [`SmtpServer::wait_for`] and start-up wait.
const DEADLINE: Duration = Duration::from_secs(30);

/// The server: aiosmtpd's SMTP protocol with a handler that stores into a Maildir or refuses,
/// or a listener that holds connections without a word; with `SMTP_TEST_USER` and
/// `SMTP_TEST_PASSWORD` set it takes mail only after `AUTH` (PLAIN or LOGIN). Arguments: mode, port, folder. Every
/// refused message and held connection appends a line to `<folder>/attempts`; `<folder>/ready`
/// appears once it listens.
const SERVER: &str = r#"
import asyncio, os, sys
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

mode, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
user = os.environ.get("SMTP_TEST_USER", "").encode()
password = os.environ.get("SMTP_TEST_PASSWORD", "").encode()

def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user and data.password == password
    return AuthResult(success=ok)

def note(what):
    with open(os.path.join(folder, "attempts"), "a") as log:
        log.write(what + "\n")

class Handler(Mailbox):
    async def handle_DATA(self, server, session, envelope):
        if mode == "transient":
            note("451")
            return "451 4.3.0 Mailbox busy, try again later"
        if mode == "permanent":
            note("550")
            return "550 5.7.1 Message refused"
        return await super().handle_DATA(server, session, envelope)

async def main():
    held = []
    async def hold(reader, writer):
        held.append(writer)
        note("held")
        await asyncio.Event().wait()
    if mode == "silent":
        server = await asyncio.start_server(hold, "127.0.0.1", port)
    else:
        # A path that does not exist yet: Python's Maildir then creates tmp/, new/, cur/.
        box = os.path.join(folder, "box")
        loop = asyncio.get_running_loop()
        auth = dict(authenticator=check, auth_required=True, auth_require_tls=False) if user else {}
        server = await loop.create_server(
            lambda: SMTP(Handler(box), hostname="localhost", **auth), "127.0.0.1", port)
    open(os.path.join(folder, "ready"), "w").close()
    async with server:
        await server.serve_forever()

asyncio.run(main())
"#;

/// How an [`SmtpServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// Accepts every message into the Maildir.
    Accept,
    /// Answers every message with `451` (a transient error: try again later).
    Transient,
    /// Refuses every message with `550` (a permanent error).
    Permanent,
    /// Accepts connections and never answers, not even with the greeting.
    Silent,
}

impl SmtpMode {
    fn as_str(self) -> &'static str {
        match self {
            SmtpMode::Accept => "accept",
            SmtpMode::Transient => "transient",
            SmtpMode::Permanent => "permanent",
            SmtpMode::Silent => "silent",
        }
    }
}

/// A running aiosmtpd; stopped when dropped.
pub struct SmtpServer {
    /// The port it listens on.
    pub port: u16,
    /// The folder holding the Maildir (`box/`).
    pub maildir: tempfile::TempDir,
    login: Option<(String, String)>,
    child: tokio::process::Child,
}

/// The Python with aiosmtpd: `AIOSMTPD_PYTHON`, else the system one (a pyenv `python3` on
/// `PATH` does not see Debian's Python packages).
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("AIOSMTPD_PYTHON") {
        return PathBuf::from(path);
    }
    let system = Path::new("/usr/bin/python3");
    if system.exists() {
        system.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

impl SmtpServer {
    /// Starts a server on a free port.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts a server on `port` and waits until it accepts connections.
    pub async fn start_on(port: u16) -> Self {
        Self::launch(port, SmtpMode::Accept, None).await
    }

    /// Starts a server answering as `mode` on a free port.
    pub async fn start_with(mode: SmtpMode) -> Self {
        Self::launch(free_port(), mode, None).await
    }

    /// Starts a server on a free port that takes mail only after `AUTH` (PLAIN or LOGIN, over
    /// the plain connection) with `user` and `password`; [`SmtpServer::url`] carries them.
    pub async fn start_with_login(user: &str, password: &str) -> Self {
        let login = (user.to_string(), password.to_string());
        Self::launch(free_port(), SmtpMode::Accept, Some(login)).await
    }

    async fn launch(port: u16, mode: SmtpMode, login: Option<(String, String)>) -> Self {
        let maildir = tempfile::tempdir().expect("maildir");
        let mut command = tokio::process::Command::new(python());
        if let Some((user, password)) = &login {
            command
                .env("SMTP_TEST_USER", user)
                .env("SMTP_TEST_PASSWORD", password);
        }
        let child = command
            .args(["-c", SERVER, mode.as_str(), &port.to_string()])
            .arg(maildir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start aiosmtpd (apt-get install -y python3-aiosmtpd)");
        let mut server = Self {
            port,
            maildir,
            login,
            child,
        };
        let ready = server.maildir.path().join("ready");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !ready.exists() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("aiosmtpd exited: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "aiosmtpd never listened on 127.0.0.1:{port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Messages refused (4xx/5xx modes) or connections held without an answer (silent mode).
    pub fn attempts(&self) -> usize {
        std::fs::read_to_string(self.maildir.path().join("attempts"))
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }

    /// Waits until [`attempts`](Self::attempts) reaches `n`; panics after 30 s.
    pub async fn wait_for_attempts(&self, n: usize) -> usize {
        let seen = poll_until(DEADLINE, || async {
            let seen = self.attempts();
            (seen >= n).then_some(seen)
        })
        .await;
        seen.unwrap_or_else(|| {
            panic!(
                "timed out waiting for {n} attempts (saw {})",
                self.attempts()
            )
        })
    }

    /// `smtp://127.0.0.1:<port>`, with `user:password@` when the server requires a login.
    pub fn url(&self) -> String {
        match &self.login {
            Some((user, password)) => format!("smtp://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("smtp://127.0.0.1:{}", self.port),
        }
    }

    /// Messages delivered so far.
    pub fn messages(&self) -> Vec<Mail> {
        read_mails(&self.maildir.path().join("box/new"), None)
    }

    /// Messages delivered to `address`.
    pub fn messages_to(&self, address: &str) -> Vec<Mail> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.contains(address))
            .collect()
    }

    /// Waits until `n` messages to `address` have arrived; panics after 30 s.
    pub async fn wait_for(&self, address: &str, n: usize) -> Vec<Mail> {
        eventually(&format!("{n} emails to {address}"), DEADLINE, || async {
            let mails = self.messages_to(address);
            (mails.len() >= n).then_some(mails)
        })
        .await
    }

    /// Stops the server: the port closes, delivered messages stay readable.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// One received email.
#[derive(Debug, Clone)]
pub struct Mail {
    /// `To` header.
    pub to: String,
    /// `From` header.
    pub from: String,
    /// `Subject` header.
    pub subject: String,
    /// `Message-ID` header.
    pub message_id: String,
    /// The body, quoted-printable decoded.
    pub body: String,
}

/// Parses every file in `dir` (with `extension`, when given) as an RFC 5322 message.
pub fn read_mails(dir: &Path, extension: Option<&str>) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| match extension {
            Some(x) => p.extension().is_some_and(|e| e == x),
            None => true,
        })
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| parse_mail(&text))
        .collect()
}

fn parse_mail(text: &str) -> Mail {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        unfolded
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default()
    };
    let body = if header("Content-Transfer-Encoding").eq_ignore_ascii_case("quoted-printable") {
        decode_quoted_printable(body)
    } else {
        body.to_string()
    };
    Mail {
        to: header("To"),
        from: header("From"),
        subject: header("Subject"),
        message_id: header("Message-ID"),
        body,
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_and_quoted_printable_bodies() {
        let raw = "To: a@example.com\r\nFrom: n@localhost\r\nSubject: Hi\r\n \
                   there\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nBalance =E2=82=AC5=\r\n.00\r\n";
        let mail = parse_mail(raw);
        assert_eq!(mail.to, "a@example.com");
        assert_eq!(mail.subject, "Hi there");
        assert_eq!(mail.body, "Balance €5.00\n");
    }
}
