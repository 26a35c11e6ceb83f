//! Reading the next rows to publish: after the relay's cursor (the highest `seq` it handed to
//! the producer), in `seq` order; on PostgreSQL only below a cut-off every older writer has
//! passed (see [`Gate`]).

use sqlx::Row;

use crate::store::db::{Backend, Database};

/// An outbox row read to be published.
#[derive(Debug)]
pub(super) struct Unsent {
    /// The row's (and event's) id.
    pub id: String,
    /// Its place in the publishing order.
    pub seq: i64,
    /// The topic (unprefixed).
    pub topic: String,
    /// The record key.
    pub key: String,
    /// The event as JSON.
    pub payload: String,
    /// The record headers as a JSON array of pairs.
    pub headers: String,
}

/// PostgreSQL's cut-off: the rows below `cut` (a `seq` the relay took) are published once every
/// transaction whose id is below `xid` (taken after `cut`) has ended. A writer takes its `seq`
/// after its transaction id, so every row below `cut` is then committed (visible) or rolled
/// back: nothing with a lower `seq` can appear after them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gate {
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

const COLUMNS: &str = "id, seq, topic, record_key, payload, headers";

/// Up to `limit` unsent rows with a `seq` above `after` (all when `None`), in `seq` order: on
/// SQLite every such row; on PostgreSQL those below the cut-off once it has passed (`None`:
/// not yet).
pub(super) async fn next_rows(
    db: &Database,
    gate: &mut Option<Gate>,
    after: Option<i64>,
    limit: i64,
) -> Result<Option<Vec<Unsent>>, sqlx::Error> {
    let after = after.unwrap_or(i64::MIN);
    if db.backend() == Backend::Sqlite {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE sent_at IS NULL AND seq > $2 \
             ORDER BY seq, id LIMIT $1"
        ))
        .bind(limit)
        .bind(after)
        .fetch_all(db.reads())
        .await?;
        return rows.iter().map(unsent).collect::<Result<_, _>>().map(Some);
    }
    let current = match *gate {
        Some(current) => current,
        None => *gate.insert(Gate::take(db).await?),
    };
    // The rows are read in the very snapshot that shows the older transactions ended.
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE sent_at IS NULL AND seq < $2 AND seq > $4 \
         AND txid_snapshot_xmin(txid_current_snapshot()) >= $3 ORDER BY seq, id LIMIT $1"
    ))
    .bind(limit)
    .bind(current.cut)
    .bind(current.xid)
    .bind(after)
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
    rows.iter().map(unsent).collect::<Result<_, _>>().map(Some)
}

fn unsent(row: &sqlx::any::AnyRow) -> Result<Unsent, sqlx::Error> {
    Ok(Unsent {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        topic: row.try_get("topic")?,
        key: row.try_get("record_key")?,
        payload: row.try_get("payload")?,
        headers: row.try_get("headers")?,
    })
}
