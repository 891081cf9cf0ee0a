-- Issue 22: a new break class, `billed_twice`: an order (or refund) the channel billed on
-- another day too (charged twice), found across days; and a new resolution, `superseded`:
-- a break of a bill version a newer version's run stands for, closed by facepay.
ALTER TABLE recon_breaks DROP CONSTRAINT recon_breaks_class_known;
ALTER TABLE recon_breaks ADD CONSTRAINT recon_breaks_class_known CHECK (class IN ('missing_in_ledger',
    'missing_in_bill', 'amount_mismatch', 'fee_mismatch', 'status_mismatch', 'duplicate_line', 'billed_twice'));
ALTER TABLE recon_resolutions DROP CONSTRAINT recon_resolutions_action_known;
ALTER TABLE recon_resolutions ADD CONSTRAINT recon_resolutions_action_known CHECK (action IN ('accepted',
    'confirmed_paid', 'refund_issued', 'ledger_corrected', 'bill_disputed', 'superseded'));
