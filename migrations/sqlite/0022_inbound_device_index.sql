-- Issue 26: the console's fleet view shows, per device, when the ledger last answered one of
-- its events and how many it refused in the last hour: one lookup per device in this index.
-- Platform and merchant events (no device) stay out of it.
CREATE INDEX inbound_device ON inbound (device, processed_at) WHERE device IS NOT NULL;
