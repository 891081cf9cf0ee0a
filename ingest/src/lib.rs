//! facepay's pipeline: device events in, ledger outcomes out.
//!
//! Three stages joined by bounded channels, the same boundaries Kafka topics take in the
//! production profile: **validate** (parse, check the device against the registry, keep
//! rejections), **match** (identify captures, turn events into ledger commands), **ledger**
//! (decide and commit in batches). The HTTP ingest path feeds the same input.
//!
//! # Layout
//! - [`authenticity`]: device signatures, the clock window and replays.
//! - [`metrics`]: decisions, batch sizes, refusals, store errors (Prometheus text).
//! - [`validate`]: parsing and registry checks; rejection records.
//! - [`faces`]: the gallery at rest (sealed templates, crypto-shredding, shards).
//! - [`matching`]: the matcher stage: captures → identities, events → commands.
//! - [`gather`]: matcher scale-out: the shards' partial answers merged into one decision.
//! - [`pipeline`]: the stages, their channels and their shutdown.
//! - [`kafka`]: the same stages over Kafka topics (the production profile).
//! - [`wire`]: what the matcher stage sends the ledger stage over Kafka.
//! - [`topics`]: the names the stage boundaries will carry as Kafka topics.

pub mod authenticity;
pub mod faces;
pub mod gather;
pub mod kafka;
pub mod matching;
pub mod metrics;
pub mod pipeline;
pub mod validate;
pub mod wire;

pub use pipeline::{Inbound, Pipeline, PipelineConfig, PipelineError};
pub use validate::SharedRegistry;

/// The stage boundaries as topics (the production profile's Kafka transport uses these names;
/// the embedded profile's channels stand in the same places).
pub mod topics {
    /// Device events, keyed by device so one device's events stay in order.
    pub const DEVICE_EVENTS: &str = "facepay.device-events";
    /// Ledger commands (matched events), keyed by payer: one writer per payer.
    pub const LEDGER_COMMANDS: &str = "facepay.ledger-commands";
    /// Ledger outcomes for devices and downstream systems.
    pub const LEDGER_OUTCOMES: &str = "facepay.ledger-outcomes";
    /// The matcher shards' partial answers and the lead shard's routed events, keyed by
    /// device, for the gather (only when the gallery is split over shards).
    pub const MATCH_PARTIALS: &str = "facepay.match-partials";
    /// Rejected input, with its reason.
    pub const DEAD_LETTER: &str = "facepay.dead-letter";
}
