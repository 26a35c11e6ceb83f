//! Helpers for integration tests against the real local broker (`cargo xtask kafka start`) and a
//! real database: SQLite files, or PostgreSQL when `TEST_DATABASE_URL` names a server, and a real
//! SMTP server ([`smtp`]).

pub mod smtp;

pub use smtp::{Mail, SmtpMode, SmtpServer};

use std::collections::HashMap;
use std::path::PathBuf;

use crate::config::Secret;
use crate::kafka::{KafkaConfig, SaslCredentials, SaslMechanism, SecurityProtocol};

/// The local broker's addresses and credentials, from the `kafka.env` file its start wrote.
#[derive(Debug, Clone)]
pub struct LocalKafka {
    /// PLAINTEXT bootstrap address.
    pub brokers: String,
    /// SASL_SSL bootstrap address.
    pub sasl_brokers: String,
    /// CA certificate that signed the broker's TLS certificate.
    pub ca_location: PathBuf,
    /// SASL/PLAIN user (`token`).
    pub plain_user: String,
    /// SASL/PLAIN password (an API-key-like string).
    pub plain_password: Secret,
    /// SCRAM-SHA-512 user.
    pub scram_user: String,
    /// SCRAM-SHA-512 password.
    pub scram_password: Secret,
}

/// Path of the broker's env file: `EMS_KAFKA_ENV`, else `<cache>/kafka/kafka.env`.
pub fn kafka_env_path() -> PathBuf {
    if let Some(path) = std::env::var_os("EMS_KAFKA_ENV") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("EMS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/event-microservices")
        });
    cache.join("kafka/kafka.env")
}

impl LocalKafka {
    /// Reads the local broker's env file; panics with the command to run when it is missing.
    pub fn load() -> Self {
        let path = kafka_env_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}. Start the local broker first: `cargo xtask kafka start` \
                 (or run the suite with `cargo xtask test`)",
                path.display()
            )
        });
        let vars: HashMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |key: &str| {
            vars.get(key)
                .map(|v| v.to_string())
                .unwrap_or_else(|| panic!("{} has no {key}", path.display()))
        };
        Self {
            brokers: get("KAFKA_BROKERS"),
            sasl_brokers: get("KAFKA_SASL_BROKERS"),
            ca_location: PathBuf::from(get("KAFKA_CA_LOCATION")),
            plain_user: get("KAFKA_PLAIN_USER"),
            plain_password: Secret::new(get("KAFKA_PLAIN_PASSWORD")),
            scram_user: get("KAFKA_SCRAM_USER"),
            scram_password: Secret::new(get("KAFKA_SCRAM_PASSWORD")),
        }
    }

    /// A plaintext connection to the local broker.
    pub fn plaintext(&self) -> KafkaConfig {
        KafkaConfig::plaintext(&self.brokers)
    }

    /// A SASL_SSL connection with the given mechanism and credentials, trusting the local CA.
    pub fn sasl_ssl(
        &self,
        mechanism: SaslMechanism,
        username: &str,
        password: &str,
    ) -> KafkaConfig {
        KafkaConfig {
            brokers: vec![self.sasl_brokers.clone()],
            security_protocol: SecurityProtocol::SaslSsl,
            sasl: Some(SaslCredentials {
                mechanism,
                username: username.to_string(),
                password: Secret::new(password),
            }),
            ssl_ca_location: Some(self.ca_location.clone()),
            ..self.plaintext()
        }
    }
}

/// A name unique to this test run: `<prefix>-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A fresh, empty database: a new PostgreSQL database on the server of `TEST_DATABASE_URL`
/// when set, otherwise a new SQLite file in the temp folder.
pub async fn fresh_database_url() -> String {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin_url) if admin_url.starts_with("postgres") => {
            use sqlx::{Connection, Executor};
            let name = unique("t").replace('-', "_");
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("TEST_DATABASE_URL: {e}"));
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap_or_else(|e| panic!("create database {name}: {e}"));
            let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
            format!("{base}/{name}")
        }
        _ => {
            let path = std::env::temp_dir().join(format!("{}.db", unique("ems-test")));
            format!("sqlite://{}", path.display())
        }
    }
}

impl LocalKafka {
    /// A plaintext connection whose topics carry a unique prefix: a test's events never meet
    /// another test's. Two partitions per topic keep the broker light.
    pub fn isolated(&self) -> KafkaConfig {
        KafkaConfig {
            topic_prefix: format!("{}.", unique("t")),
            topic_partitions: 2,
            ..self.plaintext()
        }
    }
}

impl LocalKafka {
    /// Like [`LocalKafka::isolated`], over the SASL_SSL listener with `mechanism` and the
    /// broker's user for it (PLAIN: `token`; SCRAM-SHA-512: the SCRAM user).
    pub fn isolated_sasl_ssl(&self, mechanism: SaslMechanism) -> KafkaConfig {
        let (user, password) = match mechanism {
            SaslMechanism::Plain => (&self.plain_user, &self.plain_password),
            SaslMechanism::ScramSha512 => (&self.scram_user, &self.scram_password),
            SaslMechanism::ScramSha256 => panic!("the local broker has no SCRAM-SHA-256 user"),
        };
        KafkaConfig {
            topic_prefix: format!("{}.", unique("t")),
            topic_partitions: 2,
            ..self.sasl_ssl(mechanism, user, password.expose())
        }
    }
}

/// Prints `line` and, when `EMS_SUMMARY_FILE` names a file, appends it there: how a test hands
/// a line to the closing summary of `cargo xtask test` (libtest captures a passing test's
/// output).
pub fn summary_line(line: &str) {
    println!("{line}");
    if let Some(path) = std::env::var_os("EMS_SUMMARY_FILE") {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = appended {
            panic!(
                "EMS_SUMMARY_FILE {}: {error}",
                PathBuf::from(path).display()
            );
        }
    }
}

/// A service configuration for tests: port 0, a fresh database, the given Kafka connection.
pub async fn service_config(name: &'static str, kafka: KafkaConfig) -> crate::ServiceConfig {
    crate::ServiceConfig {
        name,
        port: 0,
        database_url: fresh_database_url().await,
        kafka,
        api_keys: crate::auth::ApiKeys::default(),
        log_format: crate::config::LogFormat::Pretty,
        otlp_endpoint: None,
        consumer: crate::config::ConsumerSettings {
            max_batch: 500,
            retry_limit: std::time::Duration::from_secs(300),
        },
        http: crate::server::ServerSettings::default(),
        create_topics: true,
        ready_stall: crate::health::DEFAULT_STALL,
    }
}

/// A service running in the test process on an ephemeral port.
pub struct RunningService {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Cancel to stop the service gracefully.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Completes when the service has stopped.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningService {
    /// Serves `routes` of `service` on 127.0.0.1 with an ephemeral port; returns once the
    /// broker has come (topics created, consumers starting), as tests expect.
    pub async fn spawn(service: crate::Service, routes: axum::Router) -> Self {
        let health = service.health.clone();
        let running = Self::spawn_now(service, routes).await;
        if tokio::time::timeout(std::time::Duration::from_secs(60), health.broker_ready())
            .await
            .is_err()
        {
            panic!("the service did not reach the broker within 60 s");
        }
        running
    }

    /// Serves `routes` of `service` at once, whether the broker has come or not.
    pub async fn spawn_now(service: crate::Service, routes: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let shutdown = service.shutdown.clone();
        let handle = tokio::spawn(service.serve_on(listener, routes));
        Self {
            base_url,
            shutdown,
            handle,
        }
    }

    /// Stops the service and waits for its orderly shutdown.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await?
    }
}

/// Reads records of `topic` (unprefixed name) from the beginning with a fresh consumer group until
/// `until` accepts the records read so far, or `timeout` passes; returns what was read.
pub async fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    timeout: std::time::Duration,
    until: impl Fn(&[crate::Record]) -> bool,
) -> Vec<crate::Record> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = config
        .client_config("test-reader")
        .set("group.id", unique("test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create test consumer");
    consumer
        .subscribe(&[&config.topic_name(topic)])
        .expect("subscribe");
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !until(&records) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => {
                let mut record = crate::Record::from_message(&message);
                record.topic = config.strip_prefix(&record.topic).to_string();
                records.push(record);
            }
            Ok(Err(error)) => panic!("reading {topic}: {error}"),
            Err(_) => break,
        }
    }
    records
}

/// The number of partitions of `topic` (unprefixed name) as the broker's metadata reports it;
/// `None` when the topic does not exist.
pub async fn partition_count(config: &KafkaConfig, topic: &str) -> Option<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = config
        .client_config("test-metadata")
        .create()
        .expect("metadata client");
    let name = config.topic_name(topic);
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&name), std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {name}: {e}"));
        let topic = metadata.topics().iter().find(|t| t.name() == name)?;
        match topic.error() {
            None => Some(topic.partitions().len()),
            Some(_) => None,
        }
    })
    .await
    .expect("metadata task")
}

/// Every record of `topic` (unprefixed name), from every partition, from the beginning up to the
/// high watermarks as they are now: all that was written before the call, nothing less (panics
/// when that cannot be read within 30 s) and nothing that came after.
pub async fn read_to_end(config: &KafkaConfig, topic: &str) -> Vec<crate::Record> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};
    let consumer: BaseConsumer = config
        .client_config("test-reader")
        .set("group.id", unique("test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("create test consumer");
    let config = config.clone();
    let name = config.topic_name(topic);
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&name), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {name}: {e}"));
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or_else(|| panic!("topic {name} does not exist"));
        let mut assignment = TopicPartitionList::new();
        let mut remaining = HashMap::new();
        for partition in 0..partitions as i32 {
            // A topic created a moment ago may not have elected its leaders yet.
            let asked = Instant::now();
            let (low, high) = loop {
                match consumer.fetch_watermarks(&name, partition, Duration::from_secs(10)) {
                    Ok(marks) => break marks,
                    Err(e) if asked.elapsed() > Duration::from_secs(30) => {
                        panic!("watermarks of {name}/{partition}: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            };
            if high > low {
                remaining.insert(partition, high);
            }
            assignment
                .add_partition_offset(&name, partition, Offset::Beginning)
                .expect("assignment");
        }
        consumer.assign(&assignment).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut records = Vec::new();
        while !remaining.is_empty() {
            assert!(
                Instant::now() < deadline,
                "could not read {name} to its end"
            );
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message.unwrap_or_else(|e| panic!("reading {name}: {e}"));
            let Some(&high) = remaining.get(&message.partition()) else {
                continue;
            };
            if message.offset() >= high {
                continue;
            }
            if message.offset() + 1 >= high {
                remaining.remove(&message.partition());
            }
            let mut record = crate::Record::from_message(&message);
            record.topic = config.strip_prefix(&record.topic).to_string();
            records.push(record);
        }
        records
    })
    .await
    .expect("reader task")
}

/// Publishes a raw record to `topic` (unprefixed name) as any other producer could.
pub async fn produce_raw(
    config: &KafkaConfig,
    topic: &str,
    key: &str,
    payload: &str,
    headers: &[(&str, &str)],
) {
    let producer = crate::kafka::Producer::new(config, "test-producer").expect("producer");
    producer
        .send(&crate::kafka::OutgoingRecord {
            topic: topic.to_string(),
            key: key.to_string(),
            payload: payload.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .unwrap_or_else(|e| panic!("produce to {topic}: {e}"));
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
