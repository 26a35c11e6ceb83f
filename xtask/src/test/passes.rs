//! The passes: `cargo test` on SQLite and on PostgreSQL, and the deploy checks, each streamed
//! live and counted.

use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Result;

use super::report::{parse_pass, parse_plain_summary, PassReport, SUMMARY_PREFIXES};
use super::selection::{database_test_args, sqlite_args};
use super::tally::Tally;
use crate::counts::Counts;
use crate::postgres::{self, Postgres};
use crate::{paths, process};

/// Variables that change what a test does (rewrite the schemas, run a subset of the crash
/// points, move every consumer group to another protocol): every pass runs without them, so
/// the count means the whole suite as written.
const TEST_CHANGING_VARIABLES: [&str; 3] =
    ["UPDATE_SCHEMAS", "EMS_CRASH_POINTS", "KAFKA_GROUP_PROTOCOL"];

/// What every pass gets in its environment.
pub(super) struct PassEnv<'a> {
    /// The broker's `kafka.env` (`EMS_KAFKA_ENV`).
    pub(super) kafka_env: &'a Path,
    /// Where tests append summary lines (`EMS_SUMMARY_FILE`).
    pub(super) summary_file: &'a Path,
    /// The tests' temporary folder (`TMPDIR`).
    pub(super) temp_dir: &'a Path,
}

/// The SQLite pass: every test once, but those of
/// [`POSTGRES_ONLY_TESTS`](super::selection::POSTGRES_ONLY_TESTS).
pub(super) fn sqlite_pass(env: &PassEnv<'_>, tally: &mut Tally) -> Result<()> {
    let clock = Instant::now();
    let report = cargo_test_pass("SQLite", &sqlite_args(), env, None, None)?;
    tally.pass("SQLite", "SQLite pass (every test):", report, clock, "");
    Ok(())
}

/// The PostgreSQL pass: the database tests on the private cluster (started, cleaned and
/// stopped here when this run started it).
pub(super) fn postgres_pass(env: &PassEnv<'_>, tally: &mut Tally) -> Result<()> {
    let args = database_test_args()?;
    let clock = Instant::now();
    let pg = Postgres::locate()?;
    let ours = pg.start()?;
    // A cluster another run started may be in use: only ours is cleaned.
    let clean = |when: &str| match pg.drop_test_databases() {
        Ok(n) if n > 0 => println!("dropped {n} test databases ({when})"),
        Ok(_) => {}
        Err(e) => eprintln!("warning: test databases not dropped: {e:#}"),
    };
    if ours {
        clean("left by an earlier run");
    }
    let ca = pg.tls_ca();
    if ca.is_none() {
        println!("note: the test cluster has no TLS on: the db_tls tests skip");
    }
    let report = cargo_test_pass(
        "PostgreSQL",
        &args,
        env,
        Some(&postgres::url()),
        ca.as_deref(),
    );
    if ours {
        clean("this run's");
        process::warn(pg.stop());
    }
    let report = report?;
    // One column further than the other lines' counts, as it always was.
    let label = "PostgreSQL pass (database tests): ";
    let detail = format!(": {}", args.join(" "));
    tally.pass("PostgreSQL", label, report, clock, &detail);
    Ok(())
}

/// One `cargo test --workspace --no-fail-fast [args]` run (with `TEST_DATABASE_URL` and
/// `TEST_DATABASE_CA` when given), streamed live; then the binaries it ran and their counts.
fn cargo_test_pass(
    name: &str,
    args: &[String],
    env: &PassEnv<'_>,
    database_url: Option<&str>,
    database_ca: Option<&Path>,
) -> Result<PassReport> {
    println!(
        "\n=== {name} pass: cargo test --workspace {} ===",
        args.join(" ")
    );
    let mut cmd = paths::cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .env("EMS_KAFKA_ENV", env.kafka_env)
        .env("EMS_SUMMARY_FILE", env.summary_file)
        .env("TMPDIR", env.temp_dir)
        .env_remove("TEST_DATABASE_URL")
        .env_remove("TEST_DATABASE_CA");
    for variable in TEST_CHANGING_VARIABLES {
        cmd.env_remove(variable);
    }
    if let Some(url) = database_url {
        cmd.env("TEST_DATABASE_URL", url);
    }
    if let Some(ca) = database_ca {
        cmd.env("TEST_DATABASE_CA", ca);
    }
    if std::io::stdout().is_terminal() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    let (status, kept) = process::run_merged(&mut cmd, |l| {
        let l = process::strip_ansi(l);
        let l = l.trim_start();
        l.starts_with("Running ")
            || l.starts_with("Doc-tests ")
            || l.contains("test result:")
            || SUMMARY_PREFIXES.iter().any(|p| l.starts_with(p))
    })?;
    let mut report = parse_pass(&kept);
    println!("\n--- {name} pass ran:");
    for (binary, c) in &report.binaries {
        println!("    {binary:<50} {} passed, {} failed", c.passed, c.failed);
    }
    if !status.success() && report.total().failed == 0 {
        eprintln!(
            "{name} pass: cargo test failed ({status}) without a failing test (build error?)"
        );
        report.binaries.push((
            "(cargo test itself)".to_string(),
            Counts {
                passed: 0,
                failed: 1,
            },
        ));
    }
    Ok(report)
}

/// `bash deploy/tests/run.sh`, counting its own `N passed, M failed` line; its absence is a
/// failure.
pub(super) fn deploy_checks(script: &Path) -> Result<Counts> {
    println!("\n=== deploy checks: bash {} ===", script.display());
    let mut cmd = Command::new("bash");
    cmd.arg(script).current_dir(paths::repo_root());
    let (status, kept) = process::run_streaming(&mut cmd, |l| parse_plain_summary(l).is_some())?;
    let mut counts = match kept.last().and_then(|l| parse_plain_summary(l)) {
        Some(counts) => counts,
        None => {
            eprintln!("deploy checks printed no `N passed, M failed` line ({status})");
            Counts {
                passed: 0,
                failed: 1,
            }
        }
    };
    if !status.success() && counts.failed == 0 {
        eprintln!("deploy checks failed ({status})");
        counts.failed += 1;
    }
    Ok(counts)
}
