//! Deterministic synthetic identities for tests and benchmarks, following the model of the
//! face-matching reference.
//!
//! An identity is a centre `c`, a random unit vector in R^d. A capture of it is
//! `x = normalise(c + σ·g)` with `g ~ N(0, I)`, so `cos(x, c) ≈ 1/√(1 + dσ²)`. Each capture
//! draws a target cosine `r` uniformly from [`GENUINE_COSINE_MIN`]..=[`GENUINE_COSINE_MAX`]
//! and takes `σ = √((1/r² − 1)/d)`, so its cosine with the centre spreads over that range,
//! as real genuine scores spread. (The reference writes `σ = √((1/ρ − 1)/d)` for the
//! cosine `ρ` of two *captures*; with the centre as the template, `ρ = r²`.)
//! Impostor pairs have cosine mean 0, standard deviation 1/√d ≈ 0.044.

use std::fmt;

use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::Embedding;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Lowest target cosine of a genuine capture with its identity's template.
pub const GENUINE_COSINE_MIN: f32 = 0.6;

/// Highest target cosine of a genuine capture with its identity's template.
pub const GENUINE_COSINE_MAX: f32 = 0.8;

/// A fixed population of synthetic identities.
pub struct SyntheticFaces {
    /// The seed the centres came from, so a failing test can name its population.
    seed: u64,
    /// Identity centres, row-major, `identities × EMBEDDING_DIM`, each of unit length.
    centres: Vec<f32>,
}

impl fmt::Debug for SyntheticFaces {
    /// Seed and size only: the centres stand for biometric templates and are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyntheticFaces").field("seed", &self.seed).field("identities", &self.len()).finish()
    }
}

impl SyntheticFaces {
    /// `identities` centres drawn from `ChaCha8Rng` seeded with `seed`: the same arguments
    /// give the same population on every machine.
    pub fn new(seed: u64, identities: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut centres = Vec::with_capacity(identities * EMBEDDING_DIM);
        for _ in 0..identities {
            centres.extend(unit_gaussian(&mut rng));
        }
        Self { seed, centres }
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.centres.len() / EMBEDDING_DIM
    }

    pub fn is_empty(&self) -> bool {
        self.centres.is_empty()
    }

    /// The enrolment template of `identity`: its centre itself (a noiseless capture).
    ///
    /// # Panics
    /// If `identity >= self.len()`.
    pub fn centre(&self, identity: usize) -> Embedding {
        embedding(self.centre_slice(identity).to_vec())
    }

    /// A fresh capture of `identity`: its centre plus Gaussian noise whose strength is drawn
    /// per capture, so the cosine with [`Self::centre`] lies around
    /// [`GENUINE_COSINE_MIN`]..=[`GENUINE_COSINE_MAX`].
    ///
    /// # Panics
    /// If `identity >= self.len()`.
    pub fn capture(&self, identity: usize, rng: &mut impl Rng) -> Embedding {
        let target_cosine: f32 = rng.random_range(GENUINE_COSINE_MIN..=GENUINE_COSINE_MAX);
        let sigma = ((1.0 / (target_cosine * target_cosine) - 1.0) / EMBEDDING_DIM as f32).sqrt();
        let noisy = self.centre_slice(identity).iter().map(|c| c + sigma * rng.sample::<f32, _>(StandardNormal));
        embedding(noisy.collect())
    }

    /// A random unit vector: the face of someone who never enrolled.
    pub fn stranger(rng: &mut impl Rng) -> Embedding {
        embedding(unit_gaussian(rng))
    }

    fn centre_slice(&self, identity: usize) -> &[f32] {
        assert!(identity < self.len(), "identity {identity} out of {} synthetic identities", self.len());
        &self.centres[identity * EMBEDDING_DIM..(identity + 1) * EMBEDDING_DIM]
    }
}

/// A uniformly random direction: a standard Gaussian vector, normalised.
fn unit_gaussian(rng: &mut impl Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..EMBEDDING_DIM).map(|_| rng.sample(StandardNormal)).collect();
    embedding(v).into()
}

/// Wraps generated values, which are finite, of the right length and (with probability 1)
/// of non-zero norm.
fn embedding(v: Vec<f32>) -> Embedding {
    Embedding::try_from(v).expect("a 512-d Gaussian draw is finite with a non-zero norm")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &Embedding, b: &Embedding) -> f32 {
        a.as_slice().iter().zip(b.as_slice()).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn given_a_seed_when_rebuilt_then_population_is_identical() {
        let a = SyntheticFaces::new(7, 3);
        let b = SyntheticFaces::new(7, 3);
        let c = SyntheticFaces::new(8, 3);
        assert_eq!(a.len(), 3);
        assert_eq!(a.centre(2), b.centre(2));
        assert_ne!(a.centre(2), c.centre(2));
    }

    #[test]
    fn given_captures_then_genuine_cosines_spread_over_the_target_range() {
        let faces = SyntheticFaces::new(1, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let cosines: Vec<f32> =
            (0..400).map(|i| cosine(&faces.capture(i % 4, &mut rng), &faces.centre(i % 4))).collect();
        let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
        let (lo, hi) = cosines.iter().fold((1.0f32, -1.0f32), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        assert!((0.67..0.73).contains(&mean), "mean genuine cosine {mean}");
        assert!(lo > 0.5 && lo < 0.63, "lowest genuine cosine {lo}");
        assert!(hi > 0.77 && hi < 0.9, "highest genuine cosine {hi}");
    }

    #[test]
    fn given_strangers_then_cosines_look_like_impostors() {
        let faces = SyntheticFaces::new(3, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let cosines: Vec<f32> =
            (0..1000).map(|_| cosine(&SyntheticFaces::stranger(&mut rng), &faces.centre(0))).collect();
        let mean = cosines.iter().sum::<f32>() / 1000.0;
        let sd = (cosines.iter().map(|c| (c - mean).powi(2)).sum::<f32>() / 1000.0).sqrt();
        assert!(mean.abs() < 0.01, "impostor mean {mean}");
        assert!((0.038..0.050).contains(&sd), "impostor sd {sd}");
    }

    #[test]
    fn given_faces_when_debug_printed_then_no_values_show() {
        let faces = SyntheticFaces::new(5, 2);
        let shown = format!("{faces:?}");
        assert_eq!(shown, "SyntheticFaces { seed: 5, identities: 2 }");
    }
}
