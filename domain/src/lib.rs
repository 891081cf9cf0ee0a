//! facepay's domain: the event contract every stage speaks.
//!
//! Parse, don't validate: each type here can only hold a well-formed value, and
//! [`event::parse_event`] turns bytes into an [`event::Envelope`] or a [`error::FieldError`]
//! that names the field at fault.
//!
//! # Layout
//! - [`limits`]: every limit of the system, named in one place.
//! - [`money`]: [`Money`], positive CNY at scale 2 over `rust_decimal`.
//! - [`ids`]: merchant, store, device, payer, order and face-code identifiers.
//! - [`json`]: JSON numbers as JSON Schema reads them (`617.0` is an integer).
//! - [`embedding`]: face templates (never printed) and capture scores.
//! - [`event`]: the inbound envelope and the mission's events, and their parser.
//! - [`outcome`]: the ledger's answers, decline reasons and their channel codes.
//! - [`time`]: the platform's [`time::Clock`] and Asia/Shanghai calendar days.
//! - [`rate`]: token buckets per key (request budgets, throttles).
//! - [`examples`]: one example of every event and outcome (the documentation's source).
//! - [`auth`]: credentials (key ids, tokens, hashes) and device event signatures.
//! - [`error`]: [`FieldError`], the one parse error.

pub mod auth;
pub mod embedding;
pub mod error;
pub mod event;
pub mod examples;
pub mod ids;
pub mod json;
pub mod limits;
pub mod money;
pub mod outcome;
pub mod rate;
pub mod time;

pub use embedding::{Embedding, Score};
pub use error::{FieldError, FieldErrorKind, ValueError};
pub use event::{parse_event, CardChannel, DeviceRef, Envelope, EventBody, EventRequest, Origin, EVENT_TYPES};
pub use ids::{
    CardCode, DeviceId, FaceCode, MerchantId, OutOrderNo, OutRefundNo, OutTradeNo, PayerId, PhoneLast4, StoreId,
};
pub use money::Money;
pub use outcome::{DeclineReason, OrderStatus, Outcome, OutcomeBody, PaymentResult, RefusalReason};
