//! Deterministic synthetic identities for tests, the demo and benchmarks, following the model
//! of the face-matching reference.
//!
//! An identity is a centre `c`, a random unit vector in R^d. A capture of it is
//! `x = normalise(c + σ·g)` with `g ~ N(0, I)`, so `cos(x, c) ≈ 1/√(1 + dσ²)` and two captures
//! with the same σ have `cos ≈ 1/(1 + dσ²)`: `σ = √((1/ρ − 1)/d)` gives a genuine-pair cosine
//! `ρ`. Each capture draws its own σ: it draws its cosine with the centre, `r`, uniformly
//! from `√GENUINE_COSINE_MIN..=√GENUINE_COSINE_MAX` and takes `σ = √((1/r² − 1)/d)`, so a
//! pair of captures (an enrolment and a probe) has cosine `r₁·r₂`, spread over
//! [`GENUINE_COSINE_MIN`]..=[`GENUINE_COSINE_MAX`] (mean ≈ 0.7) as real genuine scores
//! spread. Impostor pairs have cosine mean 0, standard deviation 1/√d ≈ 0.044.
//!
//! That is [`Quality::Uniform`], the population of the demo and most tests. The calibration of
//! the match policy (`facepay-bench matcher --calibrate`) uses a harder one,
//! [`Quality::HARD`]: each capture draws its noise `u = dσ²` log-normally (median 0.43, so a
//! median capture has cosine √(1/1.43) ≈ 0.84 with its centre and a median pair ≈ 0.70, and
//! log standard deviation 0.30: most captures are clean and a tail is poor, as with bad light,
//! motion or a poor enrolment), which puts about 0.4 % of genuine pairs under 0.55 and the
//! lowest of 100 000 near 0.44. Each identity also has a **look-alike** who never enrolled:
//! a face centre at cosine [`LOOKALIKE_COSINE`] (0.45) to the identity's *enrolled template*
//! (so the template's own noise does not dilute the likeness), whose captures score up to
//! about 0.47 against it over 100 000 look-alikes; and last 4 phone digits, uniform over
//! 0000–9999.
//!
//! Nothing is stored: every centre and every numbered capture is drawn from its own ChaCha8
//! stream keyed by (seed, identity, capture number), so a population of any size costs no
//! memory, is generated in parallel, and is the same on every machine.

use std::fmt;

use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::{Embedding, PhoneLast4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Lowest genuine-pair cosine (enrolment capture against a later capture) of the model.
pub const GENUINE_COSINE_MIN: f32 = 0.6;

/// Highest genuine-pair cosine of the model.
pub const GENUINE_COSINE_MAX: f32 = 0.8;

/// Cosine of a look-alike's face centre with the enrolled template of their twin.
pub const LOOKALIKE_COSINE: f32 = 0.45;

/// Stream tag of identity centres.
const CENTRE: u64 = 0;
/// Stream tag of numbered captures.
const CAPTURE: u64 = 1;
/// Stream tag of look-alike centres.
const LOOKALIKE: u64 = 2;
/// Stream tag of look-alikes' numbered captures.
const LOOKALIKE_CAPTURE: u64 = 3;
/// Stream tag of phone digits.
const PHONE: u64 = 4;

/// How each capture's noise is drawn (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quality {
    /// The capture's cosine with its centre uniform in √[`GENUINE_COSINE_MIN`]..=√[`GENUINE_COSINE_MAX`].
    Uniform,
    /// The capture's noise `u = dσ²` log-normal: `noise_median · e^(noise_log_sd · z)`, z ~ N(0, 1).
    LogNormal { noise_median: f32, noise_log_sd: f32 },
}

impl Quality {
    /// The calibration's population: a median pair cosine of 0.70 and a tail of poor captures.
    pub const HARD: Quality = Quality::LogNormal { noise_median: 0.43, noise_log_sd: 0.30 };

    /// σ of one capture, drawn from `rng`.
    fn sigma(self, rng: &mut impl Rng) -> f32 {
        match self {
            Quality::Uniform => {
                sigma_for_centre_cosine(rng.random_range(GENUINE_COSINE_MIN.sqrt()..=GENUINE_COSINE_MAX.sqrt()))
            }
            Quality::LogNormal { noise_median, noise_log_sd } => {
                let z: f32 = rng.sample(StandardNormal);
                (noise_median * (noise_log_sd * z).exp() / EMBEDDING_DIM as f32).sqrt()
            }
        }
    }
}

/// A fixed population of synthetic identities.
#[derive(Clone, Copy)]
pub struct SyntheticFaces {
    /// The seed every centre and numbered capture derives from, so a failing test can name
    /// its population.
    seed: u64,
    /// Number of identities.
    identities: usize,
    /// How each capture's noise is drawn.
    quality: Quality,
}

impl fmt::Debug for SyntheticFaces {
    /// Seed and size only: the centres stand for biometric templates and are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyntheticFaces")
            .field("seed", &self.seed)
            .field("identities", &self.identities)
            .field("quality", &self.quality)
            .finish()
    }
}

impl SyntheticFaces {
    /// `identities` identities derived from `seed`: the same arguments give the same
    /// population on every machine.
    pub fn new(seed: u64, identities: usize) -> Self {
        Self::with_quality(seed, identities, Quality::Uniform)
    }

    /// [`Self::new`] with captures of the given quality.
    pub fn with_quality(seed: u64, identities: usize, quality: Quality) -> Self {
        Self { seed, identities, quality }
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.identities
    }

    pub fn is_empty(&self) -> bool {
        self.identities == 0
    }

    /// The centre of `identity`: the noiseless face no camera ever sees.
    ///
    /// # Panics
    /// If `identity >= self.len()`.
    pub fn centre(&self, identity: usize) -> Embedding {
        embedding(self.centre_values(identity))
    }

    /// The enrolment template of `identity`: its capture number 0, a capture like any other
    /// (enrolment happens at a camera too).
    pub fn enrolment(&self, identity: usize) -> Embedding {
        self.nth_capture(identity, 0)
    }

    /// Capture number `n` of `identity`, the same on every call: number 0 is the enrolment,
    /// later numbers are probes for tests and benchmarks.
    pub fn nth_capture(&self, identity: usize, n: u64) -> Embedding {
        let mut rng = self.stream(CAPTURE, identity, n);
        self.capture(identity, &mut rng)
    }

    /// A fresh capture of `identity`, noise drawn from `rng` with this population's
    /// [`Quality`] (under [`Quality::Uniform`] its cosine with another capture lies in
    /// [`GENUINE_COSINE_MIN`]..=[`GENUINE_COSINE_MAX`]).
    ///
    /// # Panics
    /// If `identity >= self.len()`.
    pub fn capture(&self, identity: usize, rng: &mut impl Rng) -> Embedding {
        self.noisy(self.centre_values(identity), rng)
    }

    /// Capture number `n` of the look-alike of `identity`: someone who never enrolled, whose
    /// face centre has cosine [`LOOKALIKE_COSINE`] with `identity`'s enrolled template.
    pub fn lookalike_capture(&self, identity: usize, n: u64) -> Embedding {
        let template: Vec<f32> = self.enrolment(identity).into();
        let mut other = gaussian(&mut self.stream(LOOKALIKE, identity, 0));
        let along: f32 = other.iter().zip(&template).map(|(o, t)| o * t).sum();
        other.iter_mut().zip(&template).for_each(|(o, t)| *o -= along * t);
        let other: Vec<f32> = embedding(other).into();
        let c = LOOKALIKE_COSINE;
        let centre = template.iter().zip(&other).map(|(t, o)| c * t + (1.0 - c * c).sqrt() * o).collect();
        self.noisy(centre, &mut self.stream(LOOKALIKE_CAPTURE, identity, n))
    }

    /// The last 4 phone digits `identity` enrolled with, uniform over 0000–9999.
    pub fn phone_last4(&self, identity: usize) -> PhoneLast4 {
        let n: u16 = self.stream(PHONE, identity, 0).random_range(0..10_000);
        PhoneLast4::parse(&format!("{n:04}")).expect("4 digits")
    }

    /// A capture of `centre` with this population's noise.
    fn noisy(&self, centre: Vec<f32>, rng: &mut impl Rng) -> Embedding {
        let sigma = self.quality.sigma(rng);
        let mut v = centre;
        v.iter_mut().for_each(|x| *x += sigma * rng.sample::<f32, _>(StandardNormal));
        embedding(v)
    }

    /// A random unit vector: the face of someone who never enrolled.
    pub fn stranger(rng: &mut impl Rng) -> Embedding {
        embedding(gaussian(rng))
    }

    /// Stranger number `n` of this population's seed, the same on every call.
    pub fn nth_stranger(&self, n: u64) -> Embedding {
        Self::stranger(&mut self.stream(CAPTURE, usize::MAX, n))
    }

    /// The unit centre of `identity`.
    fn centre_values(&self, identity: usize) -> Vec<f32> {
        assert!(identity < self.identities, "identity {identity} out of {} synthetic identities", self.identities);
        embedding(gaussian(&mut self.stream(CENTRE, identity, 0))).into()
    }

    /// The ChaCha8 stream of (`tag`, `identity`, `n`) under this population's seed.
    fn stream(&self, tag: u64, identity: usize, n: u64) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        for (chunk, word) in key.chunks_exact_mut(8).zip([self.seed, tag, identity as u64, n]) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        ChaCha8Rng::from_seed(key)
    }
}

/// σ giving a capture cosine `r` with its centre: `r = 1/√(1 + dσ²)`.
pub fn sigma_for_centre_cosine(r: f32) -> f32 {
    ((1.0 / (r * r) - 1.0) / EMBEDDING_DIM as f32).sqrt()
}

/// A standard Gaussian vector (its direction is uniformly random).
fn gaussian(rng: &mut impl Rng) -> Vec<f32> {
    (0..EMBEDDING_DIM).map(|_| rng.sample(StandardNormal)).collect()
}

/// Wraps generated values, which are finite, of the right length and (with probability 1)
/// of non-zero norm; normalises them.
fn embedding(v: Vec<f32>) -> Embedding {
    Embedding::try_from(v).expect("a 512-d Gaussian draw is finite with a non-zero norm")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &Embedding, b: &Embedding) -> f32 {
        a.as_slice().iter().zip(b.as_slice()).map(|(x, y)| x * y).sum()
    }

    fn mean_sd(xs: &[f32]) -> (f32, f32) {
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        (mean, (xs.iter().map(|c| (c - mean).powi(2)).sum::<f32>() / xs.len() as f32).sqrt())
    }

    #[test]
    fn given_a_seed_when_rebuilt_then_population_is_identical() {
        let a = SyntheticFaces::new(7, 3);
        let b = SyntheticFaces::new(7, 3);
        let c = SyntheticFaces::new(8, 3);
        assert_eq!(a.len(), 3);
        assert_eq!(a.centre(2), b.centre(2));
        assert_ne!(a.centre(2), c.centre(2));
        assert_eq!(a.enrolment(1), b.enrolment(1));
        assert_eq!(a.nth_capture(1, 5), b.nth_capture(1, 5));
        assert_ne!(a.nth_capture(1, 5), a.nth_capture(1, 6));
        assert_eq!(a.nth_stranger(3), b.nth_stranger(3));
    }

    #[test]
    fn given_a_fixed_sigma_then_pair_cosine_follows_the_reference_formula() {
        // The reference: σ = √((1/ρ − 1)/d) gives a genuine-pair cosine ρ.
        let faces = SyntheticFaces::new(11, 50);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for rho in [0.6f32, 0.7, 0.8] {
            let sigma = ((1.0 / rho - 1.0) / EMBEDDING_DIM as f32).sqrt();
            let noisy = |i: usize, rng: &mut ChaCha8Rng| {
                let c: Vec<f32> = faces.centre(i).into();
                embedding(c.iter().map(|x| x + sigma * rng.sample::<f32, _>(StandardNormal)).collect())
            };
            let pairs: Vec<f32> = (0..50).map(|i| cosine(&noisy(i, &mut rng), &noisy(i, &mut rng))).collect();
            let (mean, _) = mean_sd(&pairs);
            assert!((mean - rho).abs() < 0.01, "ρ {rho}: mean pair cosine {mean}");
        }
    }

    #[test]
    fn given_enrolment_and_probes_then_genuine_cosines_spread_over_0_6_to_0_8() {
        let faces = SyntheticFaces::new(1, 40);
        let cosines: Vec<f32> =
            (0..400).map(|i| cosine(&faces.enrolment(i % 40), &faces.nth_capture(i % 40, 1 + i as u64))).collect();
        let (mean, sd) = mean_sd(&cosines);
        let (lo, hi) = cosines.iter().fold((1.0f32, -1.0f32), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        assert!((0.68..0.72).contains(&mean), "mean genuine cosine {mean}");
        assert!(sd > 0.03, "per-capture σ spreads the genuine scores: sd {sd}");
        assert!(lo > 0.55 && lo < 0.63, "lowest genuine cosine {lo}");
        assert!(hi > 0.77 && hi < 0.85, "highest genuine cosine {hi}");
    }

    #[test]
    fn given_strangers_then_cosines_look_like_impostors() {
        let faces = SyntheticFaces::new(3, 1);
        let cosines: Vec<f32> = (0..1000).map(|n| cosine(&faces.nth_stranger(n), &faces.enrolment(0))).collect();
        let (mean, sd) = mean_sd(&cosines);
        assert!(mean.abs() < 0.01, "impostor mean {mean}");
        assert!((0.038..0.050).contains(&sd), "impostor sd {sd}");
    }

    #[test]
    fn given_faces_when_debug_printed_then_no_values_show() {
        let faces = SyntheticFaces::new(5, 2);
        let shown = format!("{faces:?}");
        assert_eq!(shown, "SyntheticFaces { seed: 5, identities: 2, quality: Uniform }");
    }

    #[test]
    fn given_the_hard_population_then_genuine_pairs_have_a_poor_tail_and_look_alikes_stay_under_0_5() {
        let faces = SyntheticFaces::with_quality(9, 2_000, Quality::HARD);
        let genuine: Vec<f32> = (0..2_000).map(|i| cosine(&faces.enrolment(i), &faces.nth_capture(i, 1))).collect();
        let (mean, _) = mean_sd(&genuine);
        assert!((0.67..0.72).contains(&mean), "median-ish genuine cosine {mean}");
        let poor = genuine.iter().filter(|&&c| c < 0.6).count();
        assert!((10..200).contains(&poor), "a tail of poor pairs: {poor} of 2000 under 0.6");
        let alike: Vec<f32> = (0..2_000).map(|i| cosine(&faces.enrolment(i), &faces.lookalike_capture(i, 1))).collect();
        let (mean, _) = mean_sd(&alike);
        assert!((0.35..0.40).contains(&mean), "look-alike cosine ≈ 0.45 × 0.84: {mean}");
        assert!(alike.iter().all(|&c| c < 0.5), "{:?}", alike.iter().copied().fold(0.0f32, f32::max));
        assert_eq!(faces.lookalike_capture(3, 1), faces.lookalike_capture(3, 1));
        assert_ne!(faces.lookalike_capture(3, 1), faces.lookalike_capture(3, 2));
        assert_eq!(faces.phone_last4(5), faces.phone_last4(5));
        let buckets: std::collections::HashSet<_> = (0..2_000).map(|i| faces.phone_last4(i)).collect();
        assert!(buckets.len() > 1_500, "digits spread: {} buckets", buckets.len());
    }
}
