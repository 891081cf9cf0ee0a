-- recon_bill_lines rebuilt with its kind check written as equalities. SQLite compiles a
-- CHECK's `kind IN ('P', 'R', 'V')` into an ephemeral table built and dropped for every row
-- inserted: a third of the cost of importing a bill's line (docs/BENCHMARKS.md, issue 6).
-- The same rows, key and constraints; and bill lines now refuse DELETE as PostgreSQL's do.
CREATE TABLE recon_bill_lines_0013 (
    import_id      TEXT    NOT NULL REFERENCES recon_imports (import_id) DEFERRABLE INITIALLY DEFERRED,
    merchant_id    TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind = 'P' OR kind = 'R' OR kind = 'V'),
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

INSERT INTO recon_bill_lines_0013 SELECT import_id, merchant_id, kind, number, line_no, out_trade_no, channel_txn_id,
    device_id, trade_at, amount_fen, fee_mfen, rate_ppm FROM recon_bill_lines;
DROP TABLE recon_bill_lines;
ALTER TABLE recon_bill_lines_0013 RENAME TO recon_bill_lines;

CREATE TRIGGER recon_bill_lines_no_update BEFORE UPDATE ON recon_bill_lines
BEGIN SELECT RAISE(ABORT, 'bill lines are append-only'); END;
CREATE TRIGGER recon_bill_lines_no_delete BEFORE DELETE ON recon_bill_lines
BEGIN SELECT RAISE(ABORT, 'bill lines are append-only'); END;
