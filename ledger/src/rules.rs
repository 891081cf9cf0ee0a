//! What every decision of the pure core shares ([`crate::core`] for payments and cards,
//! [`crate::lifecycle`] for the rest of a payment's life, [`crate::reconcile::settle`] for a
//! confirmed payment): the refusal error, the fee rule, the ids of the transfers a command
//! causes, the 45 s rule, and the rules of the captures that authorise a command.

use chrono::{DateTime, Utc};
use facepay_domain::limits::{FEE_RATE_PPM_PER_UNIT, ORDER_REVOKE_AFTER_MS};
use facepay_domain::{FaceCode, MerchantId, OrderStatus, PayerId, RefusalReason};
use uuid::Uuid;

use crate::command::{Command, Identity};
use crate::model::{CaptureUse, LedgerState, Order};

/// A command refused with nothing recorded in the ledger (the refusal itself is kept in the
/// rejected-events table). Payment declines are not errors: they are events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the payer already holds an open member card of this merchant")]
    MemberCardAlreadyOpen,
    #[error("the payer holds no open member card of this merchant")]
    MemberCardNotOpen,
    #[error("the card code is not the one the payer holds")]
    CardCodeMismatch,
    #[error("{kind} is not handled by this build yet")]
    NotYetSupported { kind: String },
    /// A refund, reversal, fee rate or Pay Score operation refused (channel code in the text).
    #[error("refused: {} (channel code {})", .0.code(), .0.channel_code())]
    Refused(RefusalReason),
}

impl DomainError {
    /// Stable code, as stored and served.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::MemberCardAlreadyOpen => "MEMBER_CARD_ALREADY_OPEN",
            DomainError::MemberCardNotOpen => "MEMBER_CARD_NOT_OPEN",
            DomainError::CardCodeMismatch => "CARD_CODE_MISMATCH",
            DomainError::NotYetSupported { .. } => "NOT_YET_SUPPORTED",
            DomainError::Refused(r) => r.code(),
        }
    }
}

/// The payer a face-authorised command's capture resolved to, or its refusal.
pub(crate) fn authorised_payer(identity: &Identity) -> Result<&PayerId, DomainError> {
    identity.payer().ok_or(DomainError::Refused(RefusalReason::IdentityUnresolved))
}

/// Refuses a face-authorised command whose capture is spent (a face code authorises once).
pub(crate) fn fresh_capture(state: &LedgerState, face_code: &FaceCode) -> Result<(), DomainError> {
    match state.captures.contains_key(face_code) {
        true => Err(DomainError::Refused(RefusalReason::CaptureUsed)),
        false => Ok(()),
    }
}

/// The id of the transfer a command causes: derived from the inbound event id, so a
/// redelivered event can never post under a fresh id. (A command posts one transfer of its
/// own at most; the hold expiries it posts first have ids of their own, see
/// [`crate::lifecycle::expire_due_holds`].)
pub(crate) fn txn_id(cmd: &Command) -> Uuid {
    Uuid::new_v5(&cmd.event_id, b"txn:0")
}

/// The fee on `amount_fen` at `rate_ppm`, rounded half up to the fen (60.00 at 0.54 % → 0.32).
pub fn fee_fen(amount_fen: i64, rate_ppm: i64) -> i64 {
    (amount_fen * rate_ppm + FEE_RATE_PPM_PER_UNIT / 2) / FEE_RATE_PPM_PER_UNIT
}

/// True when an unpaid order has outlived its 45 s at `now` (the platform's time of the command).
pub fn order_revoked_by_time(order: &Order, now: DateTime<Utc>) -> bool {
    order.status == OrderStatus::Declined && (now - order.created_at).num_milliseconds() >= ORDER_REVOKE_AFTER_MS
}

/// Records `face_code` as spent by `used_by` at `merchant_id` (the first use stands).
pub(crate) fn spend_capture(
    state: &mut LedgerState,
    face_code: Option<&FaceCode>,
    merchant_id: &MerchantId,
    used_by: String,
) {
    if let Some(face_code) = face_code {
        let use_ = CaptureUse { merchant_id: merchant_id.clone(), used_by };
        state.captures.entry(face_code.clone()).or_insert(use_);
    }
}
