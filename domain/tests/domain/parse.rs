//! Parse, don't validate: every bad field is refused with its name and cause.

use chrono::{DateTime, Utc};
use facepay_domain::limits::{DEVICE_CLOCK_SKEW_MAX_MS, EMBEDDING_DIM};
use facepay_domain::{Envelope, EventBody, FieldError, FieldErrorKind, Origin};
use serde_json::{json, Value};

/// When facepay accepted the events below: a second after they say they occurred.
fn accepted() -> DateTime<Utc> {
    "2026-03-02T01:15:08Z".parse().unwrap()
}

fn parse_event(bytes: &[u8]) -> Result<Envelope, FieldError> {
    facepay_domain::parse_event(bytes, accepted())
}

fn payment(amount: Value, out_trade_no: &str) -> Value {
    json!({
        "event_id": "0b0e5a52-2a56-4c51-9d0e-8f7a7c2f0c11",
        "type": "payment_requested",
        "schema_version": 1,
        "occurred_at": "2026-03-02T09:15:07+08:00",
        "merchant_id": "1900000101",
        "store_id": "S01",
        "device_id": "DEV-0042",
        "payload": { "out_trade_no": out_trade_no, "amount": amount, "face_code": "134567890123456789" }
    })
}

fn err(v: Value) -> (String, FieldErrorKind) {
    let e = parse_event(v.to_string().as_bytes()).unwrap_err();
    (e.field, e.kind)
}

#[test]
fn a_good_payment_parses_and_round_trips() {
    let v = payment(json!("60.00"), "S01-20260302-000001");
    let env = parse_event(v.to_string().as_bytes()).unwrap();
    let EventBody::PaymentRequested(p) = &env.body else { panic!("wrong type") };
    assert_eq!(p.amount.fen(), 6000);
    assert!(matches!(env.origin, Origin::Device(_)));
    let again = parse_event(&env.to_json()).unwrap();
    assert_eq!(again, env);
    assert_eq!(env.accepted_at, accepted(), "the platform's time, not the sender's");
}

#[test]
fn an_occurred_at_far_from_the_accept_time_is_refused_either_way() {
    let at = |t: &str| {
        let mut v = payment(json!("1.00"), "A1");
        v["occurred_at"] = json!(t);
        v
    };
    for t in ["2001-01-01T00:00:00Z", "2030-06-01T00:00:00Z", "2026-03-02T01:20:09Z", "2026-03-02T01:10:07Z"] {
        assert_eq!(err(at(t)), ("occurred_at".into(), FieldErrorKind::OccurredAtSkew), "{t}");
    }
    let edge = accepted() + chrono::Duration::milliseconds(DEVICE_CLOCK_SKEW_MAX_MS);
    let env = parse_event(at(&edge.to_rfc3339()).to_string().as_bytes()).expect("within the window");
    assert_eq!((env.occurred_at, env.accepted_at), (edge, accepted()), "the claim is kept, the accept time rules");
}

#[test]
fn each_bad_field_is_named() {
    assert_eq!(err(payment(json!("60.001"), "A1")), ("payload.amount".into(), FieldErrorKind::TooManyDecimals));
    assert_eq!(err(payment(json!("0.00"), "A1")), ("payload.amount".into(), FieldErrorKind::NotPositive));
    assert_eq!(err(payment(json!("-1.00"), "A1")), ("payload.amount".into(), FieldErrorKind::NotPositive));
    assert_eq!(err(payment(json!(60.0), "A1")).0, "payload.amount");
    let long = "x".repeat(33);
    assert_eq!(err(payment(json!("1.00"), &long)), ("payload.out_trade_no".into(), FieldErrorKind::TooLong));
    assert_eq!(err(payment(json!("1.00"), "a b")), ("payload.out_trade_no".into(), FieldErrorKind::BadCharacter));
}

#[test]
fn envelope_faults_are_named() {
    let mut v = payment(json!("1.00"), "A1");
    v.as_object_mut().unwrap().remove("device_id");
    assert_eq!(err(v), ("device_id".into(), FieldErrorKind::Missing));

    let mut v = payment(json!("1.00"), "A1");
    v["type"] = json!("teleport");
    assert_eq!(err(v), ("type".into(), FieldErrorKind::UnknownType));

    let mut v = payment(json!("1.00"), "A1");
    v["schema_version"] = json!(9);
    assert_eq!(err(v), ("schema_version".into(), FieldErrorKind::UnsupportedVersion));

    let mut v = payment(json!("1.00"), "A1");
    v["payload"].as_object_mut().unwrap().remove("face_code");
    assert_eq!(err(v), ("payload.face_code".into(), FieldErrorKind::Missing));

    let e = parse_event(b"{not json").unwrap_err();
    assert_eq!((e.field.as_str(), e.kind), (".", FieldErrorKind::Malformed));
}

#[test]
fn a_payload_that_names_a_field_twice_is_refused_not_read_as_its_last() {
    // Two JSON readers may take different copies of a repeated field (the first, the last):
    // the amount a device signed must be the one facepay reads, so neither copy is chosen.
    let text =
        payment(json!("1.00"), "A1").to_string().replace(r#""amount":"1.00""#, r#""amount":"1.00","amount":"900.00""#);
    assert!(text.contains("900.00"), "{text}");
    let e = parse_event(text.as_bytes()).unwrap_err();
    assert_eq!(e.field, "payload.amount", "{e:?}");

    let mut v = payment(json!("1.00"), "A1");
    v.as_object_mut().unwrap().remove("payload");
    assert_eq!(err(v).0, "payload");
}

#[test]
fn embeddings_of_the_wrong_length_or_huge_values_are_refused() {
    let capture = |embedding: Value| {
        json!({
            "event_id": "0b0e5a52-2a56-4c51-9d0e-8f7a7c2f0c12", "type": "face_captured", "schema_version": 1,
            "occurred_at": "2026-03-02T09:15:05+08:00",
            "merchant_id": "1900000101", "store_id": "S01", "device_id": "DEV-0042",
            "payload": { "face_code": "134567890123456789", "embedding": embedding, "liveness": 0.98 }
        })
    };
    assert_eq!(err(capture(json!(vec![0.1; 3]))), ("payload.embedding".into(), FieldErrorKind::WrongDimension));
    let mut huge = vec![json!(0.1); EMBEDDING_DIM];
    huge[3] = json!(1e300);
    assert_eq!(err(capture(Value::Array(huge))), ("payload.embedding".into(), FieldErrorKind::NotFinite));
    let good = parse_event(capture(json!(vec![0.1; EMBEDDING_DIM])).to_string().as_bytes());
    assert!(good.is_ok());
}

/// An event of `kind` with `payload`, naming the origin fields given.
fn named(kind: &str, payload: Value, origin: &[(&str, &str)]) -> Value {
    let mut v = payment(json!("1.00"), "A1");
    for f in ["merchant_id", "store_id", "device_id"] {
        v.as_object_mut().unwrap().remove(f);
    }
    for (f, value) in origin {
        v[*f] = json!(value);
    }
    v["type"] = json!(kind);
    v["payload"] = payload;
    v
}

#[test]
fn each_event_type_names_only_the_origins_whose_it_is() {
    let device = [("merchant_id", "1900000101"), ("store_id", "S01"), ("device_id", "DEV-0042")];
    let merchant = [("merchant_id", "1900000101")];
    let fund = json!({"payer_id": "u-1", "amount": "1.00"});
    let limit = json!({"single_limit": "5000.00"});
    let refund = json!({"out_trade_no": "A1", "out_refund_no": "R1", "amount": "1.00"});
    // Given a device's own origin on platform and merchant events, when parsed: refused, so no
    // device key can fund a wallet, enrol a face or change its merchant's limit or fee.
    for (kind, payload) in [
        ("account_funded", &fund),
        ("account_frozen", &json!({"payer_id": "u-1"})),
        ("face_deleted", &json!({"payer_id": "u-1"})),
        ("merchant_limit_changed", &limit),
        ("merchant_fee_rate_changed", &json!({"fee_rate_ppm": 0})),
    ] {
        assert_eq!(
            err(named(kind, payload.clone(), &device)),
            ("device_id".into(), FieldErrorKind::WrongOrigin),
            "{kind}"
        );
    }
    assert_eq!(
        err(named("account_funded", fund.clone(), &merchant)),
        ("merchant_id".into(), FieldErrorKind::WrongOrigin)
    );
    assert_eq!(
        err(named("merchant_limit_changed", limit.clone(), &[])),
        ("merchant_id".into(), FieldErrorKind::Missing)
    );
    assert_eq!(
        err(named("payment_query", json!({"out_trade_no": "A1"}), &merchant)),
        ("store_id".into(), FieldErrorKind::Missing)
    );
    // A refund is the merchant's: from its device, or from the merchant itself (the console).
    let env = parse_event(named("refund_requested", refund.clone(), &merchant).to_string().as_bytes()).unwrap();
    assert!(matches!(env.origin, Origin::Merchant(_)));
    let env = parse_event(named("refund_requested", refund, &device).to_string().as_bytes()).unwrap();
    assert!(matches!(env.origin, Origin::Device(_)));
    assert!(matches!(
        parse_event(named("account_funded", fund, &[]).to_string().as_bytes()).unwrap().origin,
        Origin::Platform
    ));
}
