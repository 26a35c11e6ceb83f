//! The short fixed-seed chaos run (the full one is `cargo xtask chaos`): three replicas of
//! transaction-service and notification-service and two of customer-service under load while
//! replicas are killed, paused past their session timeout and restarted. The broker and the
//! database are shared with other tests here, so their faults are left to `cargo xtask chaos`.
//! PostgreSQL only: a SQLite file belongs to one process.

use std::time::Duration;

use platform::testing::summary_line;
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
    let report = chaos::run(&ChaosSettings {
        seed: 7,
        duration: Duration::from_secs(45),
        controls: Controls::default(),
    })
    .await;
    summary_line(&report.line());
    assert!(report.faults > 0, "faults were injected");
    assert!(
        report.holds(),
        "{}\n{}",
        report.line(),
        report.log.join("\n")
    );
}
