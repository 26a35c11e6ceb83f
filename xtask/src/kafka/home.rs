//! [`Kafka`]: the local broker's files (under `<cache root>/kafka`) and [`Ports`]; what the
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
    /// Reads the ports from the environment, with the defaults of `docs/design.md` (*Commands*).
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

/// The local broker's files and settings.
pub struct Kafka {
    pub(super) home: PathBuf,
    pub(super) ports: Ports,
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
    pub(super) fn pid_file(&self) -> PathBuf {
        self.home.join("kafka.pid")
    }
    /// `<kafka home>/kafka.env`, the credentials file.
    pub fn env_file(&self) -> PathBuf {
        self.home.join("kafka.env")
    }
    pub(super) fn ca_cert(&self) -> PathBuf {
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
