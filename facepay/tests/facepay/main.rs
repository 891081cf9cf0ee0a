//! The `facepay` crate's integration tests, one binary: the embedded app over real HTTP on
//! port 0 ([`api`]), and end to end ([`e2e`]): the demo's fleet through the embedded
//! pipeline, and `facepay serve` processes over a real Kafka-API broker and PostgreSQL
//! (skipped, saying so, without them; CI requires both). The log-scrubbing test has a binary
//! of its own (`tests/logs.rs`): it needs to be alone in its process.

mod api;
mod e2e;
mod support;
