//! Private PostgreSQL clusters run with Debian's binaries (`/usr/lib/postgresql/<version>/bin`)
//! with trust authentication on 127.0.0.1: the test cluster ([`TEST`], port 25432, fsync off: fast
//! and not durable) for the PostgreSQL test pass, and the bench cluster ([`BENCH`], port 25433,
//! fsync, synchronous_commit and full_page_writes on: durable) for `cargo xtask bench --postgres`.
//! One launcher ([`Postgres`]) runs either.
//!
//! The ports lie below Linux's ephemeral range (32768–60999): a port inside it can be held by the
//! `TIME_WAIT` end of any short client connection of the test run, and the server then cannot bind.
//!
//! initdb refuses to run as root, so as root every server command runs as the `postgres` OS user
//! (`runuser -u postgres --`) on a data directory it owns.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::paths;
use crate::process;

/// Which private cluster: its port, where its data lives, whether it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// What it is called in messages.
    pub name: &'static str,
    /// The variable that overrides its data directory.
    pub data_env: &'static str,
    /// Its folder under the cache root (the data directory is `<folder>/data`).
    cache_dir: &'static str,
    /// Its folder under the `postgres` user's home, when that user cannot reach the cache root.
    home_dir: &'static str,
    /// fsync, synchronous_commit and full_page_writes on (else off).
    pub durable: bool,
}

/// The test cluster: fast, not durable (a crash of the machine may lose or corrupt it).
pub const TEST: Cluster = Cluster {
    port: 25432,
    name: "the test cluster",
    data_env: "EMS_PG_DATA",
    cache_dir: "postgres",
    home_dir: "event-microservices",
    durable: false,
};

/// The bench cluster: durable (a commit is on disk before it is acknowledged).
pub const BENCH: Cluster = Cluster {
    port: 25433,
    name: "the bench cluster",
    data_env: "EMS_PG_BENCH_DATA",
    cache_dir: "postgres-bench",
    home_dir: "event-microservices-bench",
    durable: true,
};

/// The port of the test cluster.
pub const PORT: u16 = TEST.port;

/// The URL the tests get as `TEST_DATABASE_URL`: the test cluster's.
pub fn url() -> String {
    TEST.url()
}

impl Cluster {
    /// Its superuser URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Its settings (`ems.conf`, included from `postgresql.conf`): TCP on 127.0.0.1 only, no unix
    /// socket, and durability on or off.
    fn settings(&self) -> String {
        let on_off = if self.durable { "on" } else { "off" };
        format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = ''\n\
             max_connections = 300\n\
             shared_buffers = 128MB\n\
             fsync = {on_off}\n\
             synchronous_commit = {on_off}\n\
             full_page_writes = {on_off}\n",
            self.port
        )
    }
}

/// A private cluster and the binaries that run it.
pub struct Postgres {
    cluster: Cluster,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Run server commands as this OS user (when we are root).
    as_user: Option<&'static str>,
}

impl Postgres {
    /// The test cluster ([`TEST`]); see [`Postgres::locate_cluster`].
    pub fn locate() -> Result<Self> {
        Self::locate_cluster(TEST)
    }

    /// Finds the newest installed PostgreSQL and decides where `cluster`'s data lives: its
    /// `data_env` variable (`$EMS_PG_DATA` for the test cluster), else
    /// `<cache root>/<its folder>/data`; as root, when the `postgres` user cannot reach the cache
    /// root (e.g. it is under a 0700 /root), the `postgres` user's home
    /// (`/var/lib/postgresql/<its folder>/data`).
    pub fn locate_cluster(cluster: Cluster) -> Result<Self> {
        let bin = newest_bin_dir()?;
        let as_user = process::is_root().then_some("postgres");
        let data = match std::env::var_os(cluster.data_env).filter(|v| !v.is_empty()) {
            Some(d) => paths::absolute(PathBuf::from(d)),
            None => {
                let preferred = paths::cache_root().join(cluster.cache_dir);
                if as_user.is_none() || reachable_by_postgres(&preferred)? {
                    preferred.join("data")
                } else {
                    let home =
                        postgres_home().unwrap_or_else(|| PathBuf::from("/var/lib/postgresql"));
                    let dir = home.join(cluster.home_dir);
                    println!(
                        "note: the postgres user cannot reach {}; using {} for {}",
                        preferred.display(),
                        dir.display(),
                        cluster.name
                    );
                    dir.join("data")
                }
            }
        };
        let log = data
            .parent()
            .map(|p| p.join("postgres.log"))
            .unwrap_or_else(|| data.join("postgres.log"));
        Ok(Self {
            cluster,
            bin,
            data,
            log,
            as_user,
        })
    }

    /// The cluster this launcher runs.
    pub fn cluster(&self) -> Cluster {
        self.cluster
    }

    /// A command running `program` from the PostgreSQL bin directory as the right user.
    fn cmd(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.current_dir("/");
        cmd
    }

    /// Runs each SQL statement with psql as the superuser on the running cluster, in order, each
    /// on its own (so `CREATE DATABASE` works).
    pub fn psql(&self, statements: &[&str]) -> Result<String> {
        let mut cmd = self.cmd("psql");
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &self.cluster.port.to_string(), "-d", "postgres"]);
        for sql in statements {
            cmd.args(["-c", sql]);
        }
        process::run_quiet(&mut cmd)
    }

    /// Drops every database the tests created (`t_<uuid>`, see `platform::testing`), so runs do
    /// not pile them up on the disk. Returns how many were dropped.
    pub fn drop_test_databases(&self) -> Result<usize> {
        let names = self.psql(&[
            "\\pset tuples_only on",
            "\\pset format unaligned",
            r"SELECT datname FROM pg_database WHERE datname LIKE 't\_%'",
        ])?;
        let drops: Vec<String> = names
            .lines()
            .map(str::trim)
            .filter(|n| {
                n.starts_with("t_") && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .map(|n| format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"))
            .collect();
        for chunk in drops.chunks(100) {
            let statements: Vec<&str> = chunk.iter().map(String::as_str).collect();
            self.psql(&statements)?;
        }
        Ok(drops.len())
    }

    /// Starts the cluster (creating it the first time; its settings written afresh). Returns
    /// false when something already answers on the port (then it is used as is, and not stopped
    /// by us).
    pub fn start(&self) -> Result<bool> {
        let port = self.cluster.port;
        if accepting(port) {
            println!("PostgreSQL already answers on 127.0.0.1:{port}; using it");
            return Ok(false);
        }
        if !self.data.join("PG_VERSION").is_file() {
            self.init()?;
        }
        self.write_settings()?;
        crate::pg_tls::enable(&self.data, &self.tls_dir(), self.as_user)?;
        println!(
            "starting PostgreSQL ({}) on 127.0.0.1:{port} ({})",
            self.cluster.name,
            self.data.display()
        );
        // A bind can still fail briefly (another process's socket on the port): retry a few times.
        let mut attempt = 1;
        loop {
            let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            let mut cmd = self.cmd("pg_ctl");
            cmd.arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .arg("-o")
                .arg(format!("-p {port}"))
                .args(["-w", "-t", "120", "start"]);
            match process::run_quiet(&mut cmd) {
                Ok(_) => break,
                Err(e) => {
                    let fresh = fs::read(&self.log)
                        .map(|b| {
                            String::from_utf8_lossy(&b[(log_start as usize).min(b.len())..])
                                .into_owned()
                        })
                        .unwrap_or_default();
                    if attempt < 4 && fresh.contains("Address already in use") {
                        println!("port {port} is busy; retrying in 15 s (attempt {attempt} of 4)");
                        std::thread::sleep(Duration::from_secs(15));
                        attempt += 1;
                        continue;
                    }
                    eprintln!("--- last lines of {}:", self.log.display());
                    eprintln!("{}", process::tail(&self.log, 30));
                    return Err(e.context("starting PostgreSQL"));
                }
            }
        }
        Ok(true)
    }

    /// Stops the cluster (fast shutdown).
    pub fn stop(&self) -> Result<()> {
        let mut cmd = self.cmd("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        process::run_quiet(&mut cmd).context("stopping PostgreSQL")?;
        println!("PostgreSQL ({}) stopped", self.cluster.name);
        Ok(())
    }

    /// Creates the data directory and runs initdb (trust auth, superuser `postgres`).
    fn init(&self) -> Result<()> {
        let parent = self.data.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let _ = fs::remove_dir_all(&self.data);
        if let Some(user) = self.as_user {
            process::run_quiet(Command::new("chown").arg(format!("{user}:")).arg(parent))?;
        }
        println!("creating a PostgreSQL cluster in {}", self.data.display());
        let mut cmd = self.cmd("initdb");
        cmd.arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .arg("--no-instructions");
        process::run_quiet(&mut cmd).context("initdb")?;
        let main_conf = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&main_conf)?;
        text.push_str("\ninclude 'ems.conf'\n");
        fs::write(&main_conf, text)?;
        Ok(())
    }

    /// Writes the cluster's settings ([`Cluster::settings`]) to `ems.conf` in its data directory.
    fn write_settings(&self) -> Result<()> {
        let conf = self.data.join("ems.conf");
        fs::write(&conf, self.cluster.settings())
            .with_context(|| format!("writing {}", conf.display()))?;
        if let Some(user) = self.as_user {
            process::run_quiet(Command::new("chown").arg(format!("{user}:")).arg(&conf))?;
        }
        Ok(())
    }
}

/// TLS (see [`crate::pg_tls`]): where its files are, and whether the running server uses them.
impl Postgres {
    /// `<cluster folder>/tls`, next to the data directory.
    fn tls_dir(&self) -> PathBuf {
        self.data
            .parent()
            .map_or_else(|| self.data.join("tls"), |p| p.join("tls"))
    }

    /// The CA of the server's certificate, when the running server has TLS on (`TEST_DATABASE_CA`).
    pub fn tls_ca(&self) -> Option<PathBuf> {
        let ca = crate::pg_tls::TlsFiles::under(&self.tls_dir()).ca_cert;
        if !ca.is_file() {
            return None;
        }
        let ssl = self.psql(&["\\pset tuples_only on", "SHOW ssl"]).ok()?;
        ssl.lines().any(|l| l.trim() == "on").then_some(ca)
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has initdb and pg_ctl.
fn newest_bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            let Some(version) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let bin = e.path().join("bin");
            if bin.join("initdb").is_file()
                && bin.join("pg_ctl").is_file()
                && !matches!(&best, Some((v, _)) if *v >= version)
            {
                best = Some((version, bin));
            }
        }
    }
    match best {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL is not installed (no {}/*/bin/initdb); apt-get install postgresql",
            root.display()
        ),
    }
}

/// Whether the `postgres` user can create files in `dir` (created and chowned here).
fn reachable_by_postgres(dir: &Path) -> Result<bool> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    process::run_quiet(Command::new("chown").arg("postgres:").arg(dir))?;
    let ok = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-w"])
        .arg(dir)
        .current_dir("/")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    Ok(ok)
}

/// The home directory of the `postgres` OS user.
fn postgres_home() -> Option<PathBuf> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .and_then(|l| l.split(':').nth(5))
        .map(PathBuf::from)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepting(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}
