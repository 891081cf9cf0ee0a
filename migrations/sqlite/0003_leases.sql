-- facepay, SQLite: leases, so that one process at a time does a duty that must have a single
-- doer (the outbox relay: its recovery after a crash relies on being the only publisher).

CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    -- Who holds it: one id per process run, so a restarted process is a new holder and waits
    -- for its predecessor's lease to lapse.
    holder     TEXT    NOT NULL CHECK (length(holder) > 0),
    -- Unix milliseconds, on the database's clock where it has one.
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
