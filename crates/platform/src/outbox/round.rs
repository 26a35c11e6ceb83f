//! One relay round under a lease term: the rows committed after the cursor go to the producer,
//! the round waits briefly for their acknowledgements (or for new rows to be committed), and
//! what was acknowledged goes to the [`Sweep`] to be deleted off the relay's path.

use std::time::Duration;

use contracts::envelope::headers;
use tokio::sync::Notify;

use super::in_flight::InFlight;
use super::lease::Term;
use super::rows::{next_rows, Gate, Unsent};
use super::sweep::{Sweep, SweepError};
use crate::foundation::telemetry;
use crate::kafka::{OutgoingRecord, Producer};
use crate::store::db::Database;

/// Rows read per round.
const BATCH: i64 = 1000;
/// How long a round waits for its own deliveries: a delivery still pending then (its partition's
/// leader died or hangs) stays in flight while the next rounds publish the other partitions.
/// A commit of new rows ends the wait at once.
const ROUND_WAIT: Duration = Duration::from_millis(500);
/// Rows in flight or awaiting deletion above which a round reads no new rows.
const MAX_HELD: usize = 10 * BATCH as usize;

/// Error of one relay round.
#[derive(Debug, thiserror::Error)]
pub(super) enum RelayError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("outbox row {id} has malformed headers: {source}")]
    Headers {
        id: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("deleting published rows: {0}")]
    Sweep(SweepError),
}

/// What a relay round did.
pub(super) enum Round {
    /// Rows went to the producer or were acknowledged, or new rows were committed: go on.
    Progress {
        /// Rows acknowledged in this round.
        acked: usize,
    },
    /// Nothing to publish and nothing acknowledged.
    Idle,
    /// The lease had moved on: the rows acknowledged were not deleted.
    LeaseLost,
    /// Transactions older than the cut-off are still open (PostgreSQL): try again shortly.
    Waiting,
}

/// What the relay publishes in one lease term: the cursor, the deliveries in flight and the
/// rows acknowledged but not yet deleted. A new term starts from a fresh one.
#[derive(Default)]
pub(super) struct Publisher {
    gate: Option<Gate>,
    /// The highest `seq` handed to the producer (`None`: read from the first unsent row, after
    /// a delivery failed or at the start of the term).
    cursor: Option<i64>,
    in_flight: InFlight,
    sweep: Sweep,
}

impl Publisher {
    /// True when deliveries are waiting for the broker.
    pub(super) fn in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// One round under `term`; `wake` is the outbox's commit signal.
    pub(super) async fn round(
        &mut self,
        db: &Database,
        producer: &Producer,
        term: &Term,
        wake: &Notify,
    ) -> Result<Round, RelayError> {
        match self.sweep.reap(db, term, false).await {
            Err(SweepError::Fenced) => return Ok(Round::LeaseLost),
            Err(error) => return Err(RelayError::Sweep(error)),
            Ok(()) => {}
        }
        self.in_flight.next_round();
        let held = self.in_flight.len() + self.sweep.len();
        let mut produced = 0;
        if held < MAX_HELD {
            // From the start, the rows in flight or acknowledged are read again (and skipped).
            let limit = BATCH
                + if self.cursor.is_none() {
                    held as i64
                } else {
                    0
                };
            match next_rows(db, &mut self.gate, self.cursor, limit).await? {
                Some(rows) => produced = self.produce(producer, rows)?,
                None if self.in_flight.is_empty() => return Ok(Round::Waiting),
                None => {}
            }
        }
        if self.in_flight.is_empty() {
            return Ok(if produced > 0 {
                Round::Progress { acked: 0 }
            } else {
                Round::Idle
            });
        }
        let settled = self.in_flight.settle(ROUND_WAIT, wake).await;
        let acked = settled.acked.len();
        if acked > 0 {
            crate::failpoint!("relay.after_publish");
            self.sweep.add(db, term, settled.acked);
        }
        if let Some(error) = settled.failure {
            tracing::debug!(
                failed = settled.failed,
                "outbox deliveries failed; published again"
            );
            self.cursor = None;
            return Err(error.into());
        }
        Ok(if produced + acked > 0 || settled.woken {
            Round::Progress { acked }
        } else {
            Round::Idle
        })
    }

    /// Waits until the acknowledged rows are deleted; true when nothing is left to publish or
    /// delete.
    pub(super) async fn drain(&mut self, db: &Database, term: &Term) -> Result<bool, RelayError> {
        match self.sweep.drain(db, term).await {
            Ok(()) => Ok(self.in_flight.is_empty() && self.sweep.is_empty()),
            Err(SweepError::Fenced) => Ok(true),
            Err(error) => Err(RelayError::Sweep(error)),
        }
    }

    /// Forgets the deliveries in flight (the next holder publishes their rows again).
    pub(super) fn forget_in_flight(&mut self) {
        self.in_flight.clear();
    }

    /// Hands `rows` (in `seq` order) that are not in flight or acknowledged to the producer;
    /// returns how many.
    fn produce(&mut self, producer: &Producer, rows: Vec<Unsent>) -> Result<usize, RelayError> {
        let mut produced = 0;
        for row in rows {
            let seq = row.seq;
            if !(self.in_flight.contains(&row.id) || self.sweep.contains(&row.id)) {
                let headers: Vec<(String, String)> =
                    serde_json::from_str(&row.headers).map_err(|source| RelayError::Headers {
                        id: row.id.clone(),
                        source,
                    })?;
                let record = OutgoingRecord {
                    topic: row.topic,
                    key: row.key,
                    payload: row.payload,
                    headers,
                };
                let span = publish_span(&record);
                let delivery = span.in_scope(|| producer.produce(&record))?;
                self.in_flight.push(row.id, span, delivery);
                produced += 1;
            }
            self.cursor = Some(self.cursor.map_or(seq, |c| c.max(seq)));
        }
        Ok(produced)
    }
}

/// The span of publishing one outbox row (OpenTelemetry messaging conventions, operation
/// `send`), a child of the span that wrote the row when its `traceparent` is valid. The
/// partition and offset are recorded once the broker acknowledged the record.
fn publish_span(record: &OutgoingRecord) -> tracing::Span {
    let header = |name: &str| {
        record
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let span = tracing::info_span!(
        "publish",
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %record.topic,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        messaging.kafka.message.key = %record.key,
        event_id = header(headers::ID).unwrap_or_default(),
    );
    if let Some(traceparent) = header(headers::TRACEPARENT) {
        telemetry::set_parent(&span, traceparent);
    }
    span
}
