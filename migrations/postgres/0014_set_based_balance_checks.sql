-- The double-entry invariants, checked once per statement over the rows it wrote, instead of
-- once per row (0001 ran a PL/pgSQL function, two index look-ups each, for every posting and
-- every transaction row at COMMIT, and another look-up before every posting: about eight
-- look-ups and three function calls per payment, most of a batch's commit time).
--
-- What holds, as before:
-- * a posting is written only while its transaction is unsealed: a statement that inserts a
--   posting whose `ledger_transactions` row already exists is refused;
-- * sealing a transaction (inserting its `ledger_transactions` row) checks its postings: they
--   number its leg count and sum to zero; since no posting can follow the seal, that stays so;
-- * every posting has its transaction row by COMMIT (the deferred foreign key of 0001);
-- * a transaction row names an event of the log: checked by the same statement trigger
--   instead of the foreign key `ledger_transactions_event_fk`, whose per-row check also
--   locked the event row (FOR KEY SHARE, a write per event). No lock is needed: the log is
--   append-only (0001's triggers refuse UPDATE, DELETE and TRUNCATE), so an event that
--   exists stays.
-- The error codes and messages are 0001's, and the new one's is a foreign key's.

DROP TRIGGER postings_balanced ON postings;
DROP TRIGGER ledger_transactions_balanced ON ledger_transactions;
DROP TRIGGER postings_after_seal ON postings;
DROP FUNCTION facepay_txn_balanced();
DROP FUNCTION facepay_postings_unsealed();
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_event_fk;

CREATE FUNCTION facepay_postings_unsealed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sealed UUID;
BEGIN
    -- LATERAL ... LIMIT 1 keeps these look-ups on the primary keys: a transition table has no
    -- statistics, and a join would be planned as a scan of the whole (growing) table.
    SELECT n.txn_id INTO sealed
      FROM new_postings n
      CROSS JOIN LATERAL (SELECT 1 FROM ledger_transactions t WHERE t.txn_id = n.txn_id LIMIT 1) t
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the transaction % is sealed', sealed USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER postings_unsealed AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_postings_unsealed();

CREATE FUNCTION facepay_txns_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    SELECT n.txn_id, n.leg_count, s.legs, s.total
      INTO bad
      FROM new_txns n
      CROSS JOIN LATERAL (SELECT COUNT(*) AS legs, COALESCE(SUM(p.amount_fen), 0) AS total
                            FROM postings p WHERE p.txn_id = n.txn_id) s
     WHERE s.total <> 0 OR s.legs <> n.leg_count
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'postings of a transaction must sum to zero over its % legs (transaction %: % legs, sum %)',
            bad.leg_count, bad.txn_id, bad.legs, bad.total
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT n.txn_id, n.event_id INTO bad
      FROM new_txns n
      LEFT JOIN LATERAL (SELECT 1 AS found FROM events e WHERE e.event_id = n.event_id LIMIT 1) e ON true
     WHERE e.found IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the transaction % names no event of the log (event %)', bad.txn_id, bad.event_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    REFERENCING NEW TABLE AS new_txns
    FOR EACH STATEMENT EXECUTE FUNCTION facepay_txns_balanced();
