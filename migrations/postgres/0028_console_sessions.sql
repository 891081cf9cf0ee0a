-- Issue 26: the console's sessions in the database, so that every `facepay serve` process
-- over it serves a signed-in browser (no sticky sessions). A row holds the SHA-256 of the
-- session id (the cookie's value is never stored), the API key's id (never its secret), and
-- a new key's token sealed with a key derived from the session id, shown once. Times are
-- unix milliseconds. At most CONSOLE_SESSIONS_MAX rows: a sign-in drops the dead ones first,
-- then the least recently seen.
CREATE TABLE console_sessions (
    id_hash       TEXT   NOT NULL,
    key_id        TEXT   NOT NULL,
    started_at_ms BIGINT NOT NULL,
    seen_at_ms    BIGINT NOT NULL,
    once_sealed   TEXT,
    CONSTRAINT console_sessions_pkey PRIMARY KEY (id_hash),
    CONSTRAINT console_sessions_hash_hex CHECK (length(id_hash) = 64)
);
CREATE INDEX console_sessions_seen ON console_sessions (seen_at_ms);
