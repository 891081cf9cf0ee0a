//! What both stores share apart from SQL: the rows a batch writes, built once, and the
//! parsing of read rows into the model, over a small [`Cells`] view of a database row.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use facepay_domain::limits::SCHEMA_VERSION;
use facepay_domain::{
    CardChannel, CardCode, DeclineReason, DeviceId, DeviceRef, FaceCode, MerchantId, OrderStatus, OutOrderNo,
    OutRefundNo, OutTradeNo, PayerId, StoreId,
};
use uuid::Uuid;

use crate::model::{
    Account, CaptureUse, DailyUsage, Hold, HoldKey, HoldStatus, LedgerEvent, LedgerState, Member, Order, Refund,
    Settlement, SettlementKey,
};
use crate::store::{ConsumerOffset, HistoryRow, NewEvent, PendingMessage, RejectedEvent, StoreError, StoredEvent};

// ---- errors and parsing ----------------------------------------------------------------

pub(crate) fn corrupt(what: &str, value: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}: {e}"))
}

/// Parses a stored identifier, naming it if it is corrupt.
pub(crate) fn id<T, E: std::fmt::Display>(
    what: &str,
    s: String,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<T, StoreError> {
    parse(s.clone()).map_err(|e| corrupt(what, &s, e))
}

pub(crate) fn account(key: &str) -> Result<Account, StoreError> {
    Account::parse(key).ok_or_else(|| corrupt("account", key, "unknown"))
}

/// A database row as the stores read it; each store maps its column types (SQLite's text
/// timestamps, PostgreSQL's `TIMESTAMPTZ`, …) onto these.
pub(crate) trait Cells {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
    fn at(&self, col: &str) -> Result<DateTime<Utc>, StoreError>;
    fn opt_at(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    fn day(&self, col: &str) -> Result<NaiveDate, StoreError>;
    fn uuid(&self, col: &str) -> Result<Uuid, StoreError>;
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;
}

/// The [`Cells`] both backends read as the database hands them over (text, integers,
/// bytes), for an `impl Cells` of a row type with sqlx's `Row::try_get`.
macro_rules! cells_as_stored {
    () => {
        fn text(&self, col: &str) -> Result<String, $crate::StoreError> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_text(&self, col: &str) -> Result<Option<String>, $crate::StoreError> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn int(&self, col: &str) -> Result<i64, $crate::StoreError> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_int(&self, col: &str) -> Result<Option<i64>, $crate::StoreError> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn bytes(&self, col: &str) -> Result<Vec<u8>, $crate::StoreError> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
    };
}
pub(crate) use cells_as_stored;

fn status(s: String) -> Result<OrderStatus, StoreError> {
    OrderStatus::parse(&s).ok_or_else(|| corrupt("status", &s, "unknown"))
}

fn opt_payer(r: &dyn Cells) -> Result<Option<PayerId>, StoreError> {
    r.opt_text("payer_id")?.map(|p| id("payer", p, PayerId::parse)).transpose()
}

pub(crate) fn order_from(r: &dyn Cells) -> Result<Order, StoreError> {
    Ok(Order {
        merchant_id: id("merchant", r.text("merchant_id")?, MerchantId::parse)?,
        out_trade_no: id("out_trade_no", r.text("out_trade_no")?, OutTradeNo::parse)?,
        amount_fen: r.int("amount_fen")?,
        status: status(r.text("status")?)?,
        reason: match r.opt_text("reason")? {
            Some(c) => Some(DeclineReason::from_code(&c).ok_or_else(|| corrupt("reason", &c, "unknown"))?),
            None => None,
        },
        payer_id: opt_payer(r)?,
        face_code: id("face_code", r.text("face_code")?, FaceCode::parse)?,
        member_quick_pay: r.flag("member_quick_pay")?,
        store_id: id("store", r.text("store_id")?, StoreId::parse)?,
        device_id: id("device", r.text("device_id")?, DeviceId::parse)?,
        created_at: r.at("created_at")?,
        updated_at: r.at("updated_at")?,
        fee_fen: r.int("fee_fen")?,
        refunded_fen: r.int("refunded_fen")?,
        fee_refunded_fen: r.int("fee_refunded_fen")?,
    })
}

pub(crate) fn capture_memo_from(r: &dyn Cells) -> Result<crate::store::CaptureMemo, StoreError> {
    Ok(crate::store::CaptureMemo {
        face_code: id("face_code", r.text("face_code")?, FaceCode::parse)?,
        payer_id: opt_payer(r)?,
        rule: r.text("rule")?,
        captured_at: r.at("captured_at")?,
    })
}

pub(crate) fn member_from(r: &dyn Cells) -> Result<((MerchantId, PayerId), Member), StoreError> {
    let channel = r.text("channel")?;
    let key =
        (id("merchant", r.text("merchant_id")?, MerchantId::parse)?, id("payer", r.text("payer_id")?, PayerId::parse)?);
    let member = Member {
        card_code: id("card", r.text("card_code")?, CardCode::parse)?,
        channel: match channel.as_str() {
            "card_package" => CardChannel::CardPackage,
            "mini_program" => CardChannel::MiniProgram,
            other => return Err(corrupt("channel", other, "unknown")),
        },
        opened_at: r.at("opened_at")?,
        closed_at: r.opt_at("closed_at")?,
        last_visit_at: r.opt_at("last_visit_at")?,
    };
    Ok((key, member))
}

/// A member card as the API shows it.
pub(crate) fn member_view_from(r: &dyn Cells) -> Result<crate::store::MemberView, StoreError> {
    let ((_, payer_id), m) = member_from(r)?;
    Ok(crate::store::MemberView {
        id: r.int("id")?,
        payer_id,
        card_code: m.card_code.to_string(),
        channel: m.channel.as_str().to_string(),
        opened_at: m.opened_at,
        closed_at: m.closed_at,
        last_visit_at: m.last_visit_at,
    })
}

/// A live face of the gallery at rest: the payer's live key and the template it seals.
pub(crate) fn stored_face_from(r: &dyn Cells) -> Result<crate::store::StoredFace, StoreError> {
    Ok(crate::store::StoredFace {
        payer_id: id("payer id", r.text("payer_id")?, PayerId::parse)?,
        shard_hash: u32::try_from(r.int("shard_hash")?).map_err(|e| corrupt("shard hash", "out of range", e))?,
        key_id: r.uuid("key_id")?,
        ciphertext: r.bytes("ciphertext")?,
    })
}

/// A payer's wrapped key: a row of the face key file, or of the ledger's `face_keys` from
/// before migration 0020.
pub(crate) fn key_record_from(r: &dyn Cells) -> Result<crate::face_keys::KeyRecord, StoreError> {
    let key_id = r.uuid("key_id")?;
    let (payer, shard, phone) = (r.text("payer_id")?, r.int("shard_hash")?, r.opt_text("phone_last4")?);
    crate::face_keys::KeyRecord::from_columns(payer, key_id, shard, phone, r.bytes("wrapped_key")?)
        .map_err(|e| corrupt("face key", &key_id.to_string(), e))
}

pub(crate) fn history_from(r: &dyn Cells) -> Result<HistoryRow, StoreError> {
    Ok(HistoryRow {
        id: r.int("id")?,
        event_id: r.uuid("event_id")?,
        merchant_id: id("merchant", r.text("merchant_id")?, MerchantId::parse)?,
        out_trade_no: id("out_trade_no", r.text("out_trade_no")?, OutTradeNo::parse)?,
        amount_fen: r.int("amount_fen")?,
        status: status(r.text("status")?)?,
        reason: r.opt_text("reason")?,
        payer_id: opt_payer(r)?,
        member_quick_pay: r.flag("member_quick_pay")?,
        store_id: r.text("store_id")?,
        device_id: r.text("device_id")?,
        occurred_at: r.at("occurred_at")?,
        day: r.day("day")?,
    })
}

pub(crate) fn glance_from(r: &dyn Cells) -> Result<crate::store::GlanceRow, StoreError> {
    Ok(crate::store::GlanceRow {
        status: status(r.text("status")?)?,
        reason: r.opt_text("reason")?,
        member_quick_pay: r.flag("member_quick_pay")?,
        attempts: r.int("attempts")?,
        amount_fen: r.int("amount_fen")?,
    })
}

pub(crate) fn retry_view_from(r: &dyn Cells) -> Result<crate::store::RetryView, StoreError> {
    Ok(crate::store::RetryView {
        event_id: r.uuid("event_id")?,
        answered_at: r.at("processed_at")?,
        device: r.opt_text("device")?,
    })
}

pub(crate) fn repeat_view_from(r: &dyn Cells) -> Result<crate::store::RepeatView, StoreError> {
    Ok(crate::store::RepeatView {
        event_id: r.uuid("event_id")?,
        repeats: r.int("repeats")?,
        last_at: r.at("last_at")?,
    })
}

pub(crate) fn refund_view_from(r: &dyn Cells) -> Result<crate::store::RefundView, StoreError> {
    Ok(crate::store::RefundView {
        out_refund_no: r.text("out_refund_no")?,
        amount_fen: r.int("amount_fen")?,
        fee_refund_fen: r.int("fee_refund_fen")?,
        refunded_at: r.at("refunded_at")?,
    })
}

pub(crate) fn device_activity_from(r: &dyn Cells) -> Result<crate::store::DeviceActivity, StoreError> {
    Ok(crate::store::DeviceActivity {
        device_id: r.text("device_id")?,
        store_id: r.text("store_id")?,
        registered_at: r.at("created_at")?,
        last_event_at: r.opt_at("last_event_at")?,
        refused_last_hour: r.int("refused_last_hour")?,
    })
}

pub(crate) fn rejected_from(r: &dyn Cells) -> Result<RejectedEvent, StoreError> {
    Ok(RejectedEvent {
        received_at: r.at("received_at")?,
        source: r.text("source")?,
        event_id: r.opt_uuid("event_id").ok().flatten(),
        kind: r.opt_text("type")?,
        reason_code: r.text("reason_code")?,
        field: r.opt_text("field")?,
        message: r.text("message")?,
        raw: r.bytes("raw")?,
        raw_truncated: r.flag("raw_truncated")?,
    })
}

/// An event row; its payload is read as JSON text.
pub(crate) fn stored_event_from(r: &dyn Cells) -> Result<StoredEvent, StoreError> {
    let payload = r.text("payload")?;
    let event: LedgerEvent = serde_json::from_str(&payload).map_err(|e| corrupt("event payload", &payload, e))?;
    Ok(StoredEvent {
        prev_hash: r.opt_text("prev_hash")?,
        hash: r.opt_text("hash")?,
        seq: r.int("seq")?,
        new: NewEvent {
            event_id: r.uuid("event_id")?,
            cause_event_id: r.uuid("cause_event_id")?,
            occurred_at: r.at("occurred_at")?,
            event,
        },
    })
}

/// A stored answer: the answers' `outcome`, `device` and `processed_at`.
pub(crate) fn stored_answer_from(r: &dyn Cells) -> Result<crate::store::StoredAnswer, StoreError> {
    Ok(crate::store::StoredAnswer {
        outcome_json: r.text("outcome")?,
        device: r.opt_text("device")?,
        processed_at: r.at("processed_at")?,
    })
}

/// A pending outbox message ([`crate::store_sql::OUTBOX_PENDING`]'s row): its bytes, or the
/// answer it refers to as published ([`crate::store::StoredAnswer::outcome`]).
pub(crate) fn outbox_from(r: &dyn Cells) -> Result<(i64, PendingMessage), StoreError> {
    let id = r.int("id")?;
    let payload = match r.opt_uuid("answer_of")? {
        None => r.bytes("payload")?,
        Some(event_id) => {
            if r.opt_text("outcome")?.is_none() {
                return Err(StoreError::Corrupt(format!("outbox message {id}: no stored answer to {event_id}")));
            }
            let outcome = stored_answer_from(r)?.outcome(event_id)?;
            serde_json::to_vec(&outcome).map_err(|e| StoreError::Corrupt(e.to_string()))?
        }
    };
    Ok((id, PendingMessage { topic: r.text("topic")?, key: r.text("key")?, payload }))
}

pub(crate) fn device_from(r: &dyn Cells) -> Result<DeviceRef, StoreError> {
    Ok(DeviceRef {
        merchant_id: id("merchant", r.text("merchant_id")?, MerchantId::parse)?,
        store_id: id("store", r.text("store_id")?, StoreId::parse)?,
        device_id: id("device", r.text("device_id")?, DeviceId::parse)?,
    })
}

// ---- projections into a state ------------------------------------------------------------

/// Adds one projection row to a state.
pub(crate) type Fill = fn(&mut LedgerState, &dyn Cells) -> Result<(), StoreError>;

pub(crate) fn fill_balance(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    st.balances_fen.insert(account(&r.text("account")?)?, r.int("balance_fen")?);
    Ok(())
}

pub(crate) fn fill_payer(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    st.frozen.insert(id("payer", r.text("payer_id")?, PayerId::parse)?, r.flag("frozen")?);
    Ok(())
}

pub(crate) fn fill_limit(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    st.limits_fen.insert(id("merchant", r.text("merchant_id")?, MerchantId::parse)?, r.int("single_limit_fen")?);
    Ok(())
}

pub(crate) fn fill_capture(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    let face = id("face_code", r.text("face_code")?, FaceCode::parse)?;
    let merchant_id = id("merchant", r.text("merchant_id")?, MerchantId::parse)?;
    st.captures.insert(face, CaptureUse { merchant_id, used_by: r.text("used_by")? });
    Ok(())
}

pub(crate) fn fill_pay_score(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    let merchant_id = id("merchant", r.text("merchant_id")?, MerchantId::parse)?;
    let payer_id = id("payer", r.text("payer_id")?, PayerId::parse)?;
    st.pay_score.insert((merchant_id, payer_id), r.at("authorised_at")?);
    Ok(())
}

pub(crate) fn fill_order(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    let o = order_from(r)?;
    st.orders.insert((o.merchant_id.clone(), o.out_trade_no.clone()), o);
    Ok(())
}

pub(crate) fn fill_member(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    let (k, m) = member_from(r)?;
    st.members.insert(k, m);
    Ok(())
}

pub(crate) fn fill_daily(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    let payer = id("payer", r.text("payer_id")?, PayerId::parse)?;
    let count = r.int("count")?;
    let usage = DailyUsage {
        amount_fen: r.int("amount_fen")?,
        count: u32::try_from(count).map_err(|e| corrupt("count", &count.to_string(), e))?,
    };
    st.daily.insert((payer, r.day("day")?), usage);
    Ok(())
}

pub(crate) fn fill_fee_rate(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    st.fee_rates_ppm.insert(id("merchant", r.text("merchant_id")?, MerchantId::parse)?, r.int("fee_rate_ppm")?);
    Ok(())
}

pub(crate) fn fill_refund(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    let key = (
        id("merchant", r.text("merchant_id")?, MerchantId::parse)?,
        id("out_refund_no", r.text("out_refund_no")?, OutRefundNo::parse)?,
    );
    let refund = Refund {
        out_trade_no: id("out_trade_no", r.text("out_trade_no")?, OutTradeNo::parse)?,
        payer_id: id("payer", r.text("payer_id")?, PayerId::parse)?,
        amount_fen: r.int("amount_fen")?,
        fee_refund_fen: r.int("fee_refund_fen")?,
        refunded_at: r.at("refunded_at")?,
    };
    st.refunds.insert(key, refund);
    Ok(())
}

/// A hold's key, from its `merchant_id` and `out_order_no` columns.
pub(crate) fn hold_key_from(r: &dyn Cells) -> Result<HoldKey, StoreError> {
    Ok((
        id("merchant", r.text("merchant_id")?, MerchantId::parse)?,
        id("out_order_no", r.text("out_order_no")?, OutOrderNo::parse)?,
    ))
}

pub(crate) fn fill_hold(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    let key = hold_key_from(r)?;
    let status = r.text("status")?;
    let hold = Hold {
        payer_id: id("payer", r.text("payer_id")?, PayerId::parse)?,
        hold_fen: r.int("hold_fen")?,
        status: HoldStatus::parse(&status).ok_or_else(|| corrupt("hold status", &status, "unknown"))?,
        total_fen: r.opt_int("total_fen")?,
        created_at: r.at("created_at")?,
        updated_at: r.at("updated_at")?,
    };
    st.holds.insert(key, hold);
    Ok(())
}

/// A row of [`crate::store::LedgerStore::due`]'s query: `kind` is `order` or `hold`, `no`
/// the order's or the hold's number.
pub(crate) fn due_from(r: &dyn Cells) -> Result<crate::model::Due, StoreError> {
    let merchant_id = id("merchant", r.text("merchant_id")?, MerchantId::parse)?;
    let created_at = r.at("created_at")?;
    match r.text("kind")?.as_str() {
        "order" => {
            let out_trade_no = id("out_trade_no", r.text("no")?, OutTradeNo::parse)?;
            Ok(crate::model::Due::Order { merchant_id, out_trade_no, created_at })
        }
        "hold" => {
            let out_order_no = id("out_order_no", r.text("no")?, OutOrderNo::parse)?;
            Ok(crate::model::Due::Hold { merchant_id, out_order_no, created_at })
        }
        other => Err(corrupt("due kind", other, "unknown")),
    }
}

pub(crate) fn fill_settlement(st: &mut LedgerState, r: &dyn Cells) -> Result<(), StoreError> {
    let key = (id("merchant", r.text("merchant_id")?, MerchantId::parse)?, r.day("day")?);
    let s =
        Settlement { gross_fen: r.int("gross_fen")?, refunds_fen: r.int("refunds_fen")?, fees_fen: r.int("fees_fen")? };
    st.settlement.insert(key, s);
    Ok(())
}

pub(crate) fn settlement_view_from(r: &dyn Cells) -> Result<crate::store::SettlementView, StoreError> {
    Ok(crate::store::SettlementView {
        day: r.day("day")?,
        gross_fen: r.int("gross_fen")?,
        refunds_fen: r.int("refunds_fen")?,
        fees_fen: r.int("fees_fen")?,
        net_fen: r.int("net_fen")?,
    })
}

/// Every projection table, as read whole by `load_all`.
pub(crate) const PROJECTIONS: [(&str, Fill); 12] = [
    ("SELECT account, balance_fen FROM balances", fill_balance),
    ("SELECT payer_id, frozen FROM payers", fill_payer),
    ("SELECT merchant_id, single_limit_fen FROM merchant_limits", fill_limit),
    ("SELECT face_code, merchant_id, used_by FROM captures", fill_capture),
    ("SELECT * FROM orders", fill_order),
    ("SELECT * FROM members", fill_member),
    ("SELECT * FROM daily_usage", fill_daily),
    ("SELECT merchant_id, fee_rate_ppm FROM merchant_fee_rates", fill_fee_rate),
    ("SELECT * FROM refunds", fill_refund),
    ("SELECT * FROM holds", fill_hold),
    ("SELECT merchant_id, payer_id, authorised_at FROM pay_score_authorisations", fill_pay_score),
    ("SELECT * FROM settlement", fill_settlement),
];

/// How much each merchant's day moves in a batch, added to the stored settlement (as
/// balances are, so several writers of one store cannot lose each other's updates).
pub(crate) fn settlement_deltas(events: &[NewEvent]) -> Vec<(SettlementKey, Settlement)> {
    let mut deltas: BTreeMap<SettlementKey, Settlement> = BTreeMap::new();
    for (key, s) in events.iter().filter_map(|e| e.event.settlement(e.occurred_at)) {
        deltas.entry(key).or_default().add(&s);
    }
    deltas.into_iter().collect()
}

// ---- rows to write ---------------------------------------------------------------------

pub(crate) struct EventRow {
    pub event_id: Uuid,
    pub cause_event_id: Uuid,
    pub stream: String,
    pub kind: &'static str,
    pub schema_version: i64,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// The event as JSON.
    pub payload: String,
    /// The audit chain's link to the stream's previous event, and this event's hash.
    pub prev_hash: String,
    pub hash: String,
}

pub(crate) struct PostingRow {
    pub txn_id: Uuid,
    pub leg: i64,
    pub account: String,
    pub amount_fen: i64,
}

pub(crate) struct TxnRow {
    pub txn_id: Uuid,
    pub event_id: Uuid,
    pub leg_count: i64,
    pub posted_at: DateTime<Utc>,
}

/// The rows behind the events of a batch: events, postings and their transactions.
pub(crate) struct LogRows {
    pub events: Vec<EventRow>,
    pub postings: Vec<PostingRow>,
    pub txns: Vec<TxnRow>,
}

/// The rows of `events`, chained to `last` (each stream's latest stored hash).
pub(crate) fn log_rows(events: &[NewEvent], last: &mut HashMap<String, String>) -> Result<LogRows, StoreError> {
    let now = Utc::now();
    let mut rows = LogRows { events: vec![], postings: vec![], txns: vec![] };
    let links = crate::audit::link(events, last);
    for (e, (prev_hash, hash)) in events.iter().zip(links) {
        let payload = serde_json::to_string(&e.event).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        rows.events.push(EventRow {
            event_id: e.event_id,
            cause_event_id: e.cause_event_id,
            stream: e.event.stream(),
            kind: e.event.kind(),
            schema_version: i64::from(SCHEMA_VERSION),
            occurred_at: e.occurred_at,
            recorded_at: now,
            payload,
            prev_hash,
            hash,
        });
        if let Some(t) = e.event.transfer() {
            t.assert_balanced();
            for (leg, p) in t.postings.iter().enumerate() {
                let (account, amount_fen) = (p.account.key(), p.amount_fen);
                rows.postings.push(PostingRow { txn_id: t.txn_id, leg: leg as i64, account, amount_fen });
            }
            let leg_count = t.postings.len() as i64;
            rows.txns.push(TxnRow { txn_id: t.txn_id, event_id: e.event_id, leg_count, posted_at: e.occurred_at });
        }
    }
    Ok(rows)
}

/// The streams a batch's events extend, for reading their latest hashes.
pub(crate) fn streams(events: &[NewEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.stream()).collect::<BTreeSet<_>>().into_iter().collect()
}

/// How much each account's balance moves in a batch: the sum of its postings. The stores add
/// these to the stored balances instead of writing the batch's absolute values, so two
/// writers of one store (processes of the scale-out profile, each with its own payers) cannot
/// lose each other's updates to the accounts they share: a merchant's settlement account, the
/// funding account. With one writer it is the same thing: the batch's balance is the stored
/// one plus these postings.
pub(crate) fn balance_deltas(events: &[NewEvent]) -> Vec<(String, i64)> {
    let mut deltas: BTreeMap<String, i64> = BTreeMap::new();
    for p in events.iter().filter_map(|e| e.event.transfer()).flat_map(|t| &t.postings) {
        *deltas.entry(p.account.key()).or_default() += p.amount_fen;
    }
    deltas.into_iter().collect()
}

/// One offset per (group, topic, partition), the furthest a batch reached, each checked
/// against what the store holds (see [`ConsumerOffset::expected`]).
pub(crate) fn last_offsets(offsets: &[ConsumerOffset]) -> Vec<&ConsumerOffset> {
    let mut last: BTreeMap<(&str, &str, i32), &ConsumerOffset> = BTreeMap::new();
    for o in offsets {
        let slot = last.entry((o.group_id.as_str(), o.topic.as_str(), o.partition)).or_insert(o);
        if o.next_offset > slot.next_offset {
            *slot = o;
        }
    }
    last.into_values().collect()
}

/// The compare-and-set of one consumer offset: an UPDATE from the expected value, or an
/// INSERT when none was stored. `$1…$5` = group, topic, partition, next, expected.
pub(crate) const OFFSET_ADVANCE_SQL: &str = "UPDATE consumer_offsets SET next_offset = $4 \
    WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $5";
pub(crate) const OFFSET_FIRST_SQL: &str = "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (group_id, topic, partition) DO NOTHING";

/// The error of a compare-and-set that changed no row.
pub(crate) fn fenced(o: &ConsumerOffset) -> StoreError {
    StoreError::Fenced(format!(
        "{}/{}[{}] no longer at {:?}: another consumer committed it",
        o.group_id, o.topic, o.partition, o.expected
    ))
}

/// The `payer_id` of a row.
pub(crate) fn payer_of(r: &dyn Cells) -> Result<PayerId, StoreError> {
    id("payer", r.text("payer_id")?, PayerId::parse)
}
