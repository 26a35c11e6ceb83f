//! What the soak reads from each service, every sample: resident memory and open file
//! descriptors (`/proc`), database connections and consumer lag (`/metrics`), the database's
//! bytes outside and inside the ledger (the SQLite file and `dbstat`, through `sqlite3`); and
//! the disk used by the mail folder and the logs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One service's figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// Resident memory (`VmRSS`), KiB.
    pub rss_kib: f64,
    /// Open file descriptors.
    pub fds: f64,
    /// Database connections open (idle and in use).
    pub db_connections: f64,
    /// Database file (with its WAL) minus the ledger's pages, bytes.
    pub db_outside_ledger: f64,
    /// The ledger's pages (`transactions`, `entries` and their indexes), bytes.
    pub ledger: f64,
    /// Consumer lag summed over the service's partitions (records).
    pub lag: f64,
    /// Rows (and mail files) the pruner removed so far.
    pub pruned: f64,
}

impl Figures {
    /// Reads service process `pid`, serving on `port`, with its database in `db` (SQLite).
    pub fn read(pid: u32, port: u16, db: &Path) -> Self {
        let metrics = metrics(port).unwrap_or_default();
        let (outside, ledger) = database(db).unwrap_or_default();
        Self {
            rss_kib: rss_kib(pid).unwrap_or(f64::NAN),
            fds: fds(pid).unwrap_or(f64::NAN),
            db_connections: sum(&metrics, "db_pool_connections"),
            db_outside_ledger: outside,
            ledger,
            lag: sum(&metrics, "kafka_consumer_lag"),
            pruned: sum(&metrics, "retention_pruned_rows_total"),
        }
    }
}

/// `VmRSS` of `pid`, KiB.
fn rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> Option<f64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64)
}

/// The Prometheus text of the service on `port`.
fn metrics(port: u16) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}

/// The sum of every sample of metric `name` in `text`.
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |total, value| total + value)
}

/// The ledger's tables and their indexes, as `dbstat` names them through `sqlite_schema`.
const LEDGER_BYTES: &str = "SELECT COALESCE(SUM(d.pgsize), 0) FROM dbstat d \
    JOIN sqlite_schema s ON s.name = d.name WHERE s.tbl_name IN ('transactions', 'entries')";

/// (bytes outside the ledger, the ledger's bytes) of the SQLite database `db`: its file and WAL,
/// the ledger's pages counted by `dbstat`.
fn database(db: &Path) -> Option<(f64, f64)> {
    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len() as f64)
            .unwrap_or(0.0)
    };
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let total = size(db) + size(Path::new(&wal));
    let output = Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg(LEDGER_BYTES)
        .output()
        .ok()?;
    let ledger: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    Some(((total - ledger).max(0.0), ledger))
}

/// (bytes, files) of the files directly in `dir`.
pub fn usage(dir: &Path) -> (f64, f64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0.0, 0.0);
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .fold((0.0, 0.0), |(bytes, files), m| {
            (bytes + m.len() as f64, files + 1.0)
        })
}

/// The least-squares slope of `points` (seconds, value), per hour; 0 with fewer than 2 points.
pub fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let points: Vec<&(f64, f64)> = points.iter().filter(|(_, v)| v.is_finite()).collect();
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = points.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mean_v = points.iter().map(|(_, v)| v).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, v) in points {
        num += (t - mean_t) * (v - mean_v);
        den += (t - mean_t).powi(2);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 3600.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_and_metric_sums() {
        let flat = [(0.0, 5.0), (60.0, 5.0), (120.0, 5.0)];
        assert_eq!(slope_per_hour(&flat), 0.0);
        let growing = [(0.0, 0.0), (1800.0, 50.0), (3600.0, 100.0)];
        assert!((slope_per_hour(&growing) - 100.0).abs() < 1e-9);
        assert_eq!(slope_per_hour(&[(0.0, 1.0)]), 0.0);
        let text = "# HELP x\ndb_pool_connections{state=\"idle\"} 3\n\
                    db_pool_connections{state=\"in_use\"} 1\ndb_pool_connections_max 9\n";
        assert_eq!(sum(text, "db_pool_connections"), 4.0);
    }
}
