//! `cargo xtask test`: the README test command.
//!
//! Installs what is missing, starts the broker (and stops it at the end if it started it), then:
//! - the SQLite pass: `cargo test --workspace`, every test once (unit, integration, doc tests);
//! - the PostgreSQL pass, on a private cluster: only the integration-test targets that touch a
//!   database — every test target except those listed in [`selection::NO_DATABASE_TESTS`] (so a new test
//!   file runs on both databases unless it is declared database-free);
//! - API fuzzing: schemathesis against the three services' OpenAPI documents (see
//!   [`crate::api_fuzz`]), one passed or failed test per service;
//! - the deploy checks (`deploy/tests/run.sh`) when present.
//!
//! Each pass prints what ran (test binaries and their counts); a pass that runs no test, or deploy
//! checks without their summary line, count as a failure. Lines tests hand to the summary
//! (`platform::testing::summary_line`, through the file `EMS_SUMMARY_FILE` names) are repeated
//! before the closing line `N passed, M failed` (over distinct tests: nothing runs twice on the
//! same database).

//!
//! Modules, by what they do: `selection` says which tests run in which pass; `passes` runs the
//! passes and the deploy checks; `report` reads their output; `tally` counts and prints.

mod passes;
mod report;
mod selection;
mod tally;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::counts::Counts;
use crate::kafka::Kafka;
use crate::{apt, paths, process};

use passes::{deploy_checks, postgres_pass, sqlite_pass, PassEnv};
use tally::Tally;

/// Runs everything; returns the process exit code (0 only when all passed).
pub fn run(sqlite_only: bool) -> Result<i32> {
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C reaches cargo (same process group) and ends it; we survive to clean up.
        let flag = Arc::clone(&interrupted);
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }
    let interrupted = || interrupted.load(Ordering::SeqCst);

    // shellcheck and promtool (Debian's `prometheus`) for the deploy checks.
    let mut packages = vec!["python3-aiosmtpd", "kcat", "shellcheck", "prometheus"];
    packages.extend(apt::BROWSER);
    if !sqlite_only {
        packages.push("postgresql");
    }
    apt::ensure_with_kafka(&packages)?;

    let kafka = Kafka::from_env()?;
    let started = kafka.start()?;
    let env_file = paths::absolute(started.env_file.clone());
    let summary_file = std::env::temp_dir().join(format!("ems-summary-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&summary_file);
    // The tests' temporary files (SQLite databases, mailboxes, logs) go to one folder per run,
    // removed at the end, so runs do not fill the disk.
    let temp_dir = std::env::temp_dir().join(format!("ems-test-run-{}", std::process::id()));
    std::fs::create_dir_all(&temp_dir)
        .with_context(|| format!("creating {}", temp_dir.display()))?;
    let env = PassEnv {
        kafka_env: &env_file,
        summary_file: &summary_file,
        temp_dir: &temp_dir,
    };

    let mut tally = Tally::default();
    let outcome = (|| -> Result<()> {
        sqlite_pass(&env, &mut tally)?;
        if !sqlite_only && !interrupted() {
            postgres_pass(&env, &mut tally)?;
        }
        if !interrupted() {
            tally.step("API fuzzing (schemathesis):", || {
                crate::api_fuzz::run(&kafka.ports().brokers())
            })?;
        }
        let script = paths::repo_root().join("deploy/tests/run.sh");
        if !interrupted() {
            tally.step("deploy checks:", || {
                if !script.is_file() {
                    eprintln!("deploy checks: {} is missing", script.display());
                    return Ok(Counts {
                        passed: 0,
                        failed: 1,
                    });
                }
                deploy_checks(&script)
            })?;
        }
        Ok(())
    })();

    clean_up(&kafka, started.already_running);
    if let Err(e) = &outcome {
        eprintln!("error: {e:#}");
        tally.total.failed += 1;
    }
    if interrupted() {
        eprintln!("interrupted");
        tally.total.failed += 1;
    }
    if let Ok(text) = std::fs::read_to_string(&summary_file) {
        tally.summary_lines.extend(text.lines().map(str::to_string));
    }
    let _ = std::fs::remove_file(&summary_file);
    if let Err(e) = std::fs::remove_dir_all(&temp_dir) {
        eprintln!("warning: {} not removed: {e}", temp_dir.display());
    }
    tally.print();
    Ok(if tally.total.failed == 0 { 0 } else { 1 })
}

/// Removes the tests' topics from the broker (unless `EMS_KEEP_TEST_TOPICS`), and stops the
/// broker unless it was running before.
fn clean_up(kafka: &Kafka, already_running: bool) {
    // EMS_KEEP_TEST_TOPICS=1: other test runs share the broker (their topics would go too).
    if std::env::var_os("EMS_KEEP_TEST_TOPICS").is_none() {
        match crate::kafka::delete_test_topics(&kafka.ports().brokers()) {
            Ok(n) => println!("removed {n} test topics from the local broker"),
            Err(e) => eprintln!("warning: test topics not removed: {e:#}"),
        }
    }
    if !already_running {
        process::warn(kafka.stop());
    }
}
