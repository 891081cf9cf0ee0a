-- Issue 26: the console's members page shows each member's last visit and is read in pages.
-- `last_visit_at` is the ledger's own projection (a member's accepted payment at the merchant
-- while the card is open sets it; `facepay replay` compares it), filled here from the log for
-- the cards already open. `id` is a member's place in the merchant's list: the page cursor.
ALTER TABLE members ADD COLUMN last_visit_at TIMESTAMPTZ;
ALTER TABLE members ADD COLUMN id BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE INDEX members_merchant_id ON members (merchant_id, id DESC);
-- The backfill (the same statement on SQLite): each card's last accepted payment since it
-- opened and before it closed, found by the payer in the log.
WITH visits AS (
    SELECT m.merchant_id, m.payer_id, MAX(e.occurred_at) AS at
    FROM members m
    JOIN events e
      ON e.type = 'payment_succeeded'
     AND e.payload->'attempt'->>'merchant_id' = m.merchant_id
     AND e.payload->>'payer_id' = m.payer_id
     AND e.occurred_at >= m.opened_at
     AND (m.closed_at IS NULL OR e.occurred_at < m.closed_at)
    GROUP BY m.merchant_id, m.payer_id
)
UPDATE members m SET last_visit_at = v.at
FROM visits v WHERE v.merchant_id = m.merchant_id AND v.payer_id = m.payer_id;
