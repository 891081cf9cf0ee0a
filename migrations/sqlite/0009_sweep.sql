-- facepay, SQLite: the ledger's clock (the sweeper). It looks for orders still unpaid 45 s
-- after creation and holds still open 30 days after, oldest first: partial indexes over
-- exactly those rows, so a sweep reads only what is open, however long the history.
CREATE INDEX orders_unpaid_created ON orders (created_at) WHERE status = 'DECLINED';
CREATE INDEX holds_open_created ON holds (created_at) WHERE status = 'CREATED';

-- An order is revoked once: the clock's tick and a payment or query finding the order past
-- its 45 s may race through two processes; the database keeps the first revocation only.
CREATE UNIQUE INDEX events_order_revoked_once
    ON events (json_extract(payload, '$.merchant_id'), json_extract(payload, '$.out_trade_no'))
    WHERE type = 'order_revoked';
