//! Accuracy of the default policy on the synthetic model: 2 000 enrolled identities,
//! 500 genuine captures and 500 strangers, searched globally without phone digits.

use facepay_domain::event::FaceCaptured;
use facepay_domain::{Embedding, FaceCode, MerchantId, PayerId, Score};
use facepay_matcher::synthetic::SyntheticFaces;
use facepay_matcher::{Gallery, Identification, MatchPolicy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const IDENTITIES: usize = 2_000;
const GENUINE_CAPTURES: usize = 500;
const STRANGERS: usize = 500;

fn payer(identity: usize) -> PayerId {
    PayerId::parse(format!("payer-{identity}")).expect("valid id")
}

fn capture(embedding: Embedding) -> FaceCaptured {
    FaceCaptured {
        face_code: FaceCode::parse("134567890123456789").expect("18 digits"),
        embedding,
        liveness: Score::try_from(0.95).expect("in range"),
        phone_last4: None,
    }
}

fn enrolled(faces: &SyntheticFaces) -> Gallery {
    let mut g = Gallery::new();
    for identity in 0..faces.len() {
        g.enroll(payer(identity), &faces.enrolment(identity), None);
    }
    g
}

fn identify(g: &mut Gallery, embedding: Embedding) -> Identification {
    let at = MerchantId::parse("1900000101").expect("valid id");
    g.identify(&at, &capture(embedding), &MatchPolicy::default()).expect("search runs")
}

#[test]
fn given_2000_identities_when_searched_at_default_thresholds_then_tar_99_and_no_false_accept() {
    let faces = SyntheticFaces::new(20_260_302, IDENTITIES);
    let mut g = enrolled(&faces);
    let mut rng = ChaCha8Rng::seed_from_u64(42);

    let (mut correct, mut wrong, mut lowest_genuine) = (0, 0, f32::MAX);
    for _ in 0..GENUINE_CAPTURES {
        let identity = rng.random_range(0..IDENTITIES);
        let id = identify(&mut g, faces.capture(identity, &mut rng));
        lowest_genuine = lowest_genuine.min(id.score);
        match id.payer_id {
            Some(p) if p == payer(identity) => correct += 1,
            Some(_) => wrong += 1,
            None => {}
        }
    }
    let (mut false_accepts, mut highest_stranger) = (0, f32::MIN);
    for _ in 0..STRANGERS {
        let id = identify(&mut g, SyntheticFaces::stranger(&mut rng));
        highest_stranger = highest_stranger.max(id.score);
        false_accepts += usize::from(id.payer_id.is_some());
    }

    let tar = correct as f64 / GENUINE_CAPTURES as f64;
    eprintln!(
        "TAR {tar:.4} ({correct}/{GENUINE_CAPTURES}), wrong payer {wrong}, false accepts {false_accepts}/{STRANGERS}, \
         lowest genuine score {lowest_genuine:.3}, highest stranger score {highest_stranger:.3}"
    );
    assert!(tar >= 0.99, "TAR {tar}");
    assert_eq!(wrong, 0, "a genuine capture resolved to someone else");
    assert_eq!(false_accepts, 0, "a stranger was accepted");
}
