//! facepay's benchmarks, each printing a JSON report (`facepay-bench <name>`); the figures and
//! the commands that made them are in docs/BENCHMARKS.md. Their own binary, so that the
//! `facepay` binary links no load generator.
//!
//! # Layout
//! - [`cli`]: the `facepay-bench` command line.
//! - [`ledger`]: payments decided and committed per second against the raw-insert ceiling
//!   and the usual design.
//! - [`usual_design`]: the usual one-transaction-per-payment design, for comparison.
//! - [`pipeline`]: device events through Kafka to committed outcomes, next to the broker.
//! - [`pipeline_ledger`]: the pipeline's ledger commands committed alone (its ceiling).
//! - [`cpu`]: where a phase's cores went (this process, PostgreSQL, the broker).
//! - [`api`]: the read API and the console's pages under load over a million orders.
//! - [`csv_export`]: the console's CSV export of a merchant's day of a million attempts.
//! - [`console_pages`]: the console's other pages over a fleet's members, devices, runs,
//!   breaks and logs.
//! - [`load`]: the HTTP/1.1 load generator of those three.
//! - [`device`]: simulated HTTP devices paying at a fixed rate, answered synchronously
//!   (`Prefer: wait`), on either profile.
//! - [`reconcile`]: a million-line bill imported and reconciled.
//! - [`matcher`]: face search over a synthetic gallery.
//! - [`matcher_accuracy`]: the match policy's accuracy and the calibration of its thresholds.

pub mod api;
pub mod cli;
pub mod console_pages;
pub mod cpu;
pub mod csv_export;
pub mod device;
pub mod ledger;
pub mod load;
pub mod matcher;
pub mod matcher_accuracy;
pub mod pipeline;
pub mod pipeline_ledger;
pub mod reconcile;
pub mod usual_design;
