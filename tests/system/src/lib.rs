//! A harness that runs the three service binaries as real processes against the real local
//! broker (topics under a unique prefix), real databases and a real SMTP server, and can kill
//! and restart them. Used by the end-to-end tests and by the throughput benchmark.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use platform::kafka::KafkaConfig;
use platform::testing::{eventually, free_port, fresh_database_url, LocalKafka, SmtpServer};
use tokio::process::{Child, Command};

/// The services, in start order.
pub const SERVICES: [&str; 3] = [
    "customer-service",
    "transaction-service",
    "notification-service",
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
        let child = Command::new(&binary)
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

    /// SIGTERM and wait for a graceful exit; returns the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id()? as libc::pid_t;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("graceful exit within 30 s")
            .expect("wait");
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
    /// The services by name.
    pub services: BTreeMap<&'static str, ServiceProcess>,
    _logs: tempfile::TempDir,
}

impl Stack {
    /// Starts the three services with fresh databases, an isolated topic prefix and an SMTP
    /// server; `extra_env` is added to every service's environment.
    pub async fn start(extra_env: &[(&str, &str)]) -> Self {
        let kafka = LocalKafka::load().isolated();
        let smtp = SmtpServer::start().await;
        let logs = tempfile::tempdir().expect("log folder");
        let mut services = BTreeMap::new();
        for name in SERVICES {
            let port = free_port();
            let mut env: Vec<(String, String)> = [
                ("PORT", port.to_string()),
                ("KAFKA_BROKERS", kafka.brokers.join(",")),
                ("KAFKA_TOPIC_PREFIX", kafka.topic_prefix.clone()),
                ("KAFKA_TOPIC_PARTITIONS", kafka.topic_partitions.to_string()),
                ("DATABASE_URL", fresh_database_url().await),
                ("SMTP_URL", smtp.url()),
                ("RUST_LOG", "info".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            env.extend(
                extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            let mut process = ServiceProcess {
                name,
                port,
                env,
                log: logs.path().join(format!("{name}.log")),
                child: None,
            };
            process.spawn().await;
            services.insert(name, process);
        }
        Self {
            kafka,
            smtp,
            services,
            _logs: logs,
        }
    }

    /// The base URL of service `name`.
    pub fn url(&self, name: &str) -> String {
        self.services[name].url()
    }

    /// Service `name`, to kill or restart it.
    pub fn service(&mut self, name: &str) -> &mut ServiceProcess {
        self.services.get_mut(name).expect("known service")
    }
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
