-- Issue 24: the wrapped data keys leave the ledger's database. A deleted row here stays in a
-- page's free space and in WAL frames, so a key deleted here was never really gone. Keys
-- (and the phone digits enrolled with them) now live in the face key file
-- (ledger/src/face_keys.rs: secure deletion, the WAL truncated after each deletion). What
-- stays here is `face_live`: which key each payer's live template is sealed under, no secret.
-- Rows of the old `face_keys` are moved to the key file by the matcher at its next start and
-- deleted here; see docs/SECURITY.md for the old bytes that remain on disk after an upgrade.
CREATE TABLE face_live (
    payer_id   TEXT        PRIMARY KEY,
    key_id     UUID        NOT NULL UNIQUE,
    shard_hash BIGINT      NOT NULL CHECK (shard_hash >= 0 AND shard_hash < 4294967296),
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX face_live_shard ON face_live (shard_hash);
INSERT INTO face_live (payer_id, key_id, shard_hash, created_at)
SELECT payer_id, key_id, shard_hash, created_at FROM face_keys;
