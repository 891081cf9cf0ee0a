//! Credentials and device signatures: the pure part (no I/O).
//!
//! Every credential is a **key id** (public, the primary key of its row) and a **secret**.
//! A token as presented is `fpk_<key id>_<secret>`. The store keeps only
//! `HMAC-SHA256(pepper, secret)`; the pepper is the server's own secret
//! (`FACEPAY_KEY_PEPPER`). Secrets are 256 random bits, so a fast keyed hash suffices.
//!
//! A device's secret is `HMAC-SHA256(pepper, "facepay-device-secret-v1:" + key id)`: the
//! server can re-derive it to check a signature, and stores nothing it could leak. Device
//! events carry [`EventSignature`]: `k=<key id>,t=<unix seconds>,v1=<hex MAC>` with the MAC
//! `HMAC-SHA256(secret, "facepay-v1\n" + t + "\n" + event id + "\n" + body bytes)`.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::{FieldErrorKind, ValueError};

type HmacSha256 = Hmac<Sha256>;

/// The token prefix of every facepay key.
pub const TOKEN_PREFIX: &str = "fpk_";

/// The header (HTTP) and record header (Kafka) that carries an event's signature.
pub const SIGNATURE_HEADER: &str = "facepay-signature";

/// The key id the platform signs its own events with (enrolments, funding, freezes, limits).
pub const PLATFORM_KEY_ID: &str = "platform";

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One merchant's (or one store's) data.
    Merchant,
    /// Reads everything; resolves reconciliation breaks.
    Finance,
    /// One device: sends signed events, asks its merchant's order results.
    Device,
    /// Enrols devices, creates keys, raises limits, freezes accounts.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Merchant => "merchant",
            Role::Finance => "finance",
            Role::Device => "device",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        match s {
            "merchant" => Ok(Role::Merchant),
            "finance" => Ok(Role::Finance),
            "device" => Ok(Role::Device),
            "admin" => Ok(Role::Admin),
            _ => Err(ValueError::new(FieldErrorKind::Invalid, "merchant, finance, device or admin")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key's public id: 24 lowercase hex digits, or [`PLATFORM_KEY_ID`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub const HEX_LEN: usize = 24;

    pub fn parse(s: impl Into<String>) -> Result<Self, ValueError> {
        let s = s.into();
        let hex = s.len() == Self::HEX_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        match hex || s == PLATFORM_KEY_ID {
            true => Ok(Self(s)),
            false => Err(ValueError::new(FieldErrorKind::Invalid, "a key id: 24 lowercase hex digits")),
        }
    }

    /// A fresh id from 12 random bytes.
    pub fn from_bytes(bytes: [u8; 12]) -> Self {
        Self(hex::encode(bytes))
    }

    pub fn platform() -> Self {
        Self(PLATFORM_KEY_ID.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for KeyId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^[0-9a-f]{{{}}}$", Self::HEX_LEN))).into()
    }
}

impl utoipa::ToSchema for KeyId {}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes that must never be printed: `Debug` shows `[redacted]`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The server's pepper: the key of every stored key hash and of every device secret.
pub type Pepper = SecretBytes;

/// A presented token: `fpk_<key id>_<secret as 64 hex digits>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub key_id: KeyId,
    pub secret: SecretBytes,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}, [redacted])", self.key_id)
    }
}

impl ApiToken {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::new(FieldErrorKind::Invalid, "a facepay key: fpk_<key id>_<secret>");
        let rest = s.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
        let key_id = KeyId::parse(id).map_err(|_| bad())?;
        let secret = hex::decode(secret).map_err(|_| bad())?;
        if secret.len() != 32 {
            return Err(bad());
        }
        Ok(Self { key_id, secret: SecretBytes(secret) })
    }

    /// The token as shown once to its owner. Not `Display`, so it is never formatted by accident.
    pub fn reveal(&self) -> String {
        format!("{TOKEN_PREFIX}{}_{}", self.key_id, hex::encode(&self.secret.0))
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    parts.iter().for_each(|p| m.update(p));
    let mut out = [0_u8; 32];
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// `HMAC-SHA256(key, parts concatenated)`: for MACs of the server's own (cursors).
pub fn hmac_sha256(key: &SecretBytes, parts: &[&[u8]]) -> [u8; 32] {
    mac(&key.0, parts)
}

/// What the store keeps of a secret: `HMAC-SHA256(pepper, secret)`.
pub fn secret_hash(pepper: &Pepper, secret: &SecretBytes) -> [u8; 32] {
    mac(&pepper.0, &[b"facepay-key-hash-v1:", &secret.0])
}

/// Whether `secret` hashes to `stored` (constant time).
pub fn secret_matches(pepper: &Pepper, secret: &SecretBytes, stored: &[u8]) -> bool {
    let mut m = <HmacSha256 as Mac>::new_from_slice(&pepper.0).expect("HMAC takes any key length");
    m.update(b"facepay-key-hash-v1:");
    m.update(&secret.0);
    m.verify_slice(stored).is_ok()
}

/// A device key's secret, derived from the pepper and the key id (see the module docs).
pub fn device_secret(pepper: &Pepper, key_id: &KeyId) -> SecretBytes {
    SecretBytes(mac(&pepper.0, &[b"facepay-device-secret-v1:", key_id.as_str().as_bytes()]).to_vec())
}

/// The platform's signing secret (for enrolments, funding, freezes and limits on the bus).
pub fn platform_secret(pepper: &Pepper) -> SecretBytes {
    SecretBytes(mac(&pepper.0, &[b"facepay-platform-secret-v1"]).to_vec())
}

/// An event's signature, as carried in the `facepay-signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSignature {
    pub key_id: KeyId,
    /// When the sender signed, unix seconds.
    pub signed_at: i64,
    pub mac: [u8; 32],
}

impl EventSignature {
    /// Signs `body` (the exact bytes sent) for `event_id` at `signed_at`.
    pub fn sign(key_id: KeyId, secret: &SecretBytes, signed_at: i64, event_id: Uuid, body: &[u8]) -> Self {
        let head = format!("facepay-v1\n{signed_at}\n{event_id}\n");
        Self { key_id, signed_at, mac: mac(&secret.0, &[head.as_bytes(), body]) }
    }

    /// Whether the MAC is `secret`'s over `event_id` and `body` (constant time).
    pub fn verify(&self, secret: &SecretBytes, event_id: Uuid, body: &[u8]) -> bool {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&secret.0).expect("HMAC takes any key length");
        m.update(format!("facepay-v1\n{}\n{event_id}\n", self.signed_at).as_bytes());
        m.update(body);
        m.verify_slice(&self.mac).is_ok()
    }

    /// `k=<key id>,t=<unix seconds>,v1=<hex>`.
    pub fn header(&self) -> String {
        format!("k={},t={},v1={}", self.key_id, self.signed_at, hex::encode(self.mac))
    }

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::new(FieldErrorKind::Invalid, "k=<key id>,t=<unix seconds>,v1=<64 hex digits>");
        let (mut k, mut t, mut v) = (None, None, None);
        for part in s.split(',') {
            match part.trim().split_once('=') {
                Some(("k", x)) => k = Some(KeyId::parse(x).map_err(|_| bad())?),
                Some(("t", x)) => t = Some(x.parse::<i64>().map_err(|_| bad())?),
                Some(("v1", x)) => {
                    let bytes = hex::decode(x).map_err(|_| bad())?;
                    v = Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        match (k, t, v) {
            (Some(key_id), Some(signed_at), Some(mac)) => Ok(Self { key_id, signed_at, mac }),
            _ => Err(bad()),
        }
    }
}

/// The record header the platform's HTTP ingest puts on each event it passes to the
/// device-events topic: when it accepted the event, under the platform's MAC.
pub const ACCEPTED_HEADER: &str = "facepay-accepted";

/// When the platform accepted an event, under its MAC over the time and the exact body
/// (`<unix ms>.<hex MAC>`): the matcher takes the accept time of an event the HTTP path passed
/// on, so a backlog between the two is not mistaken for a late event. A device cannot make
/// one: it has not the platform's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptStamp {
    pub accepted_at_ms: i64,
    pub mac: [u8; 32],
}

impl AcceptStamp {
    pub fn sign(platform: &SecretBytes, accepted_at_ms: i64, body: &[u8]) -> Self {
        let head = format!("facepay-accepted-v1\n{accepted_at_ms}\n");
        Self { accepted_at_ms, mac: mac(&platform.0, &[head.as_bytes(), body]) }
    }

    /// The accept time, if `header` is the platform's stamp of `body`.
    pub fn verify(header: &str, platform: &SecretBytes, body: &[u8]) -> Option<i64> {
        let (ms, given) = header.split_once('.')?;
        let ms: i64 = ms.parse().ok()?;
        let given = hex::decode(given).ok()?;
        let mut m = <HmacSha256 as Mac>::new_from_slice(&platform.0).expect("HMAC takes any key length");
        m.update(format!("facepay-accepted-v1\n{ms}\n").as_bytes());
        m.update(body);
        m.verify_slice(&given).is_ok().then_some(ms)
    }

    pub fn header(&self) -> String {
        format!("{}.{}", self.accepted_at_ms, hex::encode(self.mac))
    }
}

/// Masks a payer-facing identifier for logs: the first 4 characters, then `***`.
pub fn mask(id: &str) -> String {
    let head: String = id.chars().take(4).collect();
    format!("{head}***")
}
