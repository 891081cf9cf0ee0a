-- Issue 26: a sign-in counts its key's live sessions (at most CONSOLE_SESSIONS_PER_KEY_MAX;
-- past it the key's own session idle longest ends, never another key's).
CREATE INDEX console_sessions_key ON console_sessions (key_id, seen_at_ms);
