-- Issue 26: an order's whole life shows the retries it answered: a payment sent again under
-- a new event id after a timeout is answered from the order (`replayed: true`) and leaves
-- only its stored answer. That answer names the order ("merchant_id/out_trade_no"); only
-- such answers are in the index (partial), so the write path of every other event is as it
-- was.
ALTER TABLE inbound ADD COLUMN retry_of TEXT;
CREATE INDEX inbound_retry_of ON inbound (retry_of, processed_at) WHERE retry_of IS NOT NULL;
