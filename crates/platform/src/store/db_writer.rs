//! SQLite's one writer: every write transaction of a service (HTTP groups, consumer batches,
//! parking rounds) is a *job* inside a shared *cycle*, one `BEGIN IMMEDIATE … COMMIT` (one
//! fsync) for all the jobs that queued while the previous one ran.
//!
//! - Each job runs inside a `SAVEPOINT`: a job that fails (or is dropped) is rolled back alone
//!   and the others of its cycle still commit.
//! - A job's [`Job::commit`] returns only after its cycle's `COMMIT` returned, so answers,
//!   offset stores and relay wake-ups happen after the data is durable; a failed `COMMIT` is
//!   the error of every job of the cycle.
//! - The committer task closes a cycle when nobody is waiting for the writer: jobs that were
//!   already queued join the open cycle first.
//!
//! Statements outside a job (the relay's lease and deletes) use the same connection between
//! cycles. This module depends on sqlx only; [`crate::store::db`] wraps it.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};
use tokio::sync::{oneshot, Mutex, Notify, OwnedMappedMutexGuard, OwnedMutexGuard};

/// The answer a job gets when its cycle ends.
type Answer = Result<(), Arc<sqlx::Error>>;

/// The shared write transaction of a SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct Cycles {
    state: Arc<Mutex<Cycle>>,
    wake: Arc<Notify>,
}

/// The writer's state: the open transaction, if any.
#[derive(Debug)]
struct Cycle {
    pool: AnyPool,
    open: Option<Open>,
}

/// An open cycle: its connection (taken from the pool for the cycle), the jobs waiting for its
/// `COMMIT`, and whether the last job ended without committing.
#[derive(Debug)]
struct Open {
    conn: PoolConnection<Any>,
    waiters: Vec<oneshot::Sender<Answer>>,
    abandoned: bool,
}

impl Cycles {
    /// The writer of `pool` (one connection); starts its committer task.
    pub(crate) fn start(pool: AnyPool) -> Self {
        let cycles = Self {
            state: Arc::new(Mutex::new(Cycle { pool, open: None })),
            wake: Arc::new(Notify::new()),
        };
        crate::foundation::metrics_scope::spawn(commit_cycles(cycles.clone()));
        cycles
    }

    /// Starts a job: waits for the writer, opens a cycle when none is open, and sets the job's
    /// savepoint.
    pub(crate) async fn job(&self) -> Result<Job, sqlx::Error> {
        let mut cycle = Arc::clone(&self.state).lock_owned().await;
        cycle.settle().await;
        if cycle.open.is_none() {
            let mut conn = cycle.pool.acquire().await?;
            conn.execute("BEGIN IMMEDIATE").await?;
            cycle.open = Some(Open {
                conn,
                waiters: Vec::new(),
                abandoned: false,
            });
        }
        let open = OwnedMutexGuard::try_map(cycle, |cycle| cycle.open.as_mut())
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut job = Job {
            open,
            wake: Arc::clone(&self.wake),
            committed: false,
        };
        // On failure the job is dropped: marked abandoned, settled by the next holder.
        job.open.conn.execute("SAVEPOINT job").await?;
        Ok(job)
    }
}

impl Cycle {
    /// Rolls back the job that ended without committing. When that fails the transaction is
    /// gone (SQLite rolls it back on some errors): every job of the cycle is answered with the
    /// error, and the cycle ends.
    async fn settle(&mut self) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if !open.abandoned {
            return;
        }
        open.abandoned = false;
        let undone = open
            .conn
            .execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
            .await;
        if let Err(error) = undone {
            self.end(Err(Arc::new(error))).await;
        }
    }

    /// Ends the open cycle: `COMMIT` when a job waits for it (`ROLLBACK` when none does), or
    /// roll back and answer `failure` to every job.
    async fn end(&mut self, failure: Answer) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let answer = match failure {
            Err(error) => {
                let _ = open.conn.execute("ROLLBACK").await;
                Err(error)
            }
            Ok(()) if open.waiters.is_empty() => {
                let _ = open.conn.execute("ROLLBACK").await;
                return;
            }
            Ok(()) => match open.conn.execute("COMMIT").await {
                Ok(_) => {
                    metrics::histogram!("db_writer_cycle_jobs").record(open.waiters.len() as f64);
                    crate::failpoint!("db.after_commit");
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(%error, jobs = open.waiters.len(), "write cycle's COMMIT failed");
                    let _ = open.conn.execute("ROLLBACK").await;
                    Err(Arc::new(error))
                }
            },
        };
        for waiter in open.waiters {
            let _ = waiter.send(answer.clone());
        }
    }
}

/// Ends a cycle each time the writer is free after a job: the jobs already queued for the writer
/// get it first and join the cycle.
async fn commit_cycles(cycles: Cycles) {
    loop {
        cycles.wake.notified().await;
        let mut cycle = cycles.state.lock().await;
        cycle.settle().await;
        cycle.end(Ok(())).await;
    }
}

/// A write job inside the open cycle: derefs to the connection. [`Job::commit`] keeps its
/// writes; dropping it rolls them back (alone).
#[derive(Debug)]
pub(crate) struct Job {
    open: OwnedMappedMutexGuard<Cycle, Open>,
    wake: Arc<Notify>,
    committed: bool,
}

impl Job {
    /// Keeps the job's writes and waits for its cycle's `COMMIT`.
    pub(crate) async fn commit(mut self) -> Result<(), Arc<sqlx::Error>> {
        self.open
            .conn
            .execute("RELEASE SAVEPOINT job")
            .await
            .map_err(Arc::new)?;
        let (waiter, answer) = oneshot::channel();
        self.open.waiters.push(waiter);
        self.committed = true;
        drop(self);
        answer
            .await
            .unwrap_or_else(|_| Err(Arc::new(sqlx::Error::PoolClosed)))
    }
}

impl Deref for Job {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.open.conn
    }
}

impl DerefMut for Job {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.open.conn
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.committed {
            self.open.abandoned = true;
        }
        self.wake.notify_one();
    }
}
