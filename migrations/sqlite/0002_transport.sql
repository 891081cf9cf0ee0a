-- facepay, SQLite: what the Kafka transport keeps in the ledger's database, and one more
-- rule the schema enforces now that several processes may write one store.

-- No order is paid twice: at most one payment_succeeded event per (merchant, out_trade_no),
-- whoever appends it (until now a check of the invariants only).
CREATE UNIQUE INDEX events_order_paid_once
    ON events (json_extract(payload, '$.attempt.merchant_id'), json_extract(payload, '$.attempt.out_trade_no'))
    WHERE type = 'payment_succeeded';

-- Where each consumer group is in each partition: written in the same transaction as the
-- batch the messages produced, so a batch's effects and its offsets land together or not
-- at all (exactly-once effects over an at-least-once bus).
CREATE TABLE consumer_offsets (
    group_id    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL CHECK (partition >= 0),
    next_offset INTEGER NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;

-- The transactional outbox: messages a batch leaves for the transport to publish after its
-- commit. Not the event log: a relay marks messages published (an UPDATE, allowed here).
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT NOT NULL,
    key          TEXT NOT NULL,
    payload      BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    -- A relay claims a message until this instant, so two relays never publish it both;
    -- a relay that dies lets its claim lapse and another takes the message over.
    claimed_until TEXT,
    published_at TEXT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
