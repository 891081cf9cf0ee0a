//! Commands: what the pipeline asks the ledger to decide.

use chrono::{DateTime, Utc};
use facepay_domain::{
    CardChannel, CardCode, DeviceRef, FaceCode, MerchantId, Money, OutOrderNo, OutRefundNo, OutTradeNo, PayerId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One command, with the inbound event that caused it. Serialisable: in the production
/// profile commands travel between stages on a Kafka topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The inbound event's id: the key of transport-level idempotency (a redelivered event
    /// is answered from the stored outcome) and the seed of the ids of the events it causes.
    pub event_id: Uuid,
    /// The platform's time of the command: when facepay accepted the inbound event (a
    /// clock tick: its deadline). Every time rule is judged on it (daily caps count its
    /// Asia/Shanghai day), and it is stored with the events it causes, so replay decides
    /// alike. Never a sender's claim.
    #[serde(alias = "occurred_at")]
    pub accepted_at: DateTime<Utc>,
    /// The sender's `occurred_at`, when a sender claimed one: kept with a payment's attempt
    /// for the record, deciding nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<DateTime<Utc>>,
    /// The device that sent it, when a device did: outcomes are addressed back to it.
    pub device: Option<DeviceRef>,
    pub kind: CommandKind,
    /// The id of the HTTP request that brought the event in, when one did: logged with the
    /// decision, so one id follows an event from ingest to outcome. Decides nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Command {
    /// A command of the platform's own (no sender's claim of time, no HTTP request).
    pub fn new(event_id: Uuid, accepted_at: DateTime<Utc>, device: Option<DeviceRef>, kind: CommandKind) -> Self {
        Self { event_id, accepted_at, claimed_at: None, device, kind, request_id: None }
    }
}

/// What the matcher made of a payment's capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Identity {
    /// The capture resolved to this payer, by `rule` (e.g. `member_hit`).
    Resolved { payer_id: PayerId, rule: String },
    /// It did not: `rule` says why (`no_match`, `liveness_failed`, `ambiguous`, …, or
    /// `unknown_capture` when the matcher never saw the face code).
    Unresolved { rule: String },
}

impl Identity {
    /// The payer the capture resolved to, if it did.
    pub fn payer(&self) -> Option<&PayerId> {
        match self {
            Identity::Resolved { payer_id, .. } => Some(payer_id),
            Identity::Unresolved { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum CommandKind {
    /// Pay `amount` for the merchant's order with the capture `face_code`.
    Pay {
        device: DeviceRef,
        out_trade_no: OutTradeNo,
        amount: Money,
        face_code: FaceCode,
        identity: Identity,
    },
    /// What is the order's result? Decides nothing.
    Query {
        merchant_id: MerchantId,
        out_trade_no: OutTradeNo,
    },
    Fund {
        payer_id: PayerId,
        amount: Money,
    },
    Freeze {
        payer_id: PayerId,
    },
    Unfreeze {
        payer_id: PayerId,
    },
    SetMerchantLimit {
        merchant_id: MerchantId,
        single_limit: Money,
    },
    /// The payer the capture `face_code` resolves to opens the merchant's member card.
    OpenMemberCard {
        merchant_id: MerchantId,
        face_code: FaceCode,
        identity: Identity,
        card_code: CardCode,
        channel: CardChannel,
    },
    /// The payer the capture `face_code` resolves to closes the merchant's member card.
    CloseMemberCard {
        merchant_id: MerchantId,
        face_code: FaceCode,
        identity: Identity,
        card_code: CardCode,
    },
    /// The rest of a payment's life: reversal, refunds, fees, Pay Score holds.
    Lifecycle(Lifecycle),
    /// The channel's bill proves paid an order the ledger has unpaid: sent when finance
    /// resolves such a break as `confirmed_paid` (see [`crate::reconcile::settle`]).
    ConfirmPaid(ConfirmPaid),
    /// A well-formed event whose handling is not in this build yet (reversal, refunds,
    /// Pay Score): refused with a reason and kept, never dropped.
    NotYetSupported {
        kind: String,
    },
}

/// The face code and identity of the kinds a capture authorises, borrowed as `$kind` is.
macro_rules! capture_of {
    ($kind:expr) => {
        match $kind {
            CommandKind::Pay { face_code, identity, .. }
            | CommandKind::OpenMemberCard { face_code, identity, .. }
            | CommandKind::CloseMemberCard { face_code, identity, .. }
            | CommandKind::Lifecycle(
                Lifecycle::HoldCreate { face_code, identity, .. }
                | Lifecycle::PayScoreAuthorise { face_code, identity, .. },
            ) => Some((&*face_code, identity)),
            _ => None,
        }
    };
}

impl CommandKind {
    /// The capture that authorises this command and what it resolved to (payments, member
    /// cards, Pay Score authorisations and orders): the matcher fills the identity in.
    pub fn capture_mut(&mut self) -> Option<(&FaceCode, &mut Identity)> {
        capture_of!(self)
    }

    /// The capture that authorises this command, if one does.
    pub fn capture(&self) -> Option<(&FaceCode, &Identity)> {
        capture_of!(self)
    }

    /// The inbound event type this command came from.
    pub fn name(&self) -> &str {
        match self {
            CommandKind::Pay { .. } => "payment_requested",
            CommandKind::Query { .. } => "payment_query",
            CommandKind::Fund { .. } => "account_funded",
            CommandKind::Freeze { .. } => "account_frozen",
            CommandKind::Unfreeze { .. } => "account_unfrozen",
            CommandKind::SetMerchantLimit { .. } => "merchant_limit_changed",
            CommandKind::OpenMemberCard { .. } => "member_card_opened",
            CommandKind::CloseMemberCard { .. } => "member_card_closed",
            CommandKind::Lifecycle(l) => l.name(),
            CommandKind::NotYetSupported { kind } => kind,
            CommandKind::ConfirmPaid(_) => "payment_confirmed_by_bill",
        }
    }
}

/// What happens to an order after its payment was decided, and to Pay Score holds. One
/// variant of [`CommandKind`], so transports route these with a single rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "lifecycle", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Cancel an order whose result is unclear: closes it if unpaid, refunds it in full if
    /// paid. Refused for orders older than 7 days.
    Reverse { merchant_id: MerchantId, out_trade_no: OutTradeNo },
    /// Refund `amount` of a paid order; idempotent per (merchant, `out_refund_no`).
    Refund { merchant_id: MerchantId, out_trade_no: OutTradeNo, out_refund_no: OutRefundNo, amount: Money },
    /// The merchant's contracted fee rate, in parts per million of each amount.
    SetFeeRate { merchant_id: MerchantId, fee_rate_ppm: u32 },
    /// Put a hold of `amount` on the wallet of the payer the capture `face_code` resolves to,
    /// for a Pay Score order; the payer must have authorised the merchant's Pay Score.
    HoldCreate {
        merchant_id: MerchantId,
        out_order_no: OutOrderNo,
        face_code: FaceCode,
        identity: Identity,
        amount: Money,
    },
    /// The payer the capture `face_code` resolves to authorises the merchant's Pay Score.
    PayScoreAuthorise { merchant_id: MerchantId, face_code: FaceCode, identity: Identity },
    /// Complete the Pay Score order with the actual `total` (≤ the hold).
    HoldComplete { merchant_id: MerchantId, out_order_no: OutOrderNo, total: Money },
    /// Cancel the Pay Score order before completion: the whole hold is released.
    HoldCancel { merchant_id: MerchantId, out_order_no: OutOrderNo },
    /// A clock tick for one hold: releases it if it is past its expiry at this event's time
    /// (a scheduler sends these; complete and cancel check expiry themselves too).
    HoldExpire { merchant_id: MerchantId, out_order_no: OutOrderNo },
    /// A clock tick for one order: revokes it if it is still unpaid 45 s after its creation
    /// at this event's time, and does nothing otherwise (the sweeper sends these; payments
    /// and queries check the 45 s themselves too).
    RevokeIfDue { merchant_id: MerchantId, out_trade_no: OutTradeNo },
}

impl Lifecycle {
    /// The inbound event type this command came from.
    pub fn name(&self) -> &'static str {
        match self {
            Lifecycle::Reverse { .. } => "reverse_requested",
            Lifecycle::Refund { .. } => "refund_requested",
            Lifecycle::SetFeeRate { .. } => "merchant_fee_rate_changed",
            Lifecycle::HoldCreate { .. } => "pay_score_order_created",
            Lifecycle::PayScoreAuthorise { .. } => "pay_score_authorised",
            Lifecycle::HoldComplete { .. } => "pay_score_order_completed",
            Lifecycle::HoldCancel { .. } => "pay_score_order_cancelled",
            Lifecycle::HoldExpire { .. } => "pay_score_order_expire",
            Lifecycle::RevokeIfDue { .. } => "order_revoke_due",
        }
    }

    /// The transport's partition key: orders by order (as payments without a payer), holds
    /// by hold (complete and cancel of one hold meet in one partition), creation by payer
    /// (it debits the wallet, whose decisions have a single writer), fee rates by merchant.
    pub fn partition_key(&self) -> String {
        match self {
            Lifecycle::Reverse { merchant_id, out_trade_no }
            | Lifecycle::Refund { merchant_id, out_trade_no, .. }
            | Lifecycle::RevokeIfDue { merchant_id, out_trade_no } => {
                format!("order:{merchant_id}:{out_trade_no}")
            }
            Lifecycle::SetFeeRate { merchant_id, .. } => format!("merchant:{merchant_id}"),
            Lifecycle::HoldCreate { identity: Identity::Resolved { payer_id, .. }, .. }
            | Lifecycle::PayScoreAuthorise { identity: Identity::Resolved { payer_id, .. }, .. } => {
                format!("payer:{payer_id}")
            }
            Lifecycle::HoldCreate { merchant_id, out_order_no, .. } => format!("hold:{merchant_id}:{out_order_no}"),
            Lifecycle::PayScoreAuthorise { merchant_id, .. } => format!("merchant:{merchant_id}"),
            Lifecycle::HoldComplete { merchant_id, out_order_no, .. }
            | Lifecycle::HoldCancel { merchant_id, out_order_no }
            | Lifecycle::HoldExpire { merchant_id, out_order_no } => format!("hold:{merchant_id}:{out_order_no}"),
        }
    }
}

/// The channel's bill proves an order paid that the ledger has unpaid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmPaid {
    pub merchant_id: MerchantId,
    pub out_trade_no: OutTradeNo,
    /// The amount the bill shows paid: must be the order's.
    pub amount: Money,
    /// When the channel took the money (the bill line's trade time).
    pub paid_at: DateTime<Utc>,
    /// The channel's transaction id of the payment (微信订单号), as the bill prints it.
    pub channel_txn_id: String,
    /// The break this settles.
    pub break_id: Uuid,
}

impl ConfirmPaid {
    /// The command that settles break `break_id`: its event id is derived from the break, so
    /// resolving the same break again is recognised as the same command.
    pub fn command(self, at: DateTime<Utc>) -> Command {
        Command::new(Uuid::new_v5(&self.break_id, b"confirmed_paid"), at, None, CommandKind::ConfirmPaid(self))
    }
}
