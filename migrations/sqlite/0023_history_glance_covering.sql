-- Issue 26: the day at a glance reads a merchant's day of history counted by status, reason
-- and member quick pay: the (merchant, day) index carries those columns, so SQLite answers it
-- from the index alone; it replaces the index it widens (no second index on the write path).
CREATE INDEX history_merchant_day_covering
    ON history (merchant_id, day, id DESC, status, reason, member_quick_pay, amount_fen, store_id);
DROP INDEX history_merchant_day;
