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

/// The variables that choose how a service reaches Kafka.
const KAFKA_VARIABLES: [&str; 7] = [
    "KAFKA_BROKERS",
    "EVENT_STREAMS_KAFKA_BROKERS_SASL",
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
        Self::start_with(kafka, SmtpServer::start().await, extra_env, |_, _| {}).await
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
        let logs = tempfile::tempdir().expect("log folder");
        let mut services = BTreeMap::new();
        for name in SERVICES {
            let port = free_port();
            let mut env: Vec<(String, String)> = [
                ("PORT", port.to_string()),
                ("DATABASE_URL", fresh_database_url().await),
                ("SMTP_URL", smtp.url()),
                ("RUST_LOG", "info".to_string()),
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

    let (status, _) = post(
        client,
        &transactions,
        json!({"to": "cust-001", "amount": "250.00", "transactionId": "dep-1"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        wait_outcome(client, stack, "dep-1").await["status"],
        "processed"
    );
    let (status, _) = post(
        client,
        &transactions,
        json!({"from": "cust-001", "to": "cust-002", "amount": 100, "transactionId": "txn-124"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        wait_outcome(client, stack, "txn-124").await["status"],
        "processed"
    );
    let (status, _) = post(
        client,
        &transactions,
        json!({"from": "cust-002", "to": "cust-001", "amount": 500, "transactionId": "txn-125"}),
    )
    .await;
    assert_eq!(status, 202);
    let overdraft = wait_outcome(client, stack, "txn-125").await;
    assert_eq!(overdraft["status"], "failed");
    assert_eq!(overdraft["reason"], "insufficient_funds");
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
