-- Issue 26: an order's page shows its whole life, every decided attempt at the order (a
-- decline, the payment, a later attempt refused as ORDER_PAID or OUT_TRADE_NO_USED) with
-- its refunds: the attempts are read from this index, not by scanning the merchant's days.
CREATE INDEX history_order ON history (merchant_id, out_trade_no);
