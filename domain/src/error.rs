//! The one error a parse can give: which field, and why.

use std::fmt;

/// A rejected field of a device event or request. `field` is a dotted path from the top of
/// the document (`payload.amount`), so a device developer knows exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    /// Dotted path of the offending field; `"."` when the whole document is at fault
    /// (malformed JSON).
    pub field: String,
    /// Stable machine-readable cause, e.g. `too_many_decimals`; see [`FieldErrorKind`].
    pub kind: FieldErrorKind,
    /// Human-readable detail. Never contains an embedding or a secret.
    pub message: String,
}

/// Stable causes of a [`FieldError`], serialised in `snake_case` into the rejected-events table
/// and HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    /// The body is not JSON, or not the expected JSON shape.
    Malformed,
    /// A required field is absent.
    Missing,
    /// A field has the wrong JSON type or format.
    Invalid,
    /// A money amount with more than 2 decimal places.
    TooManyDecimals,
    /// A money amount that is zero or negative.
    NotPositive,
    /// A number or string beyond its documented bound.
    OutOfRange,
    /// A string longer than its documented bound.
    TooLong,
    /// A string with a character outside its documented alphabet.
    BadCharacter,
    /// An embedding of the wrong dimension.
    WrongDimension,
    /// An embedding with NaN or infinity, or with zero norm.
    NotFinite,
    /// An event `type` this contract does not define.
    UnknownType,
    /// A `schema_version` this build does not understand.
    UnsupportedVersion,
    /// A merchant, store or device that is not registered (or not bound together).
    Unknown,
    /// No signature, an unknown, revoked or expired key, or a MAC that does not match.
    BadSignature,
    /// A signing time outside the window (`SIGNATURE_WINDOW_SECS`).
    ClockSkew,
    /// An event id already seen from another message.
    Replayed,
    /// An `occurred_at` further than `DEVICE_CLOCK_SKEW_MAX_MS` from the accept time.
    OccurredAtSkew,
    /// An event its signer may not send: another device's, or a device event signed by the
    /// platform (and the reverse).
    WrongOrigin,
}

impl FieldErrorKind {
    /// The stable code, as stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::TooManyDecimals => "too_many_decimals",
            Self::NotPositive => "not_positive",
            Self::OutOfRange => "out_of_range",
            Self::TooLong => "too_long",
            Self::BadCharacter => "bad_character",
            Self::WrongDimension => "wrong_dimension",
            Self::NotFinite => "not_finite",
            Self::UnknownType => "unknown_type",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Unknown => "unknown",
            Self::BadSignature => "bad_signature",
            Self::ClockSkew => "clock_skew",
            Self::Replayed => "replayed",
            Self::OccurredAtSkew => "occurred_at_skew",
            Self::WrongOrigin => "wrong_origin",
        }
    }
}

impl fmt::Display for FieldErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FieldError {
    pub fn new(field: impl Into<String>, kind: FieldErrorKind, message: impl Into<String>) -> Self {
        Self { field: field.into(), kind, message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.kind)
    }
}

/// A value-level parse failure, before it is placed at a field path. Newtypes return this
/// from `TryFrom`; serde carries its text, and [`crate::event`] turns it into a [`FieldError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ValueError {
    pub kind: FieldErrorKind,
    pub message: String,
}

impl ValueError {
    pub fn new(kind: FieldErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}
