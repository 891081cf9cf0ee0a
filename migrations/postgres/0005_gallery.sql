-- facepay, PostgreSQL: the face gallery at rest (matcher).
-- Templates are sealed (ChaCha20-Poly1305) under a data key per payer; `face_keys` holds each
-- payer's one live data key, wrapped by the master key from configuration. Deleting a face
-- deletes its key row (crypto-shredding): `face_templates` is append-only and keeps every
-- ciphertext, which without its key is noise.

CREATE TABLE face_keys (
    payer_id    TEXT        PRIMARY KEY,
    -- Names the data key; bound into both seals, and matches the template it opens.
    key_id      UUID        NOT NULL UNIQUE,
    -- Stable hash of the payer id: matcher process i of N loads the rows with
    -- shard_hash % N = i.
    shard_hash  BIGINT      NOT NULL CHECK (shard_hash >= 0 AND shard_hash < 4294967296),
    phone_last4 TEXT        CHECK (phone_last4 IS NULL OR length(phone_last4) = 4),
    wrapped_key BYTEA       NOT NULL CHECK (length(wrapped_key) > 0),
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX face_keys_shard ON face_keys (shard_hash);

CREATE TABLE face_templates (
    seq         BIGSERIAL   PRIMARY KEY,
    payer_id    TEXT        NOT NULL,
    key_id      UUID        NOT NULL UNIQUE,
    ciphertext  BYTEA       NOT NULL CHECK (length(ciphertext) > 0),
    enrolled_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX face_templates_payer ON face_templates (payer_id);

CREATE TRIGGER face_templates_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON face_templates
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('face templates');
