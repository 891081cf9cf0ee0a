-- Issue 25, a smaller WAL per payment: as PostgreSQL's 0032. An answer's outbox message refers to
-- the answer the same commit stores (`inbound`, by event id) instead of carrying a second copy
-- of its JSON, and the relay deletes what it has published instead of marking it. SQLite cannot
-- drop NOT NULL or add a CHECK to a table: the table is made again, its unpublished messages
-- kept under their ids, and its AUTOINCREMENT counter carried over (an id is never used twice:
-- a relay taking over deletes by the ids it finds on the topics).
CREATE TABLE outbox_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    key        TEXT NOT NULL,
    payload    BLOB,
    answer_of  TEXT,
    created_at TEXT NOT NULL,
    CONSTRAINT outbox_bytes_or_answer CHECK ((payload IS NULL) <> (answer_of IS NULL))
);
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_new', seq FROM sqlite_sequence WHERE name = 'outbox';
INSERT INTO outbox_new (id, topic, key, payload, created_at)
    SELECT id, topic, key, payload, created_at FROM outbox WHERE published_at IS NULL;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
