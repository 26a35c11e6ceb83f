//! `cargo xtask soak [--minutes N] [--rate N]`: steady load on the dev stack (`up --detach`, the
//! debug binaries, SQLite, the default mail folder, rotated logs) with the retention windows
//! shortened to minutes, so that every pruner runs many times; then what grew and what levelled
//! off, per service (`soak_service:` lines) and for the whole (`soak:`). A measurement, not a
//! test: RELIABILITY.md ("Soak") records a run.
//!
//! The stack runs in `data/soak` (deleted first and at the end) with its own topic prefix, on
//! the usual ports 3001-3004 (which must be free). Slopes are least-squares fits per hour over
//! the steady part of the run (from [`STEADY_FROM`], once every window has passed and its
//! pruner has run), the growth by design (the ledger) per 1,000 transfers.

mod load;
mod sample;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::demo::Endpoints;
use crate::logs::Limits;
use crate::stack::{self, Setup, State};
use crate::{kafka, paths, process};
use load::Counts;
use sample::{slope_per_hour, usage, Figures};

/// The services measured, with their ports.
const SERVICES: [(&str, u16); 3] = [
    ("customer-service", 3001),
    ("transaction-service", 3002),
    ("notification-service", 3003),
];
/// How often the services are sampled.
const EVERY: Duration = Duration::from_secs(30);
/// The shortened windows: inbox keys, bodies, delivery rows (s), the pruner's period (s).
const INBOX_SECS: u64 = 180;
const BODY_SECS: u64 = 120;
const ROWS_SECS: u64 = 300;
const PRUNE_EVERY_SECS: u64 = 30;
/// Mail files kept.
const MAIL_KEEP: u64 = 3_000;
/// Log limits: 4 MiB per file, 2 rotated files per service.
const LOGS: Limits = Limits {
    max_bytes: 4 * 1024 * 1024,
    keep: 2,
};
/// When the steady part of the run starts: the longest window and two pruning rounds later.
const STEADY_FROM: Duration = Duration::from_secs(ROWS_SECS + 2 * PRUNE_EVERY_SECS);

/// Everything sampled at one moment.
#[derive(Debug, Clone)]
struct Sample {
    /// Seconds since the load started.
    at: f64,
    /// Per service.
    services: BTreeMap<&'static str, Figures>,
    /// (bytes, files) of the mail folder.
    mail: (f64, f64),
    /// (bytes, files) of the log folder.
    logs: (f64, f64),
}

/// Runs the soak for `minutes` at `rate` transfers per second.
pub fn run(minutes: u64, rate: u32) -> Result<()> {
    let data = paths::repo_root().join("data").join("soak");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let prefix = format!(
        "soak-{}-",
        process::random_string(6, b"abcdefghijklmnopqrstuvwxyz0123456789")?
    );
    let setup = Setup {
        env: environment(&data, &prefix),
        data: data.clone(),
        logs: LOGS,
    };
    println!(
        "soak: {minutes} min at {rate} transfers/s; windows: inbox {INBOX_SECS} s, body \
         {BODY_SECS} s, delivery rows {ROWS_SECS} s, pruned every {PRUNE_EVERY_SECS} s, \
         {MAIL_KEEP} mail files, logs {} MiB x {}",
        LOGS.max_bytes / 1024 / 1024,
        LOGS.keep + 1
    );
    let state = stack::up_with(&setup, true)?;
    let outcome = measure(&setup, &state, Duration::from_secs(minutes * 60), rate);
    stack::stop_pids(&state.services);
    let broker = kafka::Kafka::from_env()?;
    if state.broker_started {
        process::warn(broker.stop());
    } else {
        process::warn(
            kafka::delete_topics_with_prefix(&broker.ports().brokers(), &prefix).map(|_| ()),
        );
    }
    let _ = std::fs::remove_dir_all(&data);
    outcome
}

/// The services' environment: the shortened windows, the mail folder, the topic prefix.
fn environment(data: &std::path::Path, prefix: &str) -> Vec<(String, String)> {
    [
        ("INBOX_RETENTION_SECS", INBOX_SECS.to_string()),
        ("DELIVERY_BODY_RETENTION_SECS", BODY_SECS.to_string()),
        ("DELIVERY_RETENTION_SECS", ROWS_SECS.to_string()),
        ("RETENTION_PRUNE_EVERY_SECS", PRUNE_EVERY_SECS.to_string()),
        ("MAIL_KEEP_FILES", MAIL_KEEP.to_string()),
        ("MAIL_DIR", data.join("mail").display().to_string()),
        ("KAFKA_TOPIC_PREFIX", prefix.to_string()),
        ("RUST_LOG", "info".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Loads the stack for `length`, sampling it; prints the figures.
fn measure(setup: &Setup, state: &State, length: Duration, rate: u32) -> Result<()> {
    let at = Endpoints::local(3001, 3002, 3003);
    let ids = Arc::new(load::customers(&at, "soak")?);
    let (counts, stop) = (
        Arc::new(Counts::default()),
        Arc::new(AtomicBool::new(false)),
    );
    let started = Instant::now();
    let threads = load::transfers(&at, ids, rate, Arc::clone(&counts), Arc::clone(&stop));
    let mut samples = vec![take(setup, state, started)];
    while started.elapsed() < length {
        thread::sleep(EVERY.min(length.saturating_sub(started.elapsed())));
        samples.push(take(setup, state, started));
        if let Some(last) = samples.last() {
            println!("{}", progress(last, &counts));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    report(&samples, &counts, length, rate);
    Ok(())
}

/// Samples every service, the mail folder and the logs.
fn take(setup: &Setup, state: &State, started: Instant) -> Sample {
    let services = SERVICES
        .iter()
        .filter_map(|(name, port)| {
            let pid = state.services.iter().find(|(n, _)| n == name)?.1;
            let db = setup.data.join(format!("{name}.db"));
            Some((*name, Figures::read(pid, *port, &db)))
        })
        .collect();
    Sample {
        at: started.elapsed().as_secs_f64(),
        services,
        mail: usage(&setup.data.join("mail")),
        logs: usage(&setup.data.join("logs")),
    }
}

fn progress(s: &Sample, counts: &Counts) -> String {
    let db: f64 = s.services.values().map(|f| f.db_outside_ledger).sum();
    format!(
        "  {:>5.0} s: {} transfers accepted, databases outside the ledger {:.1} MiB, mail {} \
         files, logs {:.1} MiB",
        s.at,
        counts.accepted.load(Ordering::Relaxed),
        db / 1048576.0,
        s.mail.1,
        s.logs.0 / 1048576.0
    )
}

const MIB: f64 = 1024.0 * 1024.0;

/// Prints the `soak_service:` and `soak:` lines.
fn report(samples: &[Sample], counts: &Counts, length: Duration, rate: u32) {
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= STEADY_FROM.as_secs_f64())
        .collect();
    let series = |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        steady.iter().map(|s| (s.at, f(s))).collect()
    };
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return;
    };
    for (name, _) in SERVICES {
        let get = |s: &Sample, f: fn(&Figures) -> f64| s.services.get(name).map_or(f64::NAN, f);
        let metric = |label: &str, scale: f64, f: fn(&Figures) -> f64| {
            let slope = slope_per_hour(&series(&|s| get(s, f) / scale));
            format!(
                "{label}={:.1}->{:.1} {label}_per_h={slope:+.1}",
                get(first, f) / scale,
                get(last, f) / scale
            )
        };
        println!(
            "soak_service: name={name} {} {} {} {} pruned={:.0} lag_end={:.0}",
            metric("rss_mib", 1024.0, |f| f.rss_kib),
            metric("fds", 1.0, |f| f.fds),
            metric("db_connections", 1.0, |f| f.db_connections),
            metric("db_outside_ledger_mib", MIB, |f| f.db_outside_ledger),
            get(last, |f| f.pruned),
            get(last, |f| f.lag),
        );
    }
    let accepted = counts.accepted.load(Ordering::Relaxed) as f64;
    let ledger = last
        .services
        .get("transaction-service")
        .map_or(0.0, |f| f.ledger);
    let lag: f64 = last.services.values().map(|f| f.lag).sum();
    println!(
        "soak: minutes={} rate={rate} transfers={accepted:.0} refused={} \
         ledger_bytes_per_1k_transfers={:.0} mail_mib={:.1} mail_files={:.0} \
         mail_mib_per_h={:+.1} logs_mib={:.1} logs_mib_per_h={:+.1} lag_end={lag:.0} \
         steady_from_s={}",
        length.as_secs() / 60,
        counts.refused.load(Ordering::Relaxed),
        ledger * 1000.0 / accepted.max(1.0),
        last.mail.0 / MIB,
        last.mail.1,
        slope_per_hour(&series(&|s| s.mail.0 / MIB)),
        last.logs.0 / MIB,
        slope_per_hour(&series(&|s| s.logs.0 / MIB)),
        STEADY_FROM.as_secs()
    );
}
