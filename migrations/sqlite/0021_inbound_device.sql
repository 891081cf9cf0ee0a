-- Issue 25: a device may wait for its event's outcome (`Prefer: wait`), and a device that
-- sends an event id again is answered from the stored outcome. The answer says which device
-- it was for ("merchant_id/store_id/device_id"; NULL for platform and merchant events), so
-- an event id sent again by another device is never answered with this one's outcome.
ALTER TABLE inbound ADD COLUMN device TEXT;
