//! `cargo xtask up | down | demo`: the whole system on this machine.
//!
//! `up` builds the three services and the console, starts the broker (unless running), creates the
//! topics, starts the services with the embedded defaults (SQLite files under `./data`), waits for each
//! `GET /readyz`, prints the URLs and streams the logs until Ctrl-C. `--detach` returns once all
//! are healthy, leaving pids in `data/stack.state` and logs in `data/logs/` (rotated, see
//! [`crate::logs`]); `down` stops them.

use std::fs;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::kafka::{self, Kafka};
use crate::logs::RotatingLog;
use crate::paths;
use crate::process;

/// A service of the stack.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    /// Cargo package and binary name.
    pub name: &'static str,
    /// Default HTTP port.
    pub port: u16,
}

/// The three services, then the read-only console (it reads their topics and APIs), in start
/// order.
pub const SERVICES: [Service; 4] = [
    Service {
        name: "customer-service",
        port: 3001,
    },
    Service {
        name: "transaction-service",
        port: 3002,
    },
    Service {
        name: "notification-service",
        port: 3003,
    },
    Service {
        name: "console",
        port: 3004,
    },
];

/// How long a service may take to answer `/readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a service may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The data directory of the stack: `$EMS_DATA_DIR`, else `<repo>/data`.
fn data_dir() -> PathBuf {
    match std::env::var_os("EMS_DATA_DIR").filter(|v| !v.is_empty()) {
        Some(d) => paths::absolute(PathBuf::from(d)),
        None => paths::repo_root().join("data"),
    }
}

fn state_file(data: &Path) -> PathBuf {
    data.join("stack.state")
}

/// Where `up` keeps the stack's data, and what it adds to every service's environment.
#[derive(Debug, Clone)]
pub struct Setup {
    /// SQLite files, `logs/`, the mail folder, `stack.state`.
    pub data: PathBuf,
    /// Added to every service's environment (a later entry wins).
    pub env: Vec<(String, String)>,
    /// How much of each service's log is kept.
    pub logs: crate::logs::Limits,
}

impl Setup {
    /// `EMS_DATA_DIR` (else `./data`), nothing added to the environment, logs kept as
    /// `EMS_LOG_MAX_MB` and `EMS_LOG_KEEP` say.
    fn from_env() -> Result<Self> {
        Ok(Self {
            data: data_dir(),
            env: Vec::new(),
            logs: crate::logs::Limits::from_env()?,
        })
    }
}

/// What a detached stack left behind: `name pid` lines, and `broker started` when `up` started
/// the broker.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Each service and its pid.
    pub services: Vec<(String, u32)>,
    /// Whether `up` started the broker.
    pub broker_started: bool,
}

impl State {
    fn render(&self) -> String {
        let mut s = String::new();
        for (name, pid) in &self.services {
            s.push_str(&format!("{name} {pid}\n"));
        }
        if self.broker_started {
            s.push_str("broker started\n");
        }
        s
    }

    fn parse(text: &str) -> Self {
        let mut st = State::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("broker", "started")) => st.broker_started = true,
                Some((name, pid)) => {
                    if let Ok(pid) = pid.trim().parse() {
                        st.services.push((name.to_string(), pid));
                    }
                }
                None => {}
            }
        }
        st
    }

    fn load(data: &Path) -> Option<Self> {
        fs::read_to_string(state_file(data))
            .ok()
            .map(|t| Self::parse(&t))
    }
}

/// `cargo xtask up [--detach]`.
pub fn up(detach: bool) -> Result<()> {
    up_with(&Setup::from_env()?, detach).map(|_| ())
}

/// `up` with `setup`; returns what a detached stack runs (nothing for an attached one, which
/// has stopped when this returns).
pub fn up_with(setup: &Setup, detach: bool) -> Result<State> {
    if let Some(st) = State::load(&setup.data) {
        let live: Vec<_> = st
            .services
            .iter()
            .filter(|(_, p)| process::is_alive(*p))
            .collect();
        if !live.is_empty() {
            println!("the stack is already running (detached):");
            print_urls();
            println!("stop it with: cargo xtask down");
            return Ok(st);
        }
        let _ = fs::remove_file(state_file(&setup.data));
    }
    for s in SERVICES {
        if crate::postgres::accepting(s.port) {
            bail!("port {} ({}) is already in use", s.port, s.name);
        }
    }

    build()?;
    let bin_dir = target_dir()?.join("debug");
    let kafka = Kafka::from_env()?;
    let broker_started = !kafka.start()?.already_running;
    let stop_broker = || {
        if broker_started {
            process::warn(kafka.stop());
        }
    };
    let partitions: i32 = std::env::var("KAFKA_TOPIC_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    if let Err(e) = kafka::create_topics(
        &kafka.ports().brokers(),
        &contracts::topics::all_with_dead_letters(),
        partitions,
    ) {
        stop_broker();
        return Err(e);
    }

    let logs = setup.data.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let brokers = kafka.ports().brokers();

    let result = if detach {
        up_detached(&bin_dir, setup, &logs, &brokers, broker_started)
    } else {
        up_attached(&bin_dir, setup, &logs, &brokers).map(|()| State::default())
    };
    if result.is_err() || !detach {
        stop_broker();
    }
    result
}

/// The scopes the console needs of the services it reads (`CONSOLE_API_KEY`).
pub const CONSOLE_SCOPES: [&str; 3] = ["customers:read", "transactions:read", "notifications:read"];

/// The secret of the first key of `API_KEYS` that has every one of `scopes`.
pub fn api_key_with(scopes: &[&str]) -> Option<String> {
    let list = std::env::var("API_KEYS").ok()?;
    keys_of(&list)
        .into_iter()
        .find(|(has, _)| scopes.iter().all(|s| has.iter().any(|h| h == s)))
        .map(|(_, secret)| secret)
}

/// The scopes and secrets of a key list (`name:scope+scope:secret`, as the services read it);
/// entries the services would refuse are left out.
fn keys_of(list: &str) -> Vec<(Vec<String>, String)> {
    list.split(',').filter_map(key_of).collect()
}

/// The scopes and secret of one entry: after the name, `area:action` pairs joined by `+`, then
/// `:` and the secret.
fn key_of(entry: &str) -> Option<(Vec<String>, String)> {
    let (_name, mut rest) = entry.trim().split_once(':')?;
    let mut scopes = Vec::new();
    loop {
        let (area, after) = rest.split_once(':')?;
        let end = after.find([':', '+'])?;
        scopes.push(format!("{}:{}", area.trim(), after[..end].trim()));
        rest = &after[end + 1..];
        if after[end..].starts_with(':') {
            return Some((scopes, rest.trim().to_string()));
        }
    }
}

/// The command that runs one service with the embedded defaults.
fn service_command(bin_dir: &Path, setup: &Setup, brokers: &str, s: Service) -> Result<Command> {
    let data = setup.data.as_path();
    let exe = bin_dir.join(s.name);
    if !exe.is_file() {
        bail!("{} was not built ({} is missing)", s.name, exe.display());
    }
    let mut cmd = Command::new(exe);
    let db = if data == paths::repo_root().join("data") {
        format!("sqlite://data/{}.db", s.name)
    } else {
        format!("sqlite://{}/{}.db", data.display(), s.name)
    };
    if !std::io::stdout().is_terminal() {
        cmd.env("NO_COLOR", "1");
    }
    if s.name == "console" && std::env::var_os("CONSOLE_API_KEY").is_none() {
        // The console reads the services with a key of `API_KEYS` that may read all three.
        if let Some(key) = api_key_with(&CONSOLE_SCOPES) {
            cmd.env("CONSOLE_API_KEY", key);
        }
    }
    cmd.current_dir(paths::repo_root())
        .env("PORT", s.port.to_string())
        .env("KAFKA_BROKERS", brokers)
        .env("DATABASE_URL", db)
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    Ok(cmd)
}

fn up_detached(
    bin_dir: &Path,
    setup: &Setup,
    logs: &Path,
    brokers: &str,
    broker_started: bool,
) -> Result<State> {
    let state_file = state_file(&setup.data);
    let mut st = State {
        services: Vec::new(),
        broker_started,
    };
    for s in SERVICES {
        let log = logs.join(format!("{}.log", s.name));
        let mut cmd = service_command(bin_dir, setup, brokers, s)?;
        cmd.env("NO_COLOR", "1");
        let spawned = crate::logs::spawn_writer(&log, setup.logs)
            .and_then(|(out, err)| process::spawn_detached_to(&mut cmd, out, err));
        match spawned {
            Ok(pid) => st.services.push((s.name.to_string(), pid)),
            Err(e) => {
                stop_pids(&st.services);
                return Err(e);
            }
        }
        process::write_file(&state_file, &st.render(), 0o644)?;
    }
    for (s, (_, pid)) in SERVICES.iter().zip(&st.services) {
        if let Err(e) = wait_ready(*s, || process::is_alive(*pid)) {
            eprintln!(
                "--- last lines of {}:",
                logs.join(format!("{}.log", s.name)).display()
            );
            eprintln!(
                "{}",
                process::tail(&logs.join(format!("{}.log", s.name)), 30)
            );
            stop_pids(&st.services);
            let _ = fs::remove_file(&state_file);
            return Err(e);
        }
    }
    println!("the stack is up (detached); logs in {}", logs.display());
    print_urls();
    println!("stop it with: cargo xtask down");
    Ok(st)
}

fn up_attached(bin_dir: &Path, setup: &Setup, logs: &Path, brokers: &str) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Event>();
    {
        let tx = tx.clone();
        ctrlc::set_handler(move || {
            let _ = tx.send(Event::Signal);
        })
        .context("installing the Ctrl-C handler")?;
    }
    let mut children: Vec<(Service, Child)> = Vec::new();
    let mut outcome = spawn_attached(bin_dir, setup, logs, brokers, &mut children);
    if outcome.is_ok() {
        for (s, child) in children.iter_mut() {
            let pid = child.id();
            if let Err(e) = wait_ready(*s, || process::is_alive(pid)) {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_ok() {
        println!("the stack is up:");
        print_urls();
        println!(
            "logs follow (also in {}); Ctrl-C stops everything",
            logs.display()
        );
        outcome = watch(&children, tx, &rx);
    }
    let pids: Vec<(String, u32)> = children
        .iter()
        .map(|(s, c)| (s.name.to_string(), c.id()))
        .collect();
    stop_pids(&pids);
    for (_, mut c) in children {
        let _ = c.wait();
    }
    outcome
}

/// Starts the services in their own process groups, their output prefixed with their names
/// (coloured on a terminal) and copied to their log files; stops at the first that fails to
/// start (those started are in `children`).
fn spawn_attached(
    bin_dir: &Path,
    setup: &Setup,
    logs: &Path,
    brokers: &str,
    children: &mut Vec<(Service, Child)>,
) -> Result<()> {
    let width = SERVICES.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let limits = setup.logs;
    let colour = std::io::stdout().is_terminal();
    for (i, s) in SERVICES.into_iter().enumerate() {
        let mut cmd = service_command(bin_dir, setup, brokers, s)?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        // Own process group: Ctrl-C reaches only us, and we stop the services in order.
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", s.name))?;
        let prefix = if colour {
            format!("\x1b[{}m{:<width$} |\x1b[0m ", 32 + i, s.name)
        } else {
            format!("{:<width$} | ", s.name)
        };
        let log = logs.join(format!("{}.log", s.name));
        let log = Arc::new(Mutex::new(RotatingLog::open(&log, limits)?));
        if let Some(out) = child.stdout.take() {
            spawn_prefixer(out, prefix.clone(), Arc::clone(&log));
        }
        if let Some(err) = child.stderr.take() {
            spawn_prefixer(err, prefix, log);
        }
        children.push((s, child));
    }
    Ok(())
}

/// Waits for Ctrl-C or for a service to exit on its own (which stops the rest: an error).
fn watch(
    children: &[(Service, Child)],
    tx: mpsc::Sender<Event>,
    rx: &mpsc::Receiver<Event>,
) -> Result<()> {
    let pids: Vec<(Service, u32)> = children.iter().map(|(s, c)| (*s, c.id())).collect();
    thread::spawn(move || loop {
        for (s, pid) in &pids {
            if !process::is_alive(*pid) {
                let _ = tx.send(Event::Exited(s.name));
                return;
            }
        }
        thread::sleep(Duration::from_millis(500));
    });
    match rx.recv() {
        Ok(Event::Exited(name)) => Err(anyhow::anyhow!("{name} exited; stopping the stack")),
        Ok(Event::Signal) | Err(_) => {
            println!("\nstopping the stack…");
            Ok(())
        }
    }
}

enum Event {
    Signal,
    Exited(&'static str),
}

/// Copies `from` line by line to stdout with `prefix`, and to the (rotating) log file.
fn spawn_prefixer(from: impl Read + Send + 'static, prefix: String, log: Arc<Mutex<RotatingLog>>) {
    thread::spawn(move || {
        let reader = BufReader::new(from);
        for line in reader.split(b'\n').map_while(|l| l.ok()) {
            let text = String::from_utf8_lossy(&line);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let _ = writeln!(out, "{prefix}{text}");
            if let Ok(mut log) = log.lock() {
                let _ = log.write_line(process::strip_ansi(&text).as_bytes());
            }
        }
    });
}

/// True when `program` (a command line's first element) is the binary of service `name`.
fn is_service_program(program: &Path, name: &str) -> bool {
    program.file_name().is_some_and(|f| f == name)
}

/// Stops services in reverse start order: SIGTERM, wait, SIGKILL. A pid whose process is not the
/// service's binary (a stale state file, the pid reused since) is left alone.
pub fn stop_pids(services: &[(String, u32)]) {
    for (name, pid) in services.iter().rev() {
        if process::is_alive(*pid) {
            if !process::program(*pid).is_some_and(|p| is_service_program(&p, name)) {
                println!(
                    "not stopping pid {pid}: it is not {name} any more (it runs `{}`); \
                     the state file is stale",
                    process::cmdline(*pid).trim()
                );
                continue;
            }
            println!("stopping {name} (pid {pid})");
            if process::terminate(*pid, STOP_GRACE) {
                println!(
                    "{name} did not stop within {} s and was killed",
                    STOP_GRACE.as_secs()
                );
            }
        }
    }
}

/// `cargo xtask down`.
pub fn down() -> Result<()> {
    let data = data_dir();
    let Some(st) = State::load(&data) else {
        println!(
            "no detached stack is running (no {})",
            state_file(&data).display()
        );
        return Ok(());
    };
    stop_pids(&st.services);
    let _ = fs::remove_file(state_file(&data));
    if st.broker_started {
        Kafka::from_env()?.stop()?;
    }
    println!("the stack is down");
    Ok(())
}

/// Builds the service binaries (and the console's).
fn build() -> Result<()> {
    println!("building the services…");
    let mut cmd = paths::cargo();
    cmd.arg("build");
    for s in SERVICES {
        cmd.args(["-p", s.name]);
    }
    process::run_visible(&mut cmd)
}

/// `cargo build <options>` of the three services and the system-test binaries (the benchmark
/// and chaos clients), output visible.
pub fn build_with_system_tests(options: &[&str]) -> Result<()> {
    let mut build = paths::cargo();
    build
        .arg("build")
        .args(options)
        .args(["-p", "customer-service", "-p", "transaction-service"])
        .args(["-p", "notification-service", "-p", "system-tests", "--bins"]);
    process::run_visible(&mut build)
}

/// Cargo's target directory (honours CARGO_TARGET_DIR and cargo configuration).
pub fn target_dir() -> Result<PathBuf> {
    paths::cargo_metadata()?["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

fn print_urls() {
    for s in SERVICES {
        println!("  {:<22} http://127.0.0.1:{}", s.name, s.port);
    }
}

/// Whether `GET /readyz` on 127.0.0.1:`port` answers 200 with every check passing (`ready`, not
/// `degraded`: the consumers have joined and the broker answers).
pub fn ready(port: u16) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    agent
        .get(&format!("http://127.0.0.1:{port}/readyz"))
        .call()
        .map(|mut r| {
            r.status().as_u16() == 200
                && r.body_mut()
                    .read_to_string()
                    .is_ok_and(|body| body.contains(r#""status":"ready""#))
        })
        .unwrap_or(false)
}

/// Waits for a service's `/readyz` to answer 200 while `alive()`.
fn wait_ready(s: Service, alive: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready(s.port) {
            println!("{} is ready on http://127.0.0.1:{}", s.name, s.port);
            return Ok(());
        }
        if !alive() {
            bail!("{} exited before becoming ready", s.name);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer GET /readyz with 200 within {} s",
                s.name,
                READY_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(300));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_give_scopes_and_secrets() {
        let scopes = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys_of("ops:customers:write + transactions:write:k1:x, dash:console:read:k2,bare"),
            [
                (
                    scopes(&["customers:write", "transactions:write"]),
                    "k1:x".to_string()
                ),
                (scopes(&["console:read"]), "k2".to_string()),
            ]
        );
        assert!(keys_of(" , ").is_empty());
    }

    #[test]
    fn state_round_trips() {
        let st = State {
            services: vec![("a".into(), 1), ("b".into(), 22)],
            broker_started: true,
        };
        assert_eq!(State::parse(&st.render()), st);
        assert_eq!(State::parse(""), State::default());
    }

    #[test]
    fn only_the_service_binary_is_recognised() {
        let program = |cmdline: &[u8]| process::program_of(cmdline).unwrap();
        let service = program(b"/repo/target/debug/transaction-service\0");
        assert!(is_service_program(&service, "transaction-service"));
        assert!(!is_service_program(&service, "customer-service"));
        let other = program(b"/usr/bin/sleep\0transaction-service\0");
        assert!(!is_service_program(&other, "transaction-service"));
        let bash = program(b"bash\0-c\0/repo/target/debug/transaction-service\0");
        assert!(!is_service_program(&bash, "transaction-service"));
        assert_eq!(process::program_of(b""), None);
    }

    #[test]
    fn a_live_pid_that_is_not_the_service_is_not_recognised() {
        let me = std::process::id();
        let mine = process::program(me).expect("own command line");
        assert!(!is_service_program(&mine, "transaction-service"));
        let name = mine.file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_service_program(&mine, &name));
    }

    #[test]
    fn ansi_sequences_are_stripped() {
        assert_eq!(
            process::strip_ansi("\x1b[2ma\x1b[0m b \x1b[32mINFO\x1b[0m"),
            "a b INFO"
        );
    }
}
