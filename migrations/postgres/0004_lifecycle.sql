-- facepay, PostgreSQL: the rest of a payment's life (reversal, automatic revocation, refunds,
-- fees and daily settlement, Pay Score holds) and the audit chain of the event log. The same
-- tables and rules as SQLite's 0004_lifecycle.sql.

ALTER TABLE orders DROP CONSTRAINT orders_status_known;
ALTER TABLE orders
    ADD CONSTRAINT orders_status_known CHECK (status IN ('PAID', 'DECLINED', 'REVERSED', 'REVOKED')),
    ADD COLUMN fee_fen BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN refunded_fen BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN fee_refunded_fen BIGINT NOT NULL DEFAULT 0,
    ADD CONSTRAINT orders_fee_valid CHECK (fee_fen >= 0 AND fee_fen <= amount_fen),
    ADD CONSTRAINT orders_refunds_within_paid CHECK (refunded_fen >= 0 AND refunded_fen <= amount_fen),
    ADD CONSTRAINT orders_fee_refunds_within_fee CHECK (fee_refunded_fen >= 0 AND fee_refunded_fen <= fee_fen);

CREATE TABLE merchant_fee_rates (
    merchant_id  TEXT   NOT NULL,
    fee_rate_ppm BIGINT NOT NULL,
    CONSTRAINT merchant_fee_rates_pkey PRIMARY KEY (merchant_id),
    CONSTRAINT merchant_fee_rates_range CHECK (fee_rate_ppm >= 0 AND fee_rate_ppm <= 100000)
);

CREATE TABLE refunds (
    merchant_id    TEXT        NOT NULL,
    out_refund_no  TEXT        NOT NULL,
    out_trade_no   TEXT        NOT NULL,
    payer_id       TEXT        NOT NULL,
    amount_fen     BIGINT      NOT NULL,
    fee_refund_fen BIGINT      NOT NULL,
    refunded_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT refunds_pkey PRIMARY KEY (merchant_id, out_refund_no),
    CONSTRAINT refunds_amount_positive CHECK (amount_fen > 0),
    CONSTRAINT refunds_fee_valid CHECK (fee_refund_fen >= 0)
);
CREATE INDEX refunds_order ON refunds (merchant_id, out_trade_no);
CREATE TRIGGER refunds_final BEFORE UPDATE OR DELETE ON refunds
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('refunds');

CREATE TABLE holds (
    merchant_id  TEXT        NOT NULL,
    out_order_no TEXT        NOT NULL,
    payer_id     TEXT        NOT NULL,
    hold_fen     BIGINT      NOT NULL,
    status       TEXT        NOT NULL,
    total_fen    BIGINT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT holds_pkey PRIMARY KEY (merchant_id, out_order_no),
    CONSTRAINT holds_amount_positive CHECK (hold_fen > 0),
    CONSTRAINT holds_status_known CHECK (status IN ('CREATED', 'DONE', 'REVOKED', 'EXPIRED')),
    CONSTRAINT holds_total_within_hold CHECK (total_fen > 0 AND total_fen <= hold_fen),
    CONSTRAINT holds_total_iff_done CHECK ((status = 'DONE') = (total_fen IS NOT NULL))
);
CREATE INDEX holds_payer ON holds (payer_id);
CREATE FUNCTION facepay_hold_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'CREATED' THEN
        RAISE EXCEPTION 'the hold % has already ended', OLD.out_order_no USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER holds_final BEFORE UPDATE ON holds FOR EACH ROW EXECUTE FUNCTION facepay_hold_final();

CREATE TABLE settlement (
    merchant_id TEXT   NOT NULL,
    day         DATE   NOT NULL,
    gross_fen   BIGINT NOT NULL,
    refunds_fen BIGINT NOT NULL,
    fees_fen    BIGINT NOT NULL,
    net_fen     BIGINT NOT NULL,
    CONSTRAINT settlement_pkey PRIMARY KEY (merchant_id, day),
    CONSTRAINT settlement_gross_valid CHECK (gross_fen >= 0),
    CONSTRAINT settlement_refunds_valid CHECK (refunds_fen >= 0),
    CONSTRAINT settlement_net_adds_up CHECK (net_fen = gross_fen - refunds_fen - fees_fen)
);

CREATE UNIQUE INDEX events_hold_ends_once ON events ((payload->>'merchant_id'), (payload->>'out_order_no'))
    WHERE type IN ('hold_completed', 'hold_cancelled', 'hold_expired');
CREATE UNIQUE INDEX events_order_reversed_once ON events ((payload->>'merchant_id'), (payload->>'out_trade_no'))
    WHERE type = 'order_reversed';
CREATE UNIQUE INDEX events_refund_once ON events ((payload->>'merchant_id'), (payload->>'out_refund_no'))
    WHERE type = 'refund_succeeded';

ALTER TABLE events ADD COLUMN prev_hash TEXT, ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX events_chain_link ON events (stream, prev_hash) WHERE hash IS NOT NULL;
