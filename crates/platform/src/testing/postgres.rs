//! A PostgreSQL server of a test's own, for faults the shared test cluster must not see (a
//! restart under load): a fresh cluster in a temporary folder on a free port, run with Debian's
//! binaries (`/usr/lib/postgresql/<version>/bin`, as `cargo xtask` runs its clusters). initdb
//! refuses to run as root, so as root every server command runs as the `postgres` OS user.
//! Trust authentication on 127.0.0.1; fsync off (fast, not durable: it is thrown away).

use std::path::{Path, PathBuf};

use tokio::process::Command;

/// Why a private cluster could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No `/usr/lib/postgresql/*/bin` with initdb and pg_ctl.
    #[error("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")]
    NotInstalled,
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A server command failed.
    #[error("{command} failed: {output}")]
    Command {
        /// The command.
        command: String,
        /// What it printed.
        output: String,
    },
}

/// A running private cluster; stopped and deleted when dropped.
pub struct PrivateCluster {
    bin: PathBuf,
    folder: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivateCluster {
    /// Creates and starts a cluster on a free port.
    pub async fn start() -> Result<Self, ClusterError> {
        let bin = bin_dir().ok_or(ClusterError::NotInstalled)?;
        let io = |what: &str| {
            let what = what.to_string();
            move |source| ClusterError::Io { what, source }
        };
        let folder = tempfile::Builder::new()
            .prefix("ems-pg-")
            .tempdir_in("/tmp")
            .map_err(io("a temporary folder"))?;
        let as_postgres = is_root();
        let cluster = Self {
            bin,
            folder,
            port: super::free_port(),
            as_postgres,
        };
        if as_postgres {
            cluster
                .run(
                    Command::new("chown")
                        .arg("postgres:")
                        .arg(cluster.folder.path()),
                )
                .await?;
        }
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(cluster.data()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-instructions",
        ]);
        cluster.run(&mut initdb).await?;
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            cluster.port,
            cluster.folder.path().display()
        );
        let conf = cluster.data().join("postgresql.conf");
        let mut text = tokio::fs::read_to_string(&conf)
            .await
            .map_err(io("reading postgresql.conf"))?;
        text.push_str(&settings);
        tokio::fs::write(&conf, text)
            .await
            .map_err(io("writing postgresql.conf"))?;
        cluster.start_server().await?;
        Ok(cluster)
    }

    /// The superuser's URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: sessions are ended, the server goes away).
    pub async fn stop_server(&self) -> Result<(), ClusterError> {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        self.run(&mut stop).await
    }

    /// Starts the (stopped) server again and waits until it takes connections.
    pub async fn start_server(&self) -> Result<(), ClusterError> {
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.folder.path().join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        self.run(&mut start).await
    }

    /// The command that restarts the server (fast shutdown, then start; returns once it takes
    /// connections again): program and arguments, for a fault schedule to run.
    pub fn restart_command(&self) -> Vec<String> {
        // From `/`: the postgres user may not reach the caller's folder.
        let mut command = vec!["env".to_string(), "--chdir=/".to_string()];
        if self.as_postgres {
            command.extend(["runuser", "-u", "postgres", "--"].map(String::from));
        }
        command.push(self.bin.join("pg_ctl").display().to_string());
        command.extend(["-D".to_string(), self.data().display().to_string()]);
        let log = self.folder.path().join("server.log");
        command.extend(["-l".to_string(), log.display().to_string()]);
        command.extend(["-m", "fast", "-w", "-t", "60", "restart"].map(String::from));
        command
    }

    fn data(&self) -> PathBuf {
        self.folder.path().join("data")
    }

    /// `program` from the bin folder, as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(exe);
            command
        } else {
            Command::new(exe)
        };
        command.current_dir("/");
        command
    }

    async fn run(&self, command: &mut Command) -> Result<(), ClusterError> {
        let described = format!("{:?}", command.as_std());
        let output = command.output().await.map_err(|source| ClusterError::Io {
            what: described.clone(),
            source,
        })?;
        if output.status.success() {
            return Ok(());
        }
        Err(ClusterError::Command {
            command: described,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

impl Drop for PrivateCluster {
    /// Stops the server at once (the folder goes with the value).
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let mut stop = if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(exe);
            command
        } else {
            std::process::Command::new(exe)
        };
        let _ = stop
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir("/")
            .output();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb and pg_ctl.
fn bin_dir() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (initdb would refuse).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            == Some("0")
    })
}
