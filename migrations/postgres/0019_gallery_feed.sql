-- Issue 21: every matcher process follows the gallery while it runs, not only at start-up.
-- Each enrolment and deletion appends the payer to `gallery_feed` in its own transaction; a
-- matcher reads the feed past the last change it applied and re-reads those payers' faces
-- (a payer id is all the feed holds: no template, no key). `seq` is taken under the lock of
-- the one row of `gallery_feed_head`, held to commit, so changes commit in `seq` order and a
-- reader that has seen `seq` n has seen every change before it. Rows older than a day are
-- pruned by the writers; a matcher that finds a gap reloads the whole gallery.
CREATE TABLE gallery_feed_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT  NOT NULL CHECK (seq >= 0)
);
INSERT INTO gallery_feed_head (id, seq) VALUES (1, 0);

CREATE TABLE gallery_feed (
    seq        BIGINT      PRIMARY KEY CHECK (seq > 0),
    payer_id   TEXT        NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX gallery_feed_changed_at ON gallery_feed (changed_at);
