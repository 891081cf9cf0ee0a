//! facepay's face matcher: resolves a device's face capture to a payer by 1:N search over an
//! in-memory gallery of enrolled templates.
//!
//! A false match charges the wrong person, and its chance grows with the gallery:
//! P_N ≈ N·P_1. So a search is narrowed before it is widened: the merchant's members
//! first, then the payers enrolled with the phone digits the payer typed, and only then,
//! for a gallery small enough, everyone. Every hit must also lead the runner-up by a
//! margin; a close second makes the answer [`MatchRule::Ambiguous`], never a guess.
//!
//! Templates are biometric data: no type here prints, logs or returns embedding values.
//!
//! # Layout
//! - [`policy`]: [`MatchPolicy`] (the thresholds), [`MatchRule`] and [`Identification`],
//!   the answer of a search.
//! - [`gallery`]: [`Gallery`], the enrolled templates, member lists and phone buckets,
//!   and [`Gallery::identify`]; [`MatcherError`].
//! - [`synthetic`]: [`synthetic::SyntheticFaces`], deterministic synthetic identities for
//!   tests and benchmarks.

pub mod gallery;
pub mod policy;
pub mod synthetic;

pub use gallery::{Gallery, MatcherError};
pub use policy::{Identification, MatchPolicy, MatchRule};
