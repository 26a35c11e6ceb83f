//! One service process: start it (and wait until it is ready), kill, pause, terminate and
//! restart it, read its log; and [`run_to_exit`] for a service expected to stop by itself.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use platform::testing::free_port;
use tokio::process::{Child, Command};

/// The variables that choose how a service reaches Kafka (`CE_APP`: on Code Engine a missing
/// broker list is an error).
const KAFKA_VARIABLES: [&str; 9] = [
    "KAFKA_BROKERS",
    "EVENT_STREAMS_KAFKA_BROKERS_SASL",
    "EVENT_STREAMS_BOOTSTRAP_ENDPOINTS",
    "CE_APP",
    "EVENT_STREAMS_USER",
    "EVENT_STREAMS_PASSWORD",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SSL_CA_LOCATION",
];

/// Where the service binaries are: `EMS_BIN_DIR`, else the folder of the running test binary's
/// profile (`target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EMS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe folder");
    // Test binaries live in target/<profile>/deps, other binaries in target/<profile>.
    if dir.ends_with("deps") {
        dir.parent().expect("profile folder").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// One service process and how to start it again.
pub struct ServiceProcess {
    /// Service name (binary name).
    pub name: &'static str,
    /// Its HTTP port.
    pub port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The value of `key` in the service's environment.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` (replacing any value) for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.remove_env(key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Removes `key` from the environment of the next start.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// The service's `DATABASE_URL`.
    pub fn database_url(&self) -> &str {
        self.env("DATABASE_URL").expect("DATABASE_URL is set")
    }

    /// Whether the process runs (it may have exited on its own, e.g. at a crash point).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Starts the process (when it does not run) and waits until it is ready.
    pub async fn start(&mut self) {
        if !self.is_running() {
            self.spawn().await;
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` when it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = tokio::time::timeout(timeout, child.wait()).await.ok()?;
        self.child = None;
        Some(status.expect("wait for the service"))
    }

    /// Waits up to `timeout` for the process to die by `SIGABRT` (a crash point): `true` when it
    /// did, `false` while it still runs; panics with its log when it exited any other way.
    pub async fn aborted_within(&mut self, timeout: Duration) -> bool {
        match self.wait_exit(timeout).await {
            Some(status) if status.signal() == Some(libc::SIGABRT) => true,
            Some(status) => panic!(
                "{} exited with {status}, not SIGABRT at its crash point; its log:\n{}",
                self.name,
                self.log_tail()
            ),
            None => false,
        }
    }

    /// A service process not started yet: binary `name`, HTTP `port`, environment `env`, log
    /// file `log` (appended to on each start).
    pub(crate) fn new(
        name: &'static str,
        port: u16,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        Self {
            name,
            port,
            env,
            log,
            child: None,
        }
    }

    /// This process's environment and log file, for another process of the same service:
    /// `(env, log)`.
    pub(crate) fn template(&self) -> (Vec<(String, String)>, &std::path::Path) {
        (self.env.clone(), &self.log)
    }

    /// Starts the process and waits until it is ready. When its port was taken meanwhile (the
    /// port came from [`free_port`], which holds nothing: another stack's service may have bound
    /// it first), it starts again on another port: a test never talks to a process of another
    /// stack that answers on its port.
    pub(crate) async fn spawn(&mut self) {
        for _ in 0..3 {
            if self.spawn_once().await {
                return;
            }
            let port = free_port();
            self.port = port;
            self.set_env("PORT", &port.to_string());
        }
        panic!(
            "{}: its port was taken three times; its log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// Starts the process once and waits until it is ready (`true`); `false` when it exited
    /// because its port was taken.
    async fn spawn_once(&mut self) -> bool {
        let binary = bin_dir().join(self.name);
        assert!(
            binary.is_file(),
            "{} is missing: build the services first (`cargo build --workspace --bins`)",
            binary.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // What this start writes begins here (the log is appended to over restarts).
        let from = log.metadata().map_or(0, |m| m.len());
        let mut command = Command::new(&binary);
        // Only what the stack chose reaches the service: nothing Kafka-related from the caller.
        for inherited in KAFKA_VARIABLES {
            command.env_remove(inherited);
        }
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        self.child = Some(child);
        self.wait_ready(from).await
    }

    /// What this start (its log from byte `from` on) wrote.
    fn log_since(&self, from: u64) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(from).unwrap_or(0).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Waits until `/readyz` says `ready` (every check passing: the consumers have joined, not
    /// merely `degraded`) and the process's own log (from byte `from`) says it listens on its
    /// port: a ready answer from whatever else holds the port is not this process's. `false`
    /// when it exited because the port was taken; panics with the log when it exits otherwise or
    /// is not ready within a minute.
    async fn wait_ready(&mut self, from: u64) -> bool {
        let url = format!("{}/readyz", self.url());
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let report = client.get(&url).send().await;
            let status = match report {
                Ok(response) => response.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            if status.is_some_and(|report| report["status"] == "ready")
                && listens_on(&self.log_since(from), self.port)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                if self.log_since(from).contains("Address already in use") {
                    return false;
                }
                panic!(
                    "{} exited ({status}) before it was ready; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not become ready; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
        }
    }

    /// The last lines of the service's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Everything the service wrote to stdout and stderr so far, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory of the running process (`VmHWM`), in KiB.
    pub fn peak_memory_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// The process id of the running service.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// CPU time the running process has used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (per_second > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_second as f64))
    }

    /// The value of `key` in the service's environment (as set by the harness).
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env(key)
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL");
            let _ = child.wait().await;
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): the process freezes, its connections stay open,
    /// its consumer session expires; then it resumes as if nothing happened.
    pub fn pause(&self, stop: bool) {
        let Some(pid) = self.pid() else {
            return;
        };
        let signal = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }

    /// Sends SIGTERM (a graceful stop request) without waiting.
    pub fn signal_terminate(&self) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("the service runs") as libc::pid_t;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// SIGTERM and wait for a graceful exit; returns the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        self.child.as_ref()?.id()?;
        self.signal_terminate();
        let status = self
            .wait_exit(Duration::from_secs(30))
            .await
            .expect("graceful exit within 30 s");
        status.code()
    }

    /// Starts the service again with the same environment (same database, same group).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

/// How a service process ended that was expected to stop by itself (see [`run_to_exit`]).
#[derive(Debug)]
pub struct Exit {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// Runs service `name` with exactly `env` (plus `PORT`) and waits until it exits by itself;
/// `None` when it is still running after `limit` (it is killed then).
pub async fn run_to_exit(name: &str, env: &[(String, String)], limit: Duration) -> Option<Exit> {
    let binary = bin_dir().join(name);
    let child = Command::new(&binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PORT", free_port().to_string())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .ok()?
        .expect("wait for the service");
    Some(Exit {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Whether `log` has the service's `listening` line for `port` (`…:<port>` not followed by
/// another digit).
pub(crate) fn listens_on(log: &str, port: u16) -> bool {
    let needle = format!(":{port}");
    log.lines().filter(|l| l.contains("listening")).any(|l| {
        l.match_indices(&needle).any(|(at, _)| {
            !l[at + needle.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
    })
}
