-- facepay ledger, SQLite (the embedded profile).
-- The event log, postings and transactions are append-only: triggers refuse UPDATE and DELETE.
-- Postings of a transaction must sum to zero: a transaction row is inserted after its
-- postings ("sealing" it) and its trigger refuses it unless they balance; postings for a
-- sealed transaction are refused; and every posting must have its transaction row by the
-- end of the database transaction (a deferred foreign key).

CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL,
    cause_event_id TEXT    NOT NULL,
    stream         TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at    TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    CONSTRAINT events_event_id_unique UNIQUE (event_id)
);
CREATE INDEX events_stream ON events (stream, seq);
CREATE INDEX events_cause ON events (cause_event_id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE ledger_transactions (
    txn_id    TEXT    PRIMARY KEY,
    event_id  TEXT    NOT NULL REFERENCES events (event_id),
    leg_count INTEGER NOT NULL CHECK (leg_count >= 2),
    posted_at TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE postings (
    txn_id     TEXT    NOT NULL REFERENCES ledger_transactions (txn_id) DEFERRABLE INITIALLY DEFERRED,
    leg        INTEGER NOT NULL,
    account    TEXT    NOT NULL,
    amount_fen INTEGER NOT NULL CHECK (amount_fen <> 0),
    PRIMARY KEY (txn_id, leg)
) WITHOUT ROWID;
CREATE INDEX postings_account ON postings (account);

CREATE TRIGGER ledger_transactions_balanced BEFORE INSERT ON ledger_transactions
WHEN (SELECT COALESCE(SUM(amount_fen), 0) FROM postings WHERE txn_id = NEW.txn_id) <> 0
  OR (SELECT COUNT(*) FROM postings WHERE txn_id = NEW.txn_id) <> NEW.leg_count
BEGIN SELECT RAISE(ABORT, 'postings of a transaction must sum to zero'); END;
CREATE TRIGGER postings_after_seal BEFORE INSERT ON postings
WHEN EXISTS (SELECT 1 FROM ledger_transactions WHERE txn_id = NEW.txn_id)
BEGIN SELECT RAISE(ABORT, 'the transaction is sealed'); END;
CREATE TRIGGER ledger_transactions_no_update BEFORE UPDATE ON ledger_transactions
BEGIN SELECT RAISE(ABORT, 'ledger transactions are append-only'); END;
CREATE TRIGGER ledger_transactions_no_delete BEFORE DELETE ON ledger_transactions
BEGIN SELECT RAISE(ABORT, 'ledger transactions are append-only'); END;
CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
BEGIN SELECT RAISE(ABORT, 'postings are append-only'); END;
CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
BEGIN SELECT RAISE(ABORT, 'postings are append-only'); END;

-- Every inbound event the ledger answered, with its answer: a redelivered event gets the
-- stored answer and changes nothing.
-- A rowid table: answers are appended in order; only the small key index is random.
CREATE TABLE inbound (
    id           INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL,
    type         TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    CONSTRAINT inbound_event_id_unique UNIQUE (event_id)
);

-- Bad input, kept with its reason (nothing is silently dropped).
CREATE TABLE rejected_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at  TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    event_id     TEXT,
    type         TEXT,
    reason_code  TEXT    NOT NULL,
    field        TEXT,
    message      TEXT    NOT NULL,
    raw          BLOB    NOT NULL,
    raw_truncated INTEGER NOT NULL DEFAULT 0
);

-- The fleet registry: which devices belong to which store and merchant.
CREATE TABLE merchants (
    merchant_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (merchant_id),
    store_id    TEXT NOT NULL,
    created_at  TEXT NOT NULL
) WITHOUT ROWID;

-- Projections: folds of the event log, written in the same transaction as the events.
CREATE TABLE balances (
    account     TEXT PRIMARY KEY,
    balance_fen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE payers (
    payer_id TEXT PRIMARY KEY,
    frozen   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE merchant_limits (
    merchant_id     TEXT PRIMARY KEY,
    single_limit_fen INTEGER NOT NULL CHECK (single_limit_fen > 0)
) WITHOUT ROWID;
CREATE TABLE orders (
    merchant_id      TEXT    NOT NULL,
    out_trade_no     TEXT    NOT NULL,
    amount_fen       INTEGER NOT NULL CHECK (amount_fen > 0),
    status           TEXT    NOT NULL CHECK (status IN ('PAID', 'DECLINED')),
    reason           TEXT,
    payer_id         TEXT,
    face_code        TEXT    NOT NULL,
    member_quick_pay INTEGER NOT NULL,
    store_id         TEXT    NOT NULL,
    device_id        TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    PRIMARY KEY (merchant_id, out_trade_no)
) WITHOUT ROWID;
CREATE TABLE captures (
    face_code    TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    out_trade_no TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE members (
    merchant_id TEXT NOT NULL,
    payer_id    TEXT NOT NULL,
    card_code   TEXT NOT NULL,
    channel     TEXT NOT NULL,
    opened_at   TEXT NOT NULL,
    closed_at   TEXT,
    PRIMARY KEY (merchant_id, payer_id)
) WITHOUT ROWID;
CREATE TABLE daily_usage (
    payer_id   TEXT    NOT NULL,
    day        TEXT    NOT NULL,
    amount_fen INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (payer_id, day)
) WITHOUT ROWID;
-- A merchant's transaction history: one row per decided payment attempt, newest first.
CREATE TABLE history (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT    NOT NULL,
    merchant_id      TEXT    NOT NULL,
    out_trade_no     TEXT    NOT NULL,
    amount_fen       INTEGER NOT NULL,
    status           TEXT    NOT NULL,
    reason           TEXT,
    payer_id         TEXT,
    member_quick_pay INTEGER NOT NULL,
    store_id         TEXT    NOT NULL,
    device_id        TEXT    NOT NULL,
    occurred_at      TEXT    NOT NULL,
    day              TEXT    NOT NULL
);
CREATE INDEX history_merchant ON history (merchant_id, id DESC);
CREATE INDEX history_merchant_day ON history (merchant_id, day, id DESC);
