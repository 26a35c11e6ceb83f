//! The relay's loop: every replica runs one; the holder of the outbox's lease publishes round
//! after round ([`Publisher`]), the others stand by and take over within seconds of the holder
//! dying.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::round::{Publisher, Round};
use super::writer::Outbox;
use super::{backlog, lease};
use crate::foundation::health::Health;
use crate::kafka::Producer;
use crate::store::db::Database;

/// How often every relay (holder or not) reports the backlog gauges.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// The holder's poll when nothing woke it.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// The poll while older transactions keep the cut-off closed (they are short).
const GATE_POLL: Duration = Duration::from_millis(2);
/// How long a relay stopping waits for the cut-off before it leaves the rest to the next holder.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// How the relay shares the outbox with the relays of other replicas.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// This relay's name in the lease (unique per process).
    pub holder: String,
    /// How long a lease lasts without renewal: a dead holder is replaced after at most this.
    pub lease_ttl: Duration,
    /// How often the holder renews its lease.
    pub renew_every: Duration,
    /// How often a standby relay tries to take the lease.
    pub standby_poll: Duration,
    /// Where the relay reports its progress for `/readyz`.
    pub health: Health,
}

impl Default for RelayOptions {
    /// A 5 s lease renewed every second; standbys try every second. The holder is named after
    /// the host (`HOSTNAME`), the process and a random suffix.
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_string());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            holder: format!("{host}/{}/{}", std::process::id(), &suffix[..8]),
            lease_ttl: Duration::from_secs(5),
            renew_every: Duration::from_secs(1),
            standby_poll: Duration::from_secs(1),
            health: Health::default(),
        }
    }
}

/// Publishes outbox rows until `shutdown` while this replica holds the lease, then drains what is
/// left, gives the lease up and flushes the producer.
pub async fn run_relay(
    db: Database,
    producer: Producer,
    outbox: Outbox,
    shutdown: CancellationToken,
) {
    run_relay_with(db, producer, outbox, shutdown, RelayOptions::default()).await
}

/// [`run_relay`] with explicit lease timings and holder name.
pub async fn run_relay_with(
    db: Database,
    producer: Producer,
    outbox: Outbox,
    shutdown: CancellationToken,
    options: RelayOptions,
) {
    let held = metrics::gauge!("outbox_relay_lease_held", "holder" => options.holder.clone());
    held.set(0.0);
    options.health.relay_started();
    let mut relay = Relay {
        db,
        producer,
        outbox,
        shutdown,
        options,
        term: None,
        publisher: Publisher::default(),
        waiting_since: None,
        last_cleanup: Instant::now(),
        last_backlog: None,
        held,
    };
    loop {
        relay.check_backlog().await;
        let next = if relay.term.is_some() {
            relay.lead().await
        } else {
            relay.stand_by().await
        };
        if next.is_break() {
            break;
        }
    }
    relay.finish().await;
}

/// The relay between rounds: its lease term (when it holds the lease) and its timers.
struct Relay {
    db: Database,
    producer: Producer,
    outbox: Outbox,
    shutdown: CancellationToken,
    options: RelayOptions,
    term: Option<lease::Term>,
    publisher: Publisher,
    waiting_since: Option<Instant>,
    last_cleanup: Instant,
    last_backlog: Option<Instant>,
    held: metrics::Gauge,
}

impl Relay {
    /// Reports the backlog to the health state every [`BACKLOG_EVERY`].
    async fn check_backlog(&mut self) {
        if self
            .last_backlog
            .is_some_and(|at| at.elapsed() < BACKLOG_EVERY)
        {
            return;
        }
        self.last_backlog = Some(Instant::now());
        match backlog::report_backlog(&self.db).await {
            Ok(pending) => self.options.health.relay_backlog(pending),
            Err(error) => tracing::warn!(%error, "outbox backlog query failed"),
        }
    }

    /// Without the lease: tries to take it, else waits a standby poll. Stops on shutdown.
    async fn stand_by(&mut self) -> ControlFlow<()> {
        if self.shutdown.is_cancelled() {
            return ControlFlow::Break(());
        }
        match lease::acquire(&self.db, &self.options.holder, self.options.lease_ttl).await {
            Ok(Some(acquired)) => {
                tracing::info!(holder = %acquired.holder, epoch = acquired.epoch,
                    "outbox relay lease acquired; publishing");
                self.held.set(1.0);
                self.options.health.relay_lease(true);
                metrics::gauge!("outbox_relay_lease_epoch").set(acquired.epoch as f64);
                self.term = Some(acquired);
                return ControlFlow::Continue(());
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "outbox relay lease attempt failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(self.options.standby_poll) => {}
            _ = self.shutdown.cancelled() => {}
        }
        ControlFlow::Continue(())
    }

    /// With the lease: renews it when due, publishes a batch, idles when there was nothing.
    /// Stops (giving the lease up) once shutdown finds nothing left to publish.
    async fn lead(&mut self) -> ControlFlow<()> {
        let Some(current) = self.term.as_mut() else {
            return ControlFlow::Continue(());
        };
        let health = &self.options.health;
        health.relay_stall(self.publisher.in_flight());
        if current.renewed_at.elapsed() >= self.options.renew_every {
            match lease::renew(&self.db, current, self.options.lease_ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    self.publisher = Publisher::default();
                    lose(&mut self.term, &self.held, health, "taken over");
                    return ControlFlow::Continue(());
                }
                Err(error) => tracing::warn!(%error, "outbox relay lease renewal failed"),
            }
        }
        if Instant::now() >= current.valid_until {
            self.publisher = Publisher::default();
            lose(&mut self.term, &self.held, health, "not renewed in time");
            return ControlFlow::Continue(());
        }
        let Some(progress) = self.publish().await else {
            return ControlFlow::Continue(());
        };
        self.waiting_since = None;
        if progress {
            return ControlFlow::Continue(());
        }
        if self.shutdown.is_cancelled() && self.drained().await {
            self.release().await;
            return ControlFlow::Break(());
        }
        self.idle().await;
        ControlFlow::Continue(())
    }

    /// Stopping: waits for the acknowledged rows' deletes; true when nothing is left.
    async fn drained(&mut self) -> bool {
        let Some(current) = self.term.as_ref() else {
            return true;
        };
        match self.publisher.drain(&self.db, current).await {
            Ok(done) => done,
            Err(error) => {
                tracing::warn!(%error, "outbox relay could not delete the last published rows");
                true
            }
        }
    }

    /// One round: whether it made progress (go on at once) or found nothing (idle), or `None`
    /// when the round is over without either (waiting for an earlier write to commit, or the
    /// lease was lost).
    async fn publish(&mut self) -> Option<bool> {
        let current = self.term.as_ref()?;
        let health = &self.options.health;
        let wake = self.outbox.wake();
        let round = self
            .publisher
            .round(&self.db, &self.producer, current, wake);
        match round.await {
            Ok(Round::Progress { acked }) => {
                if acked > 0 {
                    health.relay_published();
                }
                Some(true)
            }
            Ok(Round::Idle) => Some(false),
            Ok(Round::Waiting) => {
                let since = *self.waiting_since.get_or_insert_with(Instant::now);
                if !(self.shutdown.is_cancelled() && since.elapsed() > SHUTDOWN_WAIT) {
                    // This process's writers wake the relay when they commit; other
                    // replicas' do not, hence the poll.
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(GATE_POLL) => {}
                    }
                    return None;
                }
                Some(false)
            }
            Ok(Round::LeaseLost) => {
                self.publisher = Publisher::default();
                lose(
                    &mut self.term,
                    &self.held,
                    health,
                    "fenced when deleting sent rows",
                );
                None
            }
            Err(error) => {
                if self.shutdown.is_cancelled() {
                    // What is still in flight is left to the next holder.
                    self.publisher.forget_in_flight();
                }
                tracing::warn!(%error, "outbox relay round failed; retrying");
                if let Some(fatal) = self.producer.fatal_error() {
                    tracing::warn!(error = %fatal, "producer hit a fatal error; replacing it");
                    match self.producer.recreate() {
                        Ok(fresh) => self.producer = fresh,
                        Err(error) => tracing::error!(%error, "cannot recreate the producer"),
                    }
                }
                Some(false)
            }
        }
    }

    /// Nothing to publish: cleans old rows now and then, and waits for a write, the next
    /// poll or shutdown.
    async fn idle(&mut self) {
        if self.last_cleanup.elapsed() > Duration::from_secs(60) {
            self.last_cleanup = Instant::now();
            if let Err(error) = delete_marked_rows(&self.db).await {
                tracing::warn!(%error, "outbox cleanup failed");
            }
        }
        tokio::select! {
            _ = self.outbox.wake().notified() => {}
            _ = tokio::time::sleep(IDLE_POLL.min(self.options.renew_every)) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Gives the lease up (shutdown).
    async fn release(&mut self) {
        if let Some(current) = &self.term {
            if let Err(error) = lease::release(&self.db, current).await {
                tracing::warn!(%error, "outbox relay lease release failed");
            }
        }
        self.held.set(0.0);
        self.options.health.relay_lease(false);
    }

    /// Flushes the producer and reports the relay stopped.
    async fn finish(self) {
        let producer = self.producer;
        // librdkafka's flush blocks its thread: not one of the runtime's.
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "producer flush on shutdown"),
            Err(error) => tracing::warn!(%error, "producer flush on shutdown"),
        }
        self.options.health.relay_stopped();
        tracing::info!("outbox relay stopped");
    }
}

/// Ends the current term: the relay stops publishing and stands by.
fn lose(term: &mut Option<lease::Term>, held: &metrics::Gauge, health: &Health, why: &str) {
    if let Some(lost) = term.take() {
        tracing::warn!(holder = %lost.holder, epoch = lost.epoch, why,
            "outbox relay lease lost; standing by");
    }
    held.set(0.0);
    health.relay_lease(false);
}

/// Deletes rows that an earlier version marked sent and kept for inspection.
async fn delete_marked_rows(db: &Database) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL")
        .execute(db.pool())
        .await?;
    Ok(())
}
