//! A real single-node Apache Kafka broker (KRaft, combined broker + controller) run from the jars
//! that `tools/kafka/pom.xml` brings from Maven Central. No Docker, no tarball.
//!
//! Layout of `<cache root>/kafka` (see [`crate::paths`]):
//! - `lib/`     the jars (fetched once with Maven; `lib/.pom` records which pom they came from);
//! - `config/`  `server.properties` (0600, holds the SASL/PLAIN password), log4j2 configurations,
//!   `secrets.env` (0600, the generated passwords), `format.state` (what the storage was formatted
//!   with);
//! - `data/`    the broker's log and metadata directory;
//! - `tls/`     CA and broker certificate ([`crate::tls`]);
//! - `logs/`    `server.log` (log4j2) and `kafka.out` (the JVM's own stdout/stderr);
//! - `kafka.pid`, `kafka.env` (the credentials contract with the rest of the workspace).

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::paths;
use crate::process::{self, FileLock};
use crate::tls;

/// The SASL/PLAIN user: IBM Event Streams' shape (user `token`, password = an API key).
pub const PLAIN_USER: &str = "token";
/// The SCRAM-SHA-512 user created at format time.
pub const SCRAM_USER: &str = "ems-scram";
/// How long `start` waits for the broker to answer a metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `stop` waits for a controlled shutdown before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// The alphabet of IBM Cloud API keys.
const API_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
/// Alphanumerics: safe inside `--add-scram '...=[name=..,password=..]'`.
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The three listener ports (`EMS_KAFKA_PORT`, `EMS_KAFKA_SASL_PORT`, `EMS_KAFKA_CONTROLLER_PORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// PLAINTEXT listener (default 9092).
    pub plaintext: u16,
    /// SASL_SSL listener (default 9093).
    pub sasl: u16,
    /// KRaft controller listener (default 9094).
    pub controller: u16,
}

impl Ports {
    /// Reads the ports from the environment, with the defaults of DESIGN.md.
    pub fn from_env() -> Result<Self> {
        fn port(var: &str, default: u16) -> Result<u16> {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{var}={v:?} is not a port number")),
                _ => Ok(default),
            }
        }
        let ports = Self {
            plaintext: port("EMS_KAFKA_PORT", 9092)?,
            sasl: port("EMS_KAFKA_SASL_PORT", 9093)?,
            controller: port("EMS_KAFKA_CONTROLLER_PORT", 9094)?,
        };
        if ports.plaintext == ports.sasl
            || ports.plaintext == ports.controller
            || ports.sasl == ports.controller
        {
            bail!("the Kafka ports must differ: {ports:?}");
        }
        Ok(ports)
    }

    /// `127.0.0.1:<plaintext>`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.plaintext)
    }

    /// `127.0.0.1:<sasl>`.
    pub fn sasl_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.sasl)
    }
}

/// The generated credentials, kept in `config/secrets.env`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Secrets {
    /// Identifies this set of credentials in `format.state` (SCRAM users live in the metadata log).
    id: String,
    plain_password: String,
    scram_user: String,
    scram_password: String,
}

/// The local broker's files and settings.
pub struct Kafka {
    home: PathBuf,
    ports: Ports,
}

/// What `start` found or did.
pub struct Started {
    /// True when a broker was already running (this call started nothing).
    pub already_running: bool,
    /// Path of `kafka.env`.
    pub env_file: PathBuf,
}

impl Kafka {
    /// The broker under `<cache root>/kafka` with ports from the environment.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            home: paths::kafka_home(),
            ports: Ports::from_env()?,
        })
    }

    /// A broker of its own under `home` on `ports` (the chaos run stops and starts one nobody
    /// else uses).
    pub fn at(home: PathBuf, ports: Ports) -> Self {
        Self { home, ports }
    }

    /// The ports in use.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The directory of the Kafka jars (Maven's copy of tools/kafka's dependencies).
    pub fn lib(&self) -> PathBuf {
        self.home.join("lib")
    }
    fn data(&self) -> PathBuf {
        self.home.join("data")
    }
    fn config_dir(&self) -> PathBuf {
        self.home.join("config")
    }
    fn server_properties(&self) -> PathBuf {
        self.config_dir().join("server.properties")
    }
    fn logs(&self) -> PathBuf {
        self.home.join("logs")
    }
    fn server_log(&self) -> PathBuf {
        self.logs().join("server.log")
    }
    fn jvm_out(&self) -> PathBuf {
        self.logs().join("kafka.out")
    }
    fn pid_file(&self) -> PathBuf {
        self.home.join("kafka.pid")
    }
    /// `<kafka home>/kafka.env`, the credentials file.
    pub fn env_file(&self) -> PathBuf {
        self.home.join("kafka.env")
    }
    fn ca_cert(&self) -> PathBuf {
        self.home.join("tls").join("ca.pem")
    }

    /// The pid of our running broker, if any (pid file first, then a scan of /proc, which also
    /// finds a broker whose pid file was lost).
    pub fn running_pid(&self) -> Option<u32> {
        let config = self.server_properties();
        let config = config.to_string_lossy();
        let ours = |pid: u32| {
            let line = process::cmdline(pid);
            line.contains("kafka.Kafka") && line.contains(config.as_ref())
        };
        if let Some(pid) = process::read_pid(&self.pid_file()) {
            if process::is_alive(pid) && ours(pid) {
                return Some(pid);
            }
        }
        let pid = process::find_processes(&["kafka.Kafka", config.as_ref()])
            .into_iter()
            .next()?;
        let _ = fs::write(self.pid_file(), format!("{pid}\n"));
        Some(pid)
    }

    /// Starts the broker unless it is running; waits until it answers; writes `kafka.env`.
    pub fn start(&self) -> Result<Started> {
        fs::create_dir_all(&self.home)
            .with_context(|| format!("creating {}", self.home.display()))?;
        let _lock = FileLock::acquire(
            &self.home.join(".xtask.lock"),
            "waiting for another xtask to finish with the broker…",
        )?;
        if let Some(pid) = self.running_pid() {
            match self.load_secrets() {
                Some(secrets) => self.write_env_file(&secrets)?,
                None => bail!(
                    "the broker (pid {pid}) runs, but its credentials ({}) are gone: restart it \
                     with `cargo xtask kafka stop` and `cargo xtask kafka start`",
                    self.config_dir().join("secrets.env").display()
                ),
            }
            wait_ready(&self.ports.brokers(), Duration::from_secs(60), || {
                process::is_alive(pid)
            })
            .map_err(|e| anyhow!("the running broker (pid {pid}) does not answer: {e}"))?;
            println!("Kafka is already running (pid {pid}).");
            self.print_addresses();
            return Ok(Started {
                already_running: true,
                env_file: self.env_file(),
            });
        }
        let _ = fs::remove_file(self.pid_file());
        for (name, port) in [
            ("PLAINTEXT", self.ports.plaintext),
            ("SASL_SSL", self.ports.sasl),
            ("CONTROLLER", self.ports.controller),
        ] {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!(
                    "port {port} ({name}) on 127.0.0.1 is taken by another process, not by the \
                     broker in {} — stop it, or choose other ports with EMS_KAFKA_PORT, \
                     EMS_KAFKA_SASL_PORT, EMS_KAFKA_CONTROLLER_PORT",
                    self.home.display()
                );
            }
        }
        let begun = Instant::now();
        self.ensure_jars()?;
        for dir in [self.data(), self.config_dir(), self.logs()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let secrets = self.ensure_secrets()?;
        let tls = tls::ensure(&self.home.join("tls"))?;
        self.write_configs(&secrets, &tls.keystore)?;
        self.format_if_needed(&secrets)?;

        // kafka.out holds the JVM's own output of the latest start only.
        let _ = fs::write(self.jvm_out(), "--- java kafka.Kafka\n");
        let mut cmd = self.java()?;
        cmd.args(["-Xms256m", "-Xmx1g"])
            .args([
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.config_dir().join("log4j2.properties").display()
            ))
            .arg(format!("-Dkafka.logs.dir={}", self.logs().display()))
            .arg("-cp")
            .arg(self.classpath())
            .arg("kafka.Kafka")
            .arg(self.server_properties())
            .current_dir(&self.home);
        let pid = process::spawn_detached(&mut cmd, &self.jvm_out())?;
        process::write_file(&self.pid_file(), &format!("{pid}\n"), 0o644)?;

        if let Err(e) = wait_ready(&self.ports.brokers(), READY_TIMEOUT, || {
            process::is_alive(pid)
        }) {
            let alive = process::is_alive(pid);
            if alive {
                process::terminate(pid, Duration::from_secs(20));
            }
            let _ = fs::remove_file(self.pid_file());
            eprintln!("--- last lines of {}:", self.server_log().display());
            eprintln!("{}", process::tail(&self.server_log(), 40));
            let out = process::tail(&self.jvm_out(), 15);
            if out.lines().count() > 1 {
                eprintln!("--- last lines of {}:", self.jvm_out().display());
                eprintln!("{out}");
            }
            bail!(
                "the Kafka broker did not become ready: {e}{}",
                if alive {
                    " (stopped it)"
                } else {
                    " (it exited)"
                }
            );
        }
        if !wait_port(self.ports.sasl, Duration::from_secs(30)) {
            bail!(
                "the SASL_SSL listener on port {} does not accept connections",
                self.ports.sasl
            );
        }
        self.write_env_file(&secrets)?;
        println!(
            "Kafka {} is running (pid {pid}, ready in {:.1} s).",
            kafka_version().unwrap_or_else(|_| "?".into()),
            begun.elapsed().as_secs_f64()
        );
        self.print_addresses();
        Ok(Started {
            already_running: false,
            env_file: self.env_file(),
        })
    }

    /// Stops the broker: SIGTERM (controlled shutdown), SIGKILL after a grace period.
    pub fn stop(&self) -> Result<()> {
        fs::create_dir_all(&self.home)?;
        let _lock = FileLock::acquire(
            &self.home.join(".xtask.lock"),
            "waiting for another xtask to finish with the broker…",
        )?;
        let Some(pid) = self.running_pid() else {
            let _ = fs::remove_file(self.pid_file());
            println!("Kafka is not running.");
            return Ok(());
        };
        println!("stopping Kafka (pid {pid})…");
        let begun = Instant::now();
        let killed = process::terminate(pid, STOP_GRACE);
        let _ = fs::remove_file(self.pid_file());
        if killed {
            println!(
                "Kafka did not shut down within {} s and was killed.",
                STOP_GRACE.as_secs()
            );
        } else {
            println!("Kafka stopped ({:.1} s).", begun.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Prints whether the broker runs, and where.
    pub fn status(&self) -> Result<()> {
        match self.running_pid() {
            Some(pid) => {
                let answering =
                    wait_ready(&self.ports.brokers(), Duration::from_secs(5), || true).is_ok();
                println!(
                    "Kafka is running (pid {pid}){}.",
                    if answering {
                        ""
                    } else {
                        ", but does not answer metadata requests yet"
                    }
                );
                self.print_addresses();
            }
            None => {
                println!("Kafka is stopped (home: {}).", self.home.display());
            }
        }
        Ok(())
    }

    fn print_addresses(&self) {
        println!("  PLAINTEXT    {}", self.ports.brokers());
        println!(
            "  SASL_SSL     {}  (SASL/PLAIN user \"{PLAIN_USER}\"; SCRAM-SHA-512 user \"{SCRAM_USER}\")",
            self.ports.sasl_brokers()
        );
        println!("  credentials  {}", self.env_file().display());
        println!("  CA           {}", self.ca_cert().display());
        println!("  log          {}", self.server_log().display());
    }

    /// The `java` launcher: `$JAVA_HOME/bin/java` when set, else `java` from PATH.
    pub fn java(&self) -> Result<Command> {
        if let Some(home) = std::env::var_os("JAVA_HOME").filter(|v| !v.is_empty()) {
            let java = PathBuf::from(home).join("bin").join("java");
            if java.is_file() {
                return Ok(Command::new(java));
            }
        }
        if !process::on_path("java") {
            bail!("java is not installed: Kafka needs Java 17 or newer (apt-get install openjdk-17-jre-headless)");
        }
        Ok(Command::new("java"))
    }

    /// The Kafka jars (`lib/*`): the broker and its command-line tools.
    pub fn classpath(&self) -> String {
        format!("{}/*", self.lib().display())
    }

    /// The log4j2 configuration of the command-line tools (warnings to stderr).
    pub fn tools_log4j(&self) -> PathBuf {
        self.config_dir().join("tools-log4j2.properties")
    }

    /// Copies the jars of `tools/kafka/pom.xml` into `lib/` with Maven, unless they are there.
    fn ensure_jars(&self) -> Result<()> {
        let pom = paths::repo_root().join("tools/kafka/pom.xml");
        let pom_text =
            fs::read_to_string(&pom).with_context(|| format!("reading {}", pom.display()))?;
        let marker = self.lib().join(".pom");
        if fs::read_to_string(&marker).ok().as_deref() == Some(pom_text.as_str()) {
            return Ok(());
        }
        if !process::on_path("mvn") {
            bail!(
                "Maven (mvn) is not installed: it fetches the Kafka jars (apt-get install maven)"
            );
        }
        println!("fetching Kafka jars from Maven Central (first run only)…");
        let begun = Instant::now();
        let staging = self.home.join("lib.partial");
        let _ = fs::remove_dir_all(&staging);
        process::run_quiet(
            Command::new("mvn")
                .args(["-q", "-B", "-f"])
                .arg(&pom)
                .arg("dependency:copy-dependencies")
                .arg(format!("-DoutputDirectory={}", staging.display()))
                .arg("-DincludeScope=runtime"),
        )
        .context("fetching the Kafka jars with Maven")?;
        if !has_jar(&staging, "kafka_2.13-") {
            bail!(
                "Maven finished but {} holds no kafka_2.13 jar",
                staging.display()
            );
        }
        let _ = fs::remove_dir_all(self.lib());
        fs::rename(&staging, self.lib())?;
        fs::write(&marker, pom_text)?;
        println!(
            "Kafka jars ready in {} ({:.0} s).",
            self.lib().display(),
            begun.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Loads `config/secrets.env` (None when missing or incomplete).
    fn load_secrets(&self) -> Option<Secrets> {
        let text = fs::read_to_string(self.config_dir().join("secrets.env")).ok()?;
        let map = parse_env(&text);
        let get = |k: &str| map.get(k).cloned().filter(|v| !v.is_empty());
        Some(Secrets {
            id: get("SECRETS_ID")?,
            plain_password: get("PLAIN_PASSWORD")?,
            scram_user: get("SCRAM_USER")?,
            scram_password: get("SCRAM_PASSWORD")?,
        })
    }

    /// Loads `config/secrets.env`, generating it the first time.
    fn ensure_secrets(&self) -> Result<Secrets> {
        if let Some(secrets) = self.load_secrets() {
            return Ok(secrets);
        }
        let path = self.config_dir().join("secrets.env");
        fs::create_dir_all(self.config_dir())?;
        let secrets = Secrets {
            id: process::random_string(16, ALNUM)?,
            plain_password: process::random_string(44, API_KEY_ALPHABET)?,
            scram_user: SCRAM_USER.to_string(),
            scram_password: process::random_string(32, ALNUM)?,
        };
        process::write_file(
            &path,
            &format!(
                "# generated by cargo xtask kafka start; delete to rotate (the broker is reformatted)\n\
                 SECRETS_ID={}\nPLAIN_PASSWORD={}\nSCRAM_USER={}\nSCRAM_PASSWORD={}\n",
                secrets.id, secrets.plain_password, secrets.scram_user, secrets.scram_password
            ),
            0o600,
        )?;
        Ok(secrets)
    }

    fn write_configs(&self, secrets: &Secrets, keystore: &Path) -> Result<()> {
        let props = server_properties(&self.ports, &self.data(), keystore, secrets);
        process::write_file(&self.server_properties(), &props, 0o600)?;
        process::write_file(
            &self.config_dir().join("log4j2.properties"),
            &broker_log4j2(&self.server_log()),
            0o644,
        )?;
        process::write_file(
            &self.config_dir().join("tools-log4j2.properties"),
            TOOLS_LOG4J2,
            0o644,
        )?;
        Ok(())
    }

    /// The contents `format.state` must have for the current settings and cluster id.
    fn format_state(&self, cluster_id: &str, secrets: &Secrets) -> String {
        format!(
            "cluster.id={cluster_id}\nsecrets.id={}\ncontroller=127.0.0.1:{}\n",
            secrets.id, self.ports.controller
        )
    }

    /// Formats the storage (first run, or after the cluster id, credentials or controller
    /// endpoint changed, or when `meta.properties` is missing/mismatched): wipes `data/`.
    fn format_if_needed(&self, secrets: &Secrets) -> Result<()> {
        let state_path = self.config_dir().join("format.state");
        let state = fs::read_to_string(&state_path).unwrap_or_default();
        let recorded = parse_properties(&state);
        let meta = fs::read_to_string(self.data().join("meta.properties")).unwrap_or_default();
        let on_disk = parse_properties(&meta).get("cluster.id").cloned();
        if let Some(id) = recorded.get("cluster.id") {
            if on_disk.as_deref() == Some(id.as_str()) && state == self.format_state(id, secrets) {
                return Ok(());
            }
            if on_disk.is_some() {
                println!("the broker storage does not match its settings: re-formatting it");
            }
        }
        let cluster_id = new_cluster_id()?;
        fs::remove_dir_all(self.data())
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("removing {}", self.data().display()))?;
        fs::create_dir_all(self.data())?;
        let mut cmd = self.java()?;
        cmd.arg("-Xmx256m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.config_dir().join("tools-log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(self.classpath())
            .args(["kafka.tools.StorageTool", "format", "--standalone"])
            .args(["--cluster-id", &cluster_id])
            .arg("--config")
            .arg(self.server_properties())
            .arg("--add-scram")
            .arg(format!(
                "SCRAM-SHA-512=[name={},password={}]",
                secrets.scram_user, secrets.scram_password
            ));
        // The output names the directory and metadata version only, never the password.
        process::run_quiet(&mut cmd).context("formatting the Kafka storage")?;
        process::write_file(&state_path, &self.format_state(&cluster_id, secrets), 0o644)?;
        println!(
            "formatted KRaft storage (cluster id {cluster_id}) in {}",
            self.data().display()
        );
        Ok(())
    }

    /// Writes `kafka.env` (0600): the contract read by the platform crate's tests.
    fn write_env_file(&self, secrets: &Secrets) -> Result<()> {
        let ca = paths::absolute(self.ca_cert());
        let text = format!(
            "KAFKA_BROKERS={}\nKAFKA_SASL_BROKERS={}\nKAFKA_CA_LOCATION={}\nKAFKA_PLAIN_USER={PLAIN_USER}\n\
             KAFKA_PLAIN_PASSWORD={}\nKAFKA_SCRAM_USER={}\nKAFKA_SCRAM_PASSWORD={}\n",
            self.ports.brokers(),
            self.ports.sasl_brokers(),
            ca.display(),
            secrets.plain_password,
            secrets.scram_user,
            secrets.scram_password
        );
        process::write_file(&self.env_file(), &text, 0o600)
    }
}

/// The Kafka version pinned in `tools/kafka/pom.xml`.
pub fn kafka_version() -> Result<String> {
    let pom = fs::read_to_string(paths::repo_root().join("tools/kafka/pom.xml"))?;
    let start = pom
        .find("<kafka.version>")
        .ok_or_else(|| anyhow!("no <kafka.version> in the pom"))?
        + "<kafka.version>".len();
    let end = pom[start..]
        .find('<')
        .ok_or_else(|| anyhow!("unterminated <kafka.version>"))?;
    Ok(pom[start..start + end].trim().to_string())
}

/// Creates `topics` (ignoring those that exist) with `partitions` partitions, replication 1.
pub fn create_topics(brokers: &str, topics: &[String], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating a Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results =
        futures::executor::block_on(admin.create_topics(&new, &opts)).context("creating topics")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Deletes the topics the tests created (names `<kind>-<32 hex digits>.<topic>`, from
/// `platform::testing::unique`), so the local broker does not accumulate them run after run.
/// Returns how many were deleted.
pub fn delete_test_topics(brokers: &str) -> Result<usize> {
    delete_topics_where(brokers, is_test_topic)
}

/// Deletes every topic whose name starts with `prefix` (one run's isolated topics); returns how
/// many.
pub fn delete_topics_with_prefix(brokers: &str, prefix: &str) -> Result<usize> {
    delete_topics_where(brokers, |name| name.starts_with(prefix))
}

/// Deletes the topics of `brokers` whose names `doomed` picks (500 a request); returns how many.
fn delete_topics_where(brokers: &str, doomed: impl Fn(&str) -> bool) -> Result<usize> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating a Kafka admin client")?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .context("listing topics")?;
    let names: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| doomed(name))
        .collect();
    for chunk in names.chunks(500) {
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
        futures::executor::block_on(admin.delete_topics(chunk, &opts))
            .context("deleting topics")?;
    }
    Ok(names.len())
}

/// `t-0123…ef.Customer.created` and the like: a test's isolated topic.
fn is_test_topic(name: &str) -> bool {
    let Some((prefix, _)) = name.split_once('.') else {
        return false;
    };
    let Some((_, id)) = prefix.split_once('-') else {
        return false;
    };
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Polls a metadata request on `brokers` until it lists a broker, `alive()` turns false, or
/// `timeout` passes.
fn wait_ready(brokers: &str, timeout: Duration, alive: impl Fn() -> bool) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "500")
        .set("socket.connection.setup.timeout.ms", "2000")
        .set("log_level", "0")
        .create()
        .context("creating a Kafka client")?;
    let deadline = Instant::now() + timeout;
    loop {
        if !alive() {
            bail!("the broker process exited");
        }
        let last = match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(md) if !md.brokers().is_empty() => return Ok(()),
            Ok(_) => "metadata without brokers".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "no metadata from {brokers} within {} s ({last})",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
fn wait_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn has_jar(dir: &Path, prefix: &str) -> bool {
    fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(prefix) && name.ends_with(".jar")
            })
        })
        .unwrap_or(false)
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'
/// (what `kafka-storage.sh random-uuid` prints).
fn new_cluster_id() -> Result<String> {
    loop {
        let id = base64_url(&process::random_bytes(16)?);
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

/// URL-safe base64 without padding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `KEY=VALUE` lines (comments and blanks skipped).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Java properties (the simple `key=value` subset Kafka writes).
fn parse_properties(text: &str) -> BTreeMap<String, String> {
    parse_env(text)
}

/// The broker's `server.properties`.
fn server_properties(ports: &Ports, data: &Path, keystore: &Path, secrets: &Secrets) -> String {
    format!(
        "# generated by `cargo xtask kafka start`; edits are overwritten\n\
         process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.bootstrap.servers=127.0.0.1:{c}\n\
         listeners=PLAINTEXT://127.0.0.1:{p},SASL_SSL://127.0.0.1:{s},CONTROLLER://127.0.0.1:{c}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{p},SASL_SSL://127.0.0.1:{s}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL\n\
         log.dirs={data}\n\
         num.partitions=1\n\
         default.replication.factor=1\n\
         min.insync.replicas=1\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=10\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         transaction.state.log.num.partitions=10\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         auto.create.topics.enable=false\n\
         delete.topic.enable=true\n\
         log.retention.hours=24\n\
         log.segment.bytes=67108864\n\
         num.network.threads=2\n\
         num.io.threads=4\n\
         \n\
         # SASL_SSL: SASL/PLAIN (IBM Event Streams' shape: user \"token\", password = API key) and SCRAM-SHA-512\n\
         sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512\n\
         listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512\n\
         listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{user}=\"{plain}\";\n\
         listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
         ssl.keystore.type=PEM\n\
         ssl.keystore.location={keystore}\n\
         ssl.enabled.protocols=TLSv1.2,TLSv1.3\n\
         ssl.client.auth=none\n",
        p = ports.plaintext,
        s = ports.sasl,
        c = ports.controller,
        data = data.display(),
        user = PLAIN_USER,
        plain = secrets.plain_password,
        keystore = keystore.display(),
    )
}

/// log4j2 configuration of the broker: everything to `server.log` (rolled at 50 MB).
fn broker_log4j2(server_log: &Path) -> String {
    let log = server_log.display();
    format!(
        "status = warn\n\
         name = ems-kafka\n\
         appender.file.type = RollingFile\n\
         appender.file.name = file\n\
         appender.file.fileName = {log}\n\
         appender.file.filePattern = {log}.%i\n\
         appender.file.layout.type = PatternLayout\n\
         appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
         appender.file.policies.type = Policies\n\
         appender.file.policies.size.type = SizeBasedTriggeringPolicy\n\
         appender.file.policies.size.size = 50MB\n\
         appender.file.strategy.type = DefaultRolloverStrategy\n\
         appender.file.strategy.max = 3\n\
         rootLogger.level = INFO\n\
         rootLogger.appenderRef.file.ref = file\n\
         logger.request.name = kafka.request.logger\n\
         logger.request.level = WARN\n\
         logger.state.name = state.change.logger\n\
         logger.state.level = WARN\n\
         logger.authorizer.name = kafka.authorizer.logger\n\
         logger.authorizer.level = INFO\n"
    )
}

/// log4j2 configuration of the command-line tools: warnings to stderr.
const TOOLS_LOG4J2: &str = "status = warn\n\
name = ems-kafka-tools\n\
appender.err.type = Console\n\
appender.err.name = err\n\
appender.err.target = SYSTEM_ERR\n\
appender.err.layout.type = PatternLayout\n\
appender.err.layout.pattern = [%d] %p %m (%c)%n\n\
rootLogger.level = WARN\n\
rootLogger.appenderRef.err.ref = err\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_isolated_test_topics_are_test_topics() {
        assert!(is_test_topic(
            "t-0123456789abcdef0123456789abcdef.Customer.created"
        ));
        assert!(is_test_topic(
            "conn-0123456789abcdef0123456789abcdef.transaction.failed.DLT"
        ));
        assert!(!is_test_topic("Customer.created"));
        assert!(!is_test_topic("transaction.requested.DLT"));
        assert!(!is_test_topic("staging.Customer.created"));
        assert!(!is_test_topic("t-123.Customer.created"));
    }

    fn secrets() -> Secrets {
        Secrets {
            id: "id".into(),
            plain_password: "pw-1".into(),
            scram_user: SCRAM_USER.into(),
            scram_password: "pw2".into(),
        }
    }

    #[test]
    fn base64_url_matches_known_vectors() {
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
        let id = new_cluster_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(!id.starts_with('-'));
    }

    #[test]
    fn server_properties_have_the_three_listeners_and_no_auto_create() {
        let ports = Ports {
            plaintext: 9092,
            sasl: 9093,
            controller: 9094,
        };
        let p = server_properties(
            &ports,
            Path::new("/k/data"),
            Path::new("/k/tls/ks.pem"),
            &secrets(),
        );
        let map = parse_properties(&p);
        assert_eq!(
            map["listeners"],
            "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093,CONTROLLER://127.0.0.1:9094"
        );
        assert_eq!(map["auto.create.topics.enable"], "false");
        assert_eq!(map["group.initial.rebalance.delay.ms"], "0");
        assert_eq!(map["ssl.keystore.type"], "PEM");
        assert!(
            map["listener.name.sasl_ssl.plain.sasl.jaas.config"].contains("user_token=\"pw-1\";")
        );
    }

    #[test]
    fn env_lines_parse() {
        let m = parse_env("# c\nA=1\n\nB = two=2\n");
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two=2");
    }
}
