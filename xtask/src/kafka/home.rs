//! [`Kafka`]: the local broker's files (under `<cache root>/kafka`, or a cluster node's under
//! its own folder with the shared ones at the cluster's root), [`Ports`] and [`Member`]; what the
//! other modules of [`crate::kafka`] work on.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths;
use crate::process::{self, FileLock};

/// The SASL/PLAIN user: IBM Event Streams' shape (user `token`, password = an API key).
pub const PLAIN_USER: &str = "token";
/// The SCRAM-SHA-512 user created at format time.
pub const SCRAM_USER: &str = "ems-scram";

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
    /// The single broker's ports: 9092, 9093, 9094.
    pub const SINGLE: Ports = Ports {
        plaintext: 9092,
        sasl: 9093,
        controller: 9094,
    };

    /// Reads the ports from the environment, with the defaults of `docs/design.md` (*Commands*).
    pub fn from_env() -> Result<Self> {
        Self::from_env_or(Self::SINGLE)
    }

    /// Reads the ports from the environment (`EMS_KAFKA_PORT`, `EMS_KAFKA_SASL_PORT`,
    /// `EMS_KAFKA_CONTROLLER_PORT`), with `defaults` for those unset.
    pub fn from_env_or(defaults: Ports) -> Result<Self> {
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
            plaintext: port("EMS_KAFKA_PORT", defaults.plaintext)?,
            sasl: port("EMS_KAFKA_SASL_PORT", defaults.sasl)?,
            controller: port("EMS_KAFKA_CONTROLLER_PORT", defaults.controller)?,
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

/// Where a broker sits: alone (its own controller quorum, replication 1), or node `id` of a
/// cluster whose controller quorum is `voters` (node id, controller port), replication 3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `node.id`.
    pub id: u32,
    /// The controller quorum's voters; empty for a single broker (`--standalone`).
    pub voters: Vec<(u32, u16)>,
}

impl Member {
    /// A broker alone: node 1, its own quorum.
    pub fn single() -> Self {
        Self {
            id: 1,
            voters: Vec::new(),
        }
    }

    /// True for a node of a cluster.
    pub fn clustered(&self) -> bool {
        !self.voters.is_empty()
    }

    /// The topics' default `(replication factor, min.insync.replicas)`: `(1, 1)` alone, `(3, 2)`
    /// (IBM Event Streams' settings) in a cluster of three or more.
    pub fn replication(&self) -> (usize, usize) {
        match self.voters.len() {
            0 | 1 => (1, 1),
            2 => (2, 1),
            n => (3.min(n), 2),
        }
    }
}

/// The local broker's files and settings.
pub struct Kafka {
    /// This broker's own files (configuration, data, logs, pid).
    pub(super) home: PathBuf,
    /// What the brokers of a cluster share (jars, credentials, certificates, `kafka.env`);
    /// `home` for a single broker.
    pub(super) root: PathBuf,
    pub(super) ports: Ports,
    pub(super) member: Member,
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
        Ok(Self::at(paths::kafka_home(), Ports::from_env()?))
    }

    /// A broker of its own under `home` on `ports` (the chaos run stops and starts one nobody
    /// else uses).
    pub fn at(home: PathBuf, ports: Ports) -> Self {
        Self {
            root: home.clone(),
            home,
            ports,
            member: Member::single(),
        }
    }

    /// Node `member.id` of a cluster: its own files under `home`, the shared ones under `root`.
    pub fn node(root: PathBuf, home: PathBuf, ports: Ports, member: Member) -> Self {
        Self {
            home,
            root,
            ports,
            member,
        }
    }

    /// `node.id`.
    pub fn node_id(&self) -> u32 {
        self.member.id
    }

    /// The ports in use.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The directory of the Kafka jars (Maven's copy of tools/kafka's dependencies).
    pub fn lib(&self) -> PathBuf {
        self.root.join("lib")
    }
    pub(super) fn data(&self) -> PathBuf {
        self.home.join("data")
    }
    pub(super) fn config_dir(&self) -> PathBuf {
        self.home.join("config")
    }
    pub(super) fn server_properties(&self) -> PathBuf {
        self.config_dir().join("server.properties")
    }
    pub(super) fn logs(&self) -> PathBuf {
        self.home.join("logs")
    }
    pub(super) fn server_log(&self) -> PathBuf {
        self.logs().join("server.log")
    }
    pub(super) fn jvm_out(&self) -> PathBuf {
        self.logs().join("kafka.out")
    }
    /// `<home>/kafka.pid`, the broker's pid while it runs.
    pub fn pid_file(&self) -> PathBuf {
        self.home.join("kafka.pid")
    }
    /// `<kafka home>/kafka.env`, the credentials file (shared by a cluster's nodes).
    pub fn env_file(&self) -> PathBuf {
        self.root.join("kafka.env")
    }
    /// The generated credentials (shared by a cluster's nodes).
    pub(super) fn secrets_file(&self) -> PathBuf {
        self.root.join("config").join("secrets.env")
    }
    /// The certificates (shared by a cluster's nodes).
    pub(super) fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub(super) fn ca_cert(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
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

    /// Holds the broker's lock file while `start` or `stop` works on it.
    pub(super) fn lock(&self) -> Result<FileLock> {
        FileLock::acquire(
            &self.home.join(".xtask.lock"),
            "waiting for another xtask to finish with the broker…",
        )
    }

    pub(super) fn print_addresses(&self) {
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
}
