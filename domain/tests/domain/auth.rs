//! Tokens and signatures: round trips, tampering, and secrets that never print.

use facepay_domain::auth::{
    device_secret, secret_hash, secret_matches, ApiToken, EventSignature, KeyId, Pepper, SecretBytes,
};
use uuid::Uuid;

fn pepper() -> Pepper {
    Pepper::new(b"a test pepper of at least thirty-two bytes".to_vec())
}

#[test]
fn a_signature_round_trips_and_fails_on_any_change() {
    let key = KeyId::from_bytes([7; 12]);
    let secret = device_secret(&pepper(), &key);
    let (id, body) = (Uuid::from_u128(1), br#"{"event_id":"x"}"#.as_slice());
    let sig = EventSignature::sign(key.clone(), &secret, 1_700_000_000, id, body);
    let parsed = EventSignature::parse(&sig.header()).unwrap();
    assert_eq!(parsed, sig);
    assert!(parsed.verify(&secret, id, body));
    assert!(!parsed.verify(&secret, Uuid::from_u128(2), body), "another event id");
    assert!(!parsed.verify(&secret, id, b"{\"event_id\":\"y\"}"), "another body");
    let later = EventSignature { signed_at: sig.signed_at + 1, ..sig.clone() };
    assert!(!later.verify(&secret, id, body), "another time");
    let other = device_secret(&pepper(), &KeyId::from_bytes([8; 12]));
    assert!(!sig.verify(&other, id, body), "another device's secret");
    for bad in ["", "k=x,t=1,v1=00", "t=1,v1=00", &sig.header().replace("v1=", "v2=")] {
        assert!(EventSignature::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn tokens_round_trip_hash_under_the_pepper_and_never_print() {
    let token = ApiToken { key_id: KeyId::from_bytes([1; 12]), secret: SecretBytes::new(vec![9; 32]) };
    let shown = token.reveal();
    assert_eq!(ApiToken::parse(&shown).unwrap(), token);
    let stored = secret_hash(&pepper(), &token.secret);
    assert!(secret_matches(&pepper(), &token.secret, &stored));
    assert!(!secret_matches(
        &Pepper::new(b"another pepper, just as long as the first".to_vec()),
        &token.secret,
        &stored
    ));
    assert!(!secret_matches(&pepper(), &SecretBytes::new(vec![8; 32]), &stored));
    let printed = format!("{token:?} {:?} {:?}", token.secret, pepper());
    assert!(!printed.contains(&hex::encode([9_u8; 32])) && !printed.contains("pepper"), "{printed}");
    for bad in ["", "fpk_", "fpk_0101_00", &shown.replace("fpk_", "xpk_"), &shown[..shown.len() - 2]] {
        assert!(ApiToken::parse(bad).is_err(), "{bad}");
    }
}
