//! The `facepay` binary's library: its configuration, the wiring of one facepay, and its
//! commands (`demo`, `serve`, `reconcile`, `replay`, `verify`, `register`, `simulate`,
//! `keys`, `faces`). The benchmarks are the `facepay-bench` binary's (crate `bench`).
//!
//! # Layout
//! - [`cli`]: the command line, one function per command.
//! - [`config`]: the configuration, read once from the environment (secrets wrapped).
//! - [`app`]: one embedded facepay wired: store, registry, ledger, pipeline, sweeper, HTTP
//!   state.
//! - [`production`]: the production profile: this process's stages over Kafka topics and the
//!   HTTP state over them.
//! - [`serve`]: `facepay serve`, the API (and stages) until a signal.
//! - [`demo`]: `facepay demo`, the simulated fleet ([`facepay_sim`]) through the embedded
//!   pipeline, and its report.
//! - [`reconcile`]: `facepay reconcile`, and the demo's day reconciled.
//! - [`keys`]: `facepay keys`.
//! - [`faces`]: `facepay faces verify-erasure`, the audit of a deleted face.

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod faces;
pub mod keys;
pub mod production;
pub mod reconcile;
pub mod serve;
