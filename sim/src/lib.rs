//! A simulated face-payment fleet, for the demo, `facepay simulate`, the benchmarks and the
//! tests: what the devices and the channel would send, never what facepay decides.
//!
//! # Layout
//! - [`fleet`]: merchants, devices and payers drawn from a seed, and the events of their
//!   days of trade (with the retries, queries and bad input of a real fleet).
//! - [`keys`]: one device key per simulated device, enrolled like any other, and the
//!   signatures the fleet's events carry.
//! - [`bill`]: the channel's daily bill for the ledger's day, with planted breaks.
//! - [`kafka`]: the fleet published to a running deployment's device-events topic.

pub mod bill;
pub mod fleet;
pub mod kafka;
pub mod keys;
