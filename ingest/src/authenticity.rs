//! Device authenticity: every inbound event is signed, and checked here, in the validate
//! stage that the HTTP path, the in-process bus and the Kafka matcher all go through.
//!
//! **Authentication comes first**, before the event is parsed or the registry consulted:
//! [`DeviceVerifier::authenticate`] reads only the signature header and the body's
//! `event_id`, finds the key (a live device key, or the platform's), checks the MAC over the
//! exact bytes, then the signing time against the accept time (the platform's clock, within
//! [`SIGNATURE_WINDOW_SECS`]). Every failure there is [`Refusal::Unauthenticated`]: nothing
//! of it is kept or revealed (the HTTP path answers one 401 body, whatever the registry
//! holds), it is only counted. Once the sender is known, a bad event is
//! [`Refusal::Invalid`]: kept with its reason, as long as that sender's budget of kept
//! rejections lasts ([`REJECTIONS_KEPT_PER_KEY_PER_SEC`]).
//!
//! A device key may only speak for its own device: an event naming another device, store or
//! merchant is refused (`wrong_origin`), as is a device event signed by the platform or a
//! platform event signed by a device. An event id seen before from another message is a
//! replay. The replay memory is per process and bounded ([`REPLAY_CACHE_MAX`], and entries
//! older than twice the window are dropped: outside the window a replay fails the clock
//! check). Whatever slips past it (another process, a restart) still changes nothing: the
//! ledger answers a repeated event id from the stored outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use facepay_domain::auth::{
    device_secret, platform_secret, EventSignature, KeyId, Pepper, SecretBytes, PLATFORM_KEY_ID,
};
use facepay_domain::limits::{
    RATE_LIMITER_KEYS_MAX, REJECTIONS_KEPT_PER_KEY_BURST, REJECTIONS_KEPT_PER_KEY_PER_SEC, REPLAY_CACHE_MAX,
    SIGNATURE_WINDOW_SECS,
};
use facepay_domain::rate::RateLimiter;
use facepay_domain::{DeviceRef, Envelope, FieldError, FieldErrorKind, Origin};
use facepay_ledger::store::Registry;
use uuid::Uuid;

/// Where a message came from, for telling a redelivery from a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// HTTP or the in-process bus: each message is new, so a known event id is a replay.
    Fresh,
    /// A Kafka record: the same record delivered again is a redelivery, not a replay.
    Record { partition: i32, offset: i64 },
    /// Checked again further on (the HTTP path in front of Kafka): no replay check here.
    Unchecked,
}

/// Who signed an event whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// The platform (its own events, and admin-posted ones it signed for the bus).
    Platform,
    /// A device key, bound to this device of this store of this merchant.
    Device { key_id: KeyId, device: DeviceRef },
}

impl Signer {
    /// The device this signer speaks for, if it is a device.
    pub fn device(&self) -> Option<&DeviceRef> {
        match self {
            Signer::Platform => None,
            Signer::Device { device, .. } => Some(device),
        }
    }

    /// The key the sender signed with (the key of its rejection budget).
    pub fn key_id(&self) -> KeyId {
        match self {
            Signer::Platform => KeyId::platform(),
            Signer::Device { key_id, .. } => key_id.clone(),
        }
    }

    /// Refuses an event this signer may not send: a device key speaks for its own device
    /// only; the platform sends platform and merchant events only.
    pub fn may_send(&self, envelope: &Envelope) -> Result<(), FieldError> {
        let wrong = |m: &str| FieldError::new("device_id", FieldErrorKind::WrongOrigin, m);
        match (self, &envelope.origin) {
            (Signer::Device { device, .. }, Origin::Device(d)) if d == device => Ok(()),
            (Signer::Device { .. }, Origin::Device(_)) => Err(wrong("the event names another device than its key's")),
            (Signer::Device { .. }, _) => Err(wrong("a device key signs its own device's events only")),
            (Signer::Platform, Origin::Device(_)) => Err(wrong("a device event is signed by its device's key")),
            (Signer::Platform, _) => Ok(()),
        }
    }
}

/// A sender whose signature checked out, and when it signed (unix seconds).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub signer: Signer,
    pub signed_at: i64,
}

/// Why an event was not taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No valid, fresh signature: nothing of it is kept or revealed, it is only counted.
    Unauthenticated(FieldError),
    /// An authenticated sender's bad event: kept with its reason unless `keep` is false (the
    /// sender's budget of kept rejections is spent: refused and counted only). `sender` is
    /// the device whose key signed it (none for the platform or a key of another role): the
    /// one to answer on the outcomes topic.
    Invalid { error: FieldError, keep: bool, sender: Option<Box<DeviceRef>> },
}

impl Refusal {
    pub fn error(&self) -> &FieldError {
        match self {
            Refusal::Unauthenticated(e) | Refusal::Invalid { error: e, .. } => e,
        }
    }
}

/// Checks signatures, clocks and replays, and budgets kept rejections. One per process.
pub struct DeviceVerifier {
    pepper: Pepper,
    platform: SecretBytes,
    window_secs: i64,
    seen: Mutex<Seen>,
    kept: RateLimiter<KeyId>,
}

impl std::fmt::Debug for DeviceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceVerifier").field("window_secs", &self.window_secs).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Seen {
    by_id: HashMap<Uuid, Option<(i32, i64)>>,
    order: VecDeque<(i64, Uuid)>,
}

fn unauthenticated(kind: FieldErrorKind, message: &str) -> FieldError {
    FieldError::new("signature", kind, message)
}

/// Just the event id of a body, for checking its signature before anything else is read.
#[derive(serde::Deserialize)]
struct IdOnly {
    event_id: Uuid,
}

/// The `event_id` of an event's bytes, read alone (nothing else of the body is parsed).
pub fn event_id_of(body: &[u8]) -> Option<Uuid> {
    serde_json::from_slice::<IdOnly>(body).ok().map(|v| v.event_id)
}

impl DeviceVerifier {
    pub fn new(pepper: Pepper) -> Self {
        let platform = platform_secret(&pepper);
        let kept =
            RateLimiter::new(REJECTIONS_KEPT_PER_KEY_PER_SEC, REJECTIONS_KEPT_PER_KEY_BURST, RATE_LIMITER_KEYS_MAX);
        Self { pepper, platform, window_secs: SIGNATURE_WINDOW_SECS, seen: Mutex::new(Seen::default()), kept }
    }

    /// A verifier with a random pepper: nothing signed elsewhere passes it.
    pub fn ephemeral() -> Self {
        let bytes = [Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()].concat();
        Self::new(Pepper::new(bytes))
    }

    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }

    /// The platform's signing secret (the HTTP path signs admin-posted events with it).
    pub fn platform_secret(&self) -> &SecretBytes {
        &self.platform
    }

    /// Who signed `body`, by its signature `header`, at `accepted_at` (the platform's time):
    /// a live key of `registry` or the platform's, a MAC over these very bytes, and a signing
    /// time within the window. Reads nothing of the body but its `event_id`.
    pub fn authenticate(
        &self,
        body: &[u8],
        header: Option<&str>,
        registry: &Registry,
        accepted_at: DateTime<Utc>,
    ) -> Result<Authenticated, FieldError> {
        let bad = |m: &str| unauthenticated(FieldErrorKind::BadSignature, m);
        let header = header.ok_or_else(|| bad("the event is not signed"))?;
        let sig = EventSignature::parse(header).map_err(|e| bad(&e.message))?;
        let event_id = event_id_of(body).ok_or_else(|| bad("no event_id to check"))?;
        let (signer, secret) = self.signer_of(&sig.key_id, registry, accepted_at).ok_or_else(|| bad("unknown key"))?;
        if !sig.verify(&secret, event_id, body) {
            return Err(bad("the signature does not match the body"));
        }
        let skew = sig.signed_at - accepted_at.timestamp();
        if skew.abs() > self.window_secs {
            let message = format!("signed {skew}s from now; the window is ±{}s", self.window_secs);
            return Err(FieldError::new("signature.t", FieldErrorKind::ClockSkew, message));
        }
        Ok(Authenticated { signer, signed_at: sig.signed_at })
    }

    /// The signer a key id names and its secret: the platform, or a device key live at `at`
    /// and bound to a device.
    fn signer_of(&self, key_id: &KeyId, registry: &Registry, at: DateTime<Utc>) -> Option<(Signer, SecretBytes)> {
        if key_id.as_str() == PLATFORM_KEY_ID {
            return Some((Signer::Platform, self.platform.clone()));
        }
        let key = registry.device_keys.get(key_id).filter(|k| k.live_at(at))?;
        let device = DeviceRef {
            merchant_id: key.merchant_id.clone()?,
            store_id: key.store_id.clone()?,
            device_id: key.device_id.clone()?,
        };
        Some((Signer::Device { key_id: key_id.clone(), device }, device_secret(&self.pepper, key_id)))
    }

    /// Whether one more rejection from `key` may be kept (its budget per second).
    pub fn may_keep(&self, key: &KeyId) -> bool {
        self.kept.take(key, Instant::now()).is_ok()
    }

    /// Remembers `id` (signed at `signed_at`, unix seconds) unless `position` says not to;
    /// an id already received from another message is a replay.
    pub fn remember(&self, id: Uuid, signed_at: i64, position: Position, now: i64) -> Result<(), FieldError> {
        let at = match position {
            Position::Unchecked => return Ok(()),
            Position::Fresh => None,
            Position::Record { partition, offset } => Some((partition, offset)),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.by_id.get(&id) {
            Some(first) if at.is_some() && *first == at => return Ok(()),
            Some(_) => {
                return Err(FieldError::new("event_id", FieldErrorKind::Replayed, "this event id was already received"))
            }
            None => {}
        }
        let horizon = now - 2 * self.window_secs;
        while let Some(&(t, old)) = seen.order.front() {
            if t >= horizon && seen.order.len() < REPLAY_CACHE_MAX {
                break;
            }
            seen.order.pop_front();
            seen.by_id.remove(&old);
        }
        seen.by_id.insert(id, at);
        seen.order.push_back((signed_at, id));
        Ok(())
    }
}
