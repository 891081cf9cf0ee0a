//! A gallery split into shards decides exactly as the whole gallery does: each shard's
//! [`Gallery::partial`], merged ([`Partial::merge`]) and decided
//! ([`MatchPolicy::decide_merged`]), gives the same payer, rule, score and margin as
//! [`Gallery::identify`] over all payers at once, for every branch of the policy.

use std::collections::HashMap;

use facepay_domain::event::FaceCaptured;
use facepay_domain::{Embedding, FaceCode, MerchantId, PayerId, PhoneLast4, Score};
use facepay_matcher::policy::Partial;
use facepay_matcher::synthetic::SyntheticFaces;
use facepay_matcher::{Gallery, Identification, MatchPolicy, MatchRule};

const IDENTITIES: usize = 1_500;
const SHARDS: usize = 3;

fn payer(identity: usize) -> PayerId {
    PayerId::parse(format!("payer-{identity}")).expect("valid id")
}

fn twin(identity: usize) -> PayerId {
    PayerId::parse(format!("twin-{identity}")).expect("valid id")
}

/// Few distinct digits, so buckets hold several payers (and twins share their digits).
fn phone(identity: usize) -> PhoneLast4 {
    PhoneLast4::parse(&format!("{:04}", identity % 40)).expect("4 digits")
}

fn merchant() -> MerchantId {
    MerchantId::parse("1900000109").expect("valid id")
}

fn capture(embedding: Embedding, liveness: f32, phone_last4: Option<PhoneLast4>) -> FaceCaptured {
    FaceCaptured {
        face_code: FaceCode::parse("134567890123456789").expect("18 digits"),
        embedding,
        liveness: Score::try_from(liveness).expect("in range"),
        phone_last4,
    }
}

/// Which shard a payer's face lives in: any stable split will do.
fn shard_of(p: &PayerId) -> usize {
    p.as_str().bytes().fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b))) % SHARDS
}

/// The whole gallery and the same payers split over [`SHARDS`] galleries. Every tenth identity
/// has a twin (another capture of the same face, enrolled under another payer with the same
/// digits); every seventh is a member of the merchant, and so is each twin of a member.
fn galleries(faces: &SyntheticFaces) -> (Gallery, Vec<Gallery>) {
    let mut whole = Gallery::new();
    let mut shards: Vec<Gallery> = (0..SHARDS).map(|_| Gallery::new()).collect();
    let mut enrol = |p: PayerId, e: &Embedding, digits: PhoneLast4, member: bool| {
        whole.enroll(p.clone(), e, Some(digits));
        let shard = &mut shards[shard_of(&p)];
        shard.enroll(p.clone(), e, Some(digits));
        if member {
            whole.add_member(&merchant(), &p);
            shard.add_member(&merchant(), &p);
        }
    };
    for i in 0..faces.len() {
        enrol(payer(i), &faces.enrolment(i), phone(i), i % 7 == 0);
        if i % 10 == 0 {
            enrol(twin(i), &faces.nth_capture(i, 1_000), phone(i), i % 7 == 0);
        }
    }
    (whole, shards)
}

fn sharded(shards: &[Gallery], c: &FaceCaptured, policy: &MatchPolicy) -> Identification {
    let parts = shards.iter().map(|g| g.partial(&merchant(), c, policy));
    policy.decide_merged(Partial::merge(parts).expect("parts of one capture"))
}

#[test]
fn given_a_gallery_split_in_shards_when_partials_are_merged_then_every_decision_equals_the_whole_gallerys() {
    let faces = SyntheticFaces::new(20_261_127, IDENTITIES);
    let (whole, shards) = galleries(&faces);
    assert_eq!(shards.iter().map(Gallery::len).sum::<usize>(), whole.len());
    assert!(shards.iter().all(|g| !g.is_empty()), "every shard holds payers");
    let small = MatchPolicy { phone_required_gallery_min: whole.len() - 10, ..MatchPolicy::default() };
    assert!(shards.iter().all(|g| g.len() < small.phone_required_gallery_min), "only the whole is too large");
    let mut rules: HashMap<MatchRule, usize> = HashMap::new();
    for i in (0..IDENTITIES).step_by(5) {
        let probes = [
            capture(faces.nth_capture(i, 1), 0.99, None),
            capture(faces.nth_capture(i, 2), 0.99, Some(phone(i))),
            capture(faces.nth_capture(i, 3), 0.99, Some(phone(i + 1))),
            capture(faces.nth_stranger(i as u64), 0.99, None),
            capture(faces.nth_capture(i, 4), 0.5, None),
        ];
        for (probe, policy) in probes.iter().flat_map(|p| [(p, MatchPolicy::default()), (p, small)]) {
            let expected = whole.identify(&merchant(), probe, &policy).expect("search runs");
            let got = sharded(&shards, probe, &policy);
            assert_eq!((&got.payer_id, got.rule), (&expected.payer_id, expected.rule), "identity {i}");
            assert!((got.score - expected.score).abs() < 1e-5, "identity {i}: {got:?} against {expected:?}");
            assert!((got.margin - expected.margin).abs() < 1e-5, "identity {i}: {got:?} against {expected:?}");
            *rules.entry(got.rule).or_default() += 1;
        }
    }
    for rule in MatchRule::ALL {
        assert!(rules.get(&rule).copied().unwrap_or(0) > 0, "no probe reached {rule:?}: {rules:?}");
    }
}
