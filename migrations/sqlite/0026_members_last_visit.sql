-- Issue 26: the console's members page shows each member's last visit and is read in pages.
-- `last_visit_at` is the ledger's own projection (a member's accepted payment at the merchant
-- while the card is open sets it; `facepay replay` compares it), filled here from the log for
-- the cards already open. `id` is a member's place in the merchant's list: the page cursor
-- (the table is rebuilt: a WITHOUT ROWID table cannot gain one).
CREATE TABLE members_paged (
    id            INTEGER PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    payer_id      TEXT NOT NULL,
    card_code     TEXT NOT NULL,
    channel       TEXT NOT NULL,
    opened_at     TEXT NOT NULL,
    closed_at     TEXT,
    last_visit_at TEXT,
    UNIQUE (merchant_id, payer_id)
);
INSERT INTO members_paged (merchant_id, payer_id, card_code, channel, opened_at, closed_at)
SELECT merchant_id, payer_id, card_code, channel, opened_at, closed_at FROM members
ORDER BY opened_at, merchant_id, payer_id;
DROP TABLE members;
ALTER TABLE members_paged RENAME TO members;
CREATE INDEX members_merchant_id ON members (merchant_id, id);
-- The backfill (the same statement on PostgreSQL): each card's last accepted payment since it
-- opened and before it closed, found by the payer in the log.
WITH visits AS (
    SELECT m.merchant_id, m.payer_id, MAX(e.occurred_at) AS at
    FROM events e
    JOIN members m
      ON m.merchant_id = json_extract(e.payload, '$.attempt.merchant_id')
     AND m.payer_id = json_extract(e.payload, '$.payer_id')
    WHERE e.type = 'payment_succeeded'
      AND e.occurred_at >= m.opened_at
      AND (m.closed_at IS NULL OR e.occurred_at < m.closed_at)
    GROUP BY m.merchant_id, m.payer_id
)
UPDATE members SET last_visit_at = v.at
FROM visits v WHERE v.merchant_id = members.merchant_id AND v.payer_id = members.payer_id;
