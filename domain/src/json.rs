//! JSON numbers as JSON Schema reads them: an integer is any number with no fraction, so
//! `617.0` is the integer 617 (schema-driven clients and fuzzers write it so).

use serde::de::{Deserialize, Deserializer, Error};

/// An integer field that also takes an integral number written with a fraction (`617.0`).
pub fn integral<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    // Below 2^53 every integer is exact as a double: no two integers read the same.
    let exact = |f: f64| f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0;
    let v = n.as_i64().or_else(|| n.as_f64().filter(|f| exact(*f)).map(|f| f as i64));
    let v = v.ok_or_else(|| D::Error::custom(format!("an integer is required, not {n}")))?;
    T::try_from(v).map_err(|_| D::Error::custom(format!("{v} is out of range")))
}

/// [`integral`] for an optional field (`null` or absent: `None`; use with `#[serde(default)]`).
pub fn optional_integral<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => integral(n).map(Some).map_err(D::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Days {
        #[serde(deserialize_with = "super::integral")]
        n: u16,
        #[serde(default, deserialize_with = "super::optional_integral")]
        m: Option<i64>,
    }

    fn read(json: &str) -> Result<(u16, Option<i64>), String> {
        serde_json::from_str::<Days>(json).map(|d| (d.n, d.m)).map_err(|e| e.to_string())
    }

    #[test]
    fn an_integral_number_is_an_integer_whatever_its_spelling() {
        assert_eq!(read(r#"{"n": 617.0, "m": 3.0}"#), Ok((617, Some(3))));
        assert_eq!(read(r#"{"n": 1, "m": null}"#), Ok((1, None)));
        assert_eq!(read(r#"{"n": 1}"#), Ok((1, None)));
        assert!(read(r#"{"n": 1.5}"#).unwrap_err().contains("an integer is required"));
        assert!(read(r#"{"n": 70000}"#).unwrap_err().contains("out of range"));
        assert!(read(r#"{"n": "1"}"#).is_err());
    }
}
