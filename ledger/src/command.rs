//! Commands: what the pipeline asks the ledger to decide.

use chrono::{DateTime, Utc};
use facepay_domain::{CardChannel, CardCode, DeviceRef, FaceCode, MerchantId, Money, OutTradeNo, PayerId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One command, with the inbound event that caused it. Serialisable: in the production
/// profile commands travel between stages on a Kafka topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The inbound event's id: the key of transport-level idempotency (a redelivered event
    /// is answered from the stored outcome) and the seed of the ids of the events it causes.
    pub event_id: Uuid,
    /// Event time. Daily caps count Asia/Shanghai days of this instant, so replay decides alike.
    pub occurred_at: DateTime<Utc>,
    /// The device that sent it, when a device did: outcomes are addressed back to it.
    pub device: Option<DeviceRef>,
    pub kind: CommandKind,
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
    OpenMemberCard {
        merchant_id: MerchantId,
        payer_id: PayerId,
        card_code: CardCode,
        channel: CardChannel,
    },
    CloseMemberCard {
        merchant_id: MerchantId,
        payer_id: PayerId,
        card_code: CardCode,
    },
    /// A well-formed event whose handling is not in this build yet (reversal, refunds,
    /// Pay Score): refused with a reason and kept, never dropped.
    NotYetSupported {
        kind: String,
    },
}

impl CommandKind {
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
            CommandKind::NotYetSupported { kind } => kind,
        }
    }
}
