//! The transactional outbox. A service writes its event in the same database transaction as the
//! state change ([`Outbox::enqueue`]); the relay ([`run_relay`]) publishes unsent rows in commit
//! order with the idempotent producer and deletes them only after the broker acknowledged them, so
//! the table holds only what is still to be published. A crash between publish and delete means
//! the event is published again: consumers dedupe by id.
//!
//! Every replica runs a relay, but only the holder of the outbox's lease ([`lease`]) publishes;
//! the others stand by and take over within seconds of the holder dying. Rows are numbered
//! (`seq`) when written and leave in that order; on PostgreSQL, where rows become visible at
//! commit rather than in `seq` order, the relay publishes up to a cut-off only once every
//! transaction that could still commit a row below it has ended (see `Gate`).

mod in_flight;
pub mod lease;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use contracts::envelope::{headers, Event, EventMetadata};
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{
    json_param, parse_timestamp, timestamp, Backend, Conn, Database, DbError, SqlType,
};
use crate::health::Health;
use crate::kafka::{OutgoingRecord, Producer};
use crate::telemetry;
use in_flight::InFlight;

/// Rows published per relay round.
const BATCH: i64 = 1000;
/// How long a round waits for its own deliveries: a delivery still pending then (its partition's
/// leader died or hangs) stays in flight while the next rounds publish the other partitions.
const ROUND_WAIT: Duration = Duration::from_millis(500);
/// Deliveries in flight above which a round reads no new rows, only waits for them.
const MAX_IN_FLIGHT: usize = 10 * BATCH as usize;
/// How often every relay (holder or not) reports the backlog gauges.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// The holder's poll when nothing woke it.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// The poll while older transactions keep the cut-off closed (they are short).
const GATE_POLL: Duration = Duration::from_millis(2);
/// How long a relay stopping waits for the cut-off before it leaves the rest to the next holder.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Writes events into the outbox and wakes the relay.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
    wake: Arc<Notify>,
}

impl Outbox {
    /// An outbox for events produced by `source` (the service name).
    pub fn new(source: &str) -> Self {
        Self {
            source: format!("/{source}"),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Adds `event` to the outbox inside the caller's transaction; returns its metadata.
    ///
    /// The event carries `traceparent` (W3C) when given; with `None` it carries the current
    /// span's (when spans are exported), else the one of the record being consumed, else a new
    /// trace's (see [`telemetry`](crate::telemetry)).
    pub async fn enqueue<E: Event>(
        &self,
        conn: &mut Conn,
        event: &E,
        traceparent: Option<&str>,
    ) -> Result<EventMetadata, DbError> {
        let draft = self.draft(event, traceparent)?;
        let metadata = draft.metadata.clone();
        insert_all(conn, &[draft]).await?;
        Ok(metadata)
    }

    /// `event` as an outbox row to write with [`insert_all`]; `traceparent` as in
    /// [`Outbox::enqueue`].
    pub fn draft<E: Event>(&self, event: &E, traceparent: Option<&str>) -> Result<Draft, DbError> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut metadata = EventMetadata::new(id, E::TYPE, self.source.clone());
        metadata.traceparent = Some(
            traceparent
                .map(str::to_string)
                .or_else(telemetry::current_traceparent)
                .unwrap_or_else(telemetry::new_traceparent),
        );
        let headers: Vec<(&str, String)> = metadata.to_headers();
        let encode = |e| sqlx::Error::Encode(Box::new(e));
        Ok(Draft {
            row: DraftRow {
                id: metadata.id.clone(),
                topic: E::TYPE.topic(),
                record_key: event.key().to_string(),
                payload: serde_json::to_string(event).map_err(encode)?,
                headers: serde_json::to_string(&headers).map_err(encode)?,
                created_at: timestamp(metadata.time),
                n: 0,
            },
            metadata,
        })
    }

    /// Tells the relay that new rows are committed (call after the commit).
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

/// An event ready to be written to the outbox ([`Outbox::draft`]).
#[derive(Debug, Clone)]
pub struct Draft {
    /// The event's CloudEvents attributes (its id, type, time, traceparent).
    pub metadata: EventMetadata,
    row: DraftRow,
}

/// An outbox row as bound to the set-based insert.
#[derive(Debug, Clone, serde::Serialize)]
struct DraftRow {
    id: String,
    topic: &'static str,
    record_key: String,
    payload: String,
    headers: String,
    created_at: String,
    /// Position in the statement's rows: `seq` follows it.
    n: i64,
}

/// Writes `drafts` to the outbox inside the caller's transaction, in order, with one statement.
pub async fn insert_all(conn: &mut Conn, drafts: &[Draft]) -> Result<(), DbError> {
    if drafts.is_empty() {
        return Ok(());
    }
    let rows: Vec<DraftRow> = drafts
        .iter()
        .zip(1..)
        .map(|(draft, n)| DraftRow {
            n,
            ..draft.row.clone()
        })
        .collect();
    let backend = Backend::of(conn);
    let source = backend.json_rows(
        1,
        "j",
        &[
            ("id", SqlType::Text),
            ("topic", SqlType::Text),
            ("record_key", SqlType::Text),
            ("payload", SqlType::Text),
            ("headers", SqlType::Text),
            ("created_at", SqlType::Text),
            ("n", SqlType::BigInt),
        ],
    );
    // The rows' `seq` is taken after the transaction has its id (the materialized CTE runs
    // first), in their order: the relay's cut-off relies on it (see `Gate`).
    let (with, from, seq) = match backend {
        Backend::Postgres => (
            "WITH x AS MATERIALIZED (SELECT txid_current() AS xid) ",
            "x, ",
            "nextval('outbox_seq')",
        ),
        // SQLite has one writer at a time: the next numbers are commit order.
        Backend::Sqlite => ("", "", "(SELECT COALESCE(MAX(seq), 0) FROM outbox) + j.n"),
    };
    sqlx::query(&format!(
        "{with}INSERT INTO outbox (id, topic, record_key, payload, headers, created_at, seq) \
         SELECT j.id, j.topic, j.record_key, j.payload, j.headers, j.created_at, {seq} \
         FROM {from}{source} ORDER BY j.n"
    ))
    .bind(json_param(&rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

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
        gate: None,
        in_flight: InFlight::default(),
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
    gate: Option<Gate>,
    in_flight: InFlight,
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
        match report_backlog(&self.db).await {
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
        health.relay_stall(!self.in_flight.is_empty());
        if current.renewed_at.elapsed() >= self.options.renew_every {
            match lease::renew(&self.db, current, self.options.lease_ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    self.in_flight.clear();
                    lose(&mut self.term, &self.held, health, "taken over");
                    return ControlFlow::Continue(());
                }
                Err(error) => tracing::warn!(%error, "outbox relay lease renewal failed"),
            }
        }
        if Instant::now() >= current.valid_until {
            self.in_flight.clear();
            lose(&mut self.term, &self.held, health, "not renewed in time");
            return ControlFlow::Continue(());
        }
        let Some(published) = self.publish().await else {
            return ControlFlow::Continue(());
        };
        self.waiting_since = None;
        if self.shutdown.is_cancelled() && published == 0 && self.in_flight.is_empty() {
            self.release().await;
            return ControlFlow::Break(());
        }
        if published == 0 {
            self.idle().await;
        }
        ControlFlow::Continue(())
    }

    /// One batch: how many rows went out, or `None` when the round is over without a count
    /// (waiting for an earlier write to commit, or the lease was lost).
    async fn publish(&mut self) -> Option<usize> {
        let current = self.term.as_ref()?;
        let health = &self.options.health;
        let round = publish_batch(
            &self.db,
            &self.producer,
            current,
            &mut self.gate,
            &mut self.in_flight,
        );
        match round.await {
            Ok(Round::Published(n)) => {
                if n > 0 {
                    health.relay_published();
                }
                Some(n)
            }
            Ok(Round::Waiting) => {
                let since = *self.waiting_since.get_or_insert_with(Instant::now);
                if !(self.shutdown.is_cancelled() && since.elapsed() > SHUTDOWN_WAIT) {
                    tokio::time::sleep(GATE_POLL).await;
                    return None;
                }
                Some(0)
            }
            Ok(Round::LeaseLost) => {
                self.in_flight.clear();
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
                    self.in_flight.clear();
                }
                tracing::warn!(%error, "outbox relay round failed; retrying");
                if let Some(fatal) = self.producer.fatal_error() {
                    tracing::warn!(error = %fatal, "producer hit a fatal error; replacing it");
                    match self.producer.recreate() {
                        Ok(fresh) => self.producer = fresh,
                        Err(error) => tracing::error!(%error, "cannot recreate the producer"),
                    }
                }
                Some(0)
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
            _ = self.outbox.wake.notified() => {}
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

/// Error of one relay round.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("outbox row {id} has malformed headers: {source}")]
    Headers {
        id: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
}

/// What a relay round did.
enum Round {
    /// This many rows were published and deleted.
    Published(usize),
    /// The rows were published but the lease had moved on: they were not deleted.
    LeaseLost,
    /// Transactions older than the cut-off are still open (PostgreSQL): try again shortly.
    Waiting,
}

/// PostgreSQL's cut-off: the rows below `cut` (a `seq` the relay took) are published once every
/// transaction whose id is below `xid` (taken after `cut`) has ended. A writer takes its `seq`
/// after its transaction id, so every row below `cut` is then committed (visible) or rolled
/// back: nothing with a lower `seq` can appear after them.
#[derive(Debug, Clone, Copy)]
struct Gate {
    cut: i64,
    xid: i64,
}

impl Gate {
    /// One statement (one round trip): the cut, then the id of its own transaction, taken after
    /// the cut. Nothing is written, so the commit does not wait for its WAL flush.
    async fn take(db: &Database) -> Result<Self, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {NO_FLUSH_WAIT} AS s, nextval('outbox_seq') AS cut, txid_current() AS xid"
        ))
        .fetch_one(db.pool())
        .await?;
        Ok(Self {
            cut: row.try_get("cut")?,
            xid: row.try_get("xid")?,
        })
    }
}

/// PostgreSQL: an expression that lets the current transaction commit without waiting for its
/// WAL flush (`SET LOCAL synchronous_commit = off` inside one statement), for the relay's
/// cut-off, which writes nothing that a crash could lose.
const NO_FLUSH_WAIT: &str = "set_config('synchronous_commit', 'off', true)";

const COLUMNS: &str = "id, topic, record_key, payload, headers";

/// The next rows to publish, in `seq` order: on SQLite every unsent row; on PostgreSQL the
/// unsent rows below the cut-off once it has passed (`None`: not yet).
async fn next_rows(
    db: &Database,
    gate: &mut Option<Gate>,
    limit: i64,
) -> Result<Option<Vec<sqlx::any::AnyRow>>, sqlx::Error> {
    if db.backend() == Backend::Sqlite {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE sent_at IS NULL ORDER BY seq, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(db.reads())
        .await?;
        return Ok(Some(rows));
    }
    let current = match *gate {
        Some(current) => current,
        None => *gate.insert(Gate::take(db).await?),
    };
    // The rows are read in the very snapshot that shows the older transactions ended.
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE sent_at IS NULL AND seq < $2 \
         AND txid_snapshot_xmin(txid_current_snapshot()) >= $3 ORDER BY seq, id LIMIT $1"
    ))
    .bind(limit)
    .bind(current.cut)
    .bind(current.xid)
    .fetch_all(db.pool())
    .await?;
    if rows.is_empty() {
        let horizon: i64 = sqlx::query_scalar("SELECT txid_snapshot_xmin(txid_current_snapshot())")
            .fetch_one(db.pool())
            .await?;
        if horizon < current.xid {
            return Ok(None);
        }
    }
    if (rows.len() as i64) < limit {
        // Everything below the cut-off is out (or going): the next round takes a new one.
        *gate = None;
    }
    Ok(Some(rows))
}

/// One round under `term`: hands up to a batch of unsent rows that are not in flight to the
/// producer (in `seq` order), waits up to [`ROUND_WAIT`] for them, and deletes every row
/// acknowledged meanwhile (earlier rounds' included).
async fn publish_batch(
    db: &Database,
    producer: &Producer,
    term: &lease::Term,
    gate: &mut Option<Gate>,
    in_flight: &mut InFlight,
) -> Result<Round, RelayError> {
    in_flight.next_round();
    if in_flight.len() < MAX_IN_FLIGHT {
        let limit = BATCH + in_flight.len() as i64;
        match next_rows(db, gate, limit).await? {
            Some(rows) => produce_rows(producer, &rows, in_flight)?,
            None if in_flight.is_empty() => return Ok(Round::Waiting),
            None => {}
        }
    }
    if in_flight.is_empty() {
        return Ok(Round::Published(0));
    }
    let settled = in_flight.settle(ROUND_WAIT).await;
    if !settled.acked.is_empty() {
        crate::failpoint!("relay.after_publish");
        if delete_sent(db, &settled.acked, term).await? == 0 {
            return Ok(Round::LeaseLost);
        }
        metrics::counter!("outbox_published_total").increment(settled.acked.len() as u64);
    }
    match settled.failure {
        Some(error) => {
            tracing::debug!(
                failed = settled.failed,
                "outbox deliveries failed; published again"
            );
            Err(error.into())
        }
        None => Ok(Round::Published(settled.acked.len())),
    }
}

/// Hands `rows` (in `seq` order) that are not already in flight to the producer.
fn produce_rows(
    producer: &Producer,
    rows: &[sqlx::any::AnyRow],
    in_flight: &mut InFlight,
) -> Result<(), RelayError> {
    for row in rows {
        let id: String = row.try_get("id")?;
        if in_flight.contains(&id) {
            continue;
        }
        let headers: String = row.try_get("headers")?;
        let headers: Vec<(String, String)> =
            serde_json::from_str(&headers).map_err(|source| RelayError::Headers {
                id: id.clone(),
                source,
            })?;
        let record = OutgoingRecord {
            topic: row.try_get("topic")?,
            key: row.try_get("record_key")?,
            payload: row.try_get("payload")?,
            headers,
        };
        let span = publish_span(&record);
        let delivery = span.in_scope(|| producer.produce(&record))?;
        in_flight.push(id, span, delivery);
    }
    Ok(())
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

/// Deletes the published rows `ids`, in one statement, if `term` is still the lease's current
/// one; returns how many rows it deleted.
async fn delete_sent(
    db: &Database,
    ids: &[String],
    term: &lease::Term,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM outbox WHERE {} AND id IN ({})",
        lease::Term::fence(1),
        db.backend().json_list(4)
    );
    let (name, holder, epoch) = term.fence_binds();
    let result = sqlx::query(&sql)
        .bind(name)
        .bind(holder)
        .bind(epoch)
        .bind(json_param(ids)?)
        .execute(db.pool())
        .await?;
    Ok(result.rows_affected())
}

/// Deletes rows that an earlier version marked sent and kept for inspection.
async fn delete_marked_rows(db: &Database) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL")
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Sets the backlog gauges: rows not yet published and the age of the oldest; returns the
/// number of rows.
async fn report_backlog(db: &Database) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(db.reads())
    .await?;
    let pending: i64 = row.try_get("n")?;
    let oldest: Option<String> = row.try_get("oldest")?;
    let age = match oldest {
        Some(oldest) => (Utc::now() - parse_timestamp(&oldest)?)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64(),
        None => 0.0,
    };
    metrics::gauge!("outbox_pending_rows").set(pending as f64);
    metrics::gauge!("outbox_oldest_pending_age_seconds").set(age);
    Ok(pending)
}

/// Number of rows not yet published (for metrics and tests).
pub async fn pending(db: &Database) -> Result<i64, DbError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
        .fetch_one(db.reads())
        .await?;
    Ok(row.try_get::<i64, _>("n")?)
}
