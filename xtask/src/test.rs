//! `cargo xtask test`: the README test command.
//!
//! Installs what is missing, starts the broker (and stops it at the end if it started it), runs
//! `cargo test --workspace` on SQLite, then again on a private PostgreSQL cluster, then the deploy
//! checks (`deploy/tests/run.sh`) when present, and prints one closing line `N passed, M failed`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use crate::kafka::Kafka;
use crate::postgres::{self, Postgres};
use crate::{apt, paths, process};

/// Passed and failed counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.passed += o.passed;
        self.failed += o.failed;
    }
}

/// Runs everything; returns the process exit code (0 only when all passed).
pub fn run(sqlite_only: bool) -> Result<i32> {
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C reaches cargo (same process group) and ends it; we survive to clean up.
        let flag = Arc::clone(&interrupted);
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }

    let mut packages = vec!["python3-aiosmtpd", "kcat", "shellcheck"];
    if !sqlite_only {
        packages.push("postgresql");
    }
    if !process::on_path("java") {
        packages.push("openjdk-17-jre-headless");
    }
    if !process::on_path("mvn") {
        packages.push("maven");
    }
    apt::ensure(&packages)?;

    let kafka = Kafka::from_env()?;
    let started = kafka.start()?;
    let env_file = paths::absolute(started.env_file.clone());

    let mut total = Counts::default();
    let mut lines = Vec::new();
    let outcome = (|| -> Result<()> {
        let c = cargo_test_pass("SQLite", &env_file, None)?;
        lines.push(format!(
            "SQLite pass:      {} passed, {} failed",
            c.passed, c.failed
        ));
        total += c;
        if !sqlite_only && !interrupted.load(Ordering::SeqCst) {
            let pg = Postgres::locate()?;
            let ours = pg.start()?;
            let c = cargo_test_pass("PostgreSQL", &env_file, Some(&postgres::url()));
            if ours {
                if let Err(e) = pg.stop() {
                    eprintln!("warning: {e:#}");
                }
            }
            let c = c?;
            lines.push(format!(
                "PostgreSQL pass:  {} passed, {} failed",
                c.passed, c.failed
            ));
            total += c;
        }
        let script = paths::repo_root().join("deploy/tests/run.sh");
        if script.is_file() && !interrupted.load(Ordering::SeqCst) {
            let c = deploy_checks(&script)?;
            lines.push(format!(
                "deploy checks:    {} passed, {} failed",
                c.passed, c.failed
            ));
            total += c;
        }
        Ok(())
    })();

    match crate::kafka::delete_test_topics(&kafka.ports().brokers()) {
        Ok(n) => println!("removed {n} test topics from the local broker"),
        Err(e) => eprintln!("warning: test topics not removed: {e:#}"),
    }
    if !started.already_running {
        if let Err(e) = kafka.stop() {
            eprintln!("warning: {e:#}");
        }
    }
    if let Err(e) = &outcome {
        eprintln!("error: {e:#}");
        total.failed += 1;
    }
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("interrupted");
        total.failed += 1;
    }
    println!();
    for l in &lines {
        println!("{l}");
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    Ok(if total.failed == 0 { 0 } else { 1 })
}

/// One `cargo test --workspace --no-fail-fast` run, streamed live.
fn cargo_test_pass(name: &str, env_file: &Path, database_url: Option<&str>) -> Result<Counts> {
    println!("\n=== {name} pass: cargo test --workspace ===");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(paths::repo_root())
        .env("EMS_KAFKA_ENV", env_file)
        .env_remove("TEST_DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("TEST_DATABASE_URL", url);
    }
    if std::io::stdout().is_terminal() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    let (status, kept) = process::run_streaming(&mut cmd, |l| l.contains("test result:"))?;
    let mut counts = Counts::default();
    for l in &kept {
        counts += parse_test_result(l).unwrap_or_default();
    }
    if !status.success() && counts.failed == 0 {
        eprintln!(
            "{name} pass: cargo test failed ({status}) without a failing test (build error?)"
        );
        counts.failed += 1;
    }
    Ok(counts)
}

/// `bash deploy/tests/run.sh`, counting its own `N passed, M failed` line when it prints one.
fn deploy_checks(script: &Path) -> Result<Counts> {
    println!("\n=== deploy checks: bash {} ===", script.display());
    let mut cmd = Command::new("bash");
    cmd.arg(script).current_dir(paths::repo_root());
    let (status, kept) = process::run_streaming(&mut cmd, |l| parse_plain_summary(l).is_some())?;
    let mut counts = kept
        .last()
        .and_then(|l| parse_plain_summary(l))
        .unwrap_or_default();
    if !status.success() && counts.failed == 0 {
        eprintln!("deploy checks failed ({status})");
        counts.failed += 1;
    }
    Ok(counts)
}

/// Parses libtest's `test result: ok. 3 passed; 1 failed; 0 ignored; ...`.
pub fn parse_test_result(line: &str) -> Option<Counts> {
    let rest = &line[line.find("test result:")? + "test result:".len()..];
    let mut counts = Counts::default();
    for part in rest.split([';', '.']) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(what)) = (words.next(), words.next()) {
            match (n.parse::<u64>(), what) {
                (Ok(n), "passed") => counts.passed = n,
                (Ok(n), "failed") => counts.failed = n,
                _ => {}
            }
        }
    }
    Some(counts)
}

/// Parses a plain closing line `N passed, M failed` (optionally `word: ` before it and
/// `, K skipped` after it).
pub fn parse_plain_summary(line: &str) -> Option<Counts> {
    let line = line.trim();
    let line = match line.split_once(": ") {
        Some((word, rest)) if !word.contains(' ') => rest,
        _ => line,
    };
    let mut parts = line.split(", ");
    let passed = parts.next()?.strip_suffix(" passed")?.parse().ok()?;
    let failed = parts.next()?.strip_suffix(" failed")?.parse().ok()?;
    match parts.next() {
        None => {}
        Some(p) if p.strip_suffix(" skipped")?.parse::<u64>().is_ok() => {}
        Some(_) => return None,
    }
    Some(Counts { passed, failed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_result_lines() {
        let c = parse_test_result(
            "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        assert_eq!(
            c,
            Some(Counts {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(
            parse_test_result("test result: ok. 0 passed; 0 failed; 0 ignored"),
            Some(Counts::default())
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn parses_plain_summary_lines() {
        assert_eq!(
            parse_plain_summary("12 passed, 0 failed"),
            Some(Counts {
                passed: 12,
                failed: 0
            })
        );
        assert_eq!(
            parse_plain_summary("deploy: 4 passed, 1 failed, 2 skipped"),
            Some(Counts {
                passed: 4,
                failed: 1
            })
        );
        assert_eq!(parse_plain_summary("all 4 passed, 1 failed"), None);
        assert_eq!(parse_plain_summary("nothing here"), None);
    }
}
