//! Settling a break through the ledger, in the pure core (same contract as
//! [`crate::core`]: `decide` reads the state and returns events or a refusal, `apply` folds
//! them, no I/O).
//!
//! The one break that moves money when resolved is the network-timeout case: the ledger has
//! the order unpaid (declined, or revoked after its 45 s) while the channel's bill proves it
//! paid. Resolving it as `confirmed_paid` sends a [`ConfirmPaid`] command; the ledger then
//! appends [`LedgerEvent::PaymentConfirmed`], which marks the order paid and posts a
//! balanced transfer: the channel took the money from the payer outside facepay's wallets,
//! so it comes from [`Account::Funding`]; the merchant's [`Account::Settlement`] gets it
//! less the fee, and [`Account::PlatformFees`] the fee, at the merchant's rate rounded to the
//! fen as payments are. History is never edited: the declined attempt stays in the log and
//! the payment is a new event.
//!
//! The payment belongs to the moment the channel took it (`paid_at`, the bill's trade time):
//! its history row and its settlement count on that day, so a re-run of the same bill
//! matches the order. Idempotency: the command's event id is derived from the break
//! (a retried resolution is answered from its stored outcome and posts nothing), and an
//! order already paid is refused with `ORDER_PAID`.
//!
//! Not charged: the payer's daily caps (the payer is usually unknown after a timeout, and
//! the caps guard facepay's own wallet debits) and the face code (spent by the declined
//! attempt already).

use chrono::{DateTime, Utc};
use facepay_domain::{OrderStatus, RefusalReason};

use crate::command::Command;
use crate::model::{Account, Attempt, Keys, LedgerEvent, LedgerState, Transfer};
use crate::rules::{fee_fen, txn_id, DomainError};

pub use crate::command::ConfirmPaid;

/// Decides a confirmation: refused when the order is unknown, already paid, reversed, or
/// of another amount; otherwise one [`LedgerEvent::PaymentConfirmed`].
pub fn decide(state: &LedgerState, cmd: &Command, c: &ConfirmPaid) -> Result<Vec<LedgerEvent>, DomainError> {
    let refuse = |r| Err(DomainError::Refused(r));
    let Some(order) = state.orders.get(&(c.merchant_id.clone(), c.out_trade_no.clone())) else {
        return refuse(RefusalReason::OrderNotFound);
    };
    match order.status {
        OrderStatus::Declined | OrderStatus::Revoked => {}
        OrderStatus::Paid => return refuse(RefusalReason::OrderPaid),
        OrderStatus::Reversed => return refuse(RefusalReason::OrderReversed),
    }
    if order.amount_fen != c.amount.fen() {
        return refuse(RefusalReason::AmountMismatch);
    }
    let fee_fen = fee_fen(c.amount.fen(), state.fee_rate_ppm(&c.merchant_id));
    let legs = vec![
        (Account::Funding, -c.amount.fen()),
        (Account::Settlement(c.merchant_id.clone()), c.amount.fen() - fee_fen),
        (Account::PlatformFees, fee_fen),
    ];
    let transfer = Transfer::legs(txn_id(cmd), legs).expect("a confirmed payment moves money");
    let attempt = Attempt {
        merchant_id: order.merchant_id.clone(),
        store_id: order.store_id.clone(),
        device_id: order.device_id.clone(),
        out_trade_no: order.out_trade_no.clone(),
        amount: c.amount,
        face_code: order.face_code.clone(),
        claimed_at: None,
    };
    Ok(vec![LedgerEvent::PaymentConfirmed {
        attempt,
        payer_id: order.payer_id.clone(),
        paid_at: c.paid_at,
        channel_txn_id: c.channel_txn_id.clone(),
        break_id: c.break_id,
        fee_fen,
        transfer,
    }])
}

/// Folds a confirmation: the order is paid, with its fee (balances move in
/// [`crate::core::apply`]).
pub fn apply(state: &mut LedgerState, event: &LedgerEvent, at: DateTime<Utc>) {
    let LedgerEvent::PaymentConfirmed { attempt, fee_fen, .. } = event else { return };
    if let Some(o) = state.orders.get_mut(&(attempt.merchant_id.clone(), attempt.out_trade_no.clone())) {
        o.status = OrderStatus::Paid;
        o.reason = None;
        o.fee_fen = *fee_fen;
        o.updated_at = at;
    }
}

/// The keys a confirmation reads (the accounts it posts to are moved by the postings).
pub fn keys_read(c: &ConfirmPaid, keys: &mut Keys) {
    keys.orders.insert((c.merchant_id.clone(), c.out_trade_no.clone()));
    keys.fee_rates.insert(c.merchant_id.clone());
}

/// The keys a confirmation changed.
pub fn keys_written(event: &LedgerEvent, keys: &mut Keys) {
    if let LedgerEvent::PaymentConfirmed { attempt, .. } = event {
        keys.orders.insert((attempt.merchant_id.clone(), attempt.out_trade_no.clone()));
    }
}
