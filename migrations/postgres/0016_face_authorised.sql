-- Issue 19: no device event names a payer. Member cards and Pay Score orders are authorised
-- by a face capture, which each spends (a face code authorises one thing, once): a spent
-- capture is no longer always a payment's, so its column says what spent it.
ALTER TABLE captures RENAME COLUMN out_trade_no TO used_by;

-- A payer's consent to a merchant's Pay Score orders ("刷脸授权开通支付分"), given by face at
-- one of the merchant's devices: every Pay Score order of that merchant for that payer needs it.
CREATE TABLE pay_score_authorisations (
    merchant_id   TEXT        NOT NULL,
    payer_id      TEXT        NOT NULL,
    authorised_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT pay_score_authorisations_pkey PRIMARY KEY (merchant_id, payer_id)
);
