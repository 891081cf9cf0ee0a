//! The ledger's outcomes: what devices and downstream systems are told.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::DeviceRef;
use crate::ids::{MerchantId, OutTradeNo, PayerId};
use crate::money::Money;

/// Why a payment was declined: our stable code, each mapped to the channel's error code.
///
/// Declines are definite ("payment confirmed failed"): the device switches method or starts
/// a new order, as the channel's code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeclineReason {
    /// The capture did not resolve to a payer (no match, failed liveness, ambiguous, or a
    /// face code the matcher never saw).
    IdentityUnresolved,
    /// The face code was already used by an earlier payment, paid or not.
    CaptureUsed,
    /// The payer's account is frozen.
    PayerFrozen,
    /// Above the merchant's single face-payment limit.
    OverSingleLimit,
    /// The payer's daily amount cap would be exceeded.
    DailyAmountCap,
    /// The payer's daily count cap is reached.
    DailyCountCap,
    /// The wallet's available balance is below the amount.
    InsufficientBalance,
    /// The order is already paid; a new sale needs a new `out_trade_no`.
    OrderPaid,
    /// The order number was used with other parameters (amount).
    OutTradeNoUsed,
}

impl DeclineReason {
    pub const ALL: [DeclineReason; 9] = [
        Self::IdentityUnresolved,
        Self::CaptureUsed,
        Self::PayerFrozen,
        Self::OverSingleLimit,
        Self::DailyAmountCap,
        Self::DailyCountCap,
        Self::InsufficientBalance,
        Self::OrderPaid,
        Self::OutTradeNoUsed,
    ];

    /// facepay's stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::IdentityUnresolved => "IDENTITY_UNRESOLVED",
            Self::CaptureUsed => "CAPTURE_USED",
            Self::PayerFrozen => "PAYER_FROZEN",
            Self::OverSingleLimit => "OVER_SINGLE_LIMIT",
            Self::DailyAmountCap => "DAILY_AMOUNT_CAP",
            Self::DailyCountCap => "DAILY_COUNT_CAP",
            Self::InsufficientBalance => "INSUFFICIENT_BALANCE",
            Self::OrderPaid => "ORDER_PAID",
            Self::OutTradeNoUsed => "OUT_TRADE_NO_USED",
        }
    }

    /// The channel's error code a device understands (WeChat Pay micropay).
    pub fn channel_code(self) -> &'static str {
        match self {
            Self::IdentityUnresolved => "AUTH_CODE_INVALID",
            Self::CaptureUsed => "AUTH_CODE_ERROR",
            Self::PayerFrozen | Self::OverSingleLimit | Self::DailyAmountCap | Self::DailyCountCap => "TRADE_ERROR",
            Self::InsufficientBalance => "NOTENOUGH",
            Self::OrderPaid => "ORDERPAID",
            Self::OutTradeNoUsed => "OUT_TRADE_NO_USED",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// An order's state as the ledger knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Paid: the payer's wallet was debited and the merchant credited.
    Paid,
    /// The last attempt was declined; the order may be retried with a new capture.
    Declined,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Paid => "PAID",
            OrderStatus::Declined => "DECLINED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PAID" => Some(Self::Paid),
            "DECLINED" => Some(Self::Declined),
            _ => None,
        }
    }
}

/// The answer to a payment request or query, as served to the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentResult {
    pub merchant_id: MerchantId,
    pub out_trade_no: OutTradeNo,
    pub amount: Money,
    pub status: OrderStatus,
    /// Our decline code, when declined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeclineReason>,
    /// The channel's code for `reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer_id: Option<PayerId>,
    /// Paid by a recognised member of this merchant, with no phone confirmation.
    pub member_quick_pay: bool,
    /// True when this answer repeats a stored outcome (an exact retry): nothing was posted.
    pub replayed: bool,
}

/// What the ledger stage tells the world about one inbound event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum OutcomeBody {
    /// A payment request was decided (or an exact retry answered).
    PaymentResult(PaymentResult),
    /// The answer to a payment query: the order, or `null` when there is none.
    QueryResult(Option<PaymentResult>),
    /// A non-payment event was applied to the ledger or the gallery.
    Applied { kind: String },
    /// The event was well-formed but refused, and kept with its reason (e.g. closing a card
    /// that is not open, or an event type whose handling is not in this build yet).
    Refused { kind: String, code: String, message: String },
}

impl OutcomeBody {
    /// The kind of event this answers, as named on the wire.
    pub fn kind(&self) -> &str {
        match self {
            OutcomeBody::PaymentResult(_) => "payment_requested",
            OutcomeBody::QueryResult(_) => "payment_query",
            OutcomeBody::Applied { kind } | OutcomeBody::Refused { kind, .. } => kind,
        }
    }
}

/// An outcome, addressed back to the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The inbound event this answers.
    pub in_reply_to: Uuid,
    pub decided_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
    #[serde(flatten)]
    pub body: OutcomeBody,
}
