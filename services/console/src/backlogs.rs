//! The services' outbox backlogs, followed from outside: the `outbox_pending_rows` and
//! `outbox_oldest_pending_age_seconds` gauges of each service's `/metrics` (Prometheus text),
//! scraped every [`INTERVAL`]. A service that does not report them (or does not answer) shows
//! as unknown, never as an error. (The console has no outbox of its own: the outbox is
//! `platform::outbox`.)

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::{Console, OutboxBacklog};
use crate::upstream::Upstream;

/// How often the services' metrics are read.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Rows written to a service's outbox and not yet published.
pub const PENDING_ROWS: &str = "outbox_pending_rows";
/// Age in seconds of the oldest of those rows.
pub const OLDEST_PENDING_AGE: &str = "outbox_oldest_pending_age_seconds";

/// Reads the backlog of every service into `console` every [`INTERVAL`] until `shutdown`.
pub async fn run(upstream: Upstream, console: Console, shutdown: CancellationToken) {
    loop {
        let mut backlog = Vec::new();
        for (service, base) in upstream.services() {
            let text = match upstream.metrics(base).await {
                Ok(text) => text,
                Err(error) => {
                    tracing::debug!(%error, service, "metrics not read");
                    String::new()
                }
            };
            backlog.push(parse(service, &text));
        }
        console.backlogs(backlog);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// The backlog `service` reports in the Prometheus text `metrics`: the pending rows summed over
/// every series of the gauge, the oldest age the largest; `None` where the gauge is absent.
pub fn parse(service: &str, metrics: &str) -> OutboxBacklog {
    let values =
        |name: &str| -> Vec<f64> { metrics.lines().filter_map(|l| sample(l, name)).collect() };
    let pending = values(PENDING_ROWS);
    let ages = values(OLDEST_PENDING_AGE);
    OutboxBacklog {
        service: service.to_string(),
        pending_rows: (!pending.is_empty()).then(|| pending.iter().sum::<f64>().round() as i64),
        oldest_pending_age_seconds: ages.into_iter().reduce(f64::max),
    }
}

/// The value of a sample line of metric `name` (with or without labels), if it is one.
fn sample(line: &str, name: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix(name)?;
    let rest = if rest.starts_with('{') {
        &rest[rest.rfind('}')? + 1..]
    } else if rest.starts_with(char::is_whitespace) {
        rest
    } else {
        return None; // another metric whose name starts with this one
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_and_absent_ones_are_unknown() {
        let text = "# HELP outbox_pending_rows rows\n\
                    # TYPE outbox_pending_rows gauge\n\
                    outbox_pending_rows 12\n\
                    outbox_pending_rows_total 99\n\
                    outbox_oldest_pending_age_seconds 3.5\n\
                    outbox_published_total 7\n";
        let backlog = parse("customer-service", text);
        assert_eq!(backlog.service, "customer-service");
        assert_eq!(backlog.pending_rows, Some(12));
        assert_eq!(backlog.oldest_pending_age_seconds, Some(3.5));

        let none = parse(
            "console",
            "outbox_published_total 7\nhttp_requests_total 3\n",
        );
        assert_eq!(
            (none.pending_rows, none.oldest_pending_age_seconds),
            (None, None)
        );
        assert_eq!(parse("x", "").pending_rows, None);
    }

    #[test]
    fn labelled_series_are_summed_and_the_oldest_age_wins() {
        let text = "outbox_pending_rows{outbox=\"a b}\"} 2\n\
                    outbox_pending_rows{outbox=\"c\"} 3 1700000000000\n\
                    outbox_oldest_pending_age_seconds{outbox=\"a\"} 1\n\
                    outbox_oldest_pending_age_seconds{outbox=\"c\"} 8.25\n\
                    outbox_oldest_pending_age_seconds{outbox=\"d\"} NaN\n";
        let backlog = parse("transaction-service", text);
        assert_eq!(backlog.pending_rows, Some(5));
        assert_eq!(backlog.oldest_pending_age_seconds, Some(8.25));
    }
}
