//! facepay's HTTP API, and the `facepay` binary's commands over the library crates.
//!
//! # Layout
//! - [`app`]: layered configuration (secrets wrapped) and the wiring of store, registry,
//!   pipeline and server.
//! - [`http`]: the axum router and its handlers.
//! - [`auth`]: API keys, principals, roles, rate limits, signed cursors, openids.
//! - [`admin`]: the admin and finance routes (keys, audit log).
//! - [`observe`]: request ids, log masking, the metrics server.
//! - [`openapi`]: the OpenAPI 3.1 description (`api/openapi.json`).
//! - [`error`]: [`error::ApiError`], the one HTTP error, owning the status mapping; the
//!   layer that gives every non-2xx answer its body.
//! - [`extract`]: `Json`, `Query` and `Path` whose rejections are [`error::ApiError`]s.
//! - [`demo`]: `facepay demo`, a simulated fleet.
//! - [`bench`]: `facepay bench ledger`, a benchmark that prints JSON.
//! - [`bench_pipeline`]: `facepay bench pipeline`: Kafka in, committed outcomes out.
//! - [`reconcile`]: `facepay reconcile`, `facepay bench reconcile`, the demo's bill, the
//!   reconciliation routes.
//! - [`recon_view`]: the reconciliation routes' answers, money as decimal strings.
//! - [`production`]: the production profile: the stages over Kafka topics.
//! - [`simulate`]: `facepay simulate --kafka`, the demo's fleet published to Kafka.
//! - [`usual_design`]: the usual one-transaction-per-payment design, for the benchmark.
//! - [`cli`]: the command line.

pub mod admin;
pub mod app;
pub mod auth;
pub mod bench;
pub mod bench_api;
pub mod bench_pipeline;
pub mod cli;
pub mod demo;
pub mod error;
pub mod extract;
pub mod fleet_keys;
pub mod http;
pub mod observe;
pub mod openapi;
pub mod production;
pub mod recon_view;
pub mod reconcile;
pub mod simulate;
pub mod usual_design;
