//! The short fixed-seed chaos run (the full one is `cargo xtask chaos`): three replicas of
//! transaction-service and notification-service and two of customer-service under load while
//! replicas are killed, paused past their session timeout and restarted, and PostgreSQL is
//! restarted at least once: the services' databases are on a private cluster of the test's own
//! (`platform::testing::PrivateCluster`), not the shared test cluster. The broker is shared with
//! other tests here, so its faults are left to `cargo xtask chaos`. PostgreSQL only: a SQLite
//! file belongs to one process.

use std::time::Duration;

use platform::testing::{summary_line, PrivateCluster};
use system_tests::chaos::{self, ChaosSettings, Controls};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_fixed_seed_chaos_run_loses_and_duplicates_nothing() {
    let _turn = crate::exclusive().await;
    if !std::env::var("TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres")) {
        println!(
            "skipped: the chaos run needs replicas sharing a PostgreSQL database \
             (set TEST_DATABASE_URL)"
        );
        return;
    }
    let cluster = PrivateCluster::start()
        .await
        .expect("a private PostgreSQL cluster");
    let report = chaos::run(&ChaosSettings {
        seed: 7,
        duration: Duration::from_secs(45),
        controls: Controls {
            postgres_restart: Some(cluster.restart_command()),
            database_server: Some(cluster.url()),
            each_fault: true,
            ..Controls::default()
        },
    })
    .await;
    summary_line(&report.line());
    assert!(report.faults > 0, "faults were injected");
    assert!(
        report
            .log
            .iter()
            .any(|line| line.contains("PostgreSQL restarted")),
        "the database was restarted: {:?}",
        report.log
    );
    assert!(
        report.holds(),
        "{}\n{}",
        report.line(),
        report.log.join("\n")
    );
}
