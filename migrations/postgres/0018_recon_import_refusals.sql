-- Issue 22, fault 4: an import whose run was refused (more breaks than a run may record) is
-- not its day's current bill. The refusal is kept beside the import (imports are append-only),
-- with its reason; a later run of the same file that completes makes it current again.
CREATE TABLE recon_import_refusals (
    import_id  UUID        NOT NULL,
    reason     TEXT        NOT NULL,
    refused_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT recon_import_refusals_pkey PRIMARY KEY (import_id),
    CONSTRAINT recon_import_refusals_import_fk FOREIGN KEY (import_id) REFERENCES recon_imports (import_id),
    CONSTRAINT recon_import_refusals_reason_bounded CHECK (length(reason) BETWEEN 1 AND 512)
);
CREATE TRIGGER recon_import_refusals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON recon_import_refusals
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('import refusals');
