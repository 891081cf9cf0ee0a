-- Issue 22, fault 4: an import whose run was refused (more breaks than a run may record) is
-- not its day's current bill. The refusal is kept beside the import (imports are append-only),
-- with its reason; a later run of the same file that completes makes it current again.
CREATE TABLE recon_import_refusals (
    import_id  TEXT PRIMARY KEY REFERENCES recon_imports (import_id),
    reason     TEXT NOT NULL CHECK (length(reason) BETWEEN 1 AND 512),
    refused_at TEXT NOT NULL
);
CREATE TRIGGER recon_import_refusals_no_update BEFORE UPDATE ON recon_import_refusals
BEGIN SELECT RAISE(ABORT, 'import refusals are append-only'); END;
CREATE TRIGGER recon_import_refusals_no_delete BEFORE DELETE ON recon_import_refusals
BEGIN SELECT RAISE(ABORT, 'import refusals are append-only'); END;
