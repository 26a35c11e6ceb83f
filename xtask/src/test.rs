//! `cargo xtask test`: the README test command.
//!
//! Installs what is missing, starts the broker (and stops it at the end if it started it), then:
//! - the SQLite pass: `cargo test --workspace`, every test once (unit, integration, doc tests);
//! - the PostgreSQL pass, on a private cluster: only the integration-test targets that touch a
//!   database — every test target except those listed in [`NO_DATABASE_TESTS`] (so a new test
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

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::counts::Counts;
use crate::kafka::Kafka;
use crate::postgres::{self, Postgres};
use crate::{apt, paths, process};

/// Tests that touch no database, with why: they run in the SQLite pass only. Each is a whole
/// integration-test target (`"schemas"`) or a module of one (`"system/sasl_ssl"`: the tests
/// `sasl_ssl::…` of the target `system`, skipped by name in the PostgreSQL pass).
pub const NO_DATABASE_TESTS: &[(&str, &str)] = &[
    ("schemas", "contracts: JSON Schemas vs. the event types"),
    ("topics", "contracts: deploy/topics.txt vs. the topic table"),
    (
        "design",
        "contracts: docs/design.md's configuration table vs. the variables the code reads",
    ),
    (
        "integration/topic_configs",
        "platform: topic configs on the broker",
    ),
    (
        "integration/kafka",
        "platform: the Kafka client against the broker",
    ),
    (
        "integration/http_guards",
        "platform: the HTTP server's guards over sockets",
    ),
    (
        "system/sasl_ssl",
        "the Kafka transport; its services' database use is seed_flow's",
    ),
    (
        "system/console",
        "the console in a browser; its services' database use is seed_flow's",
    ),
    ("api/start_up", "the console (it has no database)"),
];

/// Tests that need PostgreSQL (several replicas on one database, or its transaction horizon),
/// by full name: the SQLite pass skips them, so they are counted in the pass where they run and
/// never as passed where they would return at once.
pub const POSTGRES_ONLY_TESTS: &[&str] = &[
    "relay_lease::on_postgres_a_row_waits_for_older_transactions_still_open",
    "relay_lease::on_postgres_a_holder_losing_its_lease_mid_round_leaves_the_rest_to_the_new_one",
    "replicas::opposing_transfers_on_two_replicas_conserve_money_and_all_complete",
    "backpressure::a_replica_that_accepted_nothing_sees_the_backlog_of_another",
    "replicas::three_replicas_lose_nothing_when_one_of_each_is_killed",
    "chaos::a_short_fixed_seed_chaos_run_loses_and_duplicates_nothing",
    "faults::postgres_restarted_under_load_loses_nothing_and_recovers_by_itself",
];

/// Tests of a fault only SQLite has (its file filling its disk), by full name: the PostgreSQL
/// pass skips them, so they are counted once, in the SQLite pass.
pub const SQLITE_ONLY_TESTS: &[&str] =
    &["faults::a_full_sqlite_disk_refuses_with_503_loses_nothing_and_recovers_by_itself"];

/// Variables that change what a test does (rewrite the schemas, run a subset of the crash
/// points): every pass runs without them, so the count means the whole suite.
const TEST_CHANGING_VARIABLES: [&str; 2] = ["UPDATE_SCHEMAS", "EMS_CRASH_POINTS"];

/// Prefixes of lines a test prints for the closing summary (also taken from the test output).
const SUMMARY_PREFIXES: [&str; 2] = ["sasl_ssl:", "crash points:"];

/// What one `cargo test` pass ran.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Each test binary (`<binary>: <what>`) and its counts, in run order.
    pub binaries: Vec<(String, Counts)>,
    /// Lines for the closing summary the output carried.
    pub summary_lines: Vec<String>,
}

impl PassReport {
    /// The counts over all binaries.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for (_, c) in &self.binaries {
            total += *c;
        }
        total
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

/// What the passes ran: a line each, the summary lines tests handed over, the counts.
#[derive(Default)]
struct Tally {
    /// One line per pass or step.
    lines: Vec<String>,
    /// Lines for the closing summary.
    summary_lines: Vec<String>,
    /// The counts over everything.
    total: Counts,
}

impl Tally {
    /// Runs a step that counts its own tests (API fuzzing, deploy checks) and records it as
    /// `<label>  N passed, M failed (S s)` (the counts aligned with the passes' lines).
    fn step(&mut self, label: &str, step: impl FnOnce() -> Result<Counts>) -> Result<()> {
        let clock = Instant::now();
        let c = step()?;
        self.lines.push(format!(
            "{label:<33}{} passed, {} failed ({} s)",
            c.passed,
            c.failed,
            clock.elapsed().as_secs()
        ));
        self.total += c;
        Ok(())
    }

    /// Records the `cargo test` pass `name` begun at `clock`: the line `<label>  N passed, M
    /// failed in B test binaries (S s<detail>)`, its summary lines and its counts.
    fn pass(&mut self, name: &str, label: &str, report: PassReport, clock: Instant, detail: &str) {
        let c = counted(name, &report);
        self.lines.push(format!(
            "{label:<33}{} passed, {} failed in {} test binaries ({} s{detail})",
            c.passed,
            c.failed,
            report.binaries.len(),
            clock.elapsed().as_secs()
        ));
        self.summary_lines.extend(report.summary_lines);
        self.total += c;
    }

    /// The closing lines: each pass, each distinct summary line, `N passed, M failed`.
    fn print(&self) {
        println!();
        for l in &self.lines {
            println!("{l}");
        }
        let mut seen = BTreeSet::new();
        for l in self.summary_lines.iter().map(|l| l.trim()) {
            if !l.is_empty() && seen.insert(l) {
                println!("{l}");
            }
        }
        println!("{} passed, {} failed", self.total.passed, self.total.failed);
    }
}

/// The SQLite pass: every test once, but those of [`POSTGRES_ONLY_TESTS`].
fn sqlite_pass(env: &PassEnv<'_>, tally: &mut Tally) -> Result<()> {
    let clock = Instant::now();
    let report = cargo_test_pass("SQLite", &sqlite_args(), env, None, None)?;
    tally.pass("SQLite", "SQLite pass (every test):", report, clock, "");
    Ok(())
}

/// The PostgreSQL pass: the database tests on the private cluster (started, cleaned and
/// stopped here when this run started it).
fn postgres_pass(env: &PassEnv<'_>, tally: &mut Tally) -> Result<()> {
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

/// What every pass gets in its environment.
struct PassEnv<'a> {
    /// The broker's `kafka.env` (`EMS_KAFKA_ENV`).
    kafka_env: &'a Path,
    /// Where tests append summary lines (`EMS_SUMMARY_FILE`).
    summary_file: &'a Path,
    /// The tests' temporary folder (`TMPDIR`).
    temp_dir: &'a Path,
}

/// The counts of a pass, with one failure added when it ran no test at all.
fn counted(name: &str, report: &PassReport) -> Counts {
    let mut c = report.total();
    if c.passed + c.failed == 0 {
        eprintln!("{name} pass: no test ran");
        c.failed += 1;
    }
    c
}

/// The `cargo test` arguments of the SQLite pass: the [`POSTGRES_ONLY_TESTS`] skipped by their
/// exact names.
pub fn sqlite_args() -> Vec<String> {
    let mut args = vec!["--".to_string(), "--exact".to_string()];
    for name in POSTGRES_ONLY_TESTS {
        args.extend(["--skip".to_string(), (*name).to_string()]);
    }
    args
}

/// The `cargo test` arguments of the PostgreSQL pass: `--test <target>` for every
/// integration-test target not declared database-free in [`NO_DATABASE_TESTS`], then
/// `-- --skip <module>::` for the database-free modules of those targets and `--skip <name>` for
/// the [`SQLITE_ONLY_TESTS`].
fn database_test_args() -> Result<Vec<String>> {
    let metadata = paths::cargo_metadata().context("listing the test targets")?;
    database_test_args_of(&test_targets(&metadata))
}

/// [`database_test_args`] for the workspace's test targets `all`.
pub fn database_test_args_of(all: &[String]) -> Result<Vec<String>> {
    let (mut args, mut skips) = (Vec::new(), Vec::new());
    for (entry, _) in NO_DATABASE_TESTS {
        let target = entry.split('/').next().unwrap_or(entry);
        if !all.iter().any(|t| t == target) {
            bail!("NO_DATABASE_TESTS names `{entry}`, but `{target}` is no test target of the workspace");
        }
        if let Some((_, module)) = entry.split_once('/') {
            skips.extend(["--skip".to_string(), format!("{module}::")]);
        }
    }
    for target in all {
        if !NO_DATABASE_TESTS.iter().any(|(entry, _)| entry == target) {
            args.extend(["--test".to_string(), target.clone()]);
        }
    }
    if args.is_empty() {
        bail!("no integration-test target touches a database");
    }
    for name in SQLITE_ONLY_TESTS {
        skips.extend(["--skip".to_string(), (*name).to_string()]);
    }
    args.push("--".to_string());
    args.extend(skips);
    Ok(args)
}

/// The names of the `test` targets (files under `tests/`) in `cargo metadata` output, sorted.
pub fn test_targets(metadata: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
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

/// Pairs cargo's `Running …` / `Doc-tests …` lines with the `test result:` line that follows
/// each; keeps the summary lines.
pub fn parse_pass(lines: &[String]) -> PassReport {
    let mut report = PassReport::default();
    let mut current: Option<String> = None;
    for line in lines {
        let line = process::strip_ansi(line);
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Running ") {
            // `unittests src/lib.rs (target/debug/deps/platform-0123abcd)`
            let (what, binary) = match rest.rsplit_once(" (") {
                Some((what, path)) => {
                    let file = path
                        .trim_end_matches(')')
                        .rsplit('/')
                        .next()
                        .unwrap_or(path);
                    let stem = file.rsplit_once('-').map_or(file, |(stem, _)| stem);
                    (what, stem.to_string())
                }
                None => (rest, String::new()),
            };
            current = Some(format!("{binary}: {what}"));
        } else if let Some(krate) = line.strip_prefix("Doc-tests ") {
            current = Some(format!("{krate}: doc tests"));
        } else if let Some(counts) = parse_test_result(line) {
            let label = current.take().unwrap_or_else(|| "(unnamed)".to_string());
            report.binaries.push((label, counts));
        } else if SUMMARY_PREFIXES.iter().any(|p| line.starts_with(p)) {
            report.summary_lines.push(line.to_string());
        }
    }
    report
}

/// `bash deploy/tests/run.sh`, counting its own `N passed, M failed` line; its absence is a
/// failure.
fn deploy_checks(script: &Path) -> Result<Counts> {
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
    fn the_closing_lines_keep_their_columns() {
        let report = || PassReport {
            binaries: vec![(
                "a: b".into(),
                Counts {
                    passed: 3,
                    failed: 0,
                },
            )],
            summary_lines: vec!["crash points: 2".into()],
        };
        let mut tally = Tally::default();
        tally.pass(
            "SQLite",
            "SQLite pass (every test):",
            report(),
            Instant::now(),
            "",
        );
        let label = "PostgreSQL pass (database tests): ";
        tally.pass("PostgreSQL", label, report(), Instant::now(), ": a, b");
        tally
            .step("deploy checks:", || {
                Ok(Counts {
                    passed: 1,
                    failed: 1,
                })
            })
            .unwrap();
        assert_eq!(
            tally.lines,
            [
                "SQLite pass (every test):        3 passed, 0 failed in 1 test binaries (0 s)",
                "PostgreSQL pass (database tests): 3 passed, 0 failed in 1 test binaries (0 s: a, b)",
                "deploy checks:                   1 passed, 1 failed (0 s)",
            ]
        );
        assert_eq!(tally.summary_lines.len(), 2);
        assert_eq!(
            tally.total,
            Counts {
                passed: 7,
                failed: 1
            }
        );
    }

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
    fn pairs_each_test_binary_with_its_result() {
        let lines: Vec<String> = [
            "\u{1b}[1m\u{1b}[92m     Running\u{1b}[0m unittests src/lib.rs (target/debug/deps/platform-0a1b2c)",
            "test result: ok. 36 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "     Running tests/kafka.rs (target/debug/deps/kafka-99ff)",
            "sasl_ssl: seed flow passed (PLAIN, SCRAM-SHA-512)",
            "test result: FAILED. 6 passed; 1 failed; 0 ignored",
            "   Doc-tests contracts",
            "test result: ok. 0 passed; 0 failed; 0 ignored",
        ]
        .map(String::from)
        .to_vec();
        let report = parse_pass(&lines);
        assert_eq!(
            report.binaries,
            vec![
                (
                    "platform: unittests src/lib.rs".to_string(),
                    Counts {
                        passed: 36,
                        failed: 0
                    }
                ),
                (
                    "kafka: tests/kafka.rs".to_string(),
                    Counts {
                        passed: 6,
                        failed: 1
                    }
                ),
                ("contracts: doc tests".to_string(), Counts::default()),
            ]
        );
        assert_eq!(
            report.total(),
            Counts {
                passed: 42,
                failed: 1
            }
        );
        assert_eq!(
            report.summary_lines,
            ["sasl_ssl: seed flow passed (PLAIN, SCRAM-SHA-512)"]
        );
    }

    #[test]
    fn a_pass_without_tests_is_a_failure() {
        let empty = PassReport::default();
        assert_eq!(
            counted("x", &empty),
            Counts {
                passed: 0,
                failed: 1
            }
        );
    }

    #[test]
    fn test_targets_come_from_cargo_metadata() {
        let metadata = serde_json::json!({"packages": [
            {"targets": [
                {"name": "platform", "kind": ["lib"]},
                {"name": "telemetry", "kind": ["test"]},
                {"name": "kafka", "kind": ["test"]},
            ]},
            {"targets": [{"name": "seed_flow", "kind": ["test"]}, {"name": "throughput", "kind": ["bin"]}]},
        ]});
        assert_eq!(test_targets(&metadata), ["kafka", "seed_flow", "telemetry"]);
    }

    #[test]
    fn the_postgres_pass_skips_the_database_free_targets_and_modules() {
        let all: Vec<String> = [
            "api",
            "design",
            "integration",
            "schemas",
            "system",
            "topics",
        ]
        .map(String::from)
        .to_vec();
        let args = database_test_args_of(&all).unwrap().join(" ");
        assert_eq!(
            args,
            "--test api --test integration --test system -- --skip topic_configs:: --skip kafka:: \
             --skip http_guards:: --skip sasl_ssl:: --skip console:: --skip start_up:: \
             --skip faults::a_full_sqlite_disk_refuses_with_503_loses_nothing_and_recovers_by_itself"
        );
        let no_system: Vec<String> = all.iter().filter(|t| *t != "system").cloned().collect();
        let without_system = database_test_args_of(&no_system).unwrap_err().to_string();
        assert!(
            without_system.contains("`system` is no test target"),
            "{without_system}"
        );
    }

    #[test]
    fn each_postgres_only_test_exists_and_the_sqlite_pass_skips_it_exactly() {
        let root = paths::repo_root();
        let sources: Vec<String> = ["crates", "services", "tests"]
            .iter()
            .flat_map(|dir| rust_files(&root.join(dir)))
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect();
        for name in POSTGRES_ONLY_TESTS.iter().chain(SQLITE_ONLY_TESTS) {
            let function = name.rsplit("::").next().unwrap_or(name);
            assert!(
                sources
                    .iter()
                    .any(|s| s.contains(&format!("async fn {function}()"))),
                "POSTGRES_ONLY_TESTS/SQLITE_ONLY_TESTS name `{name}`, which no test defines"
            );
        }
        let args = sqlite_args();
        assert_eq!(args[..2], ["--", "--exact"]);
        assert_eq!(args.len(), 2 + 2 * POSTGRES_ONLY_TESTS.len());
    }

    /// The `.rs` files under `dir`, recursively (build output aside).
    fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return files;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("target") {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
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
