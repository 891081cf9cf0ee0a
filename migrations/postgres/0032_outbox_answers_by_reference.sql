-- Issue 25, a smaller WAL per payment: an answer's outbox message refers to the answer the same
-- commit stores (`inbound`, by event id) instead of carrying a second copy of its JSON, and the
-- relay deletes what it has published instead of marking it (a mark rewrote the whole row and
-- its index entries; a delete writes a few bytes). The relay reads the answer back as
-- `StoredAnswer::outcome` rebuilds it, the same outcome a device's query gets.
-- Dead letters and the answers to rejected events still carry their bytes.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX outbox_pending;
ALTER TABLE outbox
    DROP COLUMN published_at,
    DROP COLUMN claimed_until,
    ALTER COLUMN payload DROP NOT NULL,
    ADD COLUMN answer_of UUID,
    ADD CONSTRAINT outbox_bytes_or_answer CHECK ((payload IS NULL) <> (answer_of IS NULL));
