//! The relay's fenced lease: one row per outbox naming the replica that publishes, until when,
//! and in which epoch. Portable SQL, so SQLite (one process owns the file) and PostgreSQL
//! (replicas share the database) take the same path. Expiry times are the replicas' clocks;
//! safety does not depend on them: marking rows sent checks the epoch ([`Term::fence`]).

use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::Row;

use crate::store::db::{timestamp, Database};

/// The one lease row of a database's outbox.
const NAME: &str = "outbox-relay";

/// A term of this replica as the relay: held from acquisition until lost or released.
#[derive(Debug, Clone)]
pub(super) struct Term {
    /// The holder's unique name.
    pub holder: String,
    /// Incremented by every takeover.
    pub epoch: i64,
    /// Past this instant (local clock) the term may have been taken over: stop publishing.
    pub valid_until: Instant,
    /// When the lease was last renewed.
    pub renewed_at: Instant,
}

impl Term {
    /// The SQL condition (with the three binds `$n`, `$n+1`, `$n+2` of [`Term::fence_binds`])
    /// that holds only while this term is current.
    pub fn fence(first_bind: usize) -> String {
        format!(
            "EXISTS (SELECT 1 FROM outbox_lease WHERE name = ${} AND holder = ${} AND epoch = ${})",
            first_bind,
            first_bind + 1,
            first_bind + 2
        )
    }

    /// The values bound into [`Term::fence`]'s condition.
    pub fn fence_binds(&self) -> (&'static str, &str, i64) {
        (NAME, &self.holder, self.epoch)
    }
}

/// Takes the lease for `holder` when it is free or expired; `None` when another replica holds it.
pub(super) async fn acquire(
    db: &Database,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Term>, sqlx::Error> {
    let started = Instant::now();
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or_default();
    let row = sqlx::query(
        "INSERT INTO outbox_lease (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
         epoch = outbox_lease.epoch + 1, expires_at = excluded.expires_at \
         WHERE outbox_lease.expires_at < $4 \
         RETURNING epoch",
    )
    .bind(NAME)
    .bind(holder)
    .bind(timestamp(expires))
    .bind(timestamp(now))
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some(row) => Some(Term {
            holder: holder.to_string(),
            epoch: row.try_get("epoch")?,
            valid_until: started + ttl,
            renewed_at: started,
        }),
        None => None,
    })
}

/// Extends `term` by `ttl`; `false` when it is no longer current (taken over).
pub(super) async fn renew(
    db: &Database,
    term: &mut Term,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let started = Instant::now();
    let expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    let renewed = sqlx::query(
        "UPDATE outbox_lease SET expires_at = $1 WHERE name = $2 AND holder = $3 AND epoch = $4",
    )
    .bind(timestamp(expires))
    .bind(NAME)
    .bind(&term.holder)
    .bind(term.epoch)
    .execute(db.pool())
    .await?
    .rows_affected()
        == 1;
    if renewed {
        term.valid_until = started + ttl;
        term.renewed_at = started;
    }
    Ok(renewed)
}

/// Gives the lease up (clean shutdown), so a standby replica takes over at its next attempt.
pub(super) async fn release(db: &Database, term: &Term) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox_lease SET expires_at = $1 WHERE name = $2 AND holder = $3 AND epoch = $4",
    )
    .bind(timestamp(chrono::DateTime::<Utc>::UNIX_EPOCH))
    .bind(NAME)
    .bind(&term.holder)
    .bind(term.epoch)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The current holder and epoch of the lease, if it was ever taken (for tests and tools).
pub async fn holder(db: &Database) -> Result<Option<(String, i64)>, sqlx::Error> {
    let row = sqlx::query("SELECT holder, epoch FROM outbox_lease WHERE name = $1")
        .bind(NAME)
        .fetch_optional(db.pool())
        .await?;
    row.map(|row| Ok((row.try_get("holder")?, row.try_get("epoch")?)))
        .transpose()
}
