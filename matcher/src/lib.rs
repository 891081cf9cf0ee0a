//! facepay's face matcher: resolves a device's face capture to a payer by 1:N search over an
//! in-memory gallery of enrolled templates.
//!
//! A false match charges the wrong person, and its chance grows with the gallery:
//! P_N ≈ N·P_1. So a capture with the payer's last 4 phone digits is searched among the
//! payers enrolled with them only; without digits the whole gallery is searched, and its best
//! candidate pays as the merchant's member, or (for a gallery small enough) as anyone, only
//! over a calibrated threshold and clear of the runner-up by a margin. An unsure face, close
//! but not close enough or close to two, is asked for the digits
//! ([`MatchRule::NeedsPhoneConfirmation`]), never guessed and never turned away.
//!
//! Templates are biometric data: no type here prints, logs or returns embedding values.
//!
//! # Layout
//! - [`policy`]: [`MatchPolicy`] (the thresholds) and its decision over the candidates of
//!   a search, [`MatchRule`] and [`Identification`], the answer of a search;
//!   [`policy::Partial`], one shard's candidates, merged across shards into the whole
//!   gallery's.
//! - [`gallery`]: [`Gallery`], the enrolled templates, member lists and phone buckets,
//!   and [`Gallery::identify`]; [`MatcherError`].
//! - [`flat`]: [`flat::FlatIndex`], exact batched (candle matmul + top-k) and single-query
//!   (memory-bound scan) search over a candle tensor, f32 or f16.
//! - `amx`: `amx::AmxIndex`, exact batched search on Intel AMX (bf16 tile products pick
//!   the candidates with a proven error bound, f32 scores them), used where the CPU has it.
//! - [`codes`]: [`codes::CodeIndex`], the approximate index for galleries of a million and
//!   more: binary sign codes (random hyperplanes) scanned by Hamming distance with AVX-512
//!   `VPOPCNTQ`, the nearest few reranked exactly.
//! - [`ivf`]: [`ivf::IvfIndex`], an inverted-file index (candle k-means); measured and not
//!   accepted: its cells miss the genuine template on faces (see docs/BENCHMARKS.md).
//! - [`topk`]: [`topk::TopK`], top-k selection without sorting.
//! - [`kernels`]: SIMD inner-product kernels of the scans.
//! - [`vault`]: templates sealed at rest (ChaCha20-Poly1305, a data key per payer wrapped
//!   by the master key; deletion shreds the key).
//! - [`synthetic`]: [`synthetic::SyntheticFaces`], deterministic synthetic identities for
//!   tests and benchmarks, and the harder population (log-normal capture quality,
//!   look-alikes, phone digits) the policy is calibrated on.

#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod codes;
pub mod flat;
pub mod gallery;
pub mod ivf;
pub mod kernels;
pub mod policy;
pub mod synthetic;
pub mod topk;
pub mod vault;

pub use flat::{FlatIndex, Precision};
pub use gallery::{BatchIndex, Gallery, MatcherError};
pub use policy::{Identification, MatchPolicy, MatchRule};
