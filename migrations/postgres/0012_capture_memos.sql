-- The matcher's recent captures: what each face code resolved to, kept until its payment
-- comes, so that a matcher restarted between a capture and its payment still knows whom the
-- capture identified. Working memory, not the ledger: rows older than the matcher's window
-- are deleted as new ones arrive. No embedding is kept here.
CREATE TABLE capture_memos (
    face_code   TEXT PRIMARY KEY,
    payer_id    TEXT,
    rule        TEXT NOT NULL,
    captured_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX capture_memos_captured_at ON capture_memos (captured_at);
