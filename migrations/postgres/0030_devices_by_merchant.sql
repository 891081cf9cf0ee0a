-- Issue 26: a merchant's devices are read by page, by store and device (the fleet page, a
-- store key its store's only): from this index, not a scan of every merchant's devices.
CREATE INDEX devices_merchant ON devices (merchant_id, store_id, device_id);
