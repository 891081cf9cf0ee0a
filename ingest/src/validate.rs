//! Stage 1: bytes in, a well-formed event from a registered device out, or a rejection kept
//! with its reason. [`validate_signed`] adds the signature check (see [`crate::authenticity`]).

use std::sync::{Arc, RwLock};

use chrono::Utc;
use facepay_domain::limits::REJECTED_RAW_BYTES_MAX;
use facepay_domain::{parse_event, Envelope, FieldError, FieldErrorKind, Origin};
use facepay_ledger::store::{Registry, RejectedEvent};

use crate::authenticity::{DeviceVerifier, Position};

/// The fleet registry, shared by the validation stage and the HTTP ingest path.
pub type SharedRegistry = Arc<RwLock<Registry>>;

/// Parses `bytes` and checks the origin against the registry: the device must exist and be
/// bound to the merchant and store the event names.
pub fn validate(bytes: &[u8], registry: &SharedRegistry) -> Result<Envelope, FieldError> {
    let envelope = parse_event(bytes)?;
    check_origin(&envelope, registry)?;
    Ok(envelope)
}

/// [`validate`], then the event's signature `header` over `bytes` (see
/// [`crate::authenticity`]): the one check every inbound path runs.
pub fn validate_signed(
    bytes: &[u8],
    header: Option<&str>,
    registry: &SharedRegistry,
    verifier: &DeviceVerifier,
    reference: i64,
    position: Position,
) -> Result<Envelope, FieldError> {
    let envelope = validate(bytes, registry)?;
    let registry = registry.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    verifier.verify(&envelope, bytes, header, &registry, reference, position)?;
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

/// A rejection record for `bytes`, with as much of the event as could be read.
pub fn rejection(bytes: &[u8], source: &str, err: &FieldError) -> RejectedEvent {
    let head: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let text = |key: &str| head.as_ref().and_then(|v| v.get(key)).and_then(|v| v.as_str()).map(str::to_string);
    let cut = bytes.len().min(REJECTED_RAW_BYTES_MAX);
    RejectedEvent {
        received_at: Utc::now(),
        source: source.to_string(),
        event_id: text("event_id").and_then(|s| uuid::Uuid::parse_str(&s).ok()),
        kind: text("type"),
        reason_code: err.kind.as_str().to_string(),
        field: Some(err.field.clone()),
        message: err.message.clone(),
        raw: bytes[..cut].to_vec(),
        raw_truncated: cut < bytes.len(),
    }
}
