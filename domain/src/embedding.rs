//! Face embeddings and capture scores.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{FieldErrorKind, ValueError};
use crate::limits::EMBEDDING_DIM;

/// A face template: [`EMBEDDING_DIM`] finite floats with a non-zero norm, L2-normalised on
/// the way in so that cosine similarity is a dot product.
///
/// Biometric data: `Debug` prints only its dimension, and nothing in facepay logs or serves
/// it. Serialisation exists for the device wire format only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f32>", into = "Vec<f32>")]
pub struct Embedding(Vec<f32>);

impl Embedding {
    /// The unit-length values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
}

impl TryFrom<Vec<f32>> for Embedding {
    type Error = ValueError;

    fn try_from(mut v: Vec<f32>) -> Result<Self, ValueError> {
        if v.len() != EMBEDDING_DIM {
            return Err(ValueError::new(
                FieldErrorKind::WrongDimension,
                format!("expected {EMBEDDING_DIM} values, got {}", v.len()),
            ));
        }
        if !v.iter().all(|x| x.is_finite()) {
            return Err(ValueError::new(FieldErrorKind::NotFinite, "every value must be finite"));
        }
        let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
        if !(norm.is_finite() && norm > 1e-12) {
            return Err(ValueError::new(FieldErrorKind::NotFinite, "the vector must have a finite, non-zero norm"));
        }
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
        Ok(Self(v))
    }
}

impl From<Embedding> for Vec<f32> {
    fn from(e: Embedding) -> Vec<f32> {
        e.0
    }
}

impl fmt::Debug for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Embedding(<{} values redacted>)", self.0.len())
    }
}

/// A score in `[0, 1]` from the device's 3D camera (liveness, quality).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f32", into = "f32")]
pub struct Score(f32);

impl Score {
    pub fn get(self) -> f32 {
        self.0
    }
}

impl TryFrom<f32> for Score {
    type Error = ValueError;

    fn try_from(x: f32) -> Result<Self, ValueError> {
        if (0.0..=1.0).contains(&x) {
            Ok(Self(x))
        } else {
            Err(ValueError::new(FieldErrorKind::OutOfRange, "a score lies in [0, 1]"))
        }
    }
}

impl From<Score> for f32 {
    fn from(s: Score) -> f32 {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses_bad_vectors() {
        let e = Embedding::try_from(vec![2.0; EMBEDDING_DIM]).unwrap();
        let norm: f32 = e.as_slice().iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        let kind = |v: Vec<f32>| Embedding::try_from(v).unwrap_err().kind;
        assert_eq!(kind(vec![1.0; 3]), FieldErrorKind::WrongDimension);
        let mut nan = vec![1.0; EMBEDDING_DIM];
        nan[7] = f32::NAN;
        assert_eq!(kind(nan), FieldErrorKind::NotFinite);
        assert_eq!(kind(vec![0.0; EMBEDDING_DIM]), FieldErrorKind::NotFinite);
        assert!(!format!("{e:?}").contains("0.04"), "Debug never prints values");
    }
}
