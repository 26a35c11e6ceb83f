-- The ledger of transaction-service. Portable SQL (SQLite and PostgreSQL): TEXT ids and RFC 3339
-- timestamps, BIGINT integers, money in integer minor units of the account's currency.

-- One account per customer, opened when `Customer.created` is consumed.
CREATE TABLE accounts (
    id                TEXT PRIMARY KEY,
    currency          TEXT NOT NULL,
    -- Current balance in minor units; debits never take it below zero.
    balance           BIGINT NOT NULL CHECK (balance >= 0),
    -- Sequence number of the account's last journal entry (1 = the opening entry).
    last_seq          BIGINT NOT NULL,
    opened_at         TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    -- The `Customer.created` event that opened the account.
    customer_event_id TEXT NOT NULL
);

-- Every requested transaction, whether it came through the HTTP API or straight from Kafka.
CREATE TABLE transactions (
    transaction_id TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('transfer', 'credit', 'debit')),
    from_account   TEXT,
    to_account     TEXT,
    -- Minor units; NULL when the requested amount was not valid money.
    amount         BIGINT,
    -- The amount as requested (decimal text), kept for requests that fail validation.
    amount_text    TEXT NOT NULL,
    currency       TEXT NOT NULL,
    -- Canonical form of the request (kind, accounts, amount, currency): the idempotency check.
    fingerprint    TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('requested', 'processed', 'failed')),
    reason         TEXT,
    message        TEXT,
    -- JSON object: balance after the transaction of each touched account (decimal strings).
    balances       TEXT,
    -- Who produced the request: `api` for our HTTP API, else the event's `ce_source`.
    source         TEXT NOT NULL,
    requested_at   TEXT NOT NULL,
    completed_at   TEXT
);
CREATE INDEX transactions_status ON transactions (status, requested_at);

-- The append-only journal: one entry per account touched by a transaction, plus the opening
-- entry of each account. For every account, balance = SUM(delta) of its entries.
CREATE TABLE entries (
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    seq            BIGINT NOT NULL,
    -- NULL for the opening entry.
    transaction_id TEXT REFERENCES transactions (transaction_id),
    entry_kind     TEXT NOT NULL CHECK (entry_kind IN ('opening', 'credit', 'debit')),
    delta          BIGINT NOT NULL,
    balance_after  BIGINT NOT NULL CHECK (balance_after >= 0),
    created_at     TEXT NOT NULL,
    PRIMARY KEY (account_id, seq),
    UNIQUE (transaction_id, account_id)
);
