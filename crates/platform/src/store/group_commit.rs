//! Group commit: concurrent HTTP writes share one database transaction (one durable commit for
//! many requests), and each request is answered after the commit that holds it. Durability is
//! unchanged: nothing is acknowledged before it is committed.
//!
//! SQLite has one committer (one writer connection). PostgreSQL has [`POSTGRES_COMMITTERS`], so
//! a group is written while the previous one waits for its WAL flush, and the server merges
//! their flushes.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;

use crate::store::db::{Backend, Conn, Database, DbError};

/// Most writes committed together.
const MAX_GROUP: usize = 256;

/// Groups in flight at once on PostgreSQL.
pub const POSTGRES_COMMITTERS: usize = 4;

/// A write that can share a transaction with others.
pub trait Write: Send + Sync + 'static {
    /// What a request asks for.
    type Input: Send + Sync + 'static;
    /// What it is answered (business outcomes such as a conflict included).
    type Output: Send + 'static;

    /// Performs one write inside the shared transaction. An `Err` aborts the transaction; the
    /// group's writes are then done again one transaction each, so one failing write does not
    /// fail the others.
    fn write(
        &self,
        conn: &mut Conn,
        input: &Self::Input,
    ) -> impl Future<Output = Result<Self::Output, DbError>> + Send;

    /// Performs a group's writes in order inside the shared transaction, one output per input.
    /// The default performs each with [`Write::write`]; a writer overrides it to write the whole
    /// group with a fixed number of statements.
    fn write_all(
        &self,
        conn: &mut Conn,
        inputs: &[&Self::Input],
    ) -> impl Future<Output = Result<Vec<Self::Output>, DbError>> + Send {
        async move {
            let mut outputs = Vec::with_capacity(inputs.len());
            for input in inputs {
                outputs.push(self.write(conn, input).await?);
            }
            Ok(outputs)
        }
    }

    /// Runs after each commit (e.g. wake the outbox relay).
    fn committed(&self) {}
}

struct Job<W: Write> {
    input: W::Input,
    reply: oneshot::Sender<Result<W::Output, Arc<DbError>>>,
}

/// Hands writes to a committer task that commits them in groups.
pub struct GroupCommit<W: Write> {
    jobs: mpsc::Sender<Job<W>>,
}

impl<W: Write> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<W: Write> std::fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

/// The committer is gone (the service is stopping) or the database failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The database failed; nothing of this write was committed.
    #[error(transparent)]
    Db(Arc<DbError>),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    Stopped,
}

impl<W: Write> GroupCommit<W> {
    /// Starts the committers of `writer` on `db` (one on SQLite, [`POSTGRES_COMMITTERS`] on
    /// PostgreSQL) and returns them, to be run as tasks. Once `stop` is cancelled the queue
    /// takes nothing more: the committers commit what it holds (writes whose requests were cut
    /// off included) and end, so a service that awaits them before its relay's last round
    /// leaves no event of theirs behind (see [`crate::runtime::service::Service::group_commit`]).
    pub fn start(
        db: Database,
        writer: W,
        stop: CancellationToken,
    ) -> (Self, Vec<impl Future<Output = ()> + Send + 'static>) {
        let (jobs, receiver) = mpsc::channel(MAX_GROUP * 4);
        let committers = match db.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_COMMITTERS,
        };
        let receiver = Arc::new(Mutex::new(receiver));
        let writer = Arc::new(writer);
        let committers = (0..committers)
            .map(|_| {
                run(
                    db.clone(),
                    Arc::clone(&writer),
                    Arc::clone(&receiver),
                    stop.clone(),
                )
            })
            .collect();
        (Self { jobs }, committers)
    }

    /// Performs `input` and returns its answer once it is committed.
    pub async fn submit(&self, input: W::Input) -> Result<W::Output, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { input, reply })
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer
            .await
            .map_err(|_| CommitError::Stopped)?
            .map_err(CommitError::Db)
    }
}

/// Takes the next group: waits for one write, then takes whatever else is queued. The queue is
/// held only while taking, so another committer can take the next group meanwhile. Once `stop`
/// is cancelled the queue is closed: what it holds is still taken, then `None`.
async fn next_group<W: Write>(
    receiver: &Mutex<mpsc::Receiver<Job<W>>>,
    stop: &CancellationToken,
) -> Option<Vec<Job<W>>> {
    let mut receiver = receiver.lock().await;
    let first = tokio::select! {
        biased;
        job = receiver.recv() => job,
        () = stop.cancelled() => {
            receiver.close();
            receiver.recv().await
        }
    };
    let mut group = vec![first?];
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    Some(group)
}

async fn run<W: Write>(
    db: Database,
    writer: Arc<W>,
    receiver: Arc<Mutex<mpsc::Receiver<Job<W>>>>,
    stop: CancellationToken,
) {
    let writer = &*writer;
    while let Some(group) = next_group(&receiver, &stop).await {
        metrics::histogram!("group_commit_writes").record(group.len() as f64);
        match commit_together(&db, writer, &group).await {
            Ok(outputs) => answer(writer, group, outputs),
            Err(error) if group.len() > 1 => {
                tracing::warn!(%error, writes = group.len(), "group commit failed; committing one by one");
                for job in group {
                    let single = commit_together(&db, writer, std::slice::from_ref(&job)).await;
                    match single {
                        Ok(outputs) => answer(writer, vec![job], outputs),
                        Err(error) => {
                            let _ = job.reply.send(Err(Arc::new(error)));
                        }
                    }
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for job in group {
                    let _ = job.reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }
}

async fn commit_together<W: Write>(
    db: &Database,
    writer: &W,
    group: &[Job<W>],
) -> Result<Vec<W::Output>, DbError> {
    let mut tx = db.begin().await?;
    let inputs: Vec<&W::Input> = group.iter().map(|job| &job.input).collect();
    let outputs = writer.write_all(&mut tx, &inputs).await?;
    tx.commit().await?;
    Ok(outputs)
}

fn answer<W: Write>(writer: &W, group: Vec<Job<W>>, outputs: Vec<W::Output>) {
    crate::failpoint!("http.after_commit");
    writer.committed();
    for (job, output) in group.into_iter().zip(outputs) {
        let _ = job.reply.send(Ok(output));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    /// Inserts its input into `t`, each write once a permit of `gate` is free.
    struct Insert {
        gate: Arc<Semaphore>,
    }

    impl Write for Insert {
        type Input = i64;
        type Output = ();

        async fn write(&self, conn: &mut Conn, input: &i64) -> Result<(), DbError> {
            let _permit = self.gate.acquire().await.expect("open gate");
            sqlx::query("INSERT INTO t (v) VALUES ($1)")
                .bind(*input)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn at_stop_the_committers_commit_the_writes_of_requests_cut_off_and_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/commit.db", dir.path().display());
        let db = Database::connect(&url).await.expect("database");
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(db.pool())
            .await
            .expect("table");
        let gate = Arc::new(Semaphore::new(0));
        let stop = CancellationToken::new();
        let writer = Insert {
            gate: Arc::clone(&gate),
        };
        let (commit, committers) = GroupCommit::start(db.clone(), writer, stop.clone());
        let committers: Vec<_> = committers.into_iter().map(tokio::spawn).collect();
        // The first write holds the committer; three more queue behind it, and their requests
        // are cut off (the HTTP server gave up on them) before anything commits.
        let first = tokio::spawn({
            let commit = commit.clone();
            async move { commit.submit(1).await }
        });
        let cut_off: Vec<_> = (2..=4)
            .map(|v| {
                let commit = commit.clone();
                tokio::spawn(async move { commit.submit(v).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for request in cut_off {
            request.abort();
        }
        stop.cancel();
        gate.add_permits(4);
        assert!(matches!(first.await, Ok(Ok(()))), "the first is answered");
        for committer in committers {
            tokio::time::timeout(Duration::from_secs(10), committer)
                .await
                .expect("the committer ends once the queue is empty, handles alive or not")
                .expect("committer");
        }
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.pool())
            .await
            .expect("count");
        assert_eq!(rows, 4, "every queued write committed");
        assert!(
            matches!(commit.submit(5).await, Err(CommitError::Stopped)),
            "nothing is taken after the stop"
        );
    }
}
