//! Writing events into the outbox, inside the caller's transaction: one row per event, numbered
//! (`seq`) in the order the relay publishes them.

use std::sync::Arc;

use contracts::envelope::{Event, EventMetadata};
use tokio::sync::Notify;

use crate::foundation::telemetry;
use crate::store::db::{json_param, timestamp, Backend, Conn, DbError, SqlType};

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
    /// trace's (see [`telemetry`](crate::foundation::telemetry)).
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

    /// What [`Outbox::notify`] wakes: the relay waits on it.
    pub(super) fn wake(&self) -> &Notify {
        &self.wake
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
        // SQLite has one writer at a time: the next numbers are commit order. They come from
        // `outbox_counter`, never from the rows (which the relay deletes).
        Backend::Sqlite => (
            "",
            "",
            "(SELECT last_seq FROM outbox_counter WHERE id = 1) + j.n",
        ),
    };
    sqlx::query(&format!(
        "{with}INSERT INTO outbox (id, topic, record_key, payload, headers, created_at, seq) \
         SELECT j.id, j.topic, j.record_key, j.payload, j.headers, j.created_at, {seq} \
         FROM {from}{source} ORDER BY j.n"
    ))
    .bind(json_param(&rows)?)
    .execute(&mut *conn)
    .await?;
    if backend == Backend::Sqlite {
        sqlx::query("UPDATE outbox_counter SET last_seq = last_seq + $1 WHERE id = 1")
            .bind(rows.len() as i64)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
