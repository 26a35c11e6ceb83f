//! The broker's JVM: started (once its jars, credentials, configuration and storage are ready),
//! waited for, stopped, and asked whether it answers.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::config::Secrets;
use super::download::kafka_version;
use super::home::{Kafka, Started};
use super::tls;
use crate::process;

/// How long `start` waits for the broker to answer a metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `stop` waits for a controlled shutdown before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(60);

impl Kafka {
    /// Starts the broker unless it is running; waits until it answers; writes `kafka.env`.
    pub fn start(&self) -> Result<Started> {
        fs::create_dir_all(&self.home)
            .with_context(|| format!("creating {}", self.home.display()))?;
        let _lock = self.lock()?;
        if let Some(pid) = self.running_pid() {
            return self.attach(pid);
        }
        let _ = fs::remove_file(self.pid_file());
        self.check_ports_free()?;
        let begun = Instant::now();
        let secrets = self.prepare(None)?;
        let pid = self.launch()?;
        self.await_ready(pid)?;
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

    /// The broker `pid` already runs: rewrites `kafka.env` and checks that it answers.
    fn attach(&self, pid: u32) -> Result<Started> {
        match self.load_secrets() {
            Some(secrets) => self.write_env_file(&secrets)?,
            None => bail!(
                "the broker (pid {pid}) runs, but its credentials ({}) are gone: restart it \
                 with `cargo xtask kafka stop` and `cargo xtask kafka start`",
                self.secrets_file().display()
            ),
        }
        wait_ready(&self.ports.brokers(), Duration::from_secs(60), || {
            process::is_alive(pid)
        })
        .map_err(|e| anyhow!("the running broker (pid {pid}) does not answer: {e}"))?;
        println!("Kafka is already running (pid {pid}).");
        self.print_addresses();
        Ok(Started {
            already_running: true,
            env_file: self.env_file(),
        })
    }

    /// Fails when another process holds one of the three ports.
    pub(super) fn check_ports_free(&self) -> Result<()> {
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
        Ok(())
    }

    /// Everything the JVM needs before it starts: the jars, the directories, the credentials,
    /// the certificates, the configuration and the formatted storage (of cluster `cluster_id`
    /// for a cluster's node).
    pub(super) fn prepare(&self, cluster_id: Option<&str>) -> Result<Secrets> {
        self.ensure_jars()?;
        for dir in [self.data(), self.config_dir(), self.logs()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let secrets = self.ensure_secrets()?;
        let tls = tls::ensure(&self.tls_dir())?;
        self.write_configs(&secrets, &tls.keystore)?;
        self.format_if_needed(&secrets, cluster_id)?;
        Ok(secrets)
    }

    /// Starts the JVM detached and records its pid.
    pub(super) fn launch(&self) -> Result<u32> {
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
        Ok(pid)
    }

    /// Waits until the new broker `pid` answers and its SASL_SSL listener accepts connections;
    /// when it does not, stops it and prints the end of its logs.
    pub(super) fn await_ready(&self, pid: u32) -> Result<()> {
        if let Err(e) = wait_ready(&self.ports.brokers(), READY_TIMEOUT, || {
            process::is_alive(pid)
        }) {
            let alive = process::is_alive(pid);
            if alive {
                process::terminate(pid, Duration::from_secs(20));
            }
            let _ = fs::remove_file(self.pid_file());
            self.print_log_tails();
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
        Ok(())
    }

    /// The last lines of `server.log`, and of `kafka.out` when the JVM said anything.
    pub(super) fn print_log_tails(&self) {
        eprintln!("--- last lines of {}:", self.server_log().display());
        eprintln!("{}", process::tail(&self.server_log(), 40));
        let out = process::tail(&self.jvm_out(), 15);
        if out.lines().count() > 1 {
            eprintln!("--- last lines of {}:", self.jvm_out().display());
            eprintln!("{out}");
        }
    }

    /// Stops the broker: SIGTERM (controlled shutdown), SIGKILL after a grace period.
    pub fn stop(&self) -> Result<()> {
        fs::create_dir_all(&self.home)?;
        let _lock = self.lock()?;
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
