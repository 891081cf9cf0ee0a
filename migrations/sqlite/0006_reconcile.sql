-- facepay, SQLite: reconciliation of the channel's daily bill against the ledger (issue 6).
-- Imports and their lines, runs, breaks and resolutions are append-only; breaks and
-- resolutions are also events of the ledger's log (stream `recon:<merchant>`).

-- One imported bill file. A file is imported once (its content hash); a corrected file for
-- the same account and day is a new version, and the highest version is the current one.
CREATE TABLE recon_imports (
    import_id       TEXT    PRIMARY KEY,
    account         TEXT    NOT NULL,
    day             TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    content_sha256  TEXT    NOT NULL CHECK (length(content_sha256) = 64),
    layout          TEXT    NOT NULL CHECK (layout IN ('all', 'success', 'refund', 'legacy', 'generic')),
    file_name       TEXT    NOT NULL,
    line_count      INTEGER NOT NULL CHECK (line_count >= 0),
    settle_fen      INTEGER NOT NULL CHECK (settle_fen >= 0),
    refund_fen      INTEGER NOT NULL CHECK (refund_fen >= 0),
    fee_mfen        INTEGER NOT NULL,
    imported_at     TEXT    NOT NULL,
    CONSTRAINT recon_imports_content_unique UNIQUE (content_sha256),
    CONSTRAINT recon_imports_version_unique UNIQUE (account, day, version)
);
CREATE INDEX recon_imports_day ON recon_imports (day, version);

-- The detail lines of an import, kept in the order the matcher reads them.
CREATE TABLE recon_bill_lines (
    import_id      TEXT    NOT NULL REFERENCES recon_imports (import_id) DEFERRABLE INITIALLY DEFERRED,
    merchant_id    TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('P', 'R', 'V')),
    number         TEXT    NOT NULL,
    line_no        INTEGER NOT NULL CHECK (line_no >= 2),
    out_trade_no   TEXT    NOT NULL,
    channel_txn_id TEXT    NOT NULL,
    device_id      TEXT    NOT NULL,
    trade_at       TEXT    NOT NULL,
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    fee_mfen       INTEGER NOT NULL,
    rate_ppm       INTEGER CHECK (rate_ppm IS NULL OR rate_ppm >= 0),
    PRIMARY KEY (import_id, merchant_id, kind, number, line_no)
) WITHOUT ROWID;

CREATE TABLE recon_runs (
    run_id      TEXT    PRIMARY KEY,
    import_id   TEXT    NOT NULL REFERENCES recon_imports (import_id),
    day         TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT    NOT NULL,
    bill_lines  INTEGER NOT NULL CHECK (bill_lines >= 0),
    breaks      INTEGER NOT NULL CHECK (breaks >= 0),
    report      TEXT    NOT NULL
);
CREATE INDEX recon_runs_day ON recon_runs (day, started_at);

CREATE TABLE recon_breaks (
    break_id          TEXT    PRIMARY KEY,
    run_id            TEXT    NOT NULL REFERENCES recon_runs (run_id),
    day               TEXT    NOT NULL,
    merchant_id       TEXT    NOT NULL,
    class             TEXT    NOT NULL CHECK (class IN ('missing_in_ledger', 'missing_in_bill', 'amount_mismatch',
                                                        'fee_mismatch', 'status_mismatch', 'duplicate_line')),
    kind              TEXT    NOT NULL CHECK (kind IN ('P', 'R', 'V')),
    number            TEXT    NOT NULL,
    line_no           INTEGER,
    bill_amount_fen   INTEGER CHECK (bill_amount_fen IS NULL OR bill_amount_fen > 0),
    ledger_amount_fen INTEGER CHECK (ledger_amount_fen IS NULL OR ledger_amount_fen > 0),
    detail            TEXT    NOT NULL,
    event_id          TEXT    NOT NULL REFERENCES events (event_id),
    recorded_at       TEXT    NOT NULL,
    -- a break has a side: a bill line, a ledger entry, or both
    CHECK (bill_amount_fen IS NOT NULL OR ledger_amount_fen IS NOT NULL)
);
CREATE INDEX recon_breaks_run ON recon_breaks (run_id, class, merchant_id);

CREATE TABLE recon_resolutions (
    break_id    TEXT NOT NULL REFERENCES recon_breaks (break_id),
    action      TEXT NOT NULL CHECK (action IN ('accepted', 'confirmed_paid', 'refund_issued', 'ledger_corrected',
                                                'bill_disputed')),
    resolved_by TEXT NOT NULL CHECK (length(resolved_by) BETWEEN 1 AND 512),
    reason      TEXT NOT NULL CHECK (length(reason) BETWEEN 1 AND 512),
    resolved_at TEXT NOT NULL,
    event_id    TEXT NOT NULL REFERENCES events (event_id),
    -- a break is resolved once
    CONSTRAINT recon_resolutions_once UNIQUE (break_id)
);

CREATE TRIGGER recon_imports_no_update BEFORE UPDATE ON recon_imports
BEGIN SELECT RAISE(ABORT, 'bill imports are append-only'); END;
CREATE TRIGGER recon_imports_no_delete BEFORE DELETE ON recon_imports
BEGIN SELECT RAISE(ABORT, 'bill imports are append-only'); END;
CREATE TRIGGER recon_bill_lines_no_update BEFORE UPDATE ON recon_bill_lines
BEGIN SELECT RAISE(ABORT, 'bill lines are append-only'); END;
CREATE TRIGGER recon_breaks_no_update BEFORE UPDATE ON recon_breaks
BEGIN SELECT RAISE(ABORT, 'breaks are append-only'); END;
CREATE TRIGGER recon_breaks_no_delete BEFORE DELETE ON recon_breaks
BEGIN SELECT RAISE(ABORT, 'breaks are append-only'); END;
CREATE TRIGGER recon_resolutions_no_update BEFORE UPDATE ON recon_resolutions
BEGIN SELECT RAISE(ABORT, 'resolutions are append-only'); END;
CREATE TRIGGER recon_resolutions_no_delete BEFORE DELETE ON recon_resolutions
BEGIN SELECT RAISE(ABORT, 'resolutions are append-only'); END;
CREATE TRIGGER recon_runs_no_update BEFORE UPDATE ON recon_runs
BEGIN SELECT RAISE(ABORT, 'reconciliation runs are append-only'); END;
CREATE TRIGGER recon_runs_no_delete BEFORE DELETE ON recon_runs
BEGIN SELECT RAISE(ABORT, 'reconciliation runs are append-only'); END;
