-- `events_cause` (cause_event_id) is read by no query: one more B-tree entry per event for
-- nothing. Dropped on PostgreSQL too (0015 there), where it mattered for issue 3.
DROP INDEX events_cause;
