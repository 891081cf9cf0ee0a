//! The ledger's outcomes: what devices and downstream systems are told.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::DeviceRef;
use crate::ids::{MerchantId, OutTradeNo, PayerId};
use crate::money::Money;

/// The matcher's rule for a capture it is unsure of: the payer is asked for the last 4 phone
/// digits ([`DeclineReason::PhoneConfirmationRequired`]).
pub const NEEDS_PHONE_CONFIRMATION: &str = "needs_phone_confirmation";

/// Why a payment was declined: our stable code, each mapped to the channel's error code.
///
/// Declines are definite ("payment confirmed failed"): the device switches method or starts
/// a new order, as the channel's code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeclineReason {
    /// The capture did not resolve to a payer (no match, failed liveness, ambiguous, or a
    /// face code the matcher never saw).
    IdentityUnresolved,
    /// The matcher is unsure of the face (close to a payer, not close enough, or close to
    /// two): the device asks the payer for the last 4 digits of their phone number and
    /// captures again with them, on the same order.
    PhoneConfirmationRequired,
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
    /// The order was reversed; a new sale needs a new `out_trade_no`.
    OrderReversed,
    /// The order was closed: still unpaid 45 s after its creation, it was revoked.
    OrderClosed,
}

impl DeclineReason {
    pub const ALL: [DeclineReason; 12] = [
        Self::IdentityUnresolved,
        Self::PhoneConfirmationRequired,
        Self::CaptureUsed,
        Self::PayerFrozen,
        Self::OverSingleLimit,
        Self::DailyAmountCap,
        Self::DailyCountCap,
        Self::InsufficientBalance,
        Self::OrderPaid,
        Self::OutTradeNoUsed,
        Self::OrderReversed,
        Self::OrderClosed,
    ];

    /// facepay's stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::IdentityUnresolved => "IDENTITY_UNRESOLVED",
            Self::PhoneConfirmationRequired => "PHONE_CONFIRMATION_REQUIRED",
            Self::CaptureUsed => "CAPTURE_USED",
            Self::PayerFrozen => "PAYER_FROZEN",
            Self::OverSingleLimit => "OVER_SINGLE_LIMIT",
            Self::DailyAmountCap => "DAILY_AMOUNT_CAP",
            Self::DailyCountCap => "DAILY_COUNT_CAP",
            Self::InsufficientBalance => "INSUFFICIENT_BALANCE",
            Self::OrderPaid => "ORDER_PAID",
            Self::OutTradeNoUsed => "OUT_TRADE_NO_USED",
            Self::OrderReversed => "ORDER_REVERSED",
            Self::OrderClosed => "ORDER_CLOSED",
        }
    }

    /// The channel's error code a device understands (WeChat Pay micropay).
    pub fn channel_code(self) -> &'static str {
        match self {
            Self::IdentityUnresolved | Self::PhoneConfirmationRequired => "AUTH_CODE_INVALID",
            Self::CaptureUsed => "AUTH_CODE_ERROR",
            Self::PayerFrozen | Self::OverSingleLimit | Self::DailyAmountCap | Self::DailyCountCap => "TRADE_ERROR",
            Self::InsufficientBalance => "NOTENOUGH",
            Self::OrderPaid => "ORDERPAID",
            Self::OutTradeNoUsed => "OUT_TRADE_NO_USED",
            Self::OrderReversed => "ORDERREVERSED",
            Self::OrderClosed => "ORDERCLOSED",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// Why a refund, reversal or Pay Score operation was refused: our stable code, each mapped to
/// the channel's error code. A refusal posts nothing; the command is kept with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefusalReason {
    /// No order (or Pay Score order) with this number.
    OrderNotFound,
    /// A refund of an order that was never paid (declined or revoked).
    OrderNotPaid,
    /// A refund of an order that was reversed (its money already went back).
    OrderReversed,
    /// A refund above what is left of the order's payment.
    RefundExceedsPaid,
    /// A refund number reused with another order or amount.
    RefundNoUsed,
    /// A reversal of an order older than 7 days.
    ReversalWindowClosed,
    /// A Pay Score order number reused with other parameters.
    OutOrderNoUsed,
    /// The payer's available balance is below the hold.
    InsufficientBalance,
    /// The payer's account is frozen.
    PayerFrozen,
    /// A completion above the hold.
    CompletionAboveHold,
    /// The Pay Score order was already completed.
    HoldCompleted,
    /// The Pay Score order was already cancelled.
    HoldCancelled,
    /// The Pay Score order expired (30 days untouched); its hold was released.
    HoldExpired,
    /// A fee rate outside 0 ..= 10 %.
    FeeRateOutOfRange,
    /// A payment confirmed by the channel's bill for an order the ledger has paid already.
    OrderPaid,
    /// A payment confirmed by the channel's bill for another amount than the order's.
    AmountMismatch,
    /// A face-authorised operation (member card, Pay Score) whose capture did not resolve to
    /// a payer (no match, failed liveness, ambiguous, or a face code the matcher never saw).
    IdentityUnresolved,
    /// A face-authorised operation whose face code was already spent.
    CaptureUsed,
    /// A Pay Score order for a payer who has not authorised the merchant's Pay Score.
    PayScoreNotAuthorised,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 19] = [
        Self::OrderNotFound,
        Self::OrderNotPaid,
        Self::OrderReversed,
        Self::RefundExceedsPaid,
        Self::RefundNoUsed,
        Self::ReversalWindowClosed,
        Self::OutOrderNoUsed,
        Self::InsufficientBalance,
        Self::PayerFrozen,
        Self::CompletionAboveHold,
        Self::HoldCompleted,
        Self::HoldCancelled,
        Self::HoldExpired,
        Self::FeeRateOutOfRange,
        Self::OrderPaid,
        Self::AmountMismatch,
        Self::IdentityUnresolved,
        Self::CaptureUsed,
        Self::PayScoreNotAuthorised,
    ];

    /// facepay's stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::OrderNotFound => "ORDER_NOT_FOUND",
            Self::OrderNotPaid => "ORDER_NOT_PAID",
            Self::OrderReversed => "ORDER_REVERSED",
            Self::RefundExceedsPaid => "REFUND_EXCEEDS_PAID",
            Self::RefundNoUsed => "REFUND_NO_USED",
            Self::ReversalWindowClosed => "REVERSAL_WINDOW_CLOSED",
            Self::OutOrderNoUsed => "OUT_ORDER_NO_USED",
            Self::InsufficientBalance => "INSUFFICIENT_BALANCE",
            Self::PayerFrozen => "PAYER_FROZEN",
            Self::CompletionAboveHold => "COMPLETION_ABOVE_HOLD",
            Self::HoldCompleted => "HOLD_COMPLETED",
            Self::HoldCancelled => "HOLD_CANCELLED",
            Self::HoldExpired => "HOLD_EXPIRED",
            Self::FeeRateOutOfRange => "FEE_RATE_OUT_OF_RANGE",
            Self::OrderPaid => "ORDER_PAID",
            Self::AmountMismatch => "AMOUNT_MISMATCH",
            Self::IdentityUnresolved => "IDENTITY_UNRESOLVED",
            Self::CaptureUsed => "CAPTURE_USED",
            Self::PayScoreNotAuthorised => "PAY_SCORE_NOT_AUTHORISED",
        }
    }

    /// The channel's error code (WeChat Pay refund, reverse and Pay Score APIs).
    pub fn channel_code(self) -> &'static str {
        match self {
            Self::OrderNotFound => "ORDERNOTEXIST",
            Self::OrderNotPaid => "TRADE_STATE_ERROR",
            Self::OrderReversed => "ORDERREVERSED",
            Self::RefundExceedsPaid => "INVALID_REQUEST",
            Self::RefundNoUsed => "INVALID_REQUEST",
            Self::ReversalWindowClosed => "REVERSE_EXPIRE",
            Self::OutOrderNoUsed => "ORDER_NO_USED",
            Self::InsufficientBalance => "NOTENOUGH",
            Self::PayerFrozen => "TRADE_ERROR",
            Self::CompletionAboveHold => "PARAM_ERROR",
            Self::HoldCompleted => "ORDER_DONE",
            Self::HoldCancelled => "ORDER_CANCELED",
            Self::HoldExpired => "ORDER_EXPIRED",
            Self::FeeRateOutOfRange => "PARAM_ERROR",
            Self::OrderPaid => "ORDERPAID",
            Self::AmountMismatch => "PARAM_ERROR",
            Self::IdentityUnresolved => "AUTH_CODE_INVALID",
            Self::CaptureUsed => "AUTH_CODE_ERROR",
            Self::PayScoreNotAuthorised => "NO_AUTH",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// An order's state as the ledger knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Paid: the payer's wallet was debited and the merchant credited.
    Paid,
    /// The last attempt was declined; the order may be retried with a new capture.
    Declined,
    /// Reversed: closed if it was unpaid, refunded in full if it was paid. Final.
    Reversed,
    /// Revoked (closed) because it was still unpaid 45 s after its creation. Final.
    Revoked,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Paid => "PAID",
            OrderStatus::Declined => "DECLINED",
            OrderStatus::Reversed => "REVERSED",
            OrderStatus::Revoked => "REVOKED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PAID" => Some(Self::Paid),
            "DECLINED" => Some(Self::Declined),
            "REVERSED" => Some(Self::Reversed),
            "REVOKED" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// The answer to a payment request or query, as served to the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The event was not taken: an authenticated device's event that is malformed or not its
    /// to send, answered on the outcomes topic as the HTTP API answers it with a 400 (`code`
    /// is the [`crate::FieldErrorKind`], `field` the dotted path at fault, `"."` for the whole
    /// document). `kind` is the event's type when it could be read, else empty.
    Rejected { kind: String, code: String, field: String, message: String },
}

impl OutcomeBody {
    /// The kind of event this answers, as named on the wire.
    pub fn kind(&self) -> &str {
        match self {
            OutcomeBody::PaymentResult(_) => "payment_requested",
            OutcomeBody::QueryResult(_) => "payment_query",
            OutcomeBody::Applied { kind } | OutcomeBody::Refused { kind, .. } | OutcomeBody::Rejected { kind, .. } => {
                kind
            }
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
