-- Two indexes that no query reads, each one more B-tree entry written per event or per
-- transaction (issue 3: the ledger writes ~19 index entries per payment):
-- * `events_cause` (cause_event_id): nothing looks events up by their cause; a command's
--   answer is found through `inbound` by its event id, and its events through the hash chain
--   or the projections.
-- * `ledger_transactions_event` (event_id): it backed the foreign key to `events`, which
--   0014 replaced by a statement trigger that looks the event up through
--   `events_event_id_unique` instead.
DROP INDEX events_cause;
DROP INDEX ledger_transactions_event;
