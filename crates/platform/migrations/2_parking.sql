-- Records that wait for another event (an account or a customer not known yet). They are parked
-- (their inbox claim is committed with the row) so the partition moves on, and decided when the
-- awaited event arrives or their deadline passes. Ids are UUIDv7: parking order.
CREATE TABLE parked (
    id           TEXT PRIMARY KEY,
    consumer     TEXT NOT NULL,
    topic        TEXT NOT NULL,
    partition_no BIGINT NOT NULL,
    record_offset BIGINT NOT NULL,
    record_key   TEXT,
    payload      TEXT NOT NULL,
    headers      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    parked_at    TEXT NOT NULL,
    deadline     TEXT NOT NULL
);
CREATE INDEX parked_by_consumer ON parked (consumer, id);
CREATE INDEX parked_by_deadline ON parked (consumer, deadline);

-- The keys (e.g. accounts) a parked record touches: a later record touching one of them waits
-- behind it, so each key's records are applied in order.
CREATE TABLE parked_keys (
    consumer  TEXT NOT NULL,
    record_key TEXT NOT NULL,
    parked_id TEXT NOT NULL,
    PRIMARY KEY (consumer, record_key, parked_id)
);
