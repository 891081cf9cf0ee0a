//! Stage 1: bytes in, a well-formed event from an authenticated sender out, or a refusal.
//! [`validate_signed`] authenticates first (see [`crate::authenticity`]), then parses, then
//! checks the origin against the signer and the registry; [`rejection`] is what is kept of
//! an authenticated sender's bad event, with its embeddings and phone digits redacted.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use facepay_domain::limits::REJECTED_RAW_BYTES_MAX;
use facepay_domain::{parse_event, Envelope, FieldError, FieldErrorKind, Origin};
use facepay_ledger::store::{Registry, RejectedEvent};
use sha2::{Digest, Sha256};

use crate::authenticity::{DeviceVerifier, Position, Refusal};

/// The fleet registry, shared by the validation stage and the HTTP ingest path.
pub type SharedRegistry = Arc<RwLock<Registry>>;

/// Parses `bytes`, accepted at `accepted_at`, and checks the origin against the registry: the
/// device must exist and be bound to the merchant and store the event names (for events
/// whose sender is already authenticated another way: an admin key).
pub fn validate(bytes: &[u8], registry: &SharedRegistry, accepted_at: DateTime<Utc>) -> Result<Envelope, FieldError> {
    let envelope = parse_event(bytes, accepted_at)?;
    check_origin(&envelope, registry)?;
    Ok(envelope)
}

/// The one check every inbound path runs: the signature `header` over `bytes` first (an
/// [`Refusal::Unauthenticated`] reads nothing else), then the event itself, its origin
/// against the signer and the registry, and replays (by `position`).
pub fn validate_signed(
    bytes: &[u8],
    header: Option<&str>,
    registry: &SharedRegistry,
    verifier: &DeviceVerifier,
    accepted_at: DateTime<Utc>,
    position: Position,
) -> Result<Envelope, Refusal> {
    let authenticated = {
        let registry = registry.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        verifier.authenticate(bytes, header, &registry, accepted_at).map_err(Refusal::Unauthenticated)?
    };
    // The budget is spent only by a refusal: `may_keep` takes a token.
    let invalid = |error| Refusal::Invalid {
        error,
        keep: verifier.may_keep(&authenticated.signer.key_id()),
        sender: authenticated.signer.device().cloned().map(Box::new),
    };
    let envelope = parse_event(bytes, accepted_at).map_err(invalid)?;
    authenticated.signer.may_send(&envelope).map_err(invalid)?;
    check_origin(&envelope, registry).map_err(invalid)?;
    verifier
        .remember(envelope.event_id, authenticated.signed_at, position, accepted_at.timestamp())
        .map_err(invalid)?;
    Ok(envelope)
}

/// Loads a device key the registry does not hold yet (created since it was read), so a new
/// device is served at once; unknown ids change nothing.
pub async fn learn_key(
    header: Option<&str>,
    registry: &SharedRegistry,
    store: &dyn facepay_ledger::LedgerStore,
) -> Result<(), facepay_ledger::StoreError> {
    let Some(sig) = header.and_then(|h| facepay_domain::auth::EventSignature::parse(h).ok()) else { return Ok(()) };
    let known = registry.read().unwrap_or_else(|p| p.into_inner()).device_keys.contains_key(&sig.key_id);
    if known || sig.key_id.as_str() == facepay_domain::auth::PLATFORM_KEY_ID {
        return Ok(());
    }
    if let Some(key) = store.key_get(&sig.key_id).await? {
        if key.role == facepay_domain::auth::Role::Device && key.revoked_at.is_none() {
            registry.write().unwrap_or_else(|p| p.into_inner()).device_keys.insert(key.key_id.clone(), key);
        }
    }
    Ok(())
}

/// Re-reads the registry (devices, device keys and their revocations, e.g. by `facepay keys
/// revoke` from another process) every `REGISTRY_REFRESH_MS`, while `registry` lives (its
/// last owner dropped ends it) and until `stop` resolves. A failed read keeps the last one.
pub async fn refresh_registry(
    registry: std::sync::Weak<RwLock<Registry>>,
    store: Arc<dyn facepay_ledger::store::RegistryStore>,
    stop: impl std::future::Future<Output = ()>,
) {
    let period = std::time::Duration::from_millis(facepay_domain::limits::REGISTRY_REFRESH_MS);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(period) => {}
        }
        let Some(shared) = registry.upgrade() else { return };
        match store.registry().await {
            Ok(fresh) => *shared.write().unwrap_or_else(|p| p.into_inner()) = fresh,
            Err(e) => tracing::warn!(error = %e, "registry refresh failed; keeping the last one"),
        }
    }
}

/// Checks an already-parsed envelope's origin against the registry.
pub fn check_origin(envelope: &Envelope, registry: &SharedRegistry) -> Result<(), FieldError> {
    let registry = registry.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let unknown = |field: &str, what: &str| FieldError::new(field, FieldErrorKind::Unknown, what.to_string());
    match &envelope.origin {
        Origin::Device(d) => {
            if !registry.merchants.contains_key(&d.merchant_id) {
                return Err(unknown("merchant_id", "no such merchant"));
            }
            match registry.devices.get(&d.device_id) {
                None => Err(unknown("device_id", "no such device")),
                Some(bound) if bound.merchant_id != d.merchant_id => {
                    Err(unknown("device_id", "the device is bound to another merchant"))
                }
                Some(bound) if bound.store_id != d.store_id => {
                    Err(unknown("store_id", "the device is bound to another store"))
                }
                Some(_) => Ok(()),
            }
        }
        Origin::Merchant(m) if !registry.merchants.contains_key(m) => Err(unknown("merchant_id", "no such merchant")),
        Origin::Merchant(_) | Origin::Platform => Ok(()),
    }
}

/// A rejection record for `bytes`, with as much of the event as could be read. Biometric
/// and personal fields are never kept in plain text (see [`redacted`]).
pub fn rejection(bytes: &[u8], source: &str, err: &FieldError) -> RejectedEvent {
    let head: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let text = |key: &str| head.as_ref().and_then(|v| v.get(key)).and_then(|v| v.as_str()).map(str::to_string);
    let (raw, raw_truncated) = redacted(bytes, head.clone());
    RejectedEvent {
        received_at: Utc::now(),
        source: source.to_string(),
        event_id: text("event_id").and_then(|s| uuid::Uuid::parse_str(&s).ok()),
        kind: text("type"),
        reason_code: err.kind.as_str().to_string(),
        field: Some(err.field.clone()),
        message: err.message.clone(),
        raw,
        raw_truncated,
    }
}

/// Fields whose values are never kept in plain text: face templates and phone digits.
const REDACTED_FIELDS: [&str; 2] = ["embedding", "phone_last4"];

/// What is kept of a refused body, at most [`REJECTED_RAW_BYTES_MAX`] bytes, and whether it
/// was cut. JSON holding a [`REDACTED_FIELDS`] value, at any depth: each such value becomes
/// `{"redacted": "sha256:<hex of its JSON text>", "bytes": <its length>}` (the rest written
/// again); JSON without one: its very bytes. Anything else: its digits masked (`#`), since a
/// broken body may still hold an embedding or a number.
pub fn redacted(bytes: &[u8], parsed: Option<serde_json::Value>) -> (Vec<u8>, bool) {
    let kept = match parsed {
        Some(mut value) => match redact_value(&mut value) {
            true => serde_json::to_vec(&value).unwrap_or_default(),
            false => bytes.to_vec(),
        },
        None => bytes.iter().map(|b| if b.is_ascii_digit() { b'#' } else { *b }).collect(),
    };
    let cut = kept.len().min(REJECTED_RAW_BYTES_MAX);
    (kept[..cut].to_vec(), cut < kept.len())
}

/// Redacts `value`'s [`REDACTED_FIELDS`] in place; whether it held any.
fn redact_value(value: &mut serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => map.iter_mut().fold(false, |found, (key, v)| {
            if !REDACTED_FIELDS.contains(&key.as_str()) {
                return redact_value(v) | found;
            }
            let text = v.to_string();
            let digest = hex::encode(Sha256::digest(text.as_bytes()));
            *v = serde_json::json!({ "redacted": format!("sha256:{digest}"), "bytes": text.len() });
            true
        }),
        serde_json::Value::Array(items) => items.iter_mut().fold(false, |found, v| redact_value(v) | found),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_and_phone_digits_are_redacted_at_any_depth() {
        let body = serde_json::json!({"type": "face_captured", "payload": {"embedding": [0.25, 0.5],
            "phone_last4": "0042", "nested": [{"embedding": [1.5]}]}});
        let (raw, cut) = redacted(body.to_string().as_bytes(), Some(body));
        let text = String::from_utf8(raw).unwrap();
        assert!(!cut);
        for secret in ["0.25", "0042", "1.5"] {
            assert!(!text.contains(secret), "{secret} kept in {text}");
        }
        assert_eq!(text.matches("sha256:").count(), 3, "{text}");
    }

    #[test]
    fn a_body_that_is_not_json_keeps_no_digit() {
        let (raw, _) = redacted(b"{\"embedding\": [0.1, 0.2", None);
        assert_eq!(String::from_utf8(raw).unwrap(), "{\"embedding\": [#.#, #.#");
    }
}
