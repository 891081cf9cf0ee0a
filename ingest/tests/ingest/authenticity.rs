//! The validate stage's signature checks, on their own: authentication before anything else,
//! who may sign what, the clock window, and replays told apart from redeliveries.

use std::sync::{Arc, RwLock};

use chrono::Utc;
use facepay_domain::auth::{device_secret, platform_secret, EventSignature, KeyId, Pepper, Role};
use facepay_domain::{DeviceId, DeviceRef, FieldErrorKind, MerchantId, StoreId};
use facepay_ingest::authenticity::{DeviceVerifier, Position, Refusal};
use facepay_ingest::validate::validate_signed;
use facepay_ingest::SharedRegistry;
use facepay_ledger::credentials::Credential;
use facepay_ledger::store::Registry;
use uuid::Uuid;

fn pepper() -> Pepper {
    Pepper::new(b"a test pepper of at least thirty-two bytes".to_vec())
}

fn device() -> DeviceRef {
    DeviceRef {
        merchant_id: MerchantId::parse("1900000101").unwrap(),
        store_id: StoreId::parse("S01").unwrap(),
        device_id: DeviceId::parse("DEV-1").unwrap(),
    }
}

fn key(revoked: bool) -> Credential {
    let d = device();
    Credential {
        key_id: KeyId::from_bytes([3; 12]),
        role: Role::Device,
        merchant_id: Some(d.merchant_id),
        store_id: Some(d.store_id),
        device_id: Some(d.device_id),
        secret_hash: String::new(),
        label: String::new(),
        created_by: "test".into(),
        created_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::days(1),
        revoked_at: revoked.then(Utc::now),
    }
}

fn registry(revoked: bool) -> SharedRegistry {
    let mut r = Registry::default();
    let d = device();
    r.merchants.insert(d.merchant_id.clone(), "M".into());
    r.devices.insert(d.device_id.clone(), d);
    let k = key(revoked);
    r.device_keys.insert(k.key_id.clone(), k);
    Arc::new(RwLock::new(r))
}

fn body(n: u128, device: bool) -> Vec<u8> {
    let mut v = serde_json::json!({
        "event_id": Uuid::from_u128(n).to_string(), "schema_version": 1,
        "occurred_at": Utc::now().to_rfc3339(),
        "type": if device { "payment_query" } else { "account_funded" },
        "payload": if device { serde_json::json!({"out_trade_no": "Q"}) } else { serde_json::json!({"payer_id": "u-1", "amount": "1.00"}) },
    });
    if device {
        v["merchant_id"] = "1900000101".into();
        v["store_id"] = "S01".into();
        v["device_id"] = "DEV-1".into();
    }
    serde_json::to_vec(&v).unwrap()
}

fn signed(n: u128, bytes: &[u8], platform: bool, at: i64) -> String {
    let (id, secret) = match platform {
        true => (KeyId::platform(), platform_secret(&pepper())),
        false => (KeyId::from_bytes([3; 12]), device_secret(&pepper(), &KeyId::from_bytes([3; 12]))),
    };
    EventSignature::sign(id, &secret, at, Uuid::from_u128(n), bytes).header()
}

/// What validation makes of `bytes` signed `sig`, accepted at `at` (unix seconds): `Ok`, or
/// the refusal's kind, with `U` for a refusal before authentication (kept nowhere) and `K`
/// for an authenticated sender's (kept).
fn check(
    v: &DeviceVerifier,
    reg: &SharedRegistry,
    bytes: &[u8],
    sig: &str,
    at: i64,
    pos: Position,
) -> Result<(), (char, FieldErrorKind)> {
    let at = chrono::DateTime::from_timestamp(at, 0).unwrap();
    validate_signed(bytes, Some(sig), reg, v, at, pos).map(|_| ()).map_err(|r| match r {
        Refusal::Unauthenticated(e) => ('U', e.kind),
        Refusal::Invalid { error, .. } => ('K', error.kind),
    })
}

#[test]
fn a_kafka_redelivery_is_not_a_replay_but_a_second_message_is() {
    let (v, reg, now) = (DeviceVerifier::new(pepper()), registry(false), Utc::now().timestamp());
    let bytes = body(1, true);
    let sig = signed(1, &bytes, false, now);
    let at = |offset| Position::Record { partition: 0, offset };
    assert_eq!(check(&v, &reg, &bytes, &sig, now, at(10)), Ok(()));
    assert_eq!(check(&v, &reg, &bytes, &sig, now, at(10)), Ok(()), "the same record again");
    assert_eq!(check(&v, &reg, &bytes, &sig, now, at(11)), Err(('K', FieldErrorKind::Replayed)));
    assert_eq!(check(&v, &reg, &bytes, &sig, now, Position::Fresh), Err(('K', FieldErrorKind::Replayed)));
}

#[test]
fn keys_are_bound_to_their_sender_and_their_time() {
    let (v, now) = (DeviceVerifier::new(pepper()), Utc::now().timestamp());
    let reg = registry(false);
    let (dev, plat) = (body(2, true), body(3, false));
    assert_eq!(check(&v, &reg, &plat, &signed(3, &plat, true, now), now, Position::Fresh), Ok(()));
    assert_eq!(
        check(&v, &reg, &plat, &signed(3, &plat, false, now), now, Position::Fresh),
        Err(('K', FieldErrorKind::WrongOrigin)),
        "a device may not sign platform events"
    );
    assert_eq!(
        check(&v, &reg, &dev, &signed(2, &dev, true, now), now, Position::Fresh),
        Err(('K', FieldErrorKind::WrongOrigin)),
        "device events need the device's key"
    );
    assert_eq!(
        check(&v, &reg, &dev, &signed(2, &dev, false, now - 301), now, Position::Fresh),
        Err(('U', FieldErrorKind::ClockSkew))
    );
    assert_eq!(
        check(&v, &reg, &dev, &signed(2, &dev, false, now + 301), now, Position::Fresh),
        Err(('U', FieldErrorKind::ClockSkew))
    );
    let revoked = registry(true);
    assert_eq!(
        check(&v, &revoked, &dev, &signed(2, &dev, false, now), now, Position::Fresh),
        Err(('U', FieldErrorKind::BadSignature))
    );
    let other_pepper = DeviceVerifier::new(Pepper::new(b"another pepper, just as long as the first".to_vec()));
    assert_eq!(
        check(&other_pepper, &reg, &dev, &signed(2, &dev, false, now), now, Position::Fresh),
        Err(('U', FieldErrorKind::BadSignature))
    );
    assert_eq!(check(&v, &reg, &dev, &signed(2, &dev, false, now), now, Position::Unchecked), Ok(()));
    assert_eq!(
        check(&v, &reg, &dev, &signed(2, &dev, false, now), now, Position::Unchecked),
        Ok(()),
        "replays are checked further on"
    );
}

/// Authentication comes first: an unsigned or wrongly signed event is refused the same way
/// whatever it names (an unknown merchant, another merchant's device, garbage), so nothing
/// of the registry shows through; a device key speaks only for its own device.
#[test]
fn nothing_is_read_before_the_signature_and_a_key_speaks_for_its_device_only() {
    let (v, reg, now) = (DeviceVerifier::new(pepper()), registry(false), Utc::now().timestamp());
    let named = |merchant: &str, device: &str| {
        let mut b: serde_json::Value = serde_json::from_slice(&body(20, true)).unwrap();
        b["merchant_id"] = merchant.into();
        b["device_id"] = device.into();
        serde_json::to_vec(&b).unwrap()
    };
    let wrong_key = KeyId::from_bytes([9; 12]);
    for bytes in [
        named("1900000101", "DEV-1"),
        named("no-such-merchant", "DEV-1"),
        named("1900000101", "DEV-GHOST"),
        b"{not json".to_vec(),
    ] {
        let forged = EventSignature::sign(
            wrong_key.clone(),
            &device_secret(&pepper(), &wrong_key),
            now,
            Uuid::from_u128(20),
            &bytes,
        );
        assert_eq!(
            check(&v, &reg, &bytes, &forged.header(), now, Position::Fresh),
            Err(('U', FieldErrorKind::BadSignature))
        );
        assert_eq!(
            check(&v, &reg, &bytes, "k=zz,t=1,v1=00", now, Position::Fresh),
            Err(('U', FieldErrorKind::BadSignature))
        );
    }
    // Signed by DEV-1's own key, an event naming another device is the sender's own fault:
    // kept, as `wrong_origin`.
    let bytes = named("1900000101", "DEV-2");
    assert_eq!(
        check(&v, &reg, &bytes, &signed(20, &bytes, false, now), now, Position::Fresh),
        Err(('K', FieldErrorKind::WrongOrigin))
    );
}

/// An authenticated sender's rejections are kept within a budget per key: a device that
/// floods bad events cannot fill the rejected-events table.
#[test]
fn an_authenticated_senders_kept_rejections_are_budgeted() {
    let (v, reg, now) = (DeviceVerifier::new(pepper()), registry(false), Utc::now().timestamp());
    let mut kept = 0;
    for n in 0..1_000_u128 {
        let mut b: serde_json::Value = serde_json::from_slice(&body(100 + n, true)).unwrap();
        b["payload"]["out_trade_no"] = "has a space".into();
        let bytes = serde_json::to_vec(&b).unwrap();
        let at = chrono::DateTime::from_timestamp(now, 0).unwrap();
        match validate_signed(&bytes, Some(&signed(100 + n, &bytes, false, now)), &reg, &v, at, Position::Fresh) {
            Err(Refusal::Invalid { keep: true, .. }) => kept += 1,
            Err(Refusal::Invalid { keep: false, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    let burst = facepay_domain::limits::REJECTIONS_KEPT_PER_KEY_BURST as usize;
    assert!((burst..burst + 5).contains(&kept), "{kept} of 1000 kept");
}
