//! The report at the end of a run: each service's resources, the sweep's table, the chart, then
//! the machine-readable lines (`bench:`, `bench_unknown_accounts:`, `bench_database:`,
//! `bench_service:`, `bench_sweep:`, `bench_chart:`).

use crate::ceiling;
use crate::chart;
use crate::durability::Durability;
use crate::end_to_end::EndToEnd;
use crate::load::Latency;
use crate::paced::WithUnknown;
use crate::resources::Usage;
use crate::settings::Settings;
use crate::sweep;

/// Everything measured, for [`report`].
pub(crate) struct Figures {
    pub(crate) durability: Durability,
    pub(crate) ceiling: ceiling::Ceiling,
    pub(crate) e2e: EndToEnd,
    pub(crate) sweep: Vec<sweep::Point>,
    pub(crate) paced: Latency,
    pub(crate) unknown: WithUnknown,
    pub(crate) usage: Vec<Usage>,
}

/// Prints the resources, the sweep's table, draws the chart, then the machine-readable lines.
pub(crate) fn report(settings: &Settings, f: &Figures) {
    println!();
    for usage in &f.usage {
        println!("{}", usage.human());
    }
    println!(
        "\nlatency vs load (open loop, {} s each):",
        settings.paced_secs
    );
    print!("{}", sweep::table(&f.sweep));
    let title = format!(
        "request → outcome latency vs load: {}, durable={}, replicas={}, {} partitions",
        f.durability.database,
        f.durability.yes_no(),
        settings.replicas,
        settings.partitions
    );
    let chart = std::path::absolute(&settings.chart).unwrap_or_else(|_| settings.chart.clone());
    let drawn = chart::draw(&chart, &title, f.e2e.rate, &f.sweep);
    if let Err(e) = &drawn {
        eprintln!("warning: the chart was not drawn: {e:#}");
    }
    let ceiling_rate = f.ceiling.records_per_s();
    println!(
        "bench: database={} durable={} replicas={} e2e_transfers_per_s={:.0} http_req_per_s={:.0} p50_ms={:.1} p99_ms={:.1} paced_p99_ms={:.1} kafka_ceiling_records_per_s={ceiling_rate:.0} ratio={:.4}",
        f.durability.database,
        f.durability.yes_no(),
        settings.replicas,
        f.e2e.rate,
        f.e2e.http_rate,
        f.e2e.latency.p50,
        f.e2e.latency.p99,
        f.paced.p99,
        f.e2e.rate / ceiling_rate
    );
    println!(
        "bench_unknown_accounts: unknown={} paced_p99_ms={:.1} paced_p99_with_unknown_ms={:.1} paced_max_ms={:.1} paced_max_with_unknown_ms={:.1}",
        f.unknown.ghosts,
        f.paced.p99,
        f.unknown.latency.p99,
        f.paced.max,
        f.unknown.latency.max
    );
    println!(
        "bench_database: database={} durable={} {} partitions={}",
        f.durability.database,
        f.durability.yes_no(),
        f.durability.settings,
        settings.partitions
    );
    for usage in &f.usage {
        println!("{}", usage.line());
    }
    for point in &f.sweep {
        println!("{}", point.line());
    }
    if drawn.is_ok() {
        println!("bench_chart: {}", chart.display());
    }
}
