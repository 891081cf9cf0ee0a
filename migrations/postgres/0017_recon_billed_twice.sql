-- Issue 22: a new break class, `billed_twice`: an order (or refund) the channel billed on
-- another day too (charged twice), found across days.
ALTER TABLE recon_breaks DROP CONSTRAINT recon_breaks_class_known;
ALTER TABLE recon_breaks ADD CONSTRAINT recon_breaks_class_known CHECK (class IN ('missing_in_ledger',
    'missing_in_bill', 'amount_mismatch', 'fee_mismatch', 'status_mismatch', 'duplicate_line', 'billed_twice'));
