//! The inbound event contract: a versioned envelope around one of the mission's events.
//!
//! Wire shape (JSON), documented with an example of every type in `docs/events.md`:
//! `{event_id, type, schema_version, occurred_at, merchant_id?, store_id?, device_id?, payload}`.
//! [`parse_event`] is the only way in: it returns a typed [`Envelope`] or a [`FieldError`]
//! naming the field at fault.
//!
//! Whose is each field to decide: the sender's `occurred_at` is a claim, kept and checked
//! against the moment facepay accepted the event ([`Envelope::accepted_at`], the platform's
//! time), which every time rule uses. No device event names a payer: a payment, a Pay Score
//! order or authorisation and a member card are each authorised by a face capture
//! (`face_code`), resolved to a payer by the matcher. The audit of every type is in
//! `docs/events.md` ("Whose is each field").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::embedding::{Embedding, Score};
use crate::error::{FieldError, FieldErrorKind};
use crate::ids::{
    CardCode, DeviceId, FaceCode, MerchantId, OutOrderNo, OutRefundNo, OutTradeNo, PayerId, PhoneLast4, StoreId,
};
use crate::limits::{DEVICE_CLOCK_SKEW_MAX_MS, EVENT_BYTES_MAX, SCHEMA_VERSION};
use crate::money::Money;

/// Where an event comes from: the most specific of device, merchant or platform that the
/// envelope names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A device of a store of a merchant: every device event names all three.
    Device(DeviceRef),
    /// A merchant's back office (e.g. its limit was raised).
    Merchant(MerchantId),
    /// facepay's own platform (wallet top-ups, freezes, enrolment).
    Platform,
}

/// A device and the store and merchant it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceRef {
    pub merchant_id: MerchantId,
    pub store_id: StoreId,
    pub device_id: DeviceId,
}

impl Origin {
    pub fn merchant_id(&self) -> Option<&MerchantId> {
        match self {
            Origin::Device(d) => Some(&d.merchant_id),
            Origin::Merchant(m) => Some(m),
            Origin::Platform => None,
        }
    }

    pub fn device(&self) -> Option<&DeviceRef> {
        match self {
            Origin::Device(d) => Some(d),
            _ => None,
        }
    }
}

/// A parsed, well-formed inbound event.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique per event; the key of idempotent ingest and of every reply.
    pub event_id: Uuid,
    /// The envelope version the sender wrote; this build reads [`SCHEMA_VERSION`].
    pub schema_version: u16,
    /// The sender's claim of when the event happened: kept, checked to lie within
    /// [`DEVICE_CLOCK_SKEW_MAX_MS`] of [`Envelope::accepted_at`], and deciding nothing.
    pub occurred_at: DateTime<Utc>,
    /// When facepay accepted the event, by the platform's clock (the HTTP accept, or the
    /// ingest stage's read of a Kafka record): the time every rule is judged on. Never on the
    /// wire from a sender.
    pub accepted_at: DateTime<Utc>,
    pub origin: Origin,
    pub body: EventBody,
}

/// How a member card was opened (the channel's two ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardChannel {
    /// The card package component: the card lands in the payer's card wallet.
    CardPackage,
    /// The merchant's mini program, after one-tap phone-number authorisation.
    MiniProgram,
}

impl CardChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            CardChannel::CardPackage => "card_package",
            CardChannel::MiniProgram => "mini_program",
        }
    }
}

/// The events of the whole mission. Handling of some arrives in later releases; the
/// contract is fixed now so devices can be built against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum EventBody {
    FaceCaptured(FaceCaptured),
    PaymentRequested(PaymentRequested),
    PaymentQuery(PaymentQuery),
    ReverseRequested(ReverseRequested),
    RefundRequested(RefundRequested),
    MemberCardOpened(MemberCardOpened),
    MemberCardClosed(MemberCardClosed),
    PayScoreOrderCreated(PayScoreOrderCreated),
    PayScoreOrderCompleted(PayScoreOrderCompleted),
    PayScoreOrderCancelled(PayScoreOrderCancelled),
    PayScoreAuthorised(PayScoreAuthorised),
    FaceEnrolled(FaceEnrolled),
    FaceDeleted(FaceDeleted),
    AccountFunded(AccountFunded),
    AccountFrozen(AccountFrozen),
    AccountUnfrozen(AccountUnfrozen),
    MerchantLimitChanged(MerchantLimitChanged),
    MerchantFeeRateChanged(MerchantFeeRateChanged),
}

/// Which origins may send an event type: whose it is to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginLevel {
    /// The platform's alone (no merchant, store or device named).
    Platform,
    /// The merchant's, sent for it by the platform (an admin): never a device's.
    Merchant,
    /// A device's, naming its merchant, store and device.
    Device,
    /// The merchant's own, from one of its devices or from the merchant itself (the console's
    /// refund).
    MerchantOrDevice,
}

impl OriginLevel {
    fn allows_device(self) -> bool {
        matches!(self, OriginLevel::Device | OriginLevel::MerchantOrDevice)
    }

    fn allows_merchant(self) -> bool {
        matches!(self, OriginLevel::Merchant | OriginLevel::MerchantOrDevice)
    }
}

impl EventBody {
    /// The wire name of this event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::FaceCaptured(_) => "face_captured",
            EventBody::PaymentRequested(_) => "payment_requested",
            EventBody::PaymentQuery(_) => "payment_query",
            EventBody::ReverseRequested(_) => "reverse_requested",
            EventBody::RefundRequested(_) => "refund_requested",
            EventBody::MemberCardOpened(_) => "member_card_opened",
            EventBody::MemberCardClosed(_) => "member_card_closed",
            EventBody::PayScoreOrderCreated(_) => "pay_score_order_created",
            EventBody::PayScoreOrderCompleted(_) => "pay_score_order_completed",
            EventBody::PayScoreOrderCancelled(_) => "pay_score_order_cancelled",
            EventBody::PayScoreAuthorised(_) => "pay_score_authorised",
            EventBody::FaceEnrolled(_) => "face_enrolled",
            EventBody::FaceDeleted(_) => "face_deleted",
            EventBody::AccountFunded(_) => "account_funded",
            EventBody::AccountFrozen(_) => "account_frozen",
            EventBody::AccountUnfrozen(_) => "account_unfrozen",
            EventBody::MerchantLimitChanged(_) => "merchant_limit_changed",
            EventBody::MerchantFeeRateChanged(_) => "merchant_fee_rate_changed",
        }
    }

    /// The origin this type must name: device events name merchant, store and device.
    pub fn origin_level(&self) -> OriginLevel {
        match self {
            EventBody::FaceEnrolled(_)
            | EventBody::FaceDeleted(_)
            | EventBody::AccountFunded(_)
            | EventBody::AccountFrozen(_)
            | EventBody::AccountUnfrozen(_) => OriginLevel::Platform,
            EventBody::MerchantLimitChanged(_) | EventBody::MerchantFeeRateChanged(_) => OriginLevel::Merchant,
            EventBody::RefundRequested(_) => OriginLevel::MerchantOrDevice,
            _ => OriginLevel::Device,
        }
    }
}

/// The device captured a face and computed its template; the SDK's one-time face code
/// identifies this capture in the payment that follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceCaptured {
    pub face_code: FaceCode,
    pub embedding: Embedding,
    /// The 3D camera's liveness score; low scores are refused before any search.
    pub liveness: Score,
    /// The last 4 phone digits, when the device asked the payer for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_last4: Option<PhoneLast4>,
}

/// The merchant side submits a face payment (the channel's micropay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequested {
    pub out_trade_no: OutTradeNo,
    pub amount: Money,
    pub face_code: FaceCode,
}

/// The device asks for an order's result (after a timeout: query first, do not re-submit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentQuery {
    pub out_trade_no: OutTradeNo,
}

/// Cancel an order whose result is unclear: closes an unpaid one, refunds a paid one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseRequested {
    pub out_trade_no: OutTradeNo,
}

/// Refund all or part of a paid order; idempotent per `out_refund_no`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequested {
    pub out_trade_no: OutTradeNo,
    pub out_refund_no: OutRefundNo,
    pub amount: Money,
}

/// A payer opened the merchant's member card by face: the capture `face_code` (sent before
/// it by the same device) says who, as for a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCardOpened {
    pub face_code: FaceCode,
    pub card_code: CardCode,
    pub channel: CardChannel,
}

/// A payer closed (removed) the merchant's member card, by face.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCardClosed {
    pub face_code: FaceCode,
    pub card_code: CardCode,
}

/// A Pay Score service order ("use first, pay later"): a hold on the wallet of the payer the
/// capture `face_code` resolves to, who must have authorised the merchant's Pay Score
/// ([`PayScoreAuthorised`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayScoreOrderCreated {
    pub out_order_no: OutOrderNo,
    pub face_code: FaceCode,
    /// The hold's cap (the channel's `risk_fund`).
    pub hold_amount: Money,
}

/// The Pay Score order completes with the actual total (≤ the hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayScoreOrderCompleted {
    pub out_order_no: OutOrderNo,
    pub total_amount: Money,
}

/// The Pay Score order is cancelled before completion; the hold is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayScoreOrderCancelled {
    pub out_order_no: OutOrderNo,
}

/// The payer the capture `face_code` resolves to authorises the merchant's Pay Score orders
/// ("刷脸授权开通支付分"): the consent every later order of that merchant needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayScoreAuthorised {
    pub face_code: FaceCode,
}

/// A payer's face template joins the gallery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceEnrolled {
    pub payer_id: PayerId,
    pub embedding: Embedding,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_last4: Option<PhoneLast4>,
}

/// A payer's face template leaves the gallery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceDeleted {
    pub payer_id: PayerId,
}

/// Money moved into a payer's wallet from a funding source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFunded {
    pub payer_id: PayerId,
    pub amount: Money,
}

/// The payer's account is frozen (risk control): payments are refused with TRADE_ERROR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFrozen {
    pub payer_id: PayerId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUnfrozen {
    pub payer_id: PayerId,
}

/// The merchant's single face-payment limit changes (raised on application).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantLimitChanged {
    pub single_limit: Money,
}

/// The merchant's contracted fee rate changes, in parts per million of each amount
/// (0.54 % = 5400); payments from then on pay it, refunds return it in proportion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantFeeRateChanged {
    pub fee_rate_ppm: u32,
}

#[derive(Serialize)]
struct WireEnvelope<'a> {
    event_id: Uuid,
    schema_version: u16,
    occurred_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_id: Option<&'a MerchantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_id: Option<&'a StoreId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a DeviceId>,
    #[serde(flatten)]
    body: &'a EventBody,
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let device = self.origin.device();
        WireEnvelope {
            event_id: self.event_id,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            merchant_id: self.origin.merchant_id(),
            store_id: device.map(|d| &d.store_id),
            device_id: device.map(|d| &d.device_id),
            body: &self.body,
        }
        .serialize(s)
    }
}

impl Envelope {
    /// A new envelope of the current schema version, accepted when it says it occurred.
    pub fn new(event_id: Uuid, occurred_at: DateTime<Utc>, origin: Origin, body: EventBody) -> Self {
        Self { event_id, schema_version: SCHEMA_VERSION, occurred_at, accepted_at: occurred_at, origin, body }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }
}

/// One inbound event as its sender writes it (`docs/events.md` has every type and its
/// payload): what `parse_event` reads before it checks the type's payload and origin.
/// Platform and merchant events are sent with an admin key; device events are signed by their
/// device (`facepay-signature`) and sent with no key.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EventRequest {
    event_id: Uuid,
    /// One of `EVENT_TYPES`.
    #[serde(rename = "type")]
    #[schema(schema_with = event_type_schema)]
    kind: String,
    /// This build reads version 1 (`SCHEMA_VERSION`).
    #[serde(deserialize_with = "crate::json::integral")]
    schema_version: u16,
    /// The sender's claim of when it happened: within 5 minutes of when facepay accepts it
    /// (`occurred_at_skew` otherwise). Every rule runs on the accept time.
    occurred_at: DateTime<Utc>,
    #[serde(default)]
    merchant_id: Option<MerchantId>,
    #[serde(default)]
    store_id: Option<StoreId>,
    #[serde(default)]
    device_id: Option<DeviceId>,
    /// The type's fields.
    // Passed over here and read once the type is known, as that type's struct (`parse_body`):
    // a capture's 512 numbers are not built as JSON values first.
    #[serde(default)]
    #[schema(value_type = Object)]
    #[expect(dead_code, reason = "the payload is read by parse_body, once the type is known")]
    payload: serde::de::IgnoredAny,
}

/// The schema of an event's `type`: one of [`EVENT_TYPES`].
fn event_type_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(EVENT_TYPES.iter().copied())).build()
}

/// Parses one inbound event that facepay accepted at `accepted_at` (its own clock). Every
/// failure names its field: `payload.amount`, `device_id`, `type`, `.` for a body that is not
/// JSON at all, or `occurred_at` for a claimed time further than [`DEVICE_CLOCK_SKEW_MAX_MS`]
/// from the accept time.
pub fn parse_event(bytes: &[u8], accepted_at: DateTime<Utc>) -> Result<Envelope, FieldError> {
    if bytes.len() > EVENT_BYTES_MAX {
        return Err(FieldError::new(
            ".",
            FieldErrorKind::TooLong,
            format!("an event is at most {EVENT_BYTES_MAX} bytes"),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let raw: EventRequest = serde_path_to_error::deserialize(de).map_err(path_error)?;
    if raw.schema_version != SCHEMA_VERSION {
        return Err(FieldError::new(
            "schema_version",
            FieldErrorKind::UnsupportedVersion,
            format!("this build reads schema_version {SCHEMA_VERSION}"),
        ));
    }
    let body = parse_body(&raw.kind, bytes)?;
    let origin = origin_of(raw.merchant_id, raw.store_id, raw.device_id, body.origin_level())?;
    check_skew(raw.occurred_at, accepted_at)?;
    Ok(Envelope {
        event_id: raw.event_id,
        schema_version: raw.schema_version,
        occurred_at: raw.occurred_at,
        accepted_at,
        origin,
        body,
    })
}

/// Refuses a claimed `occurred_at` further than [`DEVICE_CLOCK_SKEW_MAX_MS`] from the accept
/// time, either way.
fn check_skew(occurred_at: DateTime<Utc>, accepted_at: DateTime<Utc>) -> Result<(), FieldError> {
    let skew_ms = (occurred_at - accepted_at).num_milliseconds();
    if skew_ms.abs() <= DEVICE_CLOCK_SKEW_MAX_MS {
        return Ok(());
    }
    let message = format!(
        "occurred_at is {}s from the time facepay accepted the event; at most ±{}s",
        skew_ms / 1000,
        DEVICE_CLOCK_SKEW_MAX_MS / 1000
    );
    Err(FieldError::new("occurred_at", FieldErrorKind::OccurredAtSkew, message))
}

/// The event types, as named on the wire, each with its payload's struct: [`EVENT_TYPES`]
/// and [`parse_body`] from one list.
macro_rules! event_types {
    ($($name:literal => $variant:ident),* $(,)?) => {
        /// Every event type, as named on the wire.
        pub const EVENT_TYPES: &[&str] = &[$($name),*];

        /// Deserialises the `payload` of `event` (an [`EventRequest`]'s JSON, known to be
        /// valid) as the struct of event type `kind`, tracking the field path.
        fn parse_body(kind: &str, event: &[u8]) -> Result<EventBody, FieldError> {
            fn de<T: serde::de::DeserializeOwned>(event: &[u8]) -> Result<T, FieldError> {
                /// The event with only its payload read; its other fields are passed over.
                #[derive(Deserialize)]
                #[serde(bound = "T: serde::de::DeserializeOwned")]
                struct Payload<T> {
                    payload: Option<T>,
                }
                let de = &mut serde_json::Deserializer::from_slice(event);
                let read: Payload<T> = serde_path_to_error::deserialize(de).map_err(path_error)?;
                read.payload.ok_or_else(|| FieldError::new("payload", FieldErrorKind::Missing, "required"))
            }
            match kind {
                $($name => de::<$variant>(event).map(EventBody::$variant),)*
                _ => Err(FieldError::new("type", FieldErrorKind::UnknownType, format!("unknown event type {kind:?}"))),
            }
        }
    };
}

event_types! {
    "face_captured" => FaceCaptured,
    "payment_requested" => PaymentRequested,
    "payment_query" => PaymentQuery,
    "reverse_requested" => ReverseRequested,
    "refund_requested" => RefundRequested,
    "member_card_opened" => MemberCardOpened,
    "member_card_closed" => MemberCardClosed,
    "pay_score_order_created" => PayScoreOrderCreated,
    "pay_score_order_completed" => PayScoreOrderCompleted,
    "pay_score_order_cancelled" => PayScoreOrderCancelled,
    "pay_score_authorised" => PayScoreAuthorised,
    "face_enrolled" => FaceEnrolled,
    "face_deleted" => FaceDeleted,
    "account_funded" => AccountFunded,
    "account_frozen" => AccountFrozen,
    "account_unfrozen" => AccountUnfrozen,
    "merchant_limit_changed" => MerchantLimitChanged,
    "merchant_fee_rate_changed" => MerchantFeeRateChanged,
}

fn origin_of(
    merchant: Option<MerchantId>,
    store: Option<StoreId>,
    device: Option<DeviceId>,
    level: OriginLevel,
) -> Result<Origin, FieldError> {
    let missing = |field: &str| FieldError::new(field, FieldErrorKind::Missing, "required for this event type");
    let wrong = |field: &str, message: &str| FieldError::new(field, FieldErrorKind::WrongOrigin, message);
    if !level.allows_device() && (store.is_some() || device.is_some()) {
        let field = if device.is_some() { "device_id" } else { "store_id" };
        return Err(wrong(field, "this event type is not a device's to send"));
    }
    match (merchant, store, device) {
        (Some(merchant_id), Some(store_id), Some(device_id)) => {
            Ok(Origin::Device(DeviceRef { merchant_id, store_id, device_id }))
        }
        (Some(m), None, None) if level.allows_merchant() => Ok(Origin::Merchant(m)),
        (None, None, None) if level == OriginLevel::Platform => Ok(Origin::Platform),
        (Some(_), None, None) if level == OriginLevel::Platform => {
            Err(wrong("merchant_id", "a platform event names no merchant"))
        }
        (None, _, _) => Err(missing("merchant_id")),
        (Some(_), None, _) => Err(missing("store_id")),
        (Some(_), Some(_), None) => Err(missing("device_id")),
    }
}

/// Turns serde's error, with its path, into a [`FieldError`].
fn path_error<E: std::fmt::Display + AsSerdeJson>(e: serde_path_to_error::Error<E>) -> FieldError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() {
        return FieldError::new(".", FieldErrorKind::Malformed, "the body is not valid JSON");
    }
    let text = inner.to_string();
    let text = text.rfind(" at line ").map_or(text.as_str(), |i| &text[..i]).to_string();
    let field = if path == "." { String::new() } else { path };
    let named = |prefix: &str| text.strip_prefix(prefix).and_then(|r| r.strip_suffix('`'));
    let within = |name: &str| if field.is_empty() { name.to_string() } else { format!("{field}.{name}") };
    if let Some(name) = named("missing field `") {
        return FieldError::new(within(name), FieldErrorKind::Missing, "required");
    }
    // Refused rather than read as one of its copies: another reader may take the other one.
    if let Some(name) = named("duplicate field `") {
        return FieldError::new(within(name), FieldErrorKind::Invalid, "given more than once");
    }
    let field = if field.is_empty() { ".".to_string() } else { field };
    let (kind, message) = split_kind(&text);
    FieldError::new(field, kind, message)
}

/// Our newtypes format their errors as `kind: message`; recover the kind.
fn split_kind(text: &str) -> (FieldErrorKind, String) {
    use FieldErrorKind::*;
    let kinds =
        [TooManyDecimals, NotPositive, OutOfRange, TooLong, BadCharacter, WrongDimension, NotFinite, Missing, Invalid];
    for kind in kinds {
        if let Some(rest) = text.strip_prefix(kind.as_str()).and_then(|r| r.strip_prefix(": ")) {
            return (kind, rest.to_string());
        }
    }
    (Invalid, text.to_string())
}

/// The serde_json error inside a path error, whichever deserializer produced it.
pub trait AsSerdeJson {
    fn is_syntax(&self) -> bool;
}

impl AsSerdeJson for serde_json::Error {
    fn is_syntax(&self) -> bool {
        matches!(self.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof)
    }
}
