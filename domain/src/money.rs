//! Money: CNY with exactly two decimal places, positive and bounded.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{FieldErrorKind, ValueError};
use crate::limits::MONEY_MAX_FEN;

/// A positive amount of CNY, at most [`MONEY_MAX_FEN`] fen, held at scale 2.
///
/// On the wire it is a decimal string (`"12.30"`): a JSON number would pass through a float
/// in most clients. Parsing refuses more than two decimals, zero, negatives and overlarge
/// amounts, so a `Money` in hand is always a valid amount to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Money(Decimal);

impl Money {
    /// The amount from integer fen; `None` unless `1 ..= MONEY_MAX_FEN`.
    pub fn from_fen(fen: i64) -> Option<Self> {
        (1..=MONEY_MAX_FEN).contains(&fen).then(|| Self(Decimal::new(fen, 2)))
    }

    /// The amount in integer fen (exact: the scale is always 2).
    pub fn fen(self) -> i64 {
        let mantissa = self.0.mantissa();
        debug_assert_eq!(self.0.scale(), 2);
        i64::try_from(mantissa).expect("bounded by MONEY_MAX_FEN")
    }

    /// The amount as a decimal of scale 2.
    pub fn decimal(self) -> Decimal {
        self.0
    }
}

/// A decimal string of CNY with at most two places (served with exactly two).
impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let schema = ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^[0-9]+(\.[0-9]{1,2})?$"));
        schema.examples(["60.00"]).into()
    }
}

impl utoipa::ToSchema for Money {}

impl TryFrom<Decimal> for Money {
    type Error = ValueError;

    fn try_from(value: Decimal) -> Result<Self, ValueError> {
        if value.normalize().scale() > 2 {
            return Err(ValueError::new(FieldErrorKind::TooManyDecimals, "CNY has at most 2 decimal places"));
        }
        if value <= Decimal::ZERO {
            return Err(ValueError::new(FieldErrorKind::NotPositive, "must be greater than 0.00"));
        }
        let mut scaled = value;
        scaled.rescale(2);
        let fen = i64::try_from(scaled.mantissa()).ok().filter(|f| *f <= MONEY_MAX_FEN);
        match fen {
            Some(_) => Ok(Self(scaled)),
            None => Err(ValueError::new(
                FieldErrorKind::OutOfRange,
                format!("must be at most {}", Decimal::new(MONEY_MAX_FEN, 2)),
            )),
        }
    }
}

impl FromStr for Money {
    type Err = ValueError;

    /// Only the canonical form: `^[0-9]+(\.[0-9]{1,2})?$` with no leading zero (`"0.50"`,
    /// `"12.3"`, `"7"`). `"60."`, `".5"`, `"060.00"`, `"1e3"` are refused as `invalid`, a
    /// third decimal as `too_many_decimals`, a well-formed negative or zero as `not_positive`.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = || ValueError::new(FieldErrorKind::Invalid, "a decimal string like \"12.30\" is required");
        let (negative, unsigned) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, cents) = match unsigned.split_once('.') {
            Some((w, c)) => (w, Some(c)),
            None => (unsigned, None),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let canonical_whole = digits(whole) && whole.len() <= 20 && (whole == "0" || !whole.starts_with('0'));
        if !canonical_whole || cents.is_some_and(|c| !digits(c)) {
            return Err(invalid());
        }
        if cents.is_some_and(|c| c.len() > 2) {
            return Err(ValueError::new(FieldErrorKind::TooManyDecimals, "CNY has at most 2 decimal places"));
        }
        let value = Decimal::from_str(unsigned).map_err(|_| invalid())?;
        Money::try_from(if negative { -value } else { value })
    }
}

impl TryFrom<String> for Money {
    type Error = ValueError;

    fn try_from(s: String) -> Result<Self, ValueError> {
        s.parse()
    }
}

impl From<Money> for String {
    fn from(m: Money) -> String {
        m.to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

/// Formats signed fen as a CNY decimal string (`-12.30`): balances and sums may be zero or
/// negative, which [`Money`] is not.
pub fn fen_to_string(fen: i64) -> String {
    format!("{:.2}", Decimal::new(fen, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_places_and_pads_fewer() {
        assert_eq!("12.34".parse::<Money>().unwrap().fen(), 1234);
        assert_eq!("12.3".parse::<Money>().unwrap().to_string(), "12.30");
        assert_eq!("7".parse::<Money>().unwrap().fen(), 700);
        assert_eq!("0.50".parse::<Money>().unwrap().fen(), 50);
    }

    #[test]
    fn only_the_canonical_form_is_money() {
        let kind = |s: &str| s.parse::<Money>().unwrap_err().kind;
        for s in ["60.", ".5", "060.00", "00.50", "+5", " 5", "5 ", "1,000.00", "1.2.3", "-", "-.5", "١٢"] {
            assert_eq!(kind(s), FieldErrorKind::Invalid, "{s:?}");
        }
        assert_eq!(kind("12.340"), FieldErrorKind::TooManyDecimals);
    }

    #[test]
    fn refuses_bad_amounts_with_their_kind() {
        let kind = |s: &str| s.parse::<Money>().unwrap_err().kind;
        assert_eq!(kind("12.345"), FieldErrorKind::TooManyDecimals);
        assert_eq!(kind("0"), FieldErrorKind::NotPositive);
        assert_eq!(kind("0.00"), FieldErrorKind::NotPositive);
        assert_eq!(kind("-5.00"), FieldErrorKind::NotPositive);
        assert_eq!(kind("100000000.01"), FieldErrorKind::OutOfRange);
        assert_eq!(kind("1e3"), FieldErrorKind::Invalid);
        assert_eq!(kind(""), FieldErrorKind::Invalid);
        assert_eq!(kind("NaN"), FieldErrorKind::Invalid);
    }

    #[test]
    fn serialises_as_a_two_place_string() {
        let m: Money = serde_json::from_str("\"5\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"5.00\"");
        assert!(serde_json::from_str::<Money>("5.0").is_err(), "a JSON number is refused");
    }

    #[test]
    fn fen_round_trips() {
        for fen in [1, 99, 100, 123_456, MONEY_MAX_FEN] {
            assert_eq!(Money::from_fen(fen).unwrap().fen(), fen);
        }
        assert!(Money::from_fen(0).is_none());
        assert!(Money::from_fen(MONEY_MAX_FEN + 1).is_none());
        assert_eq!(fen_to_string(-1230), "-12.30");
    }
}
