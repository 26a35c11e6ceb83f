//! A harness that runs the three service binaries as real processes against the real local
//! broker (topics under a unique prefix), real databases and a real SMTP server, and can kill,
//! terminate, crash (crash points armed by `EMS_FAILPOINTS`) and restart them; and the judgement
//! of a run: outcomes per request, balances, e-mails. Used by the end-to-end and crash tests and
//! by the throughput benchmark.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use platform::kafka::KafkaConfig;
use platform::testing::{eventually, free_port, fresh_database_url, LocalKafka, SmtpServer};
use tokio::process::{Child, Command};

pub mod browser;
pub mod chaos;

/// The services, in start order.
pub const SERVICES: [&str; 3] = [
    "customer-service",
    "transaction-service",
    "notification-service",
];

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

    /// Waits up to `timeout` for the process to die by `SIGABRT` (a crash point) and panics with
    /// its log when it does not exit, or exits any other way.
    pub async fn expect_abort(&mut self, timeout: Duration) {
        match self.wait_exit(timeout).await {
            Some(status) if status.signal() == Some(libc::SIGABRT) => {}
            Some(status) => panic!(
                "{} exited with {status}, not SIGABRT at its crash point; its log:\n{}",
                self.name,
                self.log_tail()
            ),
            None => panic!(
                "{} did not crash within {timeout:?}: the crash point was never reached \
                 (is it in the code, and the binary built by `cargo test` with the `failpoints` \
                 feature?); its log:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    async fn spawn(&mut self) {
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
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.url());
        let client = reqwest::Client::new();
        let ready = eventually(Duration::from_secs(60), || {
            let request = client.get(&url).send();
            async move {
                request
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        if ready.is_none() {
            panic!(
                "{} did not become ready; its log:\n{}",
                self.name,
                self.log_tail()
            );
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
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
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

/// The whole system under test.
pub struct Stack {
    /// The Kafka connection (with this stack's topic prefix).
    pub kafka: KafkaConfig,
    /// The SMTP server notification-service sends to.
    pub smtp: SmtpServer,
    /// The services by name (the first process of each).
    pub services: BTreeMap<&'static str, ServiceProcess>,
    /// Further replicas ([`Stack::add_replica`]), in the order they were added.
    pub replicas: Vec<ServiceProcess>,
    /// Where the services' logs go: `EMS_LOG_DIR` (kept), else a temporary folder.
    pub log_dir: PathBuf,
    _logs: Option<tempfile::TempDir>,
}

impl Stack {
    /// Starts the three services with fresh databases, an isolated topic prefix and an SMTP
    /// server; `extra_env` is added to every service's environment.
    pub async fn start(extra_env: &[(&str, &str)]) -> Self {
        Self::start_for(extra_env, &[]).await
    }

    /// Like [`start`](Self::start), with `(service, key, value)` added to one service's
    /// environment.
    pub async fn start_for(extra_env: &[(&str, &str)], service_env: &[(&str, &str, &str)]) -> Self {
        let kafka = LocalKafka::load().isolated();
        Self::start_with(kafka, SmtpServer::start().await, extra_env, |name, env| {
            env.extend(
                service_env
                    .iter()
                    .filter(|(service, _, _)| *service == name)
                    .map(|(_, k, v)| (k.to_string(), v.to_string())),
            );
        })
        .await
    }

    /// Like [`Stack::start`], with the services reaching Kafka as `kafka` says (through the
    /// environment [`service_kafka_env`] derives from it), sending mail to `smtp`, and
    /// `customize` called with each service's name and final environment before it starts (to
    /// replace a variable).
    pub async fn start_with(
        kafka: KafkaConfig,
        smtp: SmtpServer,
        extra_env: &[(&str, &str)],
        customize: impl Fn(&str, &mut Vec<(String, String)>),
    ) -> Self {
        let (log_dir, logs) = match std::env::var_os("EMS_LOG_DIR") {
            Some(dir) => {
                std::fs::create_dir_all(&dir).expect("EMS_LOG_DIR");
                (PathBuf::from(dir), None)
            }
            None => {
                let logs = tempfile::tempdir().expect("log folder");
                (logs.path().to_path_buf(), Some(logs))
            }
        };
        let mut services = BTreeMap::new();
        for name in SERVICES {
            let port = free_port();
            let mut env: Vec<(String, String)> = [
                ("PORT", port.to_string()),
                ("DATABASE_URL", fresh_database_url().await),
                ("SMTP_URL", smtp.url()),
                ("RUST_LOG", "info".to_string()),
                ("NO_COLOR", "1".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(service_kafka_env(&kafka))
            .collect();
            env.extend(
                extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            customize(name, &mut env);
            let mut process = ServiceProcess {
                name,
                port,
                env,
                log: log_dir.join(format!("{name}.log")),
                child: None,
            };
            process.spawn().await;
            services.insert(name, process);
        }
        Self {
            kafka,
            smtp,
            services,
            replicas: Vec::new(),
            log_dir,
            _logs: logs,
        }
    }

    /// Starts another replica of service `name`: its environment (database, topics, consumer
    /// groups) on a port of its own, logging to a file of its own; waits until it is ready.
    pub async fn add_replica(&mut self, name: &str) {
        let first = &self.services[name];
        let n = 1 + self
            .replicas
            .iter()
            .filter(|r| r.name == first.name)
            .count();
        let port = free_port();
        let mut process = ServiceProcess {
            name: first.name,
            port,
            env: first.env.clone(),
            log: first.log.with_file_name(format!("{name}-{n}.log")),
            child: None,
        };
        process.set_env("PORT", &port.to_string());
        process.spawn().await;
        self.replicas.push(process);
    }

    /// Replica `n` of service `name`: 0 is the first process, then those added by
    /// [`Stack::add_replica`].
    pub fn replica(&mut self, name: &str, n: usize) -> &mut ServiceProcess {
        if n == 0 {
            return self.service(name);
        }
        self.replicas
            .iter_mut()
            .filter(|r| r.name == name)
            .nth(n - 1)
            .expect("known replica")
    }

    /// The base URLs of every running process of service `name`.
    pub fn urls(&mut self, name: &str) -> Vec<String> {
        let mut urls = Vec::new();
        if self.service(name).is_running() {
            urls.push(self.url(name));
        }
        for replica in self.replicas.iter_mut().filter(|r| r.name == name) {
            if replica.is_running() {
                urls.push(replica.url());
            }
        }
        urls
    }

    /// The base URL of service `name`.
    pub fn url(&self, name: &str) -> String {
        self.services[name].url()
    }

    /// Service `name`, to kill or restart it.
    pub fn service(&mut self, name: &str) -> &mut ServiceProcess {
        self.services.get_mut(name).expect("known service")
    }

    /// A stack for several replicas and kills: six partitions per topic, and a
    /// notification-service that settles a send a kill interrupted within seconds, not after the
    /// default two minutes.
    pub async fn start_for_replicas() -> Self {
        let mut kafka = LocalKafka::load().isolated();
        kafka.topic_partitions = 6;
        Self::start_with(kafka, SmtpServer::start().await, &[], |name, env| {
            if name == "notification-service" {
                env.push(("NOTIFY_SEND_TIMEOUT_SECS".into(), "5".into()));
                env.push(("NOTIFY_SEND_LEASE_SECS".into(), "10".into()));
            }
        })
        .await
    }

    /// Starts the read-only console (the `console` binary) on this stack: its topics, the three
    /// services' URLs, `extra_env` added; returns once it is ready.
    pub async fn start_console(&self, extra_env: &[(&str, &str)]) -> ServiceProcess {
        let port = free_port();
        let mut env: Vec<(String, String)> = [
            ("PORT", port.to_string()),
            ("CUSTOMER_SERVICE_URL", self.url("customer-service")),
            ("TRANSACTION_SERVICE_URL", self.url("transaction-service")),
            ("NOTIFICATION_SERVICE_URL", self.url("notification-service")),
            ("RUST_LOG", "info".to_string()),
            ("NO_COLOR", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(service_kafka_env(&self.kafka))
        .collect();
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut console = ServiceProcess {
            name: "console",
            port,
            env,
            log: self.log_dir.join("console.log"),
            child: None,
        };
        console.spawn().await;
        console
    }
}

/// The environment a service needs to reach Kafka as `kafka` says, exactly as an operator would
/// set it: `KAFKA_BROKERS` for a plaintext broker; for SASL_SSL only the Event Streams variables
/// (`EVENT_STREAMS_KAFKA_BROKERS_SASL`, `EVENT_STREAMS_USER`, `EVENT_STREAMS_PASSWORD`), plus
/// `KAFKA_SSL_CA_LOCATION` for a private CA and `KAFKA_SASL_MECHANISM` when it is not PLAIN.
/// Always the topic prefix, partition count and replication factor (Event Streams' default of
/// 3 does not fit a one-broker cluster).
pub fn service_kafka_env(kafka: &KafkaConfig) -> Vec<(String, String)> {
    use platform::kafka::{SaslMechanism, SecurityProtocol};
    let mut env = vec![
        ("KAFKA_TOPIC_PREFIX", kafka.topic_prefix.clone()),
        ("KAFKA_TOPIC_PARTITIONS", kafka.topic_partitions.to_string()),
        (
            "KAFKA_TOPIC_REPLICATION_FACTOR",
            kafka.topic_replication_factor.to_string(),
        ),
    ];
    let brokers = kafka.brokers.join(",");
    match (&kafka.security_protocol, &kafka.sasl) {
        (SecurityProtocol::Plaintext, None) => env.push(("KAFKA_BROKERS", brokers)),
        (SecurityProtocol::SaslSsl, Some(sasl)) => {
            env.push(("EVENT_STREAMS_KAFKA_BROKERS_SASL", brokers));
            env.push(("EVENT_STREAMS_USER", sasl.username.clone()));
            env.push(("EVENT_STREAMS_PASSWORD", sasl.password.expose().to_string()));
            if sasl.mechanism != SaslMechanism::Plain {
                env.push(("KAFKA_SASL_MECHANISM", sasl.mechanism.as_str().to_string()));
            }
        }
        (protocol, _) => panic!("no service environment for {protocol:?} in tests"),
    }
    if let Some(ca) = &kafka.ssl_ca_location {
        env.push(("KAFKA_SSL_CA_LOCATION", ca.display().to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
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

/// One outcome event of a transaction, as read from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `transaction.processed` or `transaction.failed`.
    pub topic: String,
    /// The event id (`ce_id`).
    pub event_id: String,
    /// The payload.
    pub payload: serde_json::Value,
}

/// Reads `transaction.processed` and `transaction.failed` until `expected` distinct transactions
/// have an outcome (or `timeout`), then keeps reading until the topics are quiet for `quiet`, so
/// that late extra outcomes are seen too. Returns the outcomes per transaction id.
pub async fn read_outcomes(
    kafka: &KafkaConfig,
    expected: usize,
    timeout: Duration,
    quiet: Duration,
) -> BTreeMap<String, Vec<Outcome>> {
    use contracts::topics::{TRANSACTION_FAILED, TRANSACTION_PROCESSED};
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let consumer: StreamConsumer = kafka
        .client_config("outcome-reader")
        .set("group.id", platform::testing::unique("outcomes"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let topics = [
        kafka.topic_name(TRANSACTION_PROCESSED),
        kafka.topic_name(TRANSACTION_FAILED),
    ];
    consumer
        .subscribe(&[&topics[0], &topics[1]])
        .expect("subscribe");
    let mut outcomes: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let wait = if outcomes.len() >= expected {
            tokio::time::Instant::now() + quiet
        } else {
            deadline
        };
        let message = match tokio::time::timeout_at(wait.min(deadline), consumer.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => panic!("reading outcomes: {error}"),
            Err(_) => break,
        };
        let payload: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON outcome");
        let event_id = rdkafka::message::Headers::iter(
            message.headers().expect("outcome events carry headers"),
        )
        .find(|h| h.key == "ce_id")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("ce_id header");
        let id = payload["transactionId"]
            .as_str()
            .expect("transactionId")
            .to_string();
        outcomes.entry(id).or_default().push(Outcome {
            topic: kafka.strip_prefix(message.topic()).to_string(),
            event_id,
            payload,
        });
    }
    outcomes
}

/// When an outcome event was read from Kafka, and what it said.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// `transaction.processed` or `transaction.failed` (unprefixed).
    pub topic: String,
    /// When the reader received it.
    pub at: std::time::Instant,
    /// The payload.
    pub payload: serde_json::Value,
}

/// A background reader of `transaction.processed` and `transaction.failed` that notes the
/// instant each outcome is read, to measure request → outcome latency. It is assigned every
/// partition of both topics from the beginning (no consumer group, so no rebalance delays the
/// first records); the first outcome of each transaction counts. Stops when dropped.
pub struct OutcomeClock {
    arrivals: tokio::sync::mpsc::UnboundedReceiver<(String, Arrival)>,
    seen: std::collections::HashMap<String, Arrival>,
    reader: tokio::task::JoinHandle<()>,
}

impl OutcomeClock {
    /// Starts reading the outcome topics of `kafka` (all `kafka.topic_partitions` partitions).
    pub fn start(kafka: &KafkaConfig) -> Self {
        use contracts::topics::{TRANSACTION_FAILED, TRANSACTION_PROCESSED};
        use rdkafka::consumer::{Consumer, StreamConsumer};
        use rdkafka::{Message, Offset, TopicPartitionList};
        let consumer: StreamConsumer = kafka
            .client_config("outcome-clock")
            .set("group.id", platform::testing::unique("outcome-clock"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("consumer");
        let mut partitions = TopicPartitionList::new();
        for topic in [TRANSACTION_PROCESSED, TRANSACTION_FAILED] {
            for partition in 0..kafka.topic_partitions {
                partitions
                    .add_partition_offset(&kafka.topic_name(topic), partition, Offset::Beginning)
                    .expect("partition offset");
            }
        }
        consumer.assign(&partitions).expect("assign");
        let (sender, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let prefix = kafka.topic_prefix.clone();
        let reader = tokio::spawn(async move {
            loop {
                let message = match consumer.recv().await {
                    Ok(message) => message,
                    Err(error) => {
                        eprintln!("outcome reader: {error}");
                        continue;
                    }
                };
                let at = std::time::Instant::now();
                let Ok(payload) = serde_json::from_slice::<serde_json::Value>(
                    message.payload().unwrap_or_default(),
                ) else {
                    continue;
                };
                let Some(id) = payload["transactionId"].as_str().map(str::to_string) else {
                    continue;
                };
                let topic = message.topic();
                let topic = topic.strip_prefix(&prefix).unwrap_or(topic).to_string();
                if sender.send((id, Arrival { topic, at, payload })).is_err() {
                    return;
                }
            }
        });
        Self {
            arrivals,
            seen: std::collections::HashMap::new(),
            reader,
        }
    }

    /// Waits until each of `ids` has an outcome, or `timeout` passes; returns the outcomes found.
    pub async fn wait_for(
        &mut self,
        ids: &[String],
        timeout: Duration,
    ) -> std::collections::HashMap<String, Arrival> {
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut missing = wanted
            .iter()
            .filter(|id| !self.seen.contains_key(**id))
            .count();
        let deadline = tokio::time::Instant::now() + timeout;
        while missing > 0 {
            let Ok(Some((id, arrival))) =
                tokio::time::timeout_at(deadline, self.arrivals.recv()).await
            else {
                break;
            };
            if self.seen.contains_key(&id) {
                continue;
            }
            if wanted.contains(id.as_str()) {
                missing -= 1;
            }
            self.seen.insert(id, arrival);
        }
        wanted
            .iter()
            .filter_map(|id| Some((id.to_string(), self.seen.get(*id)?.clone())))
            .collect()
    }
}

impl Drop for OutcomeClock {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A small deterministic pseudo-random sequence (xorshift), so failures can be replayed.
pub struct Lcg(u64);

impl Lcg {
    /// A sequence from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// POSTs JSON and returns the status and the JSON body.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// GETs JSON and returns the status and the JSON body.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// POSTs JSON to a service that may crash meanwhile: the status and JSON body, or the transport
/// error (no answer).
pub async fn try_post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let response = client.post(url).json(body).send().await?;
    let status = response.status().as_u16();
    Ok((
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    ))
}

/// Counts rows in the database at `url`: `sql` is a `SELECT COUNT(*) AS n ...`.
pub async fn count_rows(url: &str, sql: &str) -> i64 {
    use sqlx::Row;
    let db = platform::Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", platform::db::redact_url(url)));
    let row = sqlx::query(sql)
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = row.try_get::<i64, _>("n").expect("a count named n");
    db.close().await;
    n
}

/// Work transaction-service had not finished: requests not yet decided, events not yet
/// published (read from its database, e.g. right after it was killed), and requests its
/// consumer group has not committed.
pub async fn transaction_backlog(stack: &Stack) -> i64 {
    let url = stack.services["transaction-service"].database_url();
    lag(
        &stack.kafka,
        "transaction-service",
        contracts::topics::TRANSACTION_REQUESTED,
    ) + count_rows(
        url,
        "SELECT COUNT(*) AS n FROM transactions WHERE status = 'requested'",
    )
    .await
        + count_rows(
            url,
            "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL",
        )
        .await
}

/// Registers customer `id` (name and e-mail derived from it); `Err` when no answer came.
pub async fn register_customer(
    client: &reqwest::Client,
    stack: &Stack,
    id: &str,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    try_post(
        client,
        &format!("{}/app/customers", stack.url("customer-service")),
        &serde_json::json!({"id": id, "name": format!("Customer {id}"), "email": email(id)}),
    )
    .await
}

/// The e-mail address of customer `id`.
pub fn email(id: &str) -> String {
    format!("{id}@example.com")
}

/// Waits until transaction-service has opened every account in `ids`; panics after `timeout`.
pub async fn wait_accounts(
    client: &reqwest::Client,
    stack: &Stack,
    ids: &[String],
    timeout: Duration,
) {
    for id in ids {
        let url = format!("{}/accounts/{id}", stack.url("transaction-service"));
        let opened = eventually(timeout, || {
            let request = client.get(&url).send();
            async move {
                request
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        assert!(opened.is_some(), "account {id} opened");
    }
}

/// Balances of `accounts` in minor units, as transaction-service reports them.
pub async fn balances(
    client: &reqwest::Client,
    stack: &Stack,
    accounts: &[String],
) -> BTreeMap<String, i64> {
    let mut balances = BTreeMap::new();
    for account in accounts {
        let url = format!("{}/accounts/{account}", stack.url("transaction-service"));
        let (status, body) = get(client, &url).await;
        assert_eq!(status, 200, "{account}: {body}");
        balances.insert(
            account.clone(),
            minor(body["balance"].as_str().expect("balance")),
        );
    }
    balances
}

/// A decimal amount in minor units (USD).
pub fn minor(text: &str) -> i64 {
    contracts::Money::parse(text, contracts::Currency::USD)
        .expect("decimal amount")
        .minor_units()
}

/// What the outcome events say about a set of requests.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Requests without an outcome (lost or skipped).
    pub missing: Vec<String>,
    /// Requests with more than one distinct outcome (event id or topic).
    pub conflicting: Vec<String>,
    /// Outcomes of transactions nobody requested.
    pub unknown: Vec<String>,
    /// Extra copies of an outcome carrying the same event id (a re-publish after a crash).
    pub copies: usize,
    /// The balance each account must have, from zero, by the processed outcomes.
    pub balances: BTreeMap<String, i64>,
    /// Processed credits minus processed debits: what the sum of all balances must be.
    pub net_deposits: i64,
    /// Processed transfers.
    pub processed_transfers: usize,
    /// Failed outcomes by reason.
    pub failures: BTreeMap<String, usize>,
    /// Alerts notification-service e-mails for these outcomes (one per processed side, one to
    /// the requester of a failure).
    pub alerts: usize,
}

impl Verdict {
    /// Panics unless every request has exactly one distinct outcome and no outcome is unknown.
    pub fn assert_one_outcome_each(&self) {
        assert!(self.missing.is_empty(), "no outcome: {:?}", self.missing);
        assert!(
            self.conflicting.is_empty(),
            "more than one distinct outcome: {:?}",
            self.conflicting
        );
        assert!(self.unknown.is_empty(), "{:?}", self.unknown);
    }

    /// Judges `outcomes` (by transaction id) against the requests `ids`.
    pub fn judge<'a>(
        ids: impl IntoIterator<Item = &'a String>,
        outcomes: &BTreeMap<String, Vec<Outcome>>,
    ) -> Self {
        let ids: std::collections::BTreeSet<&String> = ids.into_iter().collect();
        let mut verdict = Verdict {
            missing: ids
                .iter()
                .filter(|id| !outcomes.contains_key(id.as_str()))
                .map(|id| id.to_string())
                .collect(),
            ..Verdict::default()
        };
        for (id, events) in outcomes {
            if !ids.contains(id) {
                verdict.unknown.push(id.clone());
                continue;
            }
            let first = &events[0];
            if events
                .iter()
                .any(|e| e.event_id != first.event_id || e.topic != first.topic)
            {
                verdict.conflicting.push(id.clone());
            }
            verdict.copies += events.len() - 1;
            let payload = &first.payload;
            let amount = minor(payload["amount"].as_str().expect("amount"));
            let (from, to) = (payload["from"].as_str(), payload["to"].as_str());
            if first.topic == contracts::topics::TRANSACTION_PROCESSED {
                if let Some(from) = from {
                    *verdict.balances.entry(from.to_string()).or_default() -= amount;
                    verdict.alerts += 1;
                }
                if let Some(to) = to {
                    *verdict.balances.entry(to.to_string()).or_default() += amount;
                    verdict.alerts += 1;
                }
                match (from, to) {
                    (Some(_), Some(_)) => verdict.processed_transfers += 1,
                    (None, Some(_)) => verdict.net_deposits += amount,
                    (Some(_), None) => verdict.net_deposits -= amount,
                    (None, None) => {}
                }
            } else {
                let reason = payload["reason"].as_str().unwrap_or("").to_string();
                // An unknown account has nobody to alert.
                if reason != "unknown_account" {
                    verdict.alerts += 1;
                }
                *verdict.failures.entry(reason).or_default() += 1;
            }
        }
        verdict
    }
}

/// E-mails received, judged by Message-ID.
#[derive(Debug, Default)]
pub struct MailReport {
    /// Distinct messages (Message-IDs).
    pub distinct: usize,
    /// Message-IDs received more than once.
    pub double_sent: Vec<String>,
}

impl MailReport {
    /// Judges what `smtp` received.
    pub fn of(smtp: &SmtpServer) -> Self {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for mail in smtp.messages() {
            assert!(!mail.message_id.is_empty(), "a mail without Message-ID");
            *seen.entry(mail.message_id).or_default() += 1;
        }
        Self {
            distinct: seen.len(),
            double_sent: seen
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(id, _)| id)
                .collect(),
        }
    }
}

/// Waits until notification-service has recorded exactly `expected` deliveries and settled them
/// all (none pending, retrying or sending: a delivery whose send a crash interrupted is settled
/// as failed, never sent twice); then judges the mailbox. Panics after `timeout`.
pub async fn settled_mail(stack: &Stack, expected: usize, timeout: Duration) -> MailReport {
    let url = stack.services["notification-service"]
        .database_url()
        .to_string();
    let settled = eventually(timeout, || {
        let url = url.clone();
        async move {
            let total = count_rows(&url, "SELECT COUNT(*) AS n FROM deliveries").await;
            let unsent = count_rows(
                &url,
                "SELECT COUNT(*) AS n FROM deliveries \
                 WHERE status IN ('pending', 'retrying', 'sending')",
            )
            .await;
            (total == expected as i64 && unsent == 0).then_some(())
        }
    })
    .await;
    let report = MailReport::of(&stack.smtp);
    assert!(
        settled.is_some(),
        "notification-service did not send all {expected} e-mails within {timeout:?} \
         (mailbox: {report:?})"
    );
    report
}

/// The offsets consumer group `group` (unprefixed) has committed on `topic` (unprefixed), summed
/// over its partitions: the number of records the group has finished with.
pub fn committed_total(kafka: &KafkaConfig, group: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka
        .client_config("offset-reader")
        .set("group.id", kafka.topic_name(group))
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..kafka.topic_partitions {
        partitions.add_partition(&kafka.topic_name(topic), partition);
    }
    consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum()
}

/// Records of `topic` (unprefixed) that consumer group `group` (unprefixed) has not committed
/// yet, summed over the partitions: its lag.
pub fn lag(kafka: &KafkaConfig, group: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka
        .client_config("lag-reader")
        .create()
        .expect("consumer");
    let end: i64 = (0..kafka.topic_partitions)
        .map(|partition| {
            consumer
                .fetch_watermarks(&kafka.topic_name(topic), partition, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum();
    end - committed_total(kafka, group, topic)
}

/// How long the seed flow waits for each asynchronous result.
const SEED_TIMEOUT: Duration = Duration::from_secs(60);

/// The seed's customers: `(id, name, email)`.
pub const SEED_CUSTOMERS: [(&str, &str, &str); 2] = [
    ("cust-001", "John Doe", "john@example.com"),
    ("cust-002", "Jane Roe", "jane@example.com"),
];

/// The e-mails [`seed_flow`] causes: 2 welcomes + txn-123 (1) + dep-1 (1) + txn-124 (2) +
/// txn-125 (1).
pub const SEED_EMAILS: usize = 7;

/// POSTs transaction `body` (it must be accepted: 202) and waits for its outcome.
pub async fn request_outcome(
    client: &reqwest::Client,
    stack: &Stack,
    body: serde_json::Value,
) -> serde_json::Value {
    let url = format!("{}/transactions", stack.url("transaction-service"));
    let id = body["transactionId"]
        .as_str()
        .expect("transactionId")
        .to_string();
    let (status, answer) = post(client, &url, body).await;
    assert_eq!(status, 202, "{id}: {answer}");
    wait_outcome(client, stack, &id).await
}

/// Waits until transaction `id` has an outcome (`GET /transactions/{id}` is no longer
/// `requested`) and returns it.
pub async fn wait_outcome(client: &reqwest::Client, stack: &Stack, id: &str) -> serde_json::Value {
    let url = format!("{}/transactions/{id}", stack.url("transaction-service"));
    eventually(SEED_TIMEOUT, || {
        let request = get(client, &url);
        async move {
            let (status, body) = request.await;
            (status == 200 && body["status"] != "requested").then_some(body)
        }
    })
    .await
    .unwrap_or_else(|| panic!("transaction {id} got no outcome"))
}

/// The balance of `account`, as transaction-service reports it.
pub async fn balance(client: &reqwest::Client, stack: &Stack, account: &str) -> String {
    let (status, body) = get(
        client,
        &format!("{}/accounts/{account}", stack.url("transaction-service")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["balance"].as_str().expect("balance").to_string()
}

/// The seed's flow through `stack`, asserting every step: the customers (each opens an account
/// and gets a welcome e-mail), the seed's transfer (fails: insufficient funds), a deposit, a
/// transfer that succeeds and an overdraft that fails; the balances; the [`SEED_EMAILS`]
/// e-mails delivered over SMTP. `client` sends every request (give it default headers for API
/// keys).
pub async fn seed_flow(client: &reqwest::Client, stack: &Stack) {
    use serde_json::json;
    let customers = format!("{}/app/customers", stack.url("customer-service"));
    let transactions = format!("{}/transactions", stack.url("transaction-service"));
    for (id, name, email) in SEED_CUSTOMERS {
        let (status, body) = post(
            client,
            &customers,
            json!({"id": id, "name": name, "email": email}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    for (account, _, _) in SEED_CUSTOMERS {
        let url = format!("{}/accounts/{account}", stack.url("transaction-service"));
        let opened = eventually(SEED_TIMEOUT, || {
            let request = get(client, &url);
            async move { (request.await.0 == 200).then_some(()) }
        })
        .await;
        assert!(
            opened.is_some(),
            "account {account} opened from Customer.created"
        );
    }
    let (status, body) = post(
        client,
        &transactions,
        json!({"from": "cust-001", "to": "cust-002", "amount": 100, "transactionId": "txn-123"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"transactionId": "txn-123", "status": "requested"})
    );
    let seed = wait_outcome(client, stack, "txn-123").await;
    assert_eq!(seed["status"], "failed");
    assert_eq!(seed["reason"], "insufficient_funds");

    let dep_1 = request_outcome(
        client,
        stack,
        json!({"to": "cust-001", "amount": "250.00", "transactionId": "dep-1"}),
    )
    .await;
    assert_eq!(dep_1["status"], "processed");
    let txn_124 = request_outcome(
        client,
        stack,
        json!({"from": "cust-001", "to": "cust-002", "amount": 100, "transactionId": "txn-124"}),
    )
    .await;
    assert_eq!(txn_124["status"], "processed");
    let txn_125 = request_outcome(
        client,
        stack,
        json!({"from": "cust-002", "to": "cust-001", "amount": 500, "transactionId": "txn-125"}),
    )
    .await;
    assert_eq!(txn_125["status"], "failed");
    assert_eq!(txn_125["reason"], "insufficient_funds");
    assert_eq!(balance(client, stack, "cust-001").await, "150.00");
    assert_eq!(balance(client, stack, "cust-002").await, "100.00");

    let delivered = eventually(SEED_TIMEOUT, || {
        let n = stack.smtp.messages().len();
        async move { (n >= SEED_EMAILS).then_some(n) }
    })
    .await;
    assert_eq!(delivered, Some(SEED_EMAILS), "emails delivered over SMTP");
    for (_, _, email) in SEED_CUSTOMERS {
        assert!(
            !stack.smtp.messages_to(email).is_empty(),
            "{email} got its mail"
        );
    }
}
