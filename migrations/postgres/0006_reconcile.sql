-- facepay, PostgreSQL: reconciliation of the channel's daily bill against the ledger (issue 6).
-- Same semantics as migrations/sqlite/0006_reconcile.sql: imports and their lines, runs,
-- breaks and resolutions are append-only; breaks and resolutions are also ledger events
-- (stream `recon:<merchant>`), written in the same transaction as their rows. Unlike SQLite,
-- no foreign key points at `events`: PostgreSQL refuses `TRUNCATE events` for a referencing
-- table before the append-only trigger can say why.

CREATE TABLE recon_imports (
    import_id      UUID        NOT NULL,
    account        TEXT        NOT NULL,
    day            DATE        NOT NULL,
    version        BIGINT      NOT NULL,
    content_sha256 TEXT        NOT NULL,
    layout         TEXT        NOT NULL,
    file_name      TEXT        NOT NULL,
    line_count     BIGINT      NOT NULL,
    settle_fen     BIGINT      NOT NULL,
    refund_fen     BIGINT      NOT NULL,
    fee_mfen       BIGINT      NOT NULL,
    imported_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT recon_imports_pkey PRIMARY KEY (import_id),
    CONSTRAINT recon_imports_content_unique UNIQUE (content_sha256),
    CONSTRAINT recon_imports_version_unique UNIQUE (account, day, version),
    CONSTRAINT recon_imports_version_positive CHECK (version >= 1),
    CONSTRAINT recon_imports_hash_hex CHECK (length(content_sha256) = 64),
    CONSTRAINT recon_imports_layout_known CHECK (layout IN ('all', 'success', 'refund', 'legacy', 'generic')),
    CONSTRAINT recon_imports_totals_valid CHECK (line_count >= 0 AND settle_fen >= 0 AND refund_fen >= 0)
);
CREATE INDEX recon_imports_day ON recon_imports (day, version);

CREATE TABLE recon_bill_lines (
    import_id      UUID        NOT NULL,
    merchant_id    TEXT        COLLATE "C" NOT NULL,
    kind           TEXT        COLLATE "C" NOT NULL,
    number         TEXT        COLLATE "C" NOT NULL,
    line_no        BIGINT      NOT NULL,
    out_trade_no   TEXT        NOT NULL,
    channel_txn_id TEXT        NOT NULL,
    device_id      TEXT        NOT NULL,
    trade_at       TIMESTAMPTZ NOT NULL,
    amount_fen     BIGINT      NOT NULL,
    fee_mfen       BIGINT      NOT NULL,
    rate_ppm       BIGINT,
    CONSTRAINT recon_bill_lines_pkey PRIMARY KEY (import_id, merchant_id, kind, number, line_no),
    CONSTRAINT recon_bill_lines_import_fk FOREIGN KEY (import_id) REFERENCES recon_imports (import_id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT recon_bill_lines_kind_known CHECK (kind IN ('P', 'R', 'V')),
    CONSTRAINT recon_bill_lines_line_after_header CHECK (line_no >= 2),
    CONSTRAINT recon_bill_lines_amount_positive CHECK (amount_fen > 0),
    CONSTRAINT recon_bill_lines_rate_valid CHECK (rate_ppm IS NULL OR rate_ppm >= 0)
);

CREATE TABLE recon_runs (
    run_id      UUID        NOT NULL,
    import_id   UUID        NOT NULL,
    day         DATE        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    bill_lines  BIGINT      NOT NULL,
    breaks      BIGINT      NOT NULL,
    report      JSONB       NOT NULL,
    CONSTRAINT recon_runs_pkey PRIMARY KEY (run_id),
    CONSTRAINT recon_runs_import_fk FOREIGN KEY (import_id) REFERENCES recon_imports (import_id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT recon_runs_counts_valid CHECK (bill_lines >= 0 AND breaks >= 0)
);
CREATE INDEX recon_runs_day ON recon_runs (day, started_at);

CREATE TABLE recon_breaks (
    break_id          UUID        NOT NULL,
    run_id            UUID        NOT NULL,
    day               DATE        NOT NULL,
    merchant_id       TEXT        NOT NULL,
    class             TEXT        NOT NULL,
    kind              TEXT        NOT NULL,
    number            TEXT        NOT NULL,
    line_no           BIGINT,
    bill_amount_fen   BIGINT,
    ledger_amount_fen BIGINT,
    detail            TEXT        NOT NULL,
    event_id          UUID        NOT NULL,
    recorded_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT recon_breaks_pkey PRIMARY KEY (break_id),
    CONSTRAINT recon_breaks_run_fk FOREIGN KEY (run_id) REFERENCES recon_runs (run_id),
    CONSTRAINT recon_breaks_event_unique UNIQUE (event_id),
    CONSTRAINT recon_breaks_class_known CHECK (class IN ('missing_in_ledger', 'missing_in_bill', 'amount_mismatch',
                                                         'fee_mismatch', 'status_mismatch', 'duplicate_line')),
    CONSTRAINT recon_breaks_kind_known CHECK (kind IN ('P', 'R', 'V')),
    CONSTRAINT recon_breaks_amounts_valid CHECK ((bill_amount_fen IS NULL OR bill_amount_fen > 0)
                                                 AND (ledger_amount_fen IS NULL OR ledger_amount_fen > 0)),
    CONSTRAINT recon_breaks_has_a_side CHECK (bill_amount_fen IS NOT NULL OR ledger_amount_fen IS NOT NULL)
);
CREATE INDEX recon_breaks_run ON recon_breaks (run_id, class, merchant_id);

CREATE TABLE recon_resolutions (
    break_id    UUID        NOT NULL,
    action      TEXT        NOT NULL,
    resolved_by TEXT        NOT NULL,
    reason      TEXT        NOT NULL,
    resolved_at TIMESTAMPTZ NOT NULL,
    event_id    UUID        NOT NULL,
    CONSTRAINT recon_resolutions_once UNIQUE (break_id),
    CONSTRAINT recon_resolutions_break_fk FOREIGN KEY (break_id) REFERENCES recon_breaks (break_id),
    CONSTRAINT recon_resolutions_event_unique UNIQUE (event_id),
    CONSTRAINT recon_resolutions_action_known CHECK (action IN ('accepted', 'confirmed_paid', 'refund_issued',
                                                                'ledger_corrected', 'bill_disputed')),
    CONSTRAINT recon_resolutions_text_bounded CHECK (length(resolved_by) BETWEEN 1 AND 512
                                                     AND length(reason) BETWEEN 1 AND 512)
);

CREATE TRIGGER recon_imports_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON recon_imports
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('bill imports');
CREATE TRIGGER recon_bill_lines_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON recon_bill_lines
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('bill lines');
CREATE TRIGGER recon_runs_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON recon_runs
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('reconciliation runs');
CREATE TRIGGER recon_breaks_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON recon_breaks
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('breaks');
CREATE TRIGGER recon_resolutions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON recon_resolutions
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_append_only('resolutions');
