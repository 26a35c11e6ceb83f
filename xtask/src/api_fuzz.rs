//! The API fuzzing step of `cargo xtask test`: schemathesis (a pinned version, from PyPI, in a
//! virtualenv under the cache root) against the `/openapi.json` of the three services, started
//! from the binaries the test pass built, on SQLite files of their own and on topics of their own
//! (a `api-<32 hex>.` prefix, which the end of the test run deletes with the other test topics).
//! Every check runs (`--checks all`), with a bounded number of examples per operation (set with
//! the rest of each service's settings in `xtask/schemathesis/<service>.toml`); each service is
//! one passed or failed test in the closing summary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::counts::Counts;
use crate::{apt, paths, process, stack};

/// The schemathesis release the step installs.
pub const VERSION: &str = "4.32.5";
/// A fixed seed: a failure reproduces.
const SEED: u32 = 20_251;
/// The services under test.
const SERVICES: [&str; 3] = [
    "customer-service",
    "transaction-service",
    "notification-service",
];

/// `cargo xtask api-fuzz`: the step alone, against the local broker (started when needed);
/// prints the counts and returns the exit code (1 when a service failed).
pub fn run_alone() -> Result<i32> {
    let kafka = crate::kafka::Kafka::from_env()?;
    kafka.start()?;
    let counts = run(&kafka.ports().brokers())?;
    println!("{} passed, {} failed", counts.passed, counts.failed);
    Ok(i32::from(counts.failed > 0))
}

/// Runs schemathesis against each service; one count per service.
pub fn run(brokers: &str) -> Result<Counts> {
    println!("\n=== API fuzzing: schemathesis {VERSION} --checks all ===");
    let schemathesis = install()?;
    let bin_dir = stack::target_dir()?.join("debug");
    let work = tempfile::tempdir().context("creating a scratch directory")?;
    let prefix = format!("api-{}.", process::random_string(32, b"0123456789abcdef")?);
    let mut running = Vec::new();
    let started = (|| -> Result<()> {
        for name in SERVICES {
            running.push(start(&bin_dir, work.path(), brokers, &prefix, name)?);
        }
        for service in &mut running {
            service.wait_ready()?;
        }
        Ok(())
    })();
    let mut counts = Counts::default();
    if let Err(e) = started {
        eprintln!("API fuzzing: the services did not start: {e:#}");
        for service in &running {
            eprintln!(
                "--- last lines of {}:\n{}",
                service.name,
                process::tail(&service.log, 30)
            );
        }
        counts.failed += SERVICES.len() as u64;
    } else {
        for service in &running {
            if fuzz(&schemathesis, service, work.path())? {
                counts.passed += 1;
            } else {
                eprintln!("API fuzzing: {} failed (see above)", service.name);
                counts.failed += 1;
            }
        }
    }
    for service in &mut running {
        service.stop();
    }
    Ok(counts)
}

/// `<cache>/schemathesis/venv-<VERSION>/bin/schemathesis`, installed when missing (a marker
/// file says the install finished; an interrupted one is redone).
fn install() -> Result<PathBuf> {
    let venv = paths::cache_root()
        .join("schemathesis")
        .join(format!("venv-{VERSION}"));
    let program = venv.join("bin").join("schemathesis");
    let marker = venv.join("installed");
    if marker.is_file() && program.is_file() {
        return Ok(program);
    }
    let venv_works = Command::new("python3")
        .args(["-m", "venv", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !venv_works {
        apt::ensure(&["python3-venv"])?;
    }
    println!("installing schemathesis {VERSION} into {}", venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    process::run_visible(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .context("creating a Python virtualenv (python3 -m venv)")?;
    process::run_visible(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("schemathesis=={VERSION}")),
    )
    .context("installing schemathesis from PyPI")?;
    process::write_file(&marker, VERSION, 0o644)?;
    Ok(program)
}

/// A service started for the step.
struct Running {
    name: &'static str,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Running {
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stack::ready(self.port) {
            if self.child.try_wait()?.is_some() {
                bail!("{} exited before becoming ready", self.name);
            }
            if Instant::now() >= deadline {
                bail!("{} did not become ready within 120 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if process::terminate(self.child.id(), Duration::from_secs(20)) {
            eprintln!("{} did not stop within 20 s and was killed", self.name);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn start(
    bin_dir: &Path,
    work: &Path,
    brokers: &str,
    prefix: &str,
    name: &'static str,
) -> Result<Running> {
    let exe = bin_dir.join(name);
    if !exe.is_file() {
        bail!("{name} was not built ({} is missing)", exe.display());
    }
    let port = free_port()?;
    let log = work.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(exe)
        .current_dir(work)
        .env("PORT", port.to_string())
        .env("KAFKA_BROKERS", brokers)
        .env("KAFKA_TOPIC_PREFIX", prefix)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/{name}.db", work.display()),
        )
        .env("MAIL_DIR", work.join("mail"))
        .env("NO_COLOR", "1")
        .env_remove("API_KEYS")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Running {
        name,
        port,
        child,
        log,
    })
}

/// One schemathesis run; true when it passed.
fn fuzz(schemathesis: &Path, service: &Running, work: &Path) -> Result<bool> {
    println!("\n--- {} (http://127.0.0.1:{})", service.name, service.port);
    let config = paths::repo_root()
        .join("xtask")
        .join("schemathesis")
        .join(format!("{}.toml", service.name));
    let mut cmd = Command::new(schemathesis);
    cmd.arg("--config-file")
        .arg(config)
        .arg("--no-color")
        .arg("run")
        .arg(format!("http://127.0.0.1:{}/openapi.json", service.port))
        .args(["--checks", "all"])
        .args(["--seed", &SEED.to_string()])
        // One worker: Hypothesis's caches are not thread-safe (internal errors with two).
        .args(["--workers", "1"])
        .current_dir(work);
    let status = cmd
        .status()
        .with_context(|| format!("running {}", schemathesis.display()))?;
    Ok(status.success())
}
