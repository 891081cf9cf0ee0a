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
//! - [`captures`]: the captures the matcher remembers until what they authorise comes.
//! - [`matching`]: the matcher stage: captures → identities, events → commands.
//! - [`gather`]: matcher scale-out: the shards' partial answers merged into one decision.
//! - [`pipeline`]: the stages, their channels and their shutdown.
//! - [`kafka`]: the same stages over Kafka topics (the production profile).
//! - [`waiters`]: requests waiting for their event's outcome (`Prefer: wait`), and how each
//!   process hears of the decisions.
//! - [`wire`]: what the matcher stage sends the ledger stage over Kafka, and its keys.

pub mod authenticity;
pub mod captures;
pub mod faces;
pub mod gather;
pub mod kafka;
pub mod matching;
pub mod metrics;
pub mod pipeline;
pub mod validate;
pub mod waiters;
pub mod wire;

pub use pipeline::{Inbound, Pipeline, PipelineConfig, PipelineError};
pub use validate::SharedRegistry;
