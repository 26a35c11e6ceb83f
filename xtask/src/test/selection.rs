//! Which tests run in which pass: the database-free targets and modules, the tests only one
//! database can run, and the `cargo test` arguments that follow from them.

use anyhow::{bail, Context, Result};

use crate::paths;

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
    (
        "dev_stack",
        "xtask up/demo/down on the embedded defaults: SQLite files of its own, whatever the pass",
    ),
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
pub(super) fn database_test_args() -> Result<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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
            "dev_stack",
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
}
