-- Registered customers. Portable SQL (SQLite and PostgreSQL): TEXT ids and RFC 3339 timestamps.
-- `seq` orders the list by registration (timestamps can tie within a millisecond).
CREATE TABLE customers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    seq         BIGINT NOT NULL
);
CREATE INDEX customers_by_seq ON customers (seq, id);
