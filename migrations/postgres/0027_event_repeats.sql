-- Issue 26: an order's whole life shows the copies of its events a device sent again under
-- the same event id (a retry after a network timeout), each answered from its stored
-- outcome: one row per repeated event with how often and when last, counted only for the
-- device whose event it was. Nothing is written for an event sent once.
CREATE TABLE event_repeats (
    event_id UUID NOT NULL,
    repeats  BIGINT NOT NULL,
    last_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT event_repeats_pkey PRIMARY KEY (event_id),
    CONSTRAINT event_repeats_counted CHECK (repeats >= 1)
);
