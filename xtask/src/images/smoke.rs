//! `cargo xtask images --smoke`: the four images run as containers (host networking) against the
//! local Kafka broker, with customer- and transaction-service on the PostgreSQL test cluster and
//! notification-service on SQLite in a named volume. Checks: each health check turns healthy,
//! each runs as non-root, the seed flow passes, a notification-service restarted on the same
//! volume still has its deliveries, and `docker stop` (SIGTERM) ends each within 10 s, exit 0.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::engine::{docker, docker_ok, docker_out};
use super::service::{wait_until, Service};
use crate::demo::{self, Endpoints};
use crate::kafka::{self, Kafka};
use crate::postgres::{self, Postgres};
use crate::process;

/// Smoke containers listen on their default port plus this (clear of a running `cargo xtask up`).
const PORT_OFFSET: u16 = 10_000;
/// The notification-service's data volume (its SQLite file and mail folder).
const VOLUME: &str = "ems-smoke-notification-data";
/// How long `docker stop` may take; it sends SIGKILL after it (exit code 137).
const STOP_GRACE_SECS: u64 = 10;

/// The running smoke containers; removed (with the volume) on drop, pass or fail.
struct Containers {
    names: Vec<String>,
}

impl Containers {
    fn remove(&self) {
        for name in &self.names {
            let _ = docker_ok(&["rm", "-f", name]);
        }
        let _ = docker_ok(&["volume", "rm", "-f", VOLUME]);
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs the smoke test and prints its summary line.
pub fn run(services: &[Service]) -> Result<()> {
    println!("\nimages smoke: containers against the local broker and PostgreSQL");
    let broker = Kafka::from_env()?;
    broker.start()?;
    let brokers = broker.ports().brokers();
    let pg = Postgres::locate()?;
    pg.start()?;
    let databases = ["ems_images_customer", "ems_images_transaction"];
    for db in databases {
        pg.psql(&[
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            &format!("CREATE DATABASE {db}"),
        ])?;
    }
    let hex = process::random_string(32, b"0123456789abcdef")?;
    let prefix = format!("t-{hex}.");
    let names: Vec<String> = services.iter().map(container).collect();
    let running = Containers {
        names: names.clone(),
    };
    running.remove(); // leftovers of an interrupted run
    if !docker_ok(&["volume", "create", VOLUME]) {
        bail!("docker volume create {VOLUME} failed");
    }
    let result = checks(services, &brokers, &prefix);
    if result.is_err() {
        for name in &names {
            let logs = process::run_quiet(docker().args(["logs", "--tail", "15", name]))
                .unwrap_or_default();
            eprintln!("--- docker logs --tail 15 {name}\n{}", logs.trim_end());
        }
    }
    drop(running);
    if std::env::var_os("EMS_KEEP_TEST_TOPICS").is_none() {
        let _ = kafka::delete_topics_with_prefix(&brokers, &prefix);
    }
    let summary = result?;
    println!("{summary}");
    Ok(())
}

/// Everything after the containers' names are reserved; returns the summary line.
fn checks(services: &[Service], brokers: &str, prefix: &str) -> Result<String> {
    for service in services {
        start(service, brokers, prefix)?;
    }
    let mut nonroot = 0;
    for service in services {
        wait_healthy(&container(service))?;
        let uid = docker_out(&["exec", &container(service), "id", "-u"])?;
        if uid == "0" {
            bail!("{} runs as root", container(service));
        }
        nonroot += 1;
    }
    println!("   {} containers healthy, none as root", services.len());

    let port = |name: &str| -> Result<u16> {
        services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.port + PORT_OFFSET)
            .with_context(|| format!("no {name} in deploy/services.txt"))
    };
    let at = Endpoints::local(
        port("customer-service")?,
        port("transaction-service")?,
        port("notification-service")?,
    );
    let outcome = demo::flow(&at, false)?;
    println!(
        "   seed flow passed ({} notifications)",
        outcome.notifications
    );

    // The notification-service again, on the same volume: its deliveries are still there.
    let notifications = services
        .iter()
        .find(|s| s.name == "notification-service")
        .context("no notification-service in deploy/services.txt")?;
    let customer = &outcome.customers[0];
    let before = delivery_ids(&at, customer)?;
    let mut stop_secs = vec![stop(&container(notifications))?];
    docker_out(&["rm", &container(notifications)])?;
    start(notifications, brokers, prefix)?;
    wait_healthy(&container(notifications))?;
    let after = delivery_ids(&at, customer)?;
    if before.is_empty() || !before.is_subset(&after) {
        bail!("after a restart on {VOLUME}, {customer}'s deliveries {before:?} became {after:?}");
    }
    println!(
        "   notification-service restarted on volume {VOLUME}: {customer}'s {} deliveries kept",
        before.len()
    );

    for service in services {
        stop_secs.push(stop(&container(service))?);
    }
    let max = stop_secs.iter().copied().fold(0.0, f64::max);
    Ok(format!(
        "images smoke: {} images, seed flow passed, healthy={} nonroot={nonroot} \
         sigterm_max_s={max:.1} data_kept=yes",
        services.len(),
        services.len(),
    ))
}

/// The smoke container of a service.
fn container(service: &Service) -> String {
    format!("ems-smoke-{}", service.name)
}

/// `docker run -d` of a service's image with host networking on its smoke port.
fn start(service: &Service, brokers: &str, prefix: &str) -> Result<()> {
    let port = service.port + PORT_OFFSET;
    let mut env = vec![
        format!("PORT={port}"),
        format!("KAFKA_BROKERS={brokers}"),
        format!("KAFKA_TOPIC_PREFIX={prefix}"),
        "KAFKA_TOPIC_PARTITIONS=1".to_string(),
        // Host networking and no API keys: the host's loopback only (the image's 0.0.0.0 would be
        // refused without keys).
        "BIND_ADDRESS=127.0.0.1".to_string(),
    ];
    let mut volume = None;
    let pg = |db: &str| {
        format!(
            "DATABASE_URL=postgres://postgres@127.0.0.1:{}/{db}",
            postgres::PORT
        )
    };
    match service.name.as_str() {
        "customer-service" => env.push(pg("ems_images_customer")),
        "transaction-service" => env.push(pg("ems_images_transaction")),
        "notification-service" => {
            env.push("DATABASE_URL=sqlite:///app/data/notification.db".into());
            env.push("MAIL_DIR=/app/data/mail".into());
            volume = Some(format!("{VOLUME}:/app/data"));
        }
        "console" => {
            for (var, base) in [
                ("CUSTOMER_SERVICE_URL", 3001),
                ("TRANSACTION_SERVICE_URL", 3002),
                ("NOTIFICATION_SERVICE_URL", 3003),
            ] {
                env.push(format!("{var}=http://127.0.0.1:{}", base + PORT_OFFSET));
            }
        }
        _ => {}
    }
    let mut cmd = docker();
    cmd.args([
        "run",
        "-d",
        "--name",
        &container(service),
        "--network",
        "host",
    ]);
    for e in &env {
        cmd.args(["-e", e]);
    }
    if let Some(v) = &volume {
        cmd.args(["-v", v]);
    }
    cmd.arg(service.image());
    process::run_quiet(&mut cmd)?;
    Ok(())
}

/// Waits for the image's HEALTHCHECK to report healthy (fails early when the container exits).
pub(super) fn wait_healthy(name: &str) -> Result<()> {
    wait_until(
        &format!("{name} to turn healthy"),
        Duration::from_secs(120),
        || {
            let state = docker_out(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                name,
            ])?;
            if !state.starts_with("running") {
                bail!("{name} is {state}");
            }
            Ok(state.ends_with(" healthy"))
        },
    )
}

/// `docker stop` (SIGTERM, SIGKILL after [`STOP_GRACE_SECS`]); fails unless the container
/// exited 0 within the grace. Returns the seconds it took.
fn stop(name: &str) -> Result<f64> {
    let started = Instant::now();
    docker_out(&["stop", "-t", &STOP_GRACE_SECS.to_string(), name])?;
    let secs = started.elapsed().as_secs_f64();
    let code = docker_out(&["inspect", "-f", "{{.State.ExitCode}}", name])?;
    if code != "0" || secs >= STOP_GRACE_SECS as f64 {
        bail!("{name}: docker stop took {secs:.1} s, exit code {code} (expected 0 within {STOP_GRACE_SECS} s)");
    }
    Ok(secs)
}

/// The ids of a customer's deliveries.
fn delivery_ids(at: &Endpoints, customer: &str) -> Result<BTreeSet<String>> {
    let url = format!("{}/notifications?customerId={customer}", at.notifications);
    let body = ureq::get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .read_to_string()?;
    let v: Value = serde_json::from_str(&body).with_context(|| format!("GET {url}: {body}"))?;
    Ok(v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|n| n["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
