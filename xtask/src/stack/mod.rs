//! `cargo xtask up | down | demo`: the whole system on this machine.
//!
//! `up` builds the three services and the console, starts the broker (unless running), creates the
//! topics, starts the services with the embedded defaults (SQLite files under `./data`), waits for each
//! `GET /readyz`, prints the URLs and streams the logs until Ctrl-C. `--detach` returns once all
//! are healthy, leaving pids in `data/stack.state` and logs in `data/logs/` (rotated, see
//! [`crate::logs`]); `down` stops them. `EMS_STACK_PORT` moves the four ports (the first
//! service's, the others after it; default 3001-3004), `EMS_DATA_DIR` the data, and
//! `EMS_BIN_DIR` names binaries built elsewhere, which `up` then runs without building.
//!
//! Modules, by what they do: `services` names the services and builds the command of each;
//! `state` holds where the data goes and what a detached stack left; `attached` and `detached`
//! run the stack in the foreground or the background; `ready` waits for `/readyz`; `stop` stops
//! the services.

mod attached;
mod detached;
mod ready;
mod services;
mod state;
mod stop;

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::kafka::{self, Kafka};
use crate::paths;
use crate::process;

pub use ready::ready;
pub use services::{api_key_with, check_port_setting, SERVICES};
pub use state::{Setup, State};
pub use stop::stop_pids;

use attached::up_attached;
use detached::up_detached;
use ready::print_urls;
use state::{data_dir, state_file};

/// `cargo xtask up [--detach]`.
pub fn up(detach: bool) -> Result<()> {
    check_port_setting()?;
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
        if crate::postgres::accepting(s.port()) {
            bail!("port {} ({}) is already in use", s.port(), s.name);
        }
    }

    let bin_dir = match std::env::var_os("EMS_BIN_DIR") {
        // Binaries built elsewhere (the suite's own build): used as they are.
        Some(dir) => PathBuf::from(dir),
        None => {
            build()?;
            target_dir()?.join("debug")
        }
    };
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
