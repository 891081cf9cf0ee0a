-- A break's ledger side by its own number: a bill line paired with a ledger order by the
-- channel's transaction id names the order by another number, and resolving the break as
-- confirmed_paid must settle the ledger's order, not look for the bill's number.
ALTER TABLE recon_breaks ADD COLUMN ledger_number TEXT;
