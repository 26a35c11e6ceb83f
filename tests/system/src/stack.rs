//! The whole system under test: the three services on fresh databases, an isolated topic
//! prefix and an SMTP server; replicas and the console on top.

use std::collections::BTreeMap;
use std::path::PathBuf;

use platform::kafka::KafkaConfig;
use platform::testing::{free_port, fresh_database_on, fresh_database_url, LocalKafka, SmtpServer};

use crate::process::ServiceProcess;

/// The services, in start order.
pub const SERVICES: [&str; 3] = [
    "customer-service",
    "transaction-service",
    "notification-service",
];

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
        Self::start_on(None, kafka, smtp, extra_env, customize).await
    }

    /// Like [`Stack::start_with`], the databases on `database_server` (a PostgreSQL superuser's
    /// URL) when given.
    pub async fn start_on(
        database_server: Option<&str>,
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
            let own = [
                ("PORT", port.to_string()),
                ("DATABASE_URL", fresh_database(database_server).await),
                ("SMTP_URL", smtp.url()),
            ];
            let mut env = process_env(own, &kafka, extra_env);
            customize(name, &mut env);
            let mut process =
                ServiceProcess::new(name, port, env, log_dir.join(format!("{name}.log")));
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
        let (env, log) = first.template();
        let log = log.with_file_name(format!("{name}-{n}.log"));
        let mut process = ServiceProcess::new(first.name, port, env, log);
        process.set_env("PORT", &port.to_string());
        process.spawn().await;
        self.replicas.push(process);
    }

    /// Adds replicas of service `name` ([`Stack::add_replica`]) until it runs `processes`
    /// processes in all (the first one included).
    pub async fn scale_to(&mut self, name: &str, processes: usize) {
        while self.processes(name).count() < processes {
            self.add_replica(name).await;
        }
    }

    /// Every process of service `name`: the first, then the replicas in the order they were
    /// added.
    pub fn processes<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ServiceProcess> {
        self.services
            .get(name)
            .into_iter()
            .chain(self.replicas.iter().filter(move |r| r.name == name))
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
        Self::start_for_replicas_on(None).await
    }

    /// Like [`Stack::start_for_replicas`], the databases on `database_server` when given.
    pub async fn start_for_replicas_on(database_server: Option<&str>) -> Self {
        let mut kafka = LocalKafka::load().isolated();
        kafka.topic_partitions = 6;
        let smtp = SmtpServer::start().await;
        Self::start_on(database_server, kafka, smtp, &[], |name, env| {
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
        let own = [
            ("PORT", port.to_string()),
            ("CUSTOMER_SERVICE_URL", self.url("customer-service")),
            ("TRANSACTION_SERVICE_URL", self.url("transaction-service")),
            ("NOTIFICATION_SERVICE_URL", self.url("notification-service")),
        ];
        let env = process_env(own, &self.kafka, extra_env);
        let mut console =
            ServiceProcess::new("console", port, env, self.log_dir.join("console.log"));
        console.spawn().await;
        console
    }
}

/// A fresh database on `server` when given, else [`fresh_database_url`]'s.
async fn fresh_database(server: Option<&str>) -> String {
    match server {
        Some(server) => fresh_database_on(server).await,
        None => fresh_database_url().await,
    }
}

/// A process's environment, in this order (a later value wins): `own`, `RUST_LOG=info`,
/// `NO_COLOR=1`, the Kafka variables of [`service_kafka_env`], then `extra_env`.
fn process_env<const N: usize>(
    own: [(&str, String); N],
    kafka: &KafkaConfig,
    extra_env: &[(&str, &str)],
) -> Vec<(String, String)> {
    own.into_iter()
        .chain([
            ("RUST_LOG", "info".to_string()),
            ("NO_COLOR", "1".to_string()),
        ])
        .map(|(k, v)| (k.to_string(), v))
        .chain(service_kafka_env(kafka))
        .chain(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .collect()
}

/// The environment a service needs to reach Kafka as `kafka` says, exactly as an operator would
/// set it: `KAFKA_BROKERS` for a plaintext broker; for SASL_SSL only the Event Streams variables
/// (`EVENT_STREAMS_KAFKA_BROKERS_SASL`, `EVENT_STREAMS_USER`, `EVENT_STREAMS_PASSWORD`), plus
/// `KAFKA_SSL_CA_LOCATION` for a private CA and `KAFKA_SASL_MECHANISM` when it is not PLAIN.
/// Always the topic prefix, partition count and replication factor (Event Streams' default of
/// 3 does not fit a one-broker cluster) and the consumer group protocol.
pub fn service_kafka_env(kafka: &KafkaConfig) -> Vec<(String, String)> {
    use platform::kafka::{SaslMechanism, SecurityProtocol};
    let mut env = vec![
        ("KAFKA_TOPIC_PREFIX", kafka.topic_prefix.clone()),
        ("KAFKA_TOPIC_PARTITIONS", kafka.topic_partitions.to_string()),
        (
            "KAFKA_TOPIC_REPLICATION_FACTOR",
            kafka.topic_replication_factor.to_string(),
        ),
        (
            "KAFKA_GROUP_PROTOCOL",
            kafka.group_protocol.as_str().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every connection on `listener` with `/readyz`'s "ready", as a service of another
    /// stack holding the port would.
    fn impostor(listener: tokio::net::TcpListener) {
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0_u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let body = r#"{"status":"ready"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
    }

    /// The cause of crash_points' unexplained 200: a service started on a port another stack's
    /// service holds fails to bind, while the other one answers its readiness probe. The
    /// harness must not take that answer for its own process's: it starts the service on
    /// another port, and the service is its own (a first registration is created: 201).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_service_whose_port_is_taken_starts_on_another_and_is_its_own() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = listener.local_addr().unwrap().port();
        impostor(listener);
        let kafka = LocalKafka::load().isolated();
        let smtp = SmtpServer::start().await;
        let own = [
            ("PORT", taken.to_string()),
            ("DATABASE_URL", fresh_database_url().await),
            ("SMTP_URL", smtp.url()),
        ];
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("customer-service.log");
        let mut process = ServiceProcess::new(
            "customer-service",
            taken,
            process_env(own, &kafka, &[]),
            log,
        );
        process.spawn().await;
        assert_ne!(process.port, taken, "started on another port");
        assert_eq!(process.env("PORT"), Some(process.port.to_string().as_str()));
        let (status, body) = crate::try_post(
            &reqwest::Client::new(),
            &format!("{}/app/customers", process.url()),
            &serde_json::json!({"id": "p-1", "name": "Pat Port", "email": "p-1@example.com"}),
        )
        .await
        .expect("an answer");
        assert_eq!(status, 201, "{body}");
        assert!(
            process.log().contains("Address already in use"),
            "the first start failed"
        );
        process.kill().await;
    }

    #[test]
    fn the_listening_line_names_the_port_exactly() {
        let line =
            r#"{"level":"INFO","fields":{"message":"listening","address":"127.0.0.1:4001"}}"#;
        assert!(crate::process::listens_on(line, 4001));
        assert!(!crate::process::listens_on(line, 400));
        assert!(!crate::process::listens_on(line, 40));
        assert!(!crate::process::listens_on("ready on 127.0.0.1:4001", 4001));
        assert!(crate::process::listens_on(
            "INFO listening address=0.0.0.0:4001",
            4001
        ));
    }
}
