-- SQLite numbers its outbox rows itself (PostgreSQL takes `seq` from the sequence `outbox_seq`).
-- The relay reads the rows after the highest `seq` it has published and deletes published rows at
-- once, so a number must never come back, even when every row has been deleted: `MAX(seq) + 1`
-- would. This row holds the last number given out. (Unused on PostgreSQL.)
CREATE TABLE outbox_counter (
    id       INTEGER PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
INSERT INTO outbox_counter (id, last_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM outbox;
