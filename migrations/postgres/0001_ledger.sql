-- facepay ledger, PostgreSQL (the production profile): the same tables as SQLite's
-- 0001_ledger.sql + 0002_transport.sql, with PostgreSQL's types.
--
-- What the database itself enforces:
-- * The event log, postings and ledger transactions are append-only: statement triggers
--   refuse UPDATE, DELETE and TRUNCATE on them (whoever asks, short of disabling triggers).
-- * Double entry, checked at COMMIT: a posting's transaction must have its
--   `ledger_transactions` row (a deferred foreign key), and a deferred constraint trigger on
--   postings and on ledger_transactions checks, when the database transaction commits, that
--   the transaction's postings sum to zero and number exactly its `leg_count`. An
--   unbalanced transaction, postings without their transaction row, or a transaction row
--   without its postings make the COMMIT fail, whatever order the rows came in.
-- * Sealing, as in SQLite: a posting for a transaction whose row already exists is refused at
--   once ("the transaction is sealed"), so the store writes postings first, then the row.
--   (The commit-time check would refuse it too: the leg count would no longer match.)
-- * No order is paid twice: a unique index over the payment_succeeded events' (merchant,
--   out_trade_no).
-- * A posting is never zero; amounts, limits and statuses have CHECKs; every constraint is
--   named.

-- ---- the log ----------------------------------------------------------------------------

CREATE FUNCTION facepay_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are append-only', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TABLE events (
    seq            BIGINT      GENERATED ALWAYS AS IDENTITY,
    event_id       UUID        NOT NULL,
    cause_event_id UUID        NOT NULL,
    stream         TEXT        NOT NULL,
    type           TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    payload        JSONB       NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (seq),
    CONSTRAINT events_event_id_unique UNIQUE (event_id)
);
CREATE INDEX events_stream ON events (stream, seq);
-- No order is paid twice: at most one payment_succeeded event per (merchant, out_trade_no).
CREATE UNIQUE INDEX events_order_paid_once
    ON events ((payload->'attempt'->>'merchant_id'), (payload->'attempt'->>'out_trade_no'))
    WHERE type = 'payment_succeeded';
CREATE INDEX events_cause ON events (cause_event_id);
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('events');

CREATE TABLE ledger_transactions (
    txn_id    UUID        NOT NULL,
    event_id  UUID        NOT NULL,
    leg_count INTEGER     NOT NULL,
    posted_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT ledger_transactions_pkey PRIMARY KEY (txn_id),
    CONSTRAINT ledger_transactions_event_fk FOREIGN KEY (event_id) REFERENCES events (event_id),
    CONSTRAINT ledger_transactions_two_legs CHECK (leg_count >= 2)
);
CREATE INDEX ledger_transactions_event ON ledger_transactions (event_id);
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('ledger transactions');

CREATE TABLE postings (
    txn_id     UUID    NOT NULL,
    leg        INTEGER NOT NULL,
    account    TEXT    NOT NULL,
    amount_fen BIGINT  NOT NULL,
    CONSTRAINT postings_pkey PRIMARY KEY (txn_id, leg),
    CONSTRAINT postings_txn_fk FOREIGN KEY (txn_id) REFERENCES ledger_transactions (txn_id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT postings_amount_nonzero CHECK (amount_fen <> 0)
);
CREATE INDEX postings_account ON postings (account);
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('postings');

-- At COMMIT, for each posting and each transaction row written: the transaction exists, its
-- postings sum to zero, and they number its leg count.
CREATE FUNCTION facepay_txn_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    expected INTEGER;
    legs     BIGINT;
    total    NUMERIC;
BEGIN
    SELECT leg_count INTO expected FROM ledger_transactions WHERE txn_id = NEW.txn_id;
    IF expected IS NULL THEN
        RAISE EXCEPTION 'postings of transaction % have no transaction row', NEW.txn_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT COUNT(*), COALESCE(SUM(amount_fen), 0) INTO legs, total FROM postings WHERE txn_id = NEW.txn_id;
    IF total <> 0 OR legs <> expected THEN
        RAISE EXCEPTION 'postings of a transaction must sum to zero over its % legs (transaction %: % legs, sum %)',
            expected, NEW.txn_id, legs, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION facepay_txn_balanced();
CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION facepay_txn_balanced();

CREATE FUNCTION facepay_postings_unsealed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_transactions WHERE txn_id = NEW.txn_id) THEN
        RAISE EXCEPTION 'the transaction % is sealed', NEW.txn_id USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER postings_after_seal BEFORE INSERT ON postings
    FOR EACH ROW EXECUTE FUNCTION facepay_postings_unsealed();

-- ---- answers and refusals ------------------------------------------------------------------

-- Every inbound event the ledger answered, with its answer (the outcome's JSON text, served
-- back byte for byte): a redelivered event gets the stored answer and changes nothing.
CREATE TABLE inbound (
    id           BIGINT      GENERATED ALWAYS AS IDENTITY,
    event_id     UUID        NOT NULL,
    type         TEXT        NOT NULL,
    outcome      TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT inbound_pkey PRIMARY KEY (id),
    CONSTRAINT inbound_event_id_unique UNIQUE (event_id)
);

-- Bad input, kept with its reason (nothing is silently dropped).
CREATE TABLE rejected_events (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY,
    received_at   TIMESTAMPTZ NOT NULL,
    source        TEXT        NOT NULL,
    event_id      UUID,
    type          TEXT,
    reason_code   TEXT        NOT NULL,
    field         TEXT,
    message       TEXT        NOT NULL,
    raw           BYTEA       NOT NULL,
    raw_truncated BOOLEAN     NOT NULL DEFAULT FALSE,
    CONSTRAINT rejected_events_pkey PRIMARY KEY (id)
);

-- ---- the fleet registry ---------------------------------------------------------------------

CREATE TABLE merchants (
    merchant_id TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT merchants_pkey PRIMARY KEY (merchant_id)
);
CREATE TABLE devices (
    device_id   TEXT        NOT NULL,
    merchant_id TEXT        NOT NULL,
    store_id    TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT devices_pkey PRIMARY KEY (device_id),
    CONSTRAINT devices_merchant_fk FOREIGN KEY (merchant_id) REFERENCES merchants (merchant_id)
);

-- ---- projections: folds of the log, written in the same transaction as the events ---------

CREATE TABLE balances (
    account     TEXT   NOT NULL,
    balance_fen BIGINT NOT NULL,
    CONSTRAINT balances_pkey PRIMARY KEY (account)
);
CREATE TABLE payers (
    payer_id TEXT    NOT NULL,
    frozen   BOOLEAN NOT NULL,
    CONSTRAINT payers_pkey PRIMARY KEY (payer_id)
);
CREATE TABLE merchant_limits (
    merchant_id      TEXT   NOT NULL,
    single_limit_fen BIGINT NOT NULL,
    CONSTRAINT merchant_limits_pkey PRIMARY KEY (merchant_id),
    CONSTRAINT merchant_limits_positive CHECK (single_limit_fen > 0)
);
CREATE TABLE orders (
    merchant_id      TEXT        NOT NULL,
    out_trade_no     TEXT        NOT NULL,
    amount_fen       BIGINT      NOT NULL,
    status           TEXT        NOT NULL,
    reason           TEXT,
    payer_id         TEXT,
    face_code        TEXT        NOT NULL,
    member_quick_pay BOOLEAN     NOT NULL,
    store_id         TEXT        NOT NULL,
    device_id        TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT orders_pkey PRIMARY KEY (merchant_id, out_trade_no),
    CONSTRAINT orders_amount_positive CHECK (amount_fen > 0),
    CONSTRAINT orders_status_known CHECK (status IN ('PAID', 'DECLINED'))
);
CREATE TABLE captures (
    face_code    TEXT NOT NULL,
    merchant_id  TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    CONSTRAINT captures_pkey PRIMARY KEY (face_code)
);
CREATE TABLE members (
    merchant_id TEXT        NOT NULL,
    payer_id    TEXT        NOT NULL,
    card_code   TEXT        NOT NULL,
    channel     TEXT        NOT NULL,
    opened_at   TIMESTAMPTZ NOT NULL,
    closed_at   TIMESTAMPTZ,
    CONSTRAINT members_pkey PRIMARY KEY (merchant_id, payer_id)
);
CREATE TABLE daily_usage (
    payer_id   TEXT   NOT NULL,
    day        DATE   NOT NULL,
    amount_fen BIGINT NOT NULL,
    count      BIGINT NOT NULL,
    CONSTRAINT daily_usage_pkey PRIMARY KEY (payer_id, day)
);
-- A merchant's transaction history: one row per decided payment attempt, newest first.
CREATE TABLE history (
    id               BIGINT      GENERATED ALWAYS AS IDENTITY,
    event_id         UUID        NOT NULL,
    merchant_id      TEXT        NOT NULL,
    out_trade_no     TEXT        NOT NULL,
    amount_fen       BIGINT      NOT NULL,
    status           TEXT        NOT NULL,
    reason           TEXT,
    payer_id         TEXT,
    member_quick_pay BOOLEAN     NOT NULL,
    store_id         TEXT        NOT NULL,
    device_id        TEXT        NOT NULL,
    occurred_at      TIMESTAMPTZ NOT NULL,
    day              DATE        NOT NULL,
    CONSTRAINT history_pkey PRIMARY KEY (id)
);
CREATE INDEX history_merchant ON history (merchant_id, id DESC);
CREATE INDEX history_merchant_day ON history (merchant_id, day, id DESC);

-- ---- the transport ------------------------------------------------------------------------

-- Where each consumer group is in each partition: written in the same transaction as the
-- batch the messages produced, so a batch's effects and its offsets land together or not at
-- all.
CREATE TABLE consumer_offsets (
    group_id    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT  NOT NULL,
    CONSTRAINT consumer_offsets_pkey PRIMARY KEY (group_id, topic, partition),
    CONSTRAINT consumer_offsets_partition_valid CHECK (partition >= 0),
    CONSTRAINT consumer_offsets_offset_valid CHECK (next_offset >= 0)
);

-- The transactional outbox: messages a batch leaves for the transport to publish after its
-- commit. Not the event log: a relay marks messages published (an UPDATE, allowed here).
CREATE TABLE outbox (
    id           BIGINT      GENERATED ALWAYS AS IDENTITY,
    topic        TEXT        NOT NULL,
    key          TEXT        NOT NULL,
    payload      BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    -- A relay claims a message until this instant (FOR UPDATE SKIP LOCKED), so two relays
    -- never publish it both; a relay that dies lets its claim lapse and another takes over.
    claimed_until TIMESTAMPTZ,
    published_at TIMESTAMPTZ,
    CONSTRAINT outbox_pkey PRIMARY KEY (id)
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
