//! The rest of a payment's life, in the pure core: reversal, automatic revocation, refunds,
//! fees and Pay Score holds. Same contract as [`crate::core`]: `decide` reads the state and
//! returns events or a refusal; `apply` folds the events; nothing here does I/O.
//!
//! Time rules (45 s revocation, 7-day reversal window, 30-day hold expiry) are judged on the
//! command's platform time (`accepted_at`: when facepay accepted the event, never a device's
//! claim), stored with its events, so replaying the log decides exactly alike.

use chrono::{DateTime, Utc};
use facepay_domain::limits::{FEE_RATE_MAX_PPM, HOLD_EXPIRY_MS, ORDER_REVOKE_AFTER_MS, REVERSAL_WINDOW_MS};
use facepay_domain::{
    FaceCode, MerchantId, Money, OrderStatus, OutOrderNo, OutRefundNo, OutTradeNo, PayerId, RefusalReason,
};

use uuid::Uuid;

use crate::command::{Command, CommandKind, Lifecycle};
use crate::model::{
    Account, Hold, HoldKey, HoldStatus, Keys, LedgerEvent, LedgerState, Order, OrderKey, Refund, Transfer,
};
use crate::rules::{authorised_payer, fee_fen, fresh_capture, order_revoked_by_time, txn_id, DomainError};

fn refuse<T>(reason: RefusalReason) -> Result<T, DomainError> {
    Err(DomainError::Refused(reason))
}

/// Decides one lifecycle command.
pub fn decide(state: &LedgerState, cmd: &Command, l: &Lifecycle) -> Result<Vec<LedgerEvent>, DomainError> {
    match l {
        Lifecycle::Reverse { merchant_id, out_trade_no } => reverse(state, cmd, merchant_id, out_trade_no),
        Lifecycle::Refund { merchant_id, out_trade_no, out_refund_no, amount } => {
            refund(state, cmd, merchant_id, out_trade_no, out_refund_no, *amount)
        }
        Lifecycle::SetFeeRate { merchant_id, fee_rate_ppm } => {
            let rate = i64::from(*fee_rate_ppm);
            if rate > FEE_RATE_MAX_PPM {
                return refuse(RefusalReason::FeeRateOutOfRange);
            }
            if state.fee_rates_ppm.get(merchant_id) == Some(&rate) {
                return Ok(vec![]);
            }
            Ok(vec![LedgerEvent::MerchantFeeRateChanged { merchant_id: merchant_id.clone(), fee_rate_ppm: rate }])
        }
        Lifecycle::HoldCreate { merchant_id, out_order_no, face_code, identity, amount } => {
            let payer_id = authorised_payer(identity)?;
            hold_create(state, cmd, (merchant_id, out_order_no), (face_code, payer_id), *amount)
        }
        Lifecycle::PayScoreAuthorise { merchant_id, face_code, identity } => {
            let payer_id = authorised_payer(identity)?;
            if state.pay_score_authorised(merchant_id, payer_id) {
                return Ok(vec![]);
            }
            fresh_capture(state, face_code)?;
            let (merchant_id, payer_id, face_code) = (merchant_id.clone(), payer_id.clone(), face_code.clone());
            Ok(vec![LedgerEvent::PayScoreAuthorised { merchant_id, payer_id, face_code }])
        }
        Lifecycle::HoldComplete { merchant_id, out_order_no, total } => {
            hold_end(state, cmd, (merchant_id, out_order_no), End::Complete(*total))
        }
        Lifecycle::HoldCancel { merchant_id, out_order_no } => {
            hold_end(state, cmd, (merchant_id, out_order_no), End::Cancel)
        }
        Lifecycle::HoldExpire { merchant_id, out_order_no } => {
            hold_end(state, cmd, (merchant_id, out_order_no), End::Tick)
        }
        Lifecycle::RevokeIfDue { merchant_id, out_trade_no } => {
            let key = (merchant_id.clone(), out_trade_no.clone());
            Ok(revoke_if_due(state, &key, cmd.accepted_at).into_iter().collect())
        }
    }
}

/// The revocation of an unpaid order found past its 45 s at `now`, if due.
pub fn revoke_if_due(state: &LedgerState, key: &OrderKey, now: DateTime<Utc>) -> Option<LedgerEvent> {
    let order = state.orders.get(key).filter(|o| order_revoked_by_time(o, now))?;
    Some(LedgerEvent::OrderRevoked {
        merchant_id: order.merchant_id.clone(),
        out_trade_no: order.out_trade_no.clone(),
        payer_id: order.payer_id.clone(),
    })
}

/// The money still refundable on a paid order: what is left of the payment and of its fee.
fn left(order: &Order) -> (i64, i64) {
    (order.amount_fen - order.refunded_fen, order.fee_fen - order.fee_refunded_fen)
}

/// The transfer that returns `refund_fen` of a payment to the payer with `fee_refund_fen` of
/// its fee: the payer gets the whole refund, the merchant gives it less the returned fee.
fn refund_transfer(cmd: &Command, merchant: &MerchantId, payer: &PayerId, refund_fen: i64, fee_back: i64) -> Transfer {
    let legs = vec![
        (Account::Wallet(payer.clone()), refund_fen),
        (Account::Settlement(merchant.clone()), fee_back - refund_fen),
        (Account::PlatformFees, -fee_back),
    ];
    Transfer::legs(txn_id(cmd), legs).expect("a refund moves money")
}

fn reverse(
    state: &LedgerState,
    cmd: &Command,
    merchant_id: &MerchantId,
    out_trade_no: &OutTradeNo,
) -> Result<Vec<LedgerEvent>, DomainError> {
    let Some(order) = state.orders.get(&(merchant_id.clone(), out_trade_no.clone())) else {
        return refuse(RefusalReason::OrderNotFound);
    };
    if (cmd.accepted_at - order.created_at).num_milliseconds() > REVERSAL_WINDOW_MS {
        return refuse(RefusalReason::ReversalWindowClosed);
    }
    // An unpaid order past its 45 s was closed by then (revoked), whether or not the clock's
    // tick has been decided yet: the reversal finds it revoked and changes nothing more.
    if let Some(revoked) = revoke_if_due(state, &(merchant_id.clone(), out_trade_no.clone()), cmd.accepted_at) {
        return Ok(vec![revoked]);
    }
    let (refund_fen, fee_refund_fen, transfer) = match order.status {
        // Reversed already, or closed by the channel: the order is closed, nothing to do.
        OrderStatus::Reversed | OrderStatus::Revoked => return Ok(vec![]),
        OrderStatus::Declined => (0, 0, None),
        OrderStatus::Paid => {
            let (refund_fen, fee_back) = left(order);
            let payer = order.payer_id.as_ref().expect("a paid order has a payer");
            let t = (refund_fen > 0).then(|| refund_transfer(cmd, merchant_id, payer, refund_fen, fee_back));
            (refund_fen, fee_back, t)
        }
    };
    Ok(vec![LedgerEvent::OrderReversed {
        merchant_id: merchant_id.clone(),
        out_trade_no: out_trade_no.clone(),
        payer_id: order.payer_id.clone(),
        refund_fen,
        fee_refund_fen,
        transfer,
    }])
}

fn refund(
    state: &LedgerState,
    cmd: &Command,
    merchant_id: &MerchantId,
    out_trade_no: &OutTradeNo,
    out_refund_no: &OutRefundNo,
    amount: Money,
) -> Result<Vec<LedgerEvent>, DomainError> {
    // Idempotency per (merchant, out_refund_no) comes first.
    if let Some(r) = state.refunds.get(&(merchant_id.clone(), out_refund_no.clone())) {
        return match r.out_trade_no == *out_trade_no && r.amount_fen == amount.fen() {
            true => Ok(vec![]),
            false => refuse(RefusalReason::RefundNoUsed),
        };
    }
    let Some(order) = state.orders.get(&(merchant_id.clone(), out_trade_no.clone())) else {
        return refuse(RefusalReason::OrderNotFound);
    };
    match order.status {
        OrderStatus::Paid => {}
        OrderStatus::Reversed => return refuse(RefusalReason::OrderReversed),
        OrderStatus::Declined | OrderStatus::Revoked => return refuse(RefusalReason::OrderNotPaid),
    }
    let (amount_left, fee_left) = left(order);
    if amount.fen() > amount_left {
        return refuse(RefusalReason::RefundExceedsPaid);
    }
    // The fee goes back in proportion; the last refund takes whatever rounding left over.
    let fee_refund_fen = match amount.fen() == amount_left {
        true => fee_left,
        false => (order.fee_fen * amount.fen() * 2 + order.amount_fen) / (order.amount_fen * 2),
    }
    .min(fee_left);
    let payer_id = order.payer_id.clone().expect("a paid order has a payer");
    let transfer = refund_transfer(cmd, merchant_id, &payer_id, amount.fen(), fee_refund_fen);
    Ok(vec![LedgerEvent::RefundSucceeded {
        merchant_id: merchant_id.clone(),
        out_trade_no: out_trade_no.clone(),
        out_refund_no: out_refund_no.clone(),
        payer_id,
        amount,
        fee_refund_fen,
        transfer,
    }])
}

/// A Pay Score order for `payer_id`, whom the capture `face_code` resolved to: idempotent per
/// order number; the payer must have authorised the merchant's Pay Score, and the capture
/// must be unspent (the order spends it).
fn hold_create(
    state: &LedgerState,
    cmd: &Command,
    (merchant_id, out_order_no): (&MerchantId, &OutOrderNo),
    (face_code, payer_id): (&FaceCode, &PayerId),
    amount: Money,
) -> Result<Vec<LedgerEvent>, DomainError> {
    if let Some(h) = state.holds.get(&(merchant_id.clone(), out_order_no.clone())) {
        return match h.payer_id == *payer_id && h.hold_fen == amount.fen() {
            true => Ok(vec![]),
            false => refuse(RefusalReason::OutOrderNoUsed),
        };
    }
    if !state.pay_score_authorised(merchant_id, payer_id) {
        return refuse(RefusalReason::PayScoreNotAuthorised);
    }
    fresh_capture(state, face_code)?;
    if state.is_frozen(payer_id) {
        return refuse(RefusalReason::PayerFrozen);
    }
    // As a payment: the payer's expired holds give their money back first.
    let (expiries, released_fen) = expire_due_holds(state, cmd, payer_id);
    if state.balance_fen(&Account::Wallet(payer_id.clone())) + released_fen < amount.fen() {
        return refuse(RefusalReason::InsufficientBalance);
    }
    let transfer =
        Transfer::between(txn_id(cmd), Account::Wallet(payer_id.clone()), Account::Hold(payer_id.clone()), amount);
    let created = LedgerEvent::HoldCreated {
        merchant_id: merchant_id.clone(),
        out_order_no: out_order_no.clone(),
        payer_id: payer_id.clone(),
        amount,
        transfer,
        face_code: Some(face_code.clone()),
    };
    Ok([expiries, vec![created]].concat())
}

/// The expiry of each of `payer`'s holds in `state` that is past its 30 days at the
/// command's time (oldest key first), and what they give back to the wallet. A command whose
/// decision reads the payer's wallet posts these first, so that it decides alike whether or
/// not the clock has swept them: the store loads every such hold for it (see
/// [`crate::store::LedgerStore::holds_due`]).
pub fn expire_due_holds(state: &LedgerState, cmd: &Command, payer: &PayerId) -> (Vec<LedgerEvent>, i64) {
    let due: Vec<_> =
        state.holds.iter().filter(|(_, h)| h.payer_id == *payer && hold_expired_by_time(h, cmd.accepted_at)).collect();
    let released_fen = due.iter().map(|(_, h)| h.hold_fen).sum();
    let expiries = due
        .into_iter()
        .map(|((merchant_id, out_order_no), h)| {
            // One transfer per hold, each under its own id derived from the command's event.
            let id = Uuid::new_v5(&cmd.event_id, format!("expire:{merchant_id}:{out_order_no}").as_bytes());
            expired(merchant_id, out_order_no, h, id)
        })
        .collect();
    (expiries, released_fen)
}

/// The transfer that ends `hold` (of `merchant_id`): `to_merchant_fen` of it to the merchant
/// less `fee_fen`, the fee to the platform, the rest back to the payer's wallet.
fn release(id: Uuid, merchant_id: &MerchantId, hold: &Hold, to_merchant_fen: i64, fee_fen: i64) -> Transfer {
    let payer = &hold.payer_id;
    let legs = vec![
        (Account::Hold(payer.clone()), -hold.hold_fen),
        (Account::Wallet(payer.clone()), hold.hold_fen - to_merchant_fen),
        (Account::Settlement(merchant_id.clone()), to_merchant_fen - fee_fen),
        (Account::PlatformFees, fee_fen),
    ];
    Transfer::legs(id, legs).expect("a hold holds money")
}

/// The expiry of `hold`: all of it back to the payer.
fn expired(merchant_id: &MerchantId, out_order_no: &OutOrderNo, hold: &Hold, id: Uuid) -> LedgerEvent {
    LedgerEvent::HoldExpired {
        merchant_id: merchant_id.clone(),
        out_order_no: out_order_no.clone(),
        payer_id: hold.payer_id.clone(),
        transfer: release(id, merchant_id, hold, 0, 0),
    }
}

/// How a hold is asked to end.
enum End {
    Complete(Money),
    Cancel,
    /// Only if it is past its expiry.
    Tick,
}

/// True when a created hold has outlived its 30 days at `now` (the platform's time).
pub fn hold_expired_by_time(hold: &Hold, now: DateTime<Utc>) -> bool {
    hold.status == HoldStatus::Created && (now - hold.created_at).num_milliseconds() >= HOLD_EXPIRY_MS
}

fn hold_end(
    state: &LedgerState,
    cmd: &Command,
    (merchant_id, out_order_no): (&MerchantId, &OutOrderNo),
    end: End,
) -> Result<Vec<LedgerEvent>, DomainError> {
    let Some(hold) = state.holds.get(&(merchant_id.clone(), out_order_no.clone())) else {
        return refuse(RefusalReason::OrderNotFound);
    };
    if hold_expired_by_time(hold, cmd.accepted_at) {
        // Expiry comes first: complete and cancel of an expired hold post its expiry and
        // are then refused (see `refusal_after`).
        return Ok(vec![expired(merchant_id, out_order_no, hold, txn_id(cmd))]);
    }
    let release =
        |to_merchant_fen: i64, fee_fen: i64| release(txn_id(cmd), merchant_id, hold, to_merchant_fen, fee_fen);
    let (merchant_id, out_order_no, payer_id) = (merchant_id.clone(), out_order_no.clone(), hold.payer_id.clone());
    match (hold.status, end) {
        (_, End::Tick) => Ok(vec![]),
        (HoldStatus::Done, _) => refuse(RefusalReason::HoldCompleted),
        (HoldStatus::Revoked, _) => refuse(RefusalReason::HoldCancelled),
        (HoldStatus::Expired, _) => refuse(RefusalReason::HoldExpired),
        (HoldStatus::Created, End::Complete(total)) if total.fen() > hold.hold_fen => {
            refuse(RefusalReason::CompletionAboveHold)
        }
        (HoldStatus::Created, End::Complete(total)) => {
            let fee_fen = fee_fen(total.fen(), state.fee_rate_ppm(&merchant_id));
            let transfer = release(total.fen(), fee_fen);
            Ok(vec![LedgerEvent::HoldCompleted { merchant_id, out_order_no, payer_id, total, fee_fen, transfer }])
        }
        (HoldStatus::Created, End::Cancel) => {
            Ok(vec![LedgerEvent::HoldCancelled { merchant_id, out_order_no, payer_id, transfer: release(0, 0) }])
        }
    }
}

/// A refusal that stands although events were decided: a completion or cancellation that
/// found its hold expired posts the expiry (the money goes back) and is refused.
pub fn refusal_after(cmd: &Command, events: &[LedgerEvent]) -> Option<DomainError> {
    match (&cmd.kind, events) {
        (
            CommandKind::Lifecycle(Lifecycle::HoldComplete { .. } | Lifecycle::HoldCancel { .. }),
            [LedgerEvent::HoldExpired { .. }],
        ) => Some(DomainError::Refused(RefusalReason::HoldExpired)),
        _ => None,
    }
}

/// Folds the lifecycle's events (balances are moved by [`crate::core::apply`]).
pub fn apply(state: &mut LedgerState, event: &LedgerEvent, at: DateTime<Utc>) {
    match event {
        LedgerEvent::OrderRevoked { merchant_id, out_trade_no, .. } => {
            // Revoked as of its deadline, whoever noticed it (the clock's tick, or a payment or
            // query arriving later): the projection does not depend on which came first.
            let key = (merchant_id.clone(), out_trade_no.clone());
            let due = state.orders.get(&key).map_or(at, |o| o.created_at + ms(ORDER_REVOKE_AFTER_MS));
            set_status(state, &key, OrderStatus::Revoked, due);
        }
        LedgerEvent::OrderReversed { merchant_id, out_trade_no, refund_fen, fee_refund_fen, .. } => {
            let key = (merchant_id.clone(), out_trade_no.clone());
            set_status(state, &key, OrderStatus::Reversed, at);
            if let Some(o) = state.orders.get_mut(&key) {
                o.refunded_fen += refund_fen;
                o.fee_refunded_fen += fee_refund_fen;
            }
        }
        LedgerEvent::RefundSucceeded {
            merchant_id,
            out_trade_no,
            out_refund_no,
            payer_id,
            amount,
            fee_refund_fen,
            ..
        } => {
            if let Some(o) = state.orders.get_mut(&(merchant_id.clone(), out_trade_no.clone())) {
                o.refunded_fen += amount.fen();
                o.fee_refunded_fen += fee_refund_fen;
                o.updated_at = at;
            }
            let refund = Refund {
                out_trade_no: out_trade_no.clone(),
                payer_id: payer_id.clone(),
                amount_fen: amount.fen(),
                fee_refund_fen: *fee_refund_fen,
                refunded_at: at,
            };
            state.refunds.insert((merchant_id.clone(), out_refund_no.clone()), refund);
        }
        LedgerEvent::MerchantFeeRateChanged { merchant_id, fee_rate_ppm } => {
            state.fee_rates_ppm.insert(merchant_id.clone(), *fee_rate_ppm);
        }
        LedgerEvent::HoldCreated { merchant_id, out_order_no, payer_id, amount, face_code, .. } => {
            crate::rules::spend_capture(state, face_code.as_ref(), merchant_id, format!("pay_score|{out_order_no}"));
            let hold = Hold {
                payer_id: payer_id.clone(),
                hold_fen: amount.fen(),
                status: HoldStatus::Created,
                total_fen: None,
                created_at: at,
                updated_at: at,
            };
            state.holds.insert((merchant_id.clone(), out_order_no.clone()), hold);
        }
        LedgerEvent::HoldCompleted { merchant_id, out_order_no, total, .. } => {
            end_hold(state, &(merchant_id.clone(), out_order_no.clone()), HoldStatus::Done, Some(total.fen()), at);
        }
        LedgerEvent::HoldCancelled { merchant_id, out_order_no, .. } => {
            end_hold(state, &(merchant_id.clone(), out_order_no.clone()), HoldStatus::Revoked, None, at);
        }
        LedgerEvent::HoldExpired { merchant_id, out_order_no, .. } => {
            // Expired as of its deadline, whoever noticed it (as a revocation above).
            let key = (merchant_id.clone(), out_order_no.clone());
            let due = state.holds.get(&key).map_or(at, |h| h.created_at + ms(HOLD_EXPIRY_MS));
            end_hold(state, &key, HoldStatus::Expired, None, due);
        }
        _ => {}
    }
}

fn ms(millis: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(millis)
}

fn set_status(state: &mut LedgerState, key: &OrderKey, status: OrderStatus, at: DateTime<Utc>) {
    if let Some(o) = state.orders.get_mut(key) {
        o.status = status;
        o.updated_at = at;
    }
}

fn end_hold(state: &mut LedgerState, key: &HoldKey, status: HoldStatus, total_fen: Option<i64>, at: DateTime<Utc>) {
    if let Some(h) = state.holds.get_mut(key) {
        h.status = status;
        h.total_fen = total_fen;
        h.updated_at = at;
    }
}

/// The keys a lifecycle command reads. Accounts it only credits or debits without a check
/// (merchant, fees, a refunded payer's wallet) need not be read: the stores move balances
/// by the postings, and the service does not cache entities it did not read.
pub fn keys_read(l: &Lifecycle, keys: &mut Keys) {
    match l {
        Lifecycle::Reverse { merchant_id, out_trade_no } | Lifecycle::RevokeIfDue { merchant_id, out_trade_no } => {
            keys.orders.insert((merchant_id.clone(), out_trade_no.clone()));
        }
        Lifecycle::Refund { merchant_id, out_trade_no, out_refund_no, .. } => {
            keys.orders.insert((merchant_id.clone(), out_trade_no.clone()));
            keys.refunds.insert((merchant_id.clone(), out_refund_no.clone()));
        }
        Lifecycle::SetFeeRate { merchant_id, .. } => {
            keys.fee_rates.insert(merchant_id.clone());
        }
        Lifecycle::HoldCreate { merchant_id, out_order_no, face_code, identity, .. } => {
            keys.holds.insert((merchant_id.clone(), out_order_no.clone()));
            keys.captures.insert(face_code.clone());
            if let Some(payer_id) = identity.payer() {
                keys.frozen.insert(payer_id.clone());
                keys.accounts.insert(Account::Wallet(payer_id.clone()));
                keys.pay_score.insert((merchant_id.clone(), payer_id.clone()));
            }
        }
        Lifecycle::PayScoreAuthorise { merchant_id, face_code, identity } => {
            keys.captures.insert(face_code.clone());
            if let Some(payer_id) = identity.payer() {
                keys.pay_score.insert((merchant_id.clone(), payer_id.clone()));
            }
        }
        Lifecycle::HoldComplete { merchant_id, out_order_no, .. }
        | Lifecycle::HoldCancel { merchant_id, out_order_no }
        | Lifecycle::HoldExpire { merchant_id, out_order_no } => {
            keys.holds.insert((merchant_id.clone(), out_order_no.clone()));
            keys.fee_rates.insert(merchant_id.clone());
        }
    }
}

/// The keys a lifecycle event changed.
pub fn keys_written(event: &LedgerEvent, keys: &mut Keys) {
    match event {
        LedgerEvent::OrderRevoked { merchant_id, out_trade_no, .. }
        | LedgerEvent::OrderReversed { merchant_id, out_trade_no, .. } => {
            keys.orders.insert((merchant_id.clone(), out_trade_no.clone()));
        }
        LedgerEvent::RefundSucceeded { merchant_id, out_trade_no, out_refund_no, .. } => {
            keys.orders.insert((merchant_id.clone(), out_trade_no.clone()));
            keys.refunds.insert((merchant_id.clone(), out_refund_no.clone()));
        }
        LedgerEvent::MerchantFeeRateChanged { merchant_id, .. } => {
            keys.fee_rates.insert(merchant_id.clone());
        }
        LedgerEvent::HoldCreated { merchant_id, out_order_no, face_code: Some(face_code), .. } => {
            keys.holds.insert((merchant_id.clone(), out_order_no.clone()));
            keys.captures.insert(face_code.clone());
        }
        LedgerEvent::HoldCreated { merchant_id, out_order_no, .. }
        | LedgerEvent::HoldCompleted { merchant_id, out_order_no, .. }
        | LedgerEvent::HoldCancelled { merchant_id, out_order_no, .. }
        | LedgerEvent::HoldExpired { merchant_id, out_order_no, .. } => {
            keys.holds.insert((merchant_id.clone(), out_order_no.clone()));
        }
        _ => {}
    }
}
