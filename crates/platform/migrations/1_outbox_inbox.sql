-- Platform tables, shared by every service. Portable SQL: SQLite and PostgreSQL.
-- Service migrations use versions >= 100.

-- Events written in the same transaction as the state change they describe; the relay publishes
-- them in id order (UUIDv7, time-ordered) and marks them sent once the broker acknowledged them.
CREATE TABLE outbox (
    id          TEXT PRIMARY KEY,
    topic       TEXT NOT NULL,
    record_key  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    headers     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    sent_at     TEXT
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Event ids a consumer has applied, recorded in the same transaction as the effect.
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
