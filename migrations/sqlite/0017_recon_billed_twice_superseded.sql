-- Issue 22: a new break class, `billed_twice`: an order (or refund) the channel billed on
-- another day too (charged twice), found across days; and a new resolution, `superseded`:
-- a break of a bill version a newer version's run stands for, closed by facepay. SQLite
-- cannot change a CHECK in place:
-- recon_breaks is rebuilt with the same rows, key, constraints, index and triggers, and
-- recon_resolutions (whose foreign key names it) with it. DROP TABLE fires no trigger.
CREATE TABLE recon_breaks_0017 (
    break_id          TEXT    PRIMARY KEY,
    run_id            TEXT    NOT NULL REFERENCES recon_runs (run_id),
    day               TEXT    NOT NULL,
    merchant_id       TEXT    NOT NULL,
    class             TEXT    NOT NULL CHECK (class IN ('missing_in_ledger', 'missing_in_bill', 'amount_mismatch',
                                                        'fee_mismatch', 'status_mismatch', 'duplicate_line',
                                                        'billed_twice')),
    kind              TEXT    NOT NULL CHECK (kind IN ('P', 'R', 'V')),
    number            TEXT    NOT NULL,
    line_no           INTEGER,
    bill_amount_fen   INTEGER CHECK (bill_amount_fen IS NULL OR bill_amount_fen > 0),
    ledger_amount_fen INTEGER CHECK (ledger_amount_fen IS NULL OR ledger_amount_fen > 0),
    detail            TEXT    NOT NULL,
    event_id          TEXT    NOT NULL REFERENCES events (event_id),
    recorded_at       TEXT    NOT NULL,
    ledger_number     TEXT,
    -- a break has a side: a bill line, a ledger entry, or both
    CHECK (bill_amount_fen IS NOT NULL OR ledger_amount_fen IS NOT NULL)
);
INSERT INTO recon_breaks_0017 SELECT break_id, run_id, day, merchant_id, class, kind, number, line_no,
    bill_amount_fen, ledger_amount_fen, detail, event_id, recorded_at, ledger_number FROM recon_breaks;

CREATE TABLE recon_resolutions_0017 (
    break_id    TEXT NOT NULL REFERENCES recon_breaks_0017 (break_id),
    action      TEXT NOT NULL CHECK (action IN ('accepted', 'confirmed_paid', 'refund_issued', 'ledger_corrected',
                                                'bill_disputed', 'superseded')),
    resolved_by TEXT NOT NULL CHECK (length(resolved_by) BETWEEN 1 AND 512),
    reason      TEXT NOT NULL CHECK (length(reason) BETWEEN 1 AND 512),
    resolved_at TEXT NOT NULL,
    event_id    TEXT NOT NULL REFERENCES events (event_id),
    -- a break is resolved once
    CONSTRAINT recon_resolutions_once UNIQUE (break_id)
);
INSERT INTO recon_resolutions_0017 SELECT break_id, action, resolved_by, reason, resolved_at, event_id
    FROM recon_resolutions;

DROP TABLE recon_resolutions;
DROP TABLE recon_breaks;
-- Renaming rewrites recon_resolutions_0017's foreign key to the new name.
ALTER TABLE recon_breaks_0017 RENAME TO recon_breaks;
ALTER TABLE recon_resolutions_0017 RENAME TO recon_resolutions;

CREATE INDEX recon_breaks_run ON recon_breaks (run_id, class, merchant_id);
CREATE TRIGGER recon_breaks_no_update BEFORE UPDATE ON recon_breaks
BEGIN SELECT RAISE(ABORT, 'breaks are append-only'); END;
CREATE TRIGGER recon_breaks_no_delete BEFORE DELETE ON recon_breaks
BEGIN SELECT RAISE(ABORT, 'breaks are append-only'); END;
CREATE TRIGGER recon_resolutions_no_update BEFORE UPDATE ON recon_resolutions
BEGIN SELECT RAISE(ABORT, 'resolutions are append-only'); END;
CREATE TRIGGER recon_resolutions_no_delete BEFORE DELETE ON recon_resolutions
BEGIN SELECT RAISE(ABORT, 'resolutions are append-only'); END;
