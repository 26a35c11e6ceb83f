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
    /// PostgreSQL); they end when every handle is dropped.
    pub fn start(db: Database, writer: W) -> Self {
        let (jobs, receiver) = mpsc::channel(MAX_GROUP * 4);
        let committers = match db.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_COMMITTERS,
        };
        let receiver = Arc::new(Mutex::new(receiver));
        let writer = Arc::new(writer);
        for _ in 0..committers {
            crate::foundation::metrics_scope::spawn(run(
                db.clone(),
                Arc::clone(&writer),
                Arc::clone(&receiver),
            ));
        }
        Self { jobs }
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
/// held only while taking, so another committer can take the next group meanwhile.
async fn next_group<W: Write>(receiver: &Mutex<mpsc::Receiver<Job<W>>>) -> Option<Vec<Job<W>>> {
    let mut receiver = receiver.lock().await;
    let mut group = vec![receiver.recv().await?];
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    Some(group)
}

async fn run<W: Write>(db: Database, writer: Arc<W>, receiver: Arc<Mutex<mpsc::Receiver<Job<W>>>>) {
    let writer = &*writer;
    while let Some(group) = next_group(&receiver).await {
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
