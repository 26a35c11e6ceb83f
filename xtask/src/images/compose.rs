//! `cargo xtask images --compose-smoke`: `docker compose up --build` of docker-compose.yml, the
//! seed flow against it, then `docker compose down -v`. Where the bases were made locally (no
//! registry), deploy/compose/local-images.yml swaps the images the file pulls (Kafka, PostgreSQL,
//! the mail catcher) for stand-ins built from deploy/docker/local/, and moves the host ports out
//! of the way; service names, health checks, start order and topic creation stay the file's.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::build::{ca_secret, docker_build, Bases, LOCAL_DEBIAN};
use super::engine::{self, docker};
use super::smoke::wait_healthy;
use crate::demo::{self, Endpoints};
use crate::kafka::Kafka;
use crate::{paths, process};

/// The compose project of the smoke run.
const PROJECT: &str = "ems-compose-smoke";
/// The services that must turn healthy.
const APPS: [&str; 4] = [
    "customer-service",
    "transaction-service",
    "notification-service",
    "console",
];

/// Brings the project down (volumes too) on drop.
struct Up {
    files: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Up {
    fn down(&self) -> Result<()> {
        process::run_quiet(compose(&self.files, &self.env).args([
            "down",
            "-v",
            "--remove-orphans",
        ]))?;
        Ok(())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// Runs the compose smoke test.
pub fn run(bases: &Bases) -> Result<()> {
    println!("\ncompose smoke: docker compose up --build of docker-compose.yml");
    let started = Instant::now();
    let mut files = vec!["docker-compose.yml".to_string()];
    let mut env = Vec::new();
    let ports = if bases.local {
        stand_ins()?;
        files.push("deploy/compose/local-images.yml".into());
        env = vec![
            ("EMS_RUST_IMAGE", bases.rust.clone()),
            ("EMS_RUNTIME_IMAGE", bases.runtime.clone()),
        ];
        (23001, 23002, 23003)
    } else {
        (3001, 3002, 3003)
    };
    let up = Up {
        files: files.clone(),
        env: env.clone(),
    };
    let _ = up.down(); // leftovers of an interrupted run
    let log = engine::dir().join("compose-up.log");
    let out = fs::File::create(&log)?;
    let status = compose(&files, &env)
        .args(["--progress", "plain", "up", "-d", "--build"])
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()?;
    if !status.success() {
        bail!(
            "docker compose up failed; the end of {}:\n{}",
            log.display(),
            process::tail(&log, 40)
        );
    }
    for app in APPS {
        if let Err(e) = wait_healthy(&format!("{PROJECT}-{app}-1")) {
            let logs = process::run_quiet(compose(&files, &env).args(["logs", "--tail", "30"]))
                .unwrap_or_default();
            eprintln!("{logs}");
            return Err(e);
        }
    }
    println!(
        "   every service healthy {:.0} s after `up` started",
        started.elapsed().as_secs_f64()
    );
    let outcome = demo::flow(&Endpoints::local(ports.0, ports.1, ports.2), false)?;
    up.down()?;
    println!(
        "compose smoke: {} services up, seed flow passed ({} notifications), torn down",
        APPS.len(),
        outcome.notifications
    );
    Ok(())
}

/// `docker compose -p <project> -f … <env>`, run from the repository root.
fn compose(files: &[String], env: &[(&'static str, String)]) -> Command {
    let mut cmd = docker();
    cmd.current_dir(paths::repo_root())
        .args(["compose", "-p", PROJECT]);
    for f in files {
        cmd.args(["-f", f]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Builds the stand-ins of deploy/docker/local/{kafka,postgres,smtp} on the local Debian base.
fn stand_ins() -> Result<()> {
    let local = paths::repo_root().join("deploy/docker/local");
    let kafka = Kafka::from_env()?;
    if !kafka.lib().join("kafka-tools-4.4.0.jar").is_file() {
        kafka.start()?; // fetches the jars (Maven) on first use
    }
    let context = engine::dir().join("kafka-context");
    stage_kafka_context(&local.join("kafka"), &kafka.lib(), &context)?;
    for (name, tag, dir) in [
        ("kafka", "ems-local/kafka:4.4.0", context.as_path()),
        ("postgres", "ems-local/postgres:15", &local.join("postgres")),
        (
            "smtp",
            "ems-local/smtp-catcher:bookworm",
            &local.join("smtp"),
        ),
    ] {
        let started = Instant::now();
        let mut cmd = docker();
        cmd.args([
            "build",
            "--build-arg",
            &format!("BASE_IMAGE={LOCAL_DEBIAN}"),
            "-t",
            tag,
        ])
        .args(ca_secret())
        .arg(dir);
        docker_build(cmd, &format!("stand-in-{name}"))?;
        println!(
            "   stand-in {tag}: ready in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The Kafka stand-in's build context: deploy/docker/local/kafka plus the jars as libs/.
fn stage_kafka_context(template: &Path, lib: &Path, context: &Path) -> Result<()> {
    if context.exists() {
        fs::remove_dir_all(context)?;
    }
    copy_tree(template, context)?;
    let libs = context.join("libs");
    fs::create_dir_all(&libs)?;
    for entry in fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jar") {
            let target = libs.join(path.file_name().context("jar name")?);
            if fs::hard_link(&path, &target).is_err() {
                fs::copy(&path, &target)?;
            }
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
