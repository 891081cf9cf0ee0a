//! Every branch of the match policy, on hand-built templates whose cosines are exact.

use facepay_domain::event::FaceCaptured;
use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::{Embedding, FaceCode, MerchantId, PayerId, PhoneLast4, Score};
use facepay_matcher::{Gallery, Identification, MatchPolicy, MatchRule};

/// A unit vector with the given weights on the given axes.
fn unit(weights: &[(usize, f32)]) -> Embedding {
    let mut v = vec![0.0; EMBEDDING_DIM];
    for &(axis, w) in weights {
        v[axis] = w;
    }
    Embedding::try_from(v).expect("non-zero")
}

/// Alice's template: axis 0.
fn alice_template() -> Embedding {
    unit(&[(0, 1.0)])
}

/// Bob, Alice's look-alike: cosine 0.9 with her.
fn bob_template() -> Embedding {
    unit(&[(0, 0.9), (1, 0.19f32.sqrt())])
}

/// A capture of Alice: cosine 0.8 with her, 0.72 with Bob (margin 0.08, below the global 0.10).
fn alice_capture() -> Embedding {
    unit(&[(0, 0.8), (2, 0.6)])
}

fn payer(s: &str) -> PayerId {
    PayerId::parse(s).expect("valid id")
}

fn merchant(s: &str) -> MerchantId {
    MerchantId::parse(s).expect("valid id")
}

fn phone(s: &str) -> PhoneLast4 {
    PhoneLast4::parse(s).expect("4 digits")
}

fn capture(embedding: Embedding, phone_last4: Option<PhoneLast4>) -> FaceCaptured {
    FaceCaptured {
        face_code: FaceCode::parse("134567890123456789").expect("18 digits"),
        embedding,
        liveness: Score::try_from(0.99).expect("in range"),
        phone_last4,
    }
}

/// Alice (phone 1234), her look-alike Bob (phone 5678) and Carol (axis 3, phone 1234).
fn twins_gallery() -> Gallery {
    let mut g = Gallery::new();
    g.enroll(payer("alice"), &alice_template(), Some(phone("1234")));
    g.enroll(payer("bob"), &bob_template(), Some(phone("5678")));
    g.enroll(payer("carol"), &unit(&[(3, 1.0)]), Some(phone("1234")));
    g
}

fn identify(g: &mut Gallery, at: &str, c: &FaceCaptured) -> Identification {
    g.identify(&merchant(at), c, &MatchPolicy::default()).expect("search runs")
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-4
}

#[test]
fn given_a_member_clear_of_everyone_when_captured_without_phone_then_member_hit_even_in_a_huge_gallery() {
    let mut g = twins_gallery();
    g.add_member(&merchant("m1"), &payer("carol"));
    let policy = MatchPolicy { phone_required_gallery_min: 1, ..MatchPolicy::default() };
    let id = g.identify(&merchant("m1"), &capture(unit(&[(3, 0.8), (9, 0.6)]), None), &policy).expect("search runs");
    assert_eq!((id.rule, id.payer_id.clone()), (MatchRule::MemberHit, Some(payer("carol"))));
    assert!(close(id.score, 0.8) && close(id.margin, 0.8), "{id:?}");
    let id = g.identify(&merchant("m2"), &capture(unit(&[(3, 0.8), (9, 0.6)]), None), &policy).expect("search runs");
    assert_eq!((id.rule, id.payer_id), (MatchRule::NeedsPhoneConfirmation, None), "not a member at m2");
}

#[test]
fn given_a_member_whose_enrolled_look_alike_is_not_a_member_then_the_twin_blocks_the_member_hit() {
    let mut g = twins_gallery();
    g.add_member(&merchant("m1"), &payer("alice"));
    // Alice 0.80, Bob (not a member) 0.72: clear of the other members, not of the gallery.
    let id = identify(&mut g, "m1", &capture(alice_capture(), None));
    assert_eq!((id.rule, &id.payer_id), (MatchRule::NeedsPhoneConfirmation, &None));
    assert!(close(id.score, 0.8) && close(id.margin, 0.08), "{id:?}");
}

/// Dave's template is axis 10; his look-alike, who never enrolled, scores 0.50 against it.
fn look_alike_of_dave() -> Embedding {
    unit(&[(10, 0.5), (11, 0.75f32.sqrt())])
}

#[test]
fn given_a_look_alike_of_a_member_then_no_digits_wrong_digits_or_the_twins_digits_ever_pay() {
    let mut g = twins_gallery();
    g.enroll(payer("dave"), &unit(&[(10, 1.0)]), Some(phone("4321")));
    g.add_member(&merchant("m1"), &payer("dave"));
    let asked = identify(&mut g, "m1", &capture(look_alike_of_dave(), None));
    assert_eq!((asked.rule, &asked.payer_id), (MatchRule::NeedsPhoneConfirmation, &None), "unsure: asked");
    assert!(close(asked.score, 0.5), "{asked:?}");
    for digits in ["0000", "1234", "4321"] {
        let id = identify(&mut g, "m1", &capture(look_alike_of_dave(), Some(phone(digits))));
        assert_eq!((id.rule, id.payer_id), (MatchRule::NoMatch, None), "digits {digits}");
    }
    // Dave himself, typing his digits after being asked, pays from the phone bucket.
    let id = identify(&mut g, "m1", &capture(unit(&[(10, 0.6), (12, 0.8)]), Some(phone("4321"))));
    assert_eq!((id.rule, id.payer_id), (MatchRule::PhoneNarrowedHit, Some(payer("dave"))));
}

#[test]
fn given_typed_digits_that_are_not_the_members_then_the_member_never_pays() {
    let mut g = twins_gallery();
    g.add_member(&merchant("m1"), &payer("carol"));
    let id = identify(&mut g, "m1", &capture(unit(&[(3, 1.0)]), Some(phone("5678"))));
    assert_eq!((id.rule, id.payer_id), (MatchRule::NoMatch, None), "Carol enrolled with 1234");
}

#[test]
fn given_two_look_alike_members_when_captured_then_no_member_hit() {
    let mut g = twins_gallery();
    g.add_member(&merchant("m1"), &payer("alice"));
    g.add_member(&merchant("m1"), &payer("bob"));
    // Alice ≈ 0.800, Bob ≈ 0.724: the member margin 0.076 fails, and so does the global one.
    let q = unit(&[(0, 0.8), (1, 0.01), (2, 0.6)]);
    let id = identify(&mut g, "m1", &capture(q, None));
    assert_eq!(id.rule, MatchRule::NeedsPhoneConfirmation);
    assert_eq!(id.payer_id, None);
}

#[test]
fn given_a_distinct_face_when_captured_without_phone_then_global_hit() {
    let mut g = twins_gallery();
    let id = identify(&mut g, "m1", &capture(unit(&[(3, 0.7), (4, 0.71)]), None));
    assert_eq!(id.rule, MatchRule::GlobalHit);
    assert_eq!(id.payer_id, Some(payer("carol")));
    assert!(close(id.score, 0.7 / (0.7f32 * 0.7 + 0.71 * 0.71).sqrt()), "{id:?}");
}

#[test]
fn given_a_look_alike_when_captured_without_phone_then_needs_phone_confirmation() {
    let mut g = twins_gallery();
    let id = identify(&mut g, "m1", &capture(alice_capture(), None));
    assert_eq!(id.rule, MatchRule::NeedsPhoneConfirmation, "ambiguous globally: ask for the digits");
    assert_eq!(id.payer_id, None);
    assert!(close(id.score, 0.8) && close(id.margin, 0.08), "{id:?}");
}

#[test]
fn given_a_look_alike_when_captured_with_phone_then_phone_narrowed_hit() {
    let mut g = twins_gallery();
    let id = identify(&mut g, "m1", &capture(alice_capture(), Some(phone("1234"))));
    assert_eq!(id.rule, MatchRule::PhoneNarrowedHit);
    assert_eq!(id.payer_id, Some(payer("alice")));
    assert!(close(id.score, 0.8) && close(id.margin, 0.8), "margin over Carol, not Bob: {id:?}");
}

#[test]
fn given_look_alikes_sharing_phone_digits_when_captured_with_them_then_ambiguous() {
    let mut g = twins_gallery();
    g.enroll(payer("bob"), &bob_template(), Some(phone("1234")));
    let id = identify(&mut g, "m1", &capture(alice_capture(), Some(phone("1234"))));
    assert_eq!((id.rule, id.payer_id.clone()), (MatchRule::Ambiguous, None), "digits given, still too close: refuse");
    assert!(close(id.score, 0.8) && close(id.margin, 0.08), "{id:?}");
}

#[test]
fn given_wrong_phone_digits_when_captured_then_no_match() {
    let mut g = twins_gallery();
    let id = identify(&mut g, "m1", &capture(alice_template(), Some(phone("0000"))));
    assert_eq!(id, Identification { payer_id: None, rule: MatchRule::NoMatch, score: 0.0, margin: 0.0 });
    let id = identify(&mut g, "m1", &capture(unit(&[(3, 1.0)]), Some(phone("5678"))));
    assert_eq!((id.rule, id.payer_id), (MatchRule::NoMatch, None), "Carol is not in Bob's bucket");
}

#[test]
fn given_a_stranger_when_captured_then_no_match_and_a_near_one_is_asked() {
    let mut g = twins_gallery();
    let far = unit(&[(7, 0.3), (8, 0.6), (9, 0.6), (0, 0.3), (13, 0.3), (14, 0.1)]);
    let id = identify(&mut g, "m1", &capture(far, None));
    assert_eq!((id.rule, &id.payer_id), (MatchRule::NoMatch, &None), "{id:?}");
    assert!(close(id.score, 0.3), "best considered is Alice at 0.3: {id:?}");
    let near = identify(&mut g, "m1", &capture(unit(&[(7, 0.5), (8, 0.5), (9, 0.5), (0, 0.5)]), None));
    assert_eq!((near.rule, near.payer_id), (MatchRule::NeedsPhoneConfirmation, None), "0.5 is in the band");
}

#[test]
fn given_low_liveness_when_captured_then_liveness_failed_before_any_search() {
    let mut g = twins_gallery();
    g.add_member(&merchant("m1"), &payer("alice"));
    let mut c = capture(alice_template(), Some(phone("1234")));
    c.liveness = Score::try_from(0.79).expect("in range");
    let id = identify(&mut g, "m1", &c);
    assert_eq!(id, Identification { payer_id: None, rule: MatchRule::LivenessFailed, score: 0.0, margin: 0.0 });
}

#[test]
fn given_a_large_gallery_when_captured_without_phone_then_needs_phone_confirmation() {
    let g = twins_gallery();
    let policy = MatchPolicy { phone_required_gallery_min: 3, ..MatchPolicy::default() };
    let id = g.identify(&merchant("m1"), &capture(unit(&[(3, 1.0)]), None), &policy).expect("search runs");
    assert_eq!((id.rule, id.payer_id), (MatchRule::NeedsPhoneConfirmation, None));
    let c = capture(unit(&[(3, 1.0)]), Some(phone("1234")));
    let id = g.identify(&merchant("m1"), &c, &policy).expect("search runs");
    assert_eq!((id.rule, id.payer_id), (MatchRule::PhoneNarrowedHit, Some(payer("carol"))));
    let small = MatchPolicy { phone_required_gallery_min: 4, ..MatchPolicy::default() };
    let id = g.identify(&merchant("m1"), &capture(unit(&[(3, 1.0)]), None), &small).expect("search runs");
    assert_eq!(id.rule, MatchRule::GlobalHit, "below the size limit the global search runs");
}

#[test]
fn given_a_removed_payer_when_captured_then_unmatchable_everywhere() {
    let mut g = twins_gallery();
    g.add_member(&merchant("m1"), &payer("carol"));
    let carol = unit(&[(3, 1.0)]);
    assert_eq!(identify(&mut g, "m1", &capture(carol.clone(), None)).rule, MatchRule::MemberHit);
    assert!(g.remove(&payer("carol")));
    assert!(!g.remove(&payer("carol")));
    assert_eq!(g.len(), 2);
    for c in [capture(carol.clone(), None), capture(carol.clone(), Some(phone("1234")))] {
        let id = identify(&mut g, "m1", &c);
        assert_eq!((id.rule, id.payer_id), (MatchRule::NoMatch, None));
    }
    g.enroll(payer("carol"), &carol, None);
    let id = identify(&mut g, "m1", &capture(carol, None));
    assert_eq!(id.rule, MatchRule::GlobalHit, "removal ended the membership too");
}

#[test]
fn given_removal_of_a_middle_row_then_the_moved_row_still_matches() {
    let mut g = Gallery::new();
    for axis in 0..5 {
        g.enroll(payer(&format!("p{axis}")), &unit(&[(axis * 10, 1.0)]), Some(phone("1111")));
    }
    let _ = identify(&mut g, "m1", &capture(unit(&[(0, 1.0)]), None));
    assert!(g.remove(&payer("p1")));
    for axis in [0, 2, 3, 4] {
        for phone_last4 in [None, Some(phone("1111"))] {
            let id = identify(&mut g, "m1", &capture(unit(&[(axis * 10, 1.0)]), phone_last4));
            assert_eq!(id.payer_id, Some(payer(&format!("p{axis}"))), "{id:?}");
        }
    }
    assert_eq!(identify(&mut g, "m1", &capture(unit(&[(10, 1.0)]), None)).rule, MatchRule::NoMatch);
}

#[test]
fn given_re_enrolment_then_the_new_template_and_phone_replace_the_old() {
    let mut g = twins_gallery();
    let _ = identify(&mut g, "m1", &capture(alice_template(), None));
    g.enroll(payer("alice"), &unit(&[(5, 1.0)]), Some(phone("9999")));
    assert_eq!(g.len(), 3);
    let old = identify(&mut g, "m1", &capture(alice_template(), None));
    assert_eq!(old.payer_id, Some(payer("bob")), "only Bob still looks like the old template: {old:?}");
    let new = identify(&mut g, "m1", &capture(unit(&[(5, 1.0)]), Some(phone("9999"))));
    assert_eq!((new.rule, new.payer_id), (MatchRule::PhoneNarrowedHit, Some(payer("alice"))));
    let old_phone = identify(&mut g, "m1", &capture(unit(&[(5, 1.0)]), Some(phone("1234"))));
    assert_eq!((old_phone.rule, old_phone.payer_id), (MatchRule::NoMatch, None));
}

#[test]
fn given_an_enrolment_after_a_search_then_the_next_search_sees_it() {
    let mut g = twins_gallery();
    let dave = unit(&[(6, 1.0)]);
    assert_eq!(identify(&mut g, "m1", &capture(dave.clone(), None)).rule, MatchRule::NoMatch);
    g.enroll(payer("dave"), &dave, None);
    assert_eq!(identify(&mut g, "m1", &capture(dave, None)).payer_id, Some(payer("dave")));
}

#[test]
fn given_an_empty_gallery_when_captured_then_no_match() {
    let mut g = Gallery::new();
    assert!(g.is_empty());
    let id = identify(&mut g, "m1", &capture(alice_template(), None));
    assert_eq!(id, Identification { payer_id: None, rule: MatchRule::NoMatch, score: 0.0, margin: 0.0 });
}

#[test]
fn given_an_ended_membership_then_the_member_search_skips_the_payer() {
    let mut g = twins_gallery();
    g.add_member(&merchant("m1"), &payer("alice"));
    g.remove_member(&merchant("m1"), &payer("alice"));
    g.remove_member(&merchant("m2"), &payer("alice"));
    let rule = |g: &mut Gallery| identify(g, "m1", &capture(alice_capture(), None)).rule;
    assert_eq!(rule(&mut g), MatchRule::NeedsPhoneConfirmation);
    g.add_member(&merchant("m2"), &payer("alice"));
    assert_eq!(rule(&mut g), MatchRule::NeedsPhoneConfirmation, "other merchant");
}

#[test]
fn given_a_gallery_when_debug_printed_then_no_vector_values_show() {
    let value = 1.0 / (EMBEDDING_DIM as f32).sqrt();
    let flat = Embedding::try_from(vec![value; EMBEDDING_DIM]).expect("non-zero");
    let mut g = Gallery::new();
    g.enroll(payer("alice"), &flat, Some(phone("1234")));
    g.add_member(&merchant("m1"), &payer("alice"));
    let c = capture(flat, None);
    let id = identify(&mut g, "m1", &c);
    let needle = format!("{value}");
    for shown in [format!("{g:?}"), format!("{c:?}"), format!("{id:?}")] {
        assert!(!shown.contains(&needle[..5]), "{shown}");
        assert!(shown.len() < 300, "{shown}");
    }
}

#[test]
fn gallery_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Gallery>();
}
