-- facepay, SQLite: the rest of a payment's life (reversal, automatic revocation, refunds,
-- fees and daily settlement, Pay Score holds) and the audit chain of the event log.

-- Orders gain two final statuses and what went back of them. SQLite cannot change a CHECK
-- in place, so the table is rebuilt (nothing references it).
CREATE TABLE orders_v4 (
    merchant_id      TEXT    NOT NULL,
    out_trade_no     TEXT    NOT NULL,
    amount_fen       INTEGER NOT NULL CHECK (amount_fen > 0),
    status           TEXT    NOT NULL CHECK (status IN ('PAID', 'DECLINED', 'REVERSED', 'REVOKED')),
    reason           TEXT,
    payer_id         TEXT,
    face_code        TEXT    NOT NULL,
    member_quick_pay INTEGER NOT NULL,
    store_id         TEXT    NOT NULL,
    device_id        TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    fee_fen          INTEGER NOT NULL DEFAULT 0 CHECK (fee_fen >= 0 AND fee_fen <= amount_fen),
    refunded_fen     INTEGER NOT NULL DEFAULT 0 CHECK (refunded_fen >= 0 AND refunded_fen <= amount_fen),
    fee_refunded_fen INTEGER NOT NULL DEFAULT 0 CHECK (fee_refunded_fen >= 0 AND fee_refunded_fen <= fee_fen),
    PRIMARY KEY (merchant_id, out_trade_no)
) WITHOUT ROWID;
INSERT INTO orders_v4 (merchant_id, out_trade_no, amount_fen, status, reason, payer_id, face_code,
                       member_quick_pay, store_id, device_id, created_at, updated_at)
    SELECT merchant_id, out_trade_no, amount_fen, status, reason, payer_id, face_code,
           member_quick_pay, store_id, device_id, created_at, updated_at FROM orders;
DROP TABLE orders;
ALTER TABLE orders_v4 RENAME TO orders;

CREATE TABLE merchant_fee_rates (
    merchant_id  TEXT PRIMARY KEY,
    fee_rate_ppm INTEGER NOT NULL CHECK (fee_rate_ppm >= 0 AND fee_rate_ppm <= 100000)
) WITHOUT ROWID;

-- Refunds are never changed once made: a second row for one refund number is refused.
CREATE TABLE refunds (
    merchant_id    TEXT    NOT NULL,
    out_refund_no  TEXT    NOT NULL,
    out_trade_no   TEXT    NOT NULL,
    payer_id       TEXT    NOT NULL,
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    fee_refund_fen INTEGER NOT NULL CHECK (fee_refund_fen >= 0),
    refunded_at    TEXT    NOT NULL,
    PRIMARY KEY (merchant_id, out_refund_no)
) WITHOUT ROWID;
CREATE INDEX refunds_order ON refunds (merchant_id, out_trade_no);
CREATE TRIGGER refunds_no_update BEFORE UPDATE ON refunds
BEGIN SELECT RAISE(ABORT, 'refunds are final'); END;

CREATE TABLE holds (
    merchant_id  TEXT    NOT NULL,
    out_order_no TEXT    NOT NULL,
    payer_id     TEXT    NOT NULL,
    hold_fen     INTEGER NOT NULL CHECK (hold_fen > 0),
    status       TEXT    NOT NULL CHECK (status IN ('CREATED', 'DONE', 'REVOKED', 'EXPIRED')),
    total_fen    INTEGER CHECK (total_fen > 0 AND total_fen <= hold_fen),
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    CHECK ((status = 'DONE') = (total_fen IS NOT NULL)),
    PRIMARY KEY (merchant_id, out_order_no)
) WITHOUT ROWID;
CREATE INDEX holds_payer ON holds (payer_id);
-- A hold ends once: a final status never changes again.
CREATE TRIGGER holds_final BEFORE UPDATE ON holds WHEN OLD.status <> 'CREATED'
BEGIN SELECT RAISE(ABORT, 'the hold has already ended'); END;

-- A merchant's money per Asia/Shanghai day, moved by each batch's events.
CREATE TABLE settlement (
    merchant_id TEXT    NOT NULL,
    day         TEXT    NOT NULL,
    gross_fen   INTEGER NOT NULL CHECK (gross_fen >= 0),
    refunds_fen INTEGER NOT NULL CHECK (refunds_fen >= 0),
    fees_fen    INTEGER NOT NULL,
    net_fen     INTEGER NOT NULL,
    CHECK (net_fen = gross_fen - refunds_fen - fees_fen),
    PRIMARY KEY (merchant_id, day)
) WITHOUT ROWID;

-- The log itself refuses a second ending of one hold, a second reversal of one order and a
-- second refund under one number, whichever writer appends it: complete and cancel of one
-- hold cannot both land.
CREATE UNIQUE INDEX events_hold_ends_once
    ON events (json_extract(payload, '$.merchant_id'), json_extract(payload, '$.out_order_no'))
    WHERE type IN ('hold_completed', 'hold_cancelled', 'hold_expired');
CREATE UNIQUE INDEX events_order_reversed_once
    ON events (json_extract(payload, '$.merchant_id'), json_extract(payload, '$.out_trade_no'))
    WHERE type = 'order_reversed';
CREATE UNIQUE INDEX events_refund_once
    ON events (json_extract(payload, '$.merchant_id'), json_extract(payload, '$.out_refund_no'))
    WHERE type = 'refund_succeeded';

-- The audit chain: each event's hash covers its content and the hash of the previous event
-- of its stream (NULL only for events written before the chain existed).
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX events_chain_link ON events (stream, prev_hash) WHERE hash IS NOT NULL;
