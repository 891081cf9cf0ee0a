//! End to end, embedded: a simulated fleet through validate → match → ledger on SQLite.

use facepay::demo::{self, DemoOptions, DemoSummary};
use facepay_ledger::{Ledger, Policy};
use facepay_sim::fleet::FleetOptions;

fn options(dir: &std::path::Path, seed: u64) -> DemoOptions {
    DemoOptions {
        fleet: FleetOptions { seed, merchants: 3, devices: 6, payers: 300, payments: 3_000 },
        data_dir: dir.to_path_buf(),
        progress: false,
        ..Default::default()
    }
}

async fn run(seed: u64) -> (DemoSummary, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (summary, app) = demo::run(&options(dir.path(), seed)).await.unwrap();
    drop(app);
    (summary, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_through_the_pipeline_and_every_invariant_holds() {
    let (s, _dir) = run(7).await;
    let i = &s.invariants;
    assert!(i.balanced && i.no_order_paid_twice && i.no_overdraft && i.replay_matches_live, "{i:?}");

    let declined: u64 = s.payments.declined.values().sum();
    assert_eq!(s.payments.attempted, s.payments.succeeded + declined, "every attempt is decided once");
    assert!(s.payments.succeeded > s.payments.attempted / 2, "most payments succeed: {:?}", s.payments);
    for reason in [
        "IDENTITY_UNRESOLVED",
        "CAPTURE_USED",
        "PAYER_FROZEN",
        "OVER_SINGLE_LIMIT",
        "DAILY_AMOUNT_CAP",
        "INSUFFICIENT_BALANCE",
        "OUT_TRADE_NO_USED",
    ] {
        assert!(
            s.payments.declined.get(reason).copied().unwrap_or(0) > 0,
            "the fleet meets {reason}: {:?}",
            s.payments.declined
        );
    }
    // Every poor capture is asked for the phone digits, not turned away (issue 23).
    let asked = s.payments.declined.get("PHONE_CONFIRMATION_REQUIRED").copied().unwrap_or(0);
    assert!(s.payments.phone_confirmations_sent > 0, "{:?}", s.payments);
    assert_eq!(asked, s.payments.phone_confirmations_sent, "{:?}", s.payments);
    assert!(s.retries.sent > 0);
    assert_eq!(s.retries.replayed, s.retries.sent, "every exact retry is answered from the stored outcome");
    assert_eq!(s.queries.answered, s.queries.sent);
    assert!(s.members.bound > 0 && s.payments.member_quick_pay > 0, "members pay by quick pay");
    assert!(s.rejected.sent > 0);
    // A bad event from an authenticated device is kept with its reason; garbage nobody
    // signed (or signed as a device the fleet does not have) is refused and kept nowhere.
    let unauthenticated = s.rejected.by_reason.get("unauthenticated").copied().unwrap_or(0);
    assert!(unauthenticated > 0 && s.rejected.kept > 0, "{:?}", s.rejected);
    assert_eq!(s.rejected.kept + unauthenticated, s.rejected.sent, "every other bad event is kept: {:?}", s.rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_reversals_and_holds_run_through_the_pipeline() {
    let (s, _dir) = run(9).await;
    assert!(s.invariants_hold(), "{:?}", s.invariants);
    assert!(s.invariants.audit_chain_ok);
    let answered =
        |applied: u64, refused: &std::collections::BTreeMap<String, u64>| applied + refused.values().sum::<u64>();
    assert_eq!(answered(s.refunds.applied, &s.refunds.refused), s.refunds.sent, "{:?}", s.refunds);
    assert_eq!(answered(s.reversals.applied, &s.reversals.refused), s.reversals.sent, "{:?}", s.reversals);
    let h = &s.holds;
    assert_eq!(h.authorised + h.created + h.completed + h.cancelled + h.refused.values().sum::<u64>(), h.sent, "{h:?}");
    assert!(s.refunds.applied > 0 && s.reversals.applied > 0, "{:?} {:?}", s.refunds, s.reversals);
    assert!(h.created > 0 && h.completed > 0 && h.cancelled > 0, "{h:?}");
    // The ledger's clock: the holds left open expired a month on, the unpaid orders were revoked.
    let open = h.created - h.completed - h.cancelled;
    assert!(h.expired > 0 && h.expired <= open, "{h:?}");
    assert!(s.payments.revoked > 0, "{:?}", s.payments);
    for code in ["HOLD_CANCELLED", "HOLD_COMPLETED", "COMPLETION_ABOVE_HOLD", "PAY_SCORE_NOT_AUTHORISED"] {
        assert!(h.refused.contains_key(code), "the fleet meets {code}: {h:?}");
    }
    assert!(s.refunds.refused.contains_key("REFUND_EXCEEDS_PAID"), "{:?}", s.refunds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_day() {
    let (a, _d1) = run(11).await;
    let (b, _d2) = run(11).await;
    assert_eq!(serde_json::to_value(&a.payments).unwrap(), serde_json::to_value(&b.payments).unwrap());
    assert_eq!(a.events.ledger, b.events.ledger);
    let (c, _d3) = run(12).await;
    assert_ne!(serde_json::to_value(&a.payments).unwrap(), serde_json::to_value(&c.payments).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_log_still_replays_to_the_projections() {
    let (s, dir) = run(5).await;
    let url = format!("sqlite://{}", dir.path().join("facepay.db").display());
    let store = std::sync::Arc::new(facepay_ledger::SqliteStore::open(&url).await.unwrap());
    let report = Ledger::new(store.clone(), Policy::default()).replay().await.unwrap();
    assert!(report.matches, "{:?}", report.differences);
    assert_eq!(report.events, s.events.ledger);
    use facepay_ledger::store::prelude::*;
    let inv = store.check_invariants().await.unwrap();
    assert!(inv.balanced && inv.no_order_paid_twice && inv.no_overdraft);
}
