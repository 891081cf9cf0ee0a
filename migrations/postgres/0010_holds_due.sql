-- A payment (or a new hold) first releases its payer's holds open past their 30 days, so that
-- it decides alike whether or not the clock has swept them yet. Each batch asks for its
-- payers' open holds created before a cut-off: a partial index over the open holds only.
CREATE INDEX holds_open_payer ON holds (payer_id, created_at) WHERE status = 'CREATED';
