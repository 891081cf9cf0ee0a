-- facepay, postgres: API credentials and the audit log of admin and finance actions (issue 7).
-- A key's secret is never stored: only HMAC-SHA256(pepper, secret), hex. A device key's
-- secret is derived from the pepper and the key id (the server re-derives it to check
-- signatures); its hash is stored like any other.
-- Times are unix milliseconds.

CREATE TABLE api_keys (
    key_id      TEXT    PRIMARY KEY CHECK (length(key_id) = 24),
    role        TEXT    NOT NULL CHECK (role IN ('merchant', 'finance', 'device', 'admin')),
    -- merchant keys: the merchant (and optionally one store); device keys: all three.
    merchant_id TEXT,
    store_id    TEXT,
    device_id   TEXT,
    secret_hash TEXT    NOT NULL CHECK (length(secret_hash) = 64),
    label       TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    revoked_at  BIGINT,
    CHECK (role NOT IN ('merchant', 'device') OR merchant_id IS NOT NULL),
    CHECK (role <> 'device' OR (store_id IS NOT NULL AND device_id IS NOT NULL))
);
CREATE INDEX api_keys_device ON api_keys (device_id) WHERE device_id IS NOT NULL;

-- Every admin and finance action, with the principal that took it. Append-only.
CREATE TABLE audit_log (
    seq         BIGSERIAL PRIMARY KEY,
    at          BIGINT  NOT NULL,
    -- the acting key's id, or 'cli' for the command line on the server
    principal   TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    detail      TEXT    NOT NULL
);
