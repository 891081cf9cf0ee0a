-- Issue 26: the admin's keys are listed by page (newest first, then by id), a fleet's device
-- keys included: the index gives each page without sorting the table.
CREATE INDEX api_keys_created ON api_keys (created_at DESC, key_id);
