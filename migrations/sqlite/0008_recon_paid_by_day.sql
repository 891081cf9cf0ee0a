-- facepay, SQLite: reconciliation reads the day's paid payments in key order (issue 6).
-- A covering index of the paid rows of the history by day, in the matcher's key order
-- (merchant, order number; BINARY collation = bytewise, as the matcher compares): the
-- matcher's ledger side streams them without sorting a day of rows and without reading the
-- history table itself. Only the small rest of the day (unpaid orders, refunds, reversals) is
-- sorted.
CREATE INDEX history_day_paid ON history (day, status, merchant_id, out_trade_no, amount_fen, occurred_at);
