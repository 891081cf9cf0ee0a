//! Device authenticity: every inbound event is signed, and checked here, in the validate
//! stage that the HTTP path, the in-process bus and the Kafka matcher all go through.
//!
//! A device event must carry a `facepay-signature` (see [`facepay_domain::auth`]) made with a
//! live device key of **that** device (so of its merchant and store); platform and merchant
//! events (enrolments, funding, freezes, limits) must carry the platform's signature. The
//! signing time must lie within [`SIGNATURE_WINDOW_SECS`] of the reference time (the
//! receiver's clock over HTTP and on the in-process bus, the broker's timestamp of the message
//! over Kafka, so a backlog is not mistaken for stale input). An event id seen before from
//! another message is a replay. Each refusal is a [`FieldError`] (`bad_signature`,
//! `clock_skew`, `replayed`) and is kept, like any bad input, with its reason.
//!
//! The replay memory is per process and bounded ([`REPLAY_CACHE_MAX`], and entries older
//! than twice the window are dropped: outside the window a replay fails the clock check).
//! Whatever slips past it (another process, a restart) still changes nothing: the ledger
//! answers a repeated event id from the stored outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use facepay_domain::auth::{device_secret, platform_secret, EventSignature, Pepper, SecretBytes, PLATFORM_KEY_ID};
use facepay_domain::limits::{REPLAY_CACHE_MAX, SIGNATURE_WINDOW_SECS};
use facepay_domain::{Envelope, FieldError, FieldErrorKind, Origin};
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

/// Checks signatures, clocks and replays. One per process, shared.
pub struct DeviceVerifier {
    pepper: Pepper,
    platform: SecretBytes,
    window_secs: i64,
    seen: Mutex<Seen>,
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

fn refuse(kind: FieldErrorKind, message: &str) -> FieldError {
    FieldError::new("signature", kind, message)
}

impl DeviceVerifier {
    pub fn new(pepper: Pepper) -> Self {
        let platform = platform_secret(&pepper);
        Self { pepper, platform, window_secs: SIGNATURE_WINDOW_SECS, seen: Mutex::new(Seen::default()) }
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

    /// Checks `envelope`'s signature `header` over `body` against `registry`'s device keys,
    /// at `reference` (unix seconds), and remembers its id unless `position` says not to.
    pub fn verify(
        &self,
        envelope: &Envelope,
        body: &[u8],
        header: Option<&str>,
        registry: &Registry,
        reference: i64,
        position: Position,
    ) -> Result<(), FieldError> {
        let header = header.ok_or_else(|| refuse(FieldErrorKind::BadSignature, "the event is not signed"))?;
        let sig = EventSignature::parse(header).map_err(|e| refuse(FieldErrorKind::BadSignature, &e.message))?;
        let secret = self.secret_for(envelope, &sig, registry, reference)?;
        if (sig.signed_at - reference).abs() > self.window_secs {
            let message =
                format!("signed {}s from now; the window is ±{}s", sig.signed_at - reference, self.window_secs);
            return Err(FieldError::new("signature.t", FieldErrorKind::ClockSkew, message));
        }
        if !sig.verify(&secret, envelope.event_id, body) {
            return Err(refuse(FieldErrorKind::BadSignature, "the signature does not match the body"));
        }
        match position {
            Position::Unchecked => Ok(()),
            Position::Fresh => self.remember(envelope.event_id, sig.signed_at, None, reference),
            Position::Record { partition, offset } => {
                self.remember(envelope.event_id, sig.signed_at, Some((partition, offset)), reference)
            }
        }
    }

    /// The secret `sig` must be made with: the platform's for platform and merchant events,
    /// else the device key's, which must be live and this device's.
    fn secret_for(
        &self,
        envelope: &Envelope,
        sig: &EventSignature,
        registry: &Registry,
        reference: i64,
    ) -> Result<SecretBytes, FieldError> {
        let device = match (&envelope.origin, sig.key_id.as_str() == PLATFORM_KEY_ID) {
            (Origin::Device(d), false) => d,
            (Origin::Device(_), true) => {
                return Err(refuse(FieldErrorKind::BadSignature, "a device event needs its device's key"))
            }
            (_, true) => return Ok(self.platform.clone()),
            (_, false) => return Err(refuse(FieldErrorKind::BadSignature, "only the platform signs this event")),
        };
        let key = registry
            .device_keys
            .get(&sig.key_id)
            .ok_or_else(|| refuse(FieldErrorKind::BadSignature, "unknown or revoked key"))?;
        let now = chrono::DateTime::from_timestamp(reference, 0).unwrap_or_default();
        if !key.live_at(now) {
            return Err(refuse(FieldErrorKind::BadSignature, "the key is revoked or expired"));
        }
        let same = key.device_id.as_ref() == Some(&device.device_id)
            && key.merchant_id.as_ref() == Some(&device.merchant_id)
            && key.store_id.as_ref() == Some(&device.store_id);
        if !same {
            return Err(refuse(FieldErrorKind::BadSignature, "the key belongs to another device"));
        }
        Ok(device_secret(&self.pepper, &sig.key_id))
    }

    fn remember(&self, id: Uuid, signed_at: i64, at: Option<(i32, i64)>, reference: i64) -> Result<(), FieldError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.by_id.get(&id) {
            Some(first) if at.is_some() && *first == at => return Ok(()),
            Some(_) => return Err(refuse(FieldErrorKind::Replayed, "this event id was already received")),
            None => {}
        }
        let horizon = reference - 2 * self.window_secs;
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
