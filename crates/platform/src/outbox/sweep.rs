//! Deleting published rows off the relay's path: acknowledged rows are deleted by a task of
//! their own, one fenced `DELETE` at a time, while the relay goes on publishing. Rows
//! acknowledged while a delete runs wait for the next one (so deletes batch themselves under
//! load). Until its delete has committed a row is known here, so the relay does not publish it
//! again.

use std::collections::HashSet;

use tokio::task::JoinHandle;

use super::lease::Term;
use crate::store::db::{json_param, Database};

/// What a delete did: the rows it was given, and how many it deleted (or its error).
type Swept = (Vec<String>, Result<u64, sqlx::Error>);

/// Acknowledged rows on their way out of the table.
#[derive(Default)]
pub(super) struct Sweep {
    /// Acknowledged and not yet deleted.
    ids: HashSet<String>,
    /// Acknowledged while a delete ran: the next delete's.
    queued: Vec<String>,
    running: Option<JoinHandle<Swept>>,
}

/// A delete that did not go through.
#[derive(Debug, thiserror::Error)]
pub(super) enum SweepError {
    /// The delete matched nothing: the lease has moved on (the rows are the new holder's).
    #[error("fenced: the lease has moved on")]
    Fenced,
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("outbox delete task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Sweep {
    /// True when row `id` was acknowledged and is not deleted yet.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// How many acknowledged rows are not deleted yet.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when every acknowledged row is deleted.
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Notes rows the broker acknowledged under `term`; starts a delete when none runs.
    pub(super) fn add(&mut self, db: &Database, term: &Term, acked: Vec<String>) {
        self.ids.extend(acked.iter().cloned());
        self.queued.extend(acked);
        self.start(db, term);
    }

    /// Collects the running delete when it has ended (`wait`: waits for it) and starts the
    /// next. A failed delete's rows go in the next one, started at once (the relay's next round
    /// reaps it).
    pub(super) async fn reap(
        &mut self,
        db: &Database,
        term: &Term,
        wait: bool,
    ) -> Result<(), SweepError> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        if !wait && !running.is_finished() {
            return Ok(());
        }
        let swept = running.await;
        self.running = None;
        let (ids, deleted) = swept?;
        let outcome = match deleted {
            Ok(0) => Err(SweepError::Fenced),
            Ok(_) => {
                metrics::counter!("outbox_published_total").increment(ids.len() as u64);
                for id in &ids {
                    self.ids.remove(id);
                }
                Ok(())
            }
            Err(error) => {
                self.queued.extend(ids);
                Err(error.into())
            }
        };
        if !matches!(outcome, Err(SweepError::Fenced)) {
            self.start(db, term);
        }
        outcome
    }

    /// Waits until every acknowledged row is deleted (a relay stopping).
    pub(super) async fn drain(&mut self, db: &Database, term: &Term) -> Result<(), SweepError> {
        self.start(db, term);
        while self.running.is_some() {
            self.reap(db, term, true).await?;
        }
        Ok(())
    }

    fn start(&mut self, db: &Database, term: &Term) {
        if self.running.is_some() || self.queued.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.queued);
        let db = db.clone();
        let term = term.clone();
        self.running = Some(crate::foundation::metrics_scope::spawn(async move {
            let deleted = delete_sent(&db, &ids, &term).await;
            (ids, deleted)
        }));
    }
}

/// Deletes the published rows `ids`, in one statement, if `term` is still the lease's current
/// one; returns how many rows it deleted.
async fn delete_sent(db: &Database, ids: &[String], term: &Term) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM outbox WHERE {} AND id IN ({})",
        Term::fence(1),
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
