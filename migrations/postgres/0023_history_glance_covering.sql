-- Issue 26: the day at a glance (a merchant's attempts of a day counted by status, reason and
-- member quick pay, of one store or all) read the day's history rows from the heap, one page
-- per row (rows of many merchants interleave): ~5 ms a glance at 1 000 000 orders, p99 84 ms
-- with 32 clients. The (merchant, day) index now carries the columns the glance reads, so it
-- is an index-only scan; it replaces the index it widens (no second index on the write path).
CREATE INDEX history_merchant_day_covering ON history (merchant_id, day, id DESC)
    INCLUDE (status, reason, member_quick_pay, amount_fen, store_id);
DROP INDEX history_merchant_day;
-- An index-only scan skips the heap only for pages the visibility map marks all-visible:
-- vacuum the insert-only history after every 10 000 new rows or 1 %, not PostgreSQL's
-- default 20 % of the table (which on a large history would leave today's pages unmarked).
ALTER TABLE history SET (autovacuum_vacuum_insert_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0.01);
