//! The relay's deliveries awaiting the broker's acknowledgement, across rounds.
//!
//! A round hands its rows to the producer (in `seq` order: librdkafka keeps that order within a
//! partition) and then waits for *its own* deliveries for at most a round's wait. A delivery to a
//! partition whose leader died or hangs stays here, in flight, while the next rounds publish the
//! rows of the other partitions: one slow partition does not hold back the others. Its row is
//! not read again while in flight; once the producer gives it up (`message.timeout.ms`) it leaves
//! this set unacknowledged, its row is still unsent, and a later round publishes it again.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt as _;
use tokio::sync::Notify;

use crate::kafka::{Delivered, KafkaError};

/// A delivery's outcome: the row id, its span and the broker's answer.
type Done = (String, tracing::Span, u64, Result<Delivered, KafkaError>);
type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Deliveries not yet acknowledged or failed.
#[derive(Default)]
pub(super) struct InFlight {
    ids: HashSet<String>,
    deliveries: FuturesUnordered<Pending>,
    round: u64,
    round_pending: usize,
}

/// What the deliveries that ended while a round waited came to.
#[derive(Debug, Default)]
pub(super) struct Settled {
    /// Rows the broker acknowledged: to delete.
    pub(super) acked: Vec<String>,
    /// The first failure (those rows stay unsent and are published again later).
    pub(super) failure: Option<KafkaError>,
    /// Rows whose delivery failed.
    pub(super) failed: usize,
    /// The wait ended early because new rows were committed.
    pub(super) woken: bool,
}

impl InFlight {
    /// True when the row `id` awaits its acknowledgement (it must not be published again).
    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// How many deliveries are pending.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is pending.
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Starts a new round: what [`Self::push`] adds from now on is this round's.
    pub(super) fn next_round(&mut self) {
        self.round += 1;
        self.round_pending = 0;
    }

    /// Adds the delivery of row `id` to the current round.
    pub(super) fn push(
        &mut self,
        id: String,
        span: tracing::Span,
        delivery: impl Future<Output = Result<Delivered, KafkaError>> + Send + 'static,
    ) {
        let round = self.round;
        self.round_pending += 1;
        self.ids.insert(id.clone());
        self.deliveries
            .push(Box::pin(async move { (id, span, round, delivery.await) }));
    }

    /// Forgets every pending delivery (the lease was lost: the next holder publishes the rows).
    pub(super) fn clear(&mut self) {
        self.ids.clear();
        self.deliveries = FuturesUnordered::new();
        self.round_pending = 0;
    }

    /// Waits until every delivery of the current round has ended (when it added none: until
    /// one earlier delivery has), `wait` has passed, or `wake` is notified (new rows to
    /// publish), and returns what ended meanwhile (earlier rounds' deliveries included).
    pub(super) async fn settle(&mut self, wait: Duration, wake: &Notify) -> Settled {
        let mut settled = Settled::default();
        let deadline = tokio::time::Instant::now() + wait;
        // A round that added nothing waits for the first earlier delivery instead (a relay that
        // only has deliveries in flight, e.g. while stopping, does not spin).
        let mut any = self.round_pending == 0;
        while self.round_pending > 0 || (any && !self.deliveries.is_empty()) {
            let next = tokio::select! {
                biased;
                next = tokio::time::timeout_at(deadline, self.deliveries.next()) => next,
                () = wake.notified() => {
                    settled.woken = true;
                    break;
                }
            };
            let Ok(Some(done)) = next else {
                break;
            };
            any = false;
            self.end(&mut settled, done);
        }
        // Whatever else is already done costs nothing to collect.
        while let Some(Some(done)) = self.deliveries.next().now_or_never() {
            self.end(&mut settled, done);
        }
        settled
    }

    /// Takes an ended delivery out of the set and notes it in `settled`.
    fn end(&mut self, settled: &mut Settled, (id, span, round, result): Done) {
        if round == self.round {
            self.round_pending -= 1;
        }
        self.ids.remove(&id);
        record(settled, id, &span, result);
    }
}

/// Notes one ended delivery in `settled` and on its span.
fn record(
    settled: &mut Settled,
    id: String,
    span: &tracing::Span,
    result: Result<Delivered, KafkaError>,
) {
    match result {
        Ok(delivered) => {
            span.record(
                "messaging.destination.partition.id",
                delivered.partition.to_string(),
            );
            span.record("messaging.kafka.offset", delivered.offset);
            settled.acked.push(id);
        }
        Err(error) => {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", error.to_string());
            settled.failed += 1;
            settled.failure.get_or_insert(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(partition: i32) -> Result<Delivered, KafkaError> {
        Ok(Delivered {
            partition,
            offset: 0,
        })
    }

    /// A delivery to a partition whose leader is away: it answers when `answer` is sent.
    async fn held(answer: tokio::sync::oneshot::Receiver<()>) -> Result<Delivered, KafkaError> {
        match answer.await {
            Ok(()) => acked(0),
            Err(_) => Err(KafkaError::Timeout("delivery".into())),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_waiting_on_one_partition_does_not_hold_back_the_others() {
        let mut in_flight = InFlight::default();
        let (release, answer) = tokio::sync::oneshot::channel();
        in_flight.next_round();
        in_flight.push("p0-1".into(), tracing::Span::none(), held(answer));
        in_flight.push("p1-1".into(), tracing::Span::none(), async { acked(1) });
        in_flight.push("p2-1".into(), tracing::Span::none(), async { acked(2) });
        let mut settled = in_flight
            .settle(Duration::from_millis(500), &Notify::new())
            .await;
        settled.acked.sort();
        assert_eq!(settled.acked, ["p1-1", "p2-1"]);
        assert!(settled.failure.is_none());
        assert!(
            in_flight.contains("p0-1"),
            "still in flight, not published again"
        );
        assert_eq!(in_flight.len(), 1);

        // The next round publishes the other partitions' new rows without waiting for p0.
        in_flight.next_round();
        in_flight.push("p1-2".into(), tracing::Span::none(), async { acked(1) });
        let settled = in_flight
            .settle(Duration::from_millis(500), &Notify::new())
            .await;
        assert_eq!(settled.acked, ["p1-2"]);
        assert!(in_flight.contains("p0-1"));

        // The new leader acknowledges the held record: a later round collects it.
        release.send(()).unwrap();
        in_flight.next_round();
        let settled = in_flight
            .settle(Duration::from_millis(500), &Notify::new())
            .await;
        assert_eq!(settled.acked, ["p0-1"]);
        assert!(in_flight.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn new_rows_end_the_wait_and_the_deliveries_stay_in_flight() {
        let mut in_flight = InFlight::default();
        let (release, answer) = tokio::sync::oneshot::channel();
        let wake = Notify::new();
        in_flight.next_round();
        in_flight.push("p0-1".into(), tracing::Span::none(), held(answer));
        wake.notify_one();
        let started = tokio::time::Instant::now();
        let settled = in_flight.settle(Duration::from_millis(500), &wake).await;
        assert!(settled.woken, "a commit ends the wait");
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(settled.acked.is_empty());
        assert!(in_flight.contains("p0-1"));

        release.send(()).unwrap();
        in_flight.next_round();
        let settled = in_flight.settle(Duration::from_millis(500), &wake).await;
        assert!(!settled.woken);
        assert_eq!(settled.acked, ["p0-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_given_up_leaves_the_set_unacknowledged_to_be_published_again() {
        let mut in_flight = InFlight::default();
        let (release, answer) = tokio::sync::oneshot::channel::<()>();
        in_flight.next_round();
        in_flight.push("p0-1".into(), tracing::Span::none(), held(answer));
        in_flight.push("p1-1".into(), tracing::Span::none(), async { acked(1) });
        let settled = in_flight
            .settle(Duration::from_millis(500), &Notify::new())
            .await;
        assert_eq!(settled.acked, ["p1-1"]);
        drop(release); // the producer's message timeout
        in_flight.next_round();
        let settled = in_flight
            .settle(Duration::from_millis(500), &Notify::new())
            .await;
        assert!(settled.acked.is_empty());
        assert_eq!(settled.failed, 1);
        assert!(matches!(settled.failure, Some(KafkaError::Timeout(_))));
        assert!(
            !in_flight.contains("p0-1"),
            "its row is read and published again"
        );
        in_flight.clear();
        assert!(in_flight.is_empty());
    }
}
