//! The Kafka transport of the production profile (rdkafka; any Kafka-API broker).
//!
//! Stage boundaries become topics ([`topology`]); the processes running a stage share its
//! partitions through leases in the database ([`ownership`]): the matcher's, the sharded
//! matcher's gather and the ledger's. Delivery is at-least-once everywhere;
//! the effect is exactly once because the ledger stage stores its consumer offsets in the
//! database in the same transaction as the writes they caused, skips what it has already
//! committed, and answers a redelivered command from its stored outcome. Kafka's own offset
//! commits are only a hint for where to resume.
//!
//! # Layout
//! - [`topology`]: the topics and their record headers; creating them.
//! - [`config`]: `FACEPAY_KAFKA_*`, and the consumers and producers made from it.
//! - [`produce`]: sending, one message or a batch in flight.
//! - [`consume`]: batches, errors, skipped records, reading partitions whole.
//! - [`error`]: [`TransportError`], what stops a stage's run.
//! - [`match_stage`]: validate + match (device events → ledger commands or partials).
//! - [`gather_stage`]: matcher scale-out's gather (partials → decisions).
//! - [`ledger_stage`]: decide and commit with the consumer offsets (commands → outbox).
//! - [`relay`]: the outbox relay (outbox → outcomes and dead letters, once).
//! - [`ownership`]: each stage's partitions divided among its processes
//!   by leases in the database, assigned by hand (no broker group coordinator).
//! - [`stages`]: which stages a process runs, started and supervised (the production
//!   profile's topology; [`crate::pipeline`] is the embedded one).
//!
//! The partition keys of what the matcher sends the ledger are [`crate::wire`]'s.

pub mod config;
pub mod consume;
pub mod error;
pub mod gather_stage;
pub mod ledger_stage;
pub mod match_stage;
pub mod ownership;
pub mod produce;
pub mod relay;
pub mod stages;
pub mod topology;

pub use config::*;
pub use consume::*;
pub use error::*;
pub use gather_stage::*;
pub use ledger_stage::*;
pub use match_stage::*;
pub use ownership::*;
pub use produce::*;
pub use relay::*;
pub use stages::{start, Roles, StageStopped, Stages, STAGE_NAMES};
pub use topology::*;
