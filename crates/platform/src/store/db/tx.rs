//! Write transactions ([`Tx`]): PostgreSQL's own, or a job in SQLite's shared write cycle.

use crate::store::db_writer::Job;

use super::error::DbError;

/// An open write transaction ([`Database::begin`](crate::store::db::Database::begin)): derefs to the connection; commit it with
/// [`Tx::commit`], drop it to roll it back.
///
/// On PostgreSQL it is a transaction of its own. On SQLite it is a job in the writer's shared
/// cycle ([`crate::store::db_writer`]): its writes roll back alone, and `commit` returns once the
/// cycle's one `COMMIT` (one fsync for every job in it) returned.
#[derive(Debug)]
pub struct Tx(pub(super) TxKind);

#[derive(Debug)]
pub(super) enum TxKind {
    Own(sqlx::Transaction<'static, sqlx::Any>),
    Shared(Job),
}

impl Tx {
    /// Commits the writes; `Ok` once they are durable.
    pub async fn commit(self) -> Result<(), DbError> {
        match self.0 {
            TxKind::Own(tx) => {
                tx.commit().await?;
                crate::failpoint!("db.after_commit");
                Ok(())
            }
            // The cycle's committer passes the crash point after its COMMIT.
            TxKind::Shared(job) => job.commit().await.map_err(DbError::Commit),
        }
    }
}

impl Tx {
    /// Rolls the writes back (SQLite: the job's alone, before anything else runs in its cycle).
    pub async fn rollback(self) -> Result<(), DbError> {
        match self.0 {
            TxKind::Own(tx) => Ok(tx.rollback().await?),
            TxKind::Shared(job) => {
                drop(job);
                Ok(())
            }
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        match &self.0 {
            TxKind::Own(tx) => tx,
            TxKind::Shared(job) => job,
        }
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        match &mut self.0 {
            TxKind::Own(tx) => tx,
            TxKind::Shared(job) => job,
        }
    }
}

/// A connection, as borrowed from a transaction (`&mut *tx`).
pub type Conn = sqlx::AnyConnection;
