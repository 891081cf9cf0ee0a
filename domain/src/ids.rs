//! Identifiers, each a newtype that can only hold a well-formed value.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{FieldErrorKind, ValueError};
use crate::limits::{ID_LEN_MAX, OUT_TRADE_NO_LEN_MAX};

fn check(s: &str, len_max: usize, allowed: fn(u8) -> bool, alphabet: &str) -> Result<(), ValueError> {
    if s.is_empty() {
        return Err(ValueError::new(FieldErrorKind::Missing, "must not be empty"));
    }
    if s.len() > len_max {
        return Err(ValueError::new(FieldErrorKind::TooLong, format!("at most {len_max} characters")));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii() || !allowed(*c as u8)) {
        return Err(ValueError::new(
            FieldErrorKind::BadCharacter,
            format!("character {c:?} is not allowed; use {alphabet}"),
        ));
    }
    Ok(())
}

fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn trade_no_char(b: u8) -> bool {
    id_char(b) || b == b'|' || b == b'*'
}

/// The OpenAPI schema of an identifier: 1 to `len_max` characters of the regular
/// expression class `class`.
fn id_schema(class: &str, len_max: usize) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^[{class}]{{1,{len_max}}}$"))).into()
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $allowed:expr, $alphabet:literal, $class:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `s`, refusing an empty, over-long or ill-charactered value.
            pub fn parse(s: impl Into<String>) -> Result<Self, ValueError> {
                let s = s.into();
                check(&s, $len, $allowed, $alphabet)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, ValueError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema($class, $len)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

string_id!(
    /// A (sub-)merchant, e.g. `1900000101`.
    MerchantId, ID_LEN_MAX, id_char, "0-9A-Za-z_-", "0-9A-Za-z_-"
);
string_id!(
    /// A store of a merchant.
    StoreId, ID_LEN_MAX, id_char, "0-9A-Za-z_-", "0-9A-Za-z_-"
);
string_id!(
    /// A certified face-payment device (the channel's `device_info`).
    DeviceId, ID_LEN_MAX, id_char, "0-9A-Za-z_-", "0-9A-Za-z_-"
);
string_id!(
    /// A payer, by the UnionID the face resolves to (stable across a developer's apps).
    PayerId, ID_LEN_MAX, id_char, "0-9A-Za-z_-", "0-9A-Za-z_-"
);
string_id!(
    /// A member card's code in the merchant's card package.
    CardCode, ID_LEN_MAX, id_char, "0-9A-Za-z_-", "0-9A-Za-z_-"
);
string_id!(
    /// The merchant's order number: at most 32 characters of `0-9A-Za-z_-|*`, unique per
    /// merchant (the channel's rule).
    OutTradeNo, OUT_TRADE_NO_LEN_MAX, trade_no_char, "0-9A-Za-z_-|*", "0-9A-Za-z_|*-"
);
string_id!(
    /// The merchant's refund number; same rule as [`OutTradeNo`].
    OutRefundNo, OUT_TRADE_NO_LEN_MAX, trade_no_char, "0-9A-Za-z_-|*", "0-9A-Za-z_|*-"
);
string_id!(
    /// A Pay Score service order number; same rule as [`OutTradeNo`].
    OutOrderNo, OUT_TRADE_NO_LEN_MAX, trade_no_char, "0-9A-Za-z_-|*", "0-9A-Za-z_|*-"
);

/// The one-time face code of a capture (the channel's `auth_code`): exactly 18 digits.
/// Single-use: a payment consumes it even when it is declined.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FaceCode(String);

impl FaceCode {
    pub const LEN: usize = 18;

    pub fn parse(s: impl Into<String>) -> Result<Self, ValueError> {
        let s = s.into();
        if s.len() != Self::LEN || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValueError::new(FieldErrorKind::Invalid, "a face code is exactly 18 digits"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FaceCode {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

impl From<FaceCode> for String {
    fn from(c: FaceCode) -> String {
        c.0
    }
}

impl fmt::Display for FaceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The last four digits of the payer's phone number, typed on the device when the risk
/// rules ask for them; they narrow a 1:N search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneLast4([u8; 4]);

impl PhoneLast4 {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let b = s.as_bytes();
        if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
            return Err(ValueError::new(FieldErrorKind::Invalid, "exactly 4 digits"));
        }
        Ok(Self([b[0], b[1], b[2], b[3]]))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits")
    }
}

impl TryFrom<String> for PhoneLast4 {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        Self::parse(&s)
    }
}

impl From<PhoneLast4> for String {
    fn from(p: PhoneLast4) -> String {
        p.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_trade_no_follows_the_channel_rule() {
        assert!(OutTradeNo::parse("S01-20260302_000001|a*").is_ok());
        assert_eq!(OutTradeNo::parse("x".repeat(33)).unwrap_err().kind, FieldErrorKind::TooLong);
        assert!(OutTradeNo::parse("x".repeat(32)).is_ok());
        assert_eq!(OutTradeNo::parse("a b").unwrap_err().kind, FieldErrorKind::BadCharacter);
        assert_eq!(OutTradeNo::parse("订单").unwrap_err().kind, FieldErrorKind::BadCharacter);
        assert_eq!(OutTradeNo::parse("").unwrap_err().kind, FieldErrorKind::Missing);
    }

    #[test]
    fn face_code_is_18_digits() {
        assert!(FaceCode::parse("134567890123456789").is_ok());
        assert!(FaceCode::parse("13456789012345678").is_err());
        assert!(FaceCode::parse("13456789012345678a").is_err());
    }

    #[test]
    fn phone_last4_is_4_digits() {
        assert_eq!(PhoneLast4::parse("0123").unwrap().as_str(), "0123");
        assert!(PhoneLast4::parse("123").is_err());
        assert!(PhoneLast4::parse("12a4").is_err());
    }
}
