//! What travels on the ledger-commands topic: everything the matcher stage made of one device
//! event, so that every effect of the pipeline (decisions, the matcher's own answers,
//! rejections) lands through the ledger's one transaction and is kept exactly once.
//!
//! The matcher stage is at-least-once (a crash replays what it had not committed); the ledger
//! recognises a repeat by the event id it answers, or, for a rejection, by the place of the
//! rejected bytes on the bus ([`source_key`]).

use chrono::{DateTime, Utc};
use facepay_domain::Outcome;
use facepay_ledger::store::RejectedEvent;
use facepay_ledger::{Command, Rejection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One message on the ledger-commands topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum StageMessage {
    /// A command for the ledger to decide.
    Command(Command),
    /// An answer the matcher decided itself (a capture identified, a face enrolled).
    Answer(Outcome),
    /// Input the matcher refused, with its reason.
    Rejected(WireRejection),
}

impl StageMessage {
    /// The partition key: a command's payer (one writer per payer), else the event's key.
    pub fn key(&self) -> String {
        match self {
            StageMessage::Command(cmd) => command_key(cmd),
            StageMessage::Answer(o) => format!("event:{}", o.in_reply_to),
            StageMessage::Rejected(r) => format!("rejected:{}", r.key),
        }
    }
}

/// A [`Rejection`] on the wire: its raw bytes in hex (they may not be text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRejection {
    pub key: Uuid,
    pub received_at: DateTime<Utc>,
    pub source: String,
    pub event_id: Option<Uuid>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub reason_code: String,
    pub field: Option<String>,
    pub message: String,
    pub raw_hex: String,
    pub raw_truncated: bool,
    /// The authenticated device to answer (see [`Rejection::answer_to`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_to: Option<facepay_domain::DeviceRef>,
}

impl From<&Rejection> for WireRejection {
    fn from(r: &Rejection) -> Self {
        let e = &r.event;
        Self {
            key: r.key,
            received_at: e.received_at,
            source: e.source.clone(),
            event_id: e.event_id,
            kind: e.kind.clone(),
            reason_code: e.reason_code.clone(),
            field: e.field.clone(),
            message: e.message.clone(),
            raw_hex: hex::encode(&e.raw),
            raw_truncated: e.raw_truncated,
            answer_to: r.answer_to.clone(),
        }
    }
}

impl WireRejection {
    /// Back to a rejection; undecodable hex keeps the text as it came.
    pub fn into_rejection(self) -> Rejection {
        let raw = hex::decode(&self.raw_hex).unwrap_or_else(|_| self.raw_hex.into_bytes());
        Rejection {
            key: self.key,
            event: RejectedEvent {
                received_at: self.received_at,
                source: self.source,
                event_id: self.event_id,
                kind: self.kind,
                reason_code: self.reason_code,
                field: self.field,
                message: self.message,
                raw,
                raw_truncated: self.raw_truncated,
            },
            answer_to: self.answer_to,
        }
    }
}

/// The key a rejected message is kept once by: its topic, partition and offset.
pub fn source_key(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("kafka:{topic}/{partition}/{offset}").as_bytes())
}

/// The partition key of a ledger command: its payer, so one payer's decisions have a single
/// writer; commands with no payer go by order or merchant.
pub fn command_key(cmd: &facepay_ledger::Command) -> String {
    use facepay_ledger::{CommandKind as K, Identity};
    match &cmd.kind {
        K::Pay { identity: Identity::Resolved { payer_id, .. }, .. } => format!("payer:{payer_id}"),
        K::Pay { device, out_trade_no, .. } => format!("order:{}:{out_trade_no}", device.merchant_id),
        K::Query { merchant_id, out_trade_no } => format!("order:{merchant_id}:{out_trade_no}"),
        K::Fund { payer_id, .. } | K::Freeze { payer_id } | K::Unfreeze { payer_id } => format!("payer:{payer_id}"),
        K::OpenMemberCard { identity: Identity::Resolved { payer_id, .. }, .. }
        | K::CloseMemberCard { identity: Identity::Resolved { payer_id, .. }, .. } => format!("payer:{payer_id}"),
        K::OpenMemberCard { merchant_id, .. } | K::CloseMemberCard { merchant_id, .. } => {
            format!("merchant:{merchant_id}")
        }
        K::SetMerchantLimit { merchant_id, .. } => format!("merchant:{merchant_id}"),
        K::Lifecycle(l) => l.partition_key(),
        K::ConfirmPaid(c) => format!("order:{}:{}", c.merchant_id, c.out_trade_no),
        K::NotYetSupported { .. } => format!("event:{}", cmd.event_id),
    }
}
