//! A private PostgreSQL cluster for the PostgreSQL test pass, run with Debian's binaries
//! (`/usr/lib/postgresql/<version>/bin`) on 127.0.0.1:25432 with trust authentication.
//!
//! The port lies below Linux's ephemeral range (32768–60999): a port inside it can be held by the
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

/// The port of the private cluster.
pub const PORT: u16 = 25432;

/// The URL the tests get as `TEST_DATABASE_URL`.
pub fn url() -> String {
    format!("postgres://postgres@127.0.0.1:{PORT}/postgres")
}

/// The private cluster.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Run server commands as this OS user (when we are root).
    as_user: Option<&'static str>,
}

impl Postgres {
    /// Finds the newest installed PostgreSQL and decides where its data lives:
    /// `$EMS_PG_DATA`, else `<cache root>/postgres/data`; as root, when the `postgres` user cannot
    /// reach the cache root (e.g. it is under a 0700 /root), the `postgres` user's home
    /// (`/var/lib/postgresql/event-microservices/data`).
    pub fn locate() -> Result<Self> {
        let bin = newest_bin_dir()?;
        let as_user = process::is_root().then_some("postgres");
        let data = match std::env::var_os("EMS_PG_DATA").filter(|v| !v.is_empty()) {
            Some(d) => paths::absolute(PathBuf::from(d)),
            None => {
                let preferred = paths::cache_root().join("postgres");
                if as_user.is_none() || reachable_by_postgres(&preferred)? {
                    preferred.join("data")
                } else {
                    let home =
                        postgres_home().unwrap_or_else(|| PathBuf::from("/var/lib/postgresql"));
                    let dir = home.join("event-microservices");
                    println!(
                        "note: the postgres user cannot reach {}; using {} for the test cluster",
                        preferred.display(),
                        dir.display()
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
            bin,
            data,
            log,
            as_user,
        })
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
        .args(["-p", &PORT.to_string(), "-d", "postgres"]);
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

    /// Starts the cluster (creating it the first time). Returns false when something already
    /// answers on the port (then it is used as is, and not stopped by us).
    pub fn start(&self) -> Result<bool> {
        if accepting(PORT) {
            println!("PostgreSQL already answers on 127.0.0.1:{PORT}; using it");
            return Ok(false);
        }
        if !self.data.join("PG_VERSION").is_file() {
            self.init()?;
        }
        crate::pg_tls::enable(&self.data, &self.tls_dir(), self.as_user)?;
        println!(
            "starting PostgreSQL on 127.0.0.1:{PORT} ({})",
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
                .arg(format!("-p {PORT}"))
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
                        println!("port {PORT} is busy; retrying in 15 s (attempt {attempt} of 4)");
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
        println!("PostgreSQL stopped");
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
        // Test-friendly settings: TCP on 127.0.0.1 only, no unix socket, no durability.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {PORT}\n\
             unix_socket_directories = ''\n\
             max_connections = 300\n\
             shared_buffers = 128MB\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n"
        );
        fs::write(self.data.join("ems.conf"), conf)?;
        let main_conf = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&main_conf)?;
        text.push_str("\ninclude 'ems.conf'\n");
        fs::write(&main_conf, text)?;
        if let Some(user) = self.as_user {
            process::run_quiet(
                Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(self.data.join("ems.conf")),
            )?;
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
