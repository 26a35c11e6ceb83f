-- notification-service tables. Portable SQL (SQLite and PostgreSQL): TEXT ids and RFC 3339
-- timestamps, BIGINT numbers.

-- Our projection of customers, from `Customer.created`.
CREATE TABLE customers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- One row per notification: at most one per (event, customer, kind), written in the same
-- transaction as the event's inbox claim; the sender moves it pending -> sent | retrying | failed.
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    transaction_id  TEXT,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    last_error      TEXT,
    next_attempt_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    sent_at         TEXT,
    CONSTRAINT deliveries_once UNIQUE (event_id, customer_id, kind)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_customer ON deliveries (customer_id, created_at);
