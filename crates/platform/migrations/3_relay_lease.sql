-- One relay per outbox across replicas, and publication in commit order.
--
-- `seq` orders the outbox. On PostgreSQL it comes from the sequence `outbox_seq` (created by the
-- platform next to these migrations; SQLite has no sequences), taken after the writing
-- transaction has its id; the relay publishes the rows below a cut-off `seq` only once every
-- transaction that was running when it took the cut-off has ended, so no lower `seq` can still
-- appear behind a published one (rows become visible at commit, not in `seq` order). On SQLite
-- (one writer at a time) `seq` is the next number. Rows written before this migration keep 0
-- and go first, in id order.
ALTER TABLE outbox ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (seq, id) WHERE sent_at IS NULL;

-- The relay's lease: the replica named `holder` publishes until `expires_at` (it renews well
-- before); a takeover increments `epoch`, and marking rows sent checks the holder's epoch, so a
-- relay that lost its lease (paused, cut off) finds out and stops.
CREATE TABLE outbox_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  TEXT NOT NULL
);
