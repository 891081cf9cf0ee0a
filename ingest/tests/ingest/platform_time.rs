//! Property: whatever `occurred_at` a device claims, time rules run on the platform's time.
//! Device events with arbitrary claims go through the parser (accepted at a platform time),
//! the matcher and the ledger's pure core: no payer pays more than the daily cap in any
//! platform day, every payment counts on the platform day it was accepted, and no order is
//! revoked before 45 s of platform time (nor any hold expired before 30 days).

use chrono::{DateTime, Duration, Utc};
use facepay_domain::limits::{DAILY_AMOUNT_CAP_DEFAULT_FEN, DEVICE_CLOCK_SKEW_MAX_MS, EMBEDDING_DIM};
use facepay_domain::time::shanghai_day;
use facepay_domain::{parse_event, Embedding, PayerId};
use facepay_ingest::matching::{MatchStage, Routed};
use facepay_ledger::core::apply;
use facepay_ledger::{decide, Command, CommandKind, Identity, LedgerEvent, LedgerState, Lifecycle, Policy};
use facepay_matcher::{Gallery, MatchPolicy};
use proptest::prelude::*;
use serde_json::json;

/// One device event: `after_s` of platform time after the last, claiming to have occurred
/// `claim_s` from its accept time (anything from decades back to decades ahead).
#[derive(Debug, Clone)]
struct Step {
    after_s: i64,
    claim_s: i64,
    amount_yuan: i64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Pay,
    /// A payment whose capture resolves to nobody: its order waits, declined, for 45 s.
    Unresolved,
    Hold,
}

fn step() -> impl Strategy<Value = Step> {
    let claim = prop_oneof![
        -400_000_000..400_000_000_i64,
        -(DEVICE_CLOCK_SKEW_MAX_MS / 1000)..=(DEVICE_CLOCK_SKEW_MAX_MS / 1000),
    ];
    let kind = prop_oneof![6 => Just(Kind::Pay), 1 => Just(Kind::Unresolved), 1 => Just(Kind::Hold)];
    (0..20_000_i64, claim, 1..1_000_i64, kind).prop_map(|(after_s, claim_s, amount_yuan, kind)| Step {
        after_s,
        claim_s,
        amount_yuan,
        kind,
    })
}

fn face(axis: usize) -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[axis] = 1.0;
    v
}

fn device_event(n: u64, kind: &str, payload: serde_json::Value, claim: DateTime<Utc>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event_id": uuid::Uuid::from_u128(u128::from(n)).to_string(), "type": kind, "schema_version": 1,
        "occurred_at": claim.to_rfc3339(), "merchant_id": "1900000101", "store_id": "S01", "device_id": "DEV-1",
        "payload": payload,
    }))
    .unwrap()
}

/// The platform: a matcher with payer `p` enrolled and a ledger where `p` is rich and has
/// authorised the merchant's Pay Score.
struct Platform {
    stage: MatchStage,
    state: LedgerState,
    decided: Vec<(DateTime<Utc>, LedgerEvent)>,
    n: u64,
}

impl Platform {
    fn new(start: DateTime<Utc>) -> Self {
        let mut gallery = Gallery::new();
        gallery.enroll(PayerId::parse("p").unwrap(), &Embedding::try_from(face(3)).unwrap(), None);
        let mut p = Self {
            stage: MatchStage::new(gallery, MatchPolicy::default()),
            state: LedgerState::default(),
            decided: Vec::new(),
            n: 0,
        };
        let payer = PayerId::parse("p").unwrap();
        let merchant = facepay_domain::MerchantId::parse("1900000101").unwrap();
        let fund = CommandKind::Fund { payer_id: payer.clone(), amount: "1000000.00".parse().unwrap() };
        p.decide(Command::new(uuid::Uuid::new_v4(), start, None, fund));
        let face_code = facepay_domain::FaceCode::parse("999999999999999999").unwrap();
        let identity = Identity::Resolved { payer_id: payer, rule: "global_hit".into() };
        let authorise = Lifecycle::PayScoreAuthorise { merchant_id: merchant, face_code, identity };
        p.decide(Command::new(uuid::Uuid::new_v4(), start, None, CommandKind::Lifecycle(authorise)));
        p
    }

    fn decide(&mut self, cmd: Command) {
        if let Ok(events) = decide(&self.state, &cmd, &Policy::default()) {
            for e in events {
                apply(&mut self.state, &e, cmd.accepted_at);
                self.decided.push((cmd.accepted_at, e));
            }
        }
    }

    /// The device's bytes, accepted at `at`: refused when the claim is too far off, else
    /// routed and decided.
    fn offer(&mut self, kind: &str, payload: serde_json::Value, at: DateTime<Utc>, claim: DateTime<Utc>) -> bool {
        self.n += 1;
        let Ok(env) = parse_event(&device_event(self.n, kind, payload, claim), at) else { return false };
        assert_eq!(env.accepted_at, at);
        if let Routed::Command(cmd) = self.stage.route(env) {
            assert_eq!((cmd.accepted_at, cmd.claimed_at), (at, Some(claim)), "the platform's time decides");
            self.decide(cmd);
        }
        true
    }

    fn step(&mut self, s: &Step, at: DateTime<Utc>) {
        let claim = at + Duration::seconds(s.claim_s);
        let code = format!("{:018}", 100_000_000_000_000_000_u64 + self.n);
        let axis = if matches!(s.kind, Kind::Unresolved) { 9 } else { 3 };
        let capture = json!({"face_code": code, "embedding": face(axis), "liveness": 0.99});
        if !self.offer("face_captured", capture, at, claim) {
            return;
        }
        let amount = format!("{}.00", s.amount_yuan);
        let (kind, payload) = match s.kind {
            Kind::Hold => (
                "pay_score_order_created",
                json!({"out_order_no": format!("H{}", self.n), "face_code": code, "hold_amount": amount}),
            ),
            _ => (
                "payment_requested",
                json!({"out_trade_no": format!("T{}", self.n), "amount": amount, "face_code": code}),
            ),
        };
        self.offer(kind, payload, at, claim);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_devices_claimed_time_never_decides_a_cap_or_a_deadline(steps in prop::collection::vec(step(), 1..60)) {
        let start: DateTime<Utc> = "2026-03-02T15:00:00Z".parse().unwrap();
        let mut platform = Platform::new(start);
        let mut at = start;
        for s in &steps {
            at += Duration::seconds(s.after_s);
            platform.step(s, at);
            // The ledger's clock ticks at the platform's time: revocations and expiries due by now.
            for due in facepay_ledger::sweep::due_in(&platform.state, at) {
                platform.decide(facepay_ledger::sweep::tick(&due));
            }
        }
        let mut per_day: std::collections::BTreeMap<_, i64> = Default::default();
        let created: std::collections::BTreeMap<_, _> =
            platform.state.orders.values().map(|o| ((o.merchant_id.clone(), o.out_trade_no.clone()), o.created_at)).collect();
        for (accepted_at, e) in &platform.decided {
            match e {
                LedgerEvent::PaymentSucceeded { attempt, day, .. } => {
                    prop_assert_eq!(*day, shanghai_day(*accepted_at), "a payment counts on its platform day");
                    *per_day.entry(*day).or_default() += attempt.amount.fen();
                }
                LedgerEvent::OrderRevoked { merchant_id, out_trade_no, .. } => {
                    let born = created[&(merchant_id.clone(), out_trade_no.clone())];
                    prop_assert!(*accepted_at - born >= Duration::seconds(45), "revoked after {:?}", *accepted_at - born);
                }
                LedgerEvent::HoldExpired { .. } => {
                    prop_assert!(*accepted_at - start >= Duration::days(30));
                }
                _ => {}
            }
        }
        for (day, fen) in per_day {
            prop_assert!(fen <= DAILY_AMOUNT_CAP_DEFAULT_FEN, "{day}: {fen} fen paid");
        }
    }
}
