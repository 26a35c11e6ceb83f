//! The group commit of a service with a database, started among the service's tasks so that
//! shutdown commits its queue before the relay's last round.

use crate::store::db::Database;
use crate::store::group_commit::{GroupCommit, Write};

use super::Service;

impl Service<Database> {
    /// Starts the group commit of `writer` (see [`crate::store::group_commit`]). At shutdown its
    /// committers commit every queued write, those of requests cut off included, before the
    /// relay's last round, so none of their events is left in the outbox.
    pub fn group_commit<W: Write>(&mut self, writer: W) -> GroupCommit<W> {
        let (commit, committers) =
            GroupCommit::start(self.db.clone(), writer, self.writes_stop.clone());
        for committer in committers {
            self.consumers.spawn(self.config.metrics.scope(committer));
        }
        commit
    }
}
