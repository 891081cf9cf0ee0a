//! Given/when/then tests of the rest of a payment's life in the pure core: reversal,
//! automatic revocation at 45 s, refunds, fees, Pay Score holds and their expiry. Every
//! refusal is checked with its stable code and channel code.

use crate::common::*;
use chrono::{DateTime, Duration, Utc};
use facepay_domain::{DeclineReason, OrderStatus, OutOrderNo, OutRefundNo, RefusalReason};
use facepay_ledger::core::{apply, fee_fen, payment_result};
use facepay_ledger::lifecycle::refusal_after;
use facepay_ledger::model::{HoldStatus, Settlement};
use facepay_ledger::{decide, Account, Command, CommandKind, DomainError, LedgerEvent, LedgerState, Lifecycle, Policy};

// ---- the harness: a ledger driven through commands ---------------------------------------

/// A ledger state built by deciding and applying commands, as the service does.
struct World {
    state: LedgerState,
}

impl World {
    fn new() -> Self {
        World { state: LedgerState::default() }
    }

    /// Decides `cmd` and applies its events; returns them or the refusal.
    fn run(&mut self, cmd: Command) -> Result<Vec<LedgerEvent>, DomainError> {
        let events = decide(&self.state, &cmd, &Policy::default())?;
        for e in &events {
            apply(&mut self.state, e, cmd.accepted_at);
        }
        match refusal_after(&cmd, &events) {
            Some(err) => Err(err),
            None => Ok(events),
        }
    }

    /// Runs `cmd`, which must be accepted.
    fn ok(&mut self, cmd: Command) -> Vec<LedgerEvent> {
        self.run(cmd.clone()).unwrap_or_else(|e| panic!("{cmd:?} refused: {e}"))
    }

    /// Runs `cmd`, which must be refused with `reason` and change nothing.
    fn refused(&mut self, cmd: Command, reason: RefusalReason) {
        let before = self.state.clone();
        assert_eq!(self.run(cmd), Err(DomainError::Refused(reason)));
        assert_eq!(self.state, before, "a refusal changes nothing");
    }

    fn balance(&self, account: Account) -> i64 {
        self.state.balance_fen(&account)
    }

    fn order(&self, m: &str, o: &str) -> facepay_ledger::model::Order {
        self.state.orders[&(merchant(m), otn(o))].clone()
    }

    /// The books balance: all balances sum to zero.
    fn assert_balanced(&self) {
        assert_eq!(self.state.balances_fen.values().sum::<i64>(), 0);
    }
}

fn wallet(p: &str) -> Account {
    Account::Wallet(payer(p))
}
fn settlement(m: &str) -> Account {
    Account::Settlement(merchant(m))
}
fn hold_account(p: &str) -> Account {
    Account::Hold(payer(p))
}

fn life(l: Lifecycle) -> Command {
    command(CommandKind::Lifecycle(l))
}
fn reverse(m: &str, o: &str) -> Command {
    life(Lifecycle::Reverse { merchant_id: merchant(m), out_trade_no: otn(o) })
}
fn refund(m: &str, o: &str, no: &str, amount: &str) -> Command {
    life(Lifecycle::Refund {
        merchant_id: merchant(m),
        out_trade_no: otn(o),
        out_refund_no: OutRefundNo::parse(no).unwrap(),
        amount: cny(amount),
    })
}
fn fee_rate(m: &str, ppm: u32) -> Command {
    life(Lifecycle::SetFeeRate { merchant_id: merchant(m), fee_rate_ppm: ppm })
}
fn ono(s: &str) -> OutOrderNo {
    OutOrderNo::parse(s).unwrap()
}
/// `p` creates `m`'s Pay Score order `no` by face (a fresh capture).
fn hold(m: &str, no: &str, p: &str, amount: &str) -> Command {
    life(Lifecycle::HoldCreate {
        merchant_id: merchant(m),
        out_order_no: ono(no),
        face_code: fresh_face(),
        identity: resolved(p),
        amount: cny(amount),
    })
}
fn complete(m: &str, no: &str, total: &str) -> Command {
    life(Lifecycle::HoldComplete { merchant_id: merchant(m), out_order_no: ono(no), total: cny(total) })
}
fn cancel(m: &str, no: &str) -> Command {
    life(Lifecycle::HoldCancel { merchant_id: merchant(m), out_order_no: ono(no) })
}
fn expire(m: &str, no: &str) -> Command {
    life(Lifecycle::HoldExpire { merchant_id: merchant(m), out_order_no: ono(no) })
}

fn later(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

/// A world where p1 has 100.00 and paid m1's order o1 60.00 at t0.
fn paid_world(rate_ppm: u32) -> World {
    let mut w = World::new();
    w.ok(fund("p1", "100.00"));
    if rate_ppm > 0 {
        w.ok(fee_rate("m1", rate_ppm));
    }
    w.ok(pay("m1", "o1", "60.00", 1, "p1"));
    w
}

// ---- fees ---------------------------------------------------------------------------------

#[test]
fn the_fee_is_rounded_half_up_to_the_fen() {
    assert_eq!(fee_fen(6_000, 5_400), 32, "60.00 at 0.54 % is 0.324 → 0.32");
    assert_eq!(fee_fen(6_000, 6_000), 36, "60.00 at 0.60 % is 0.36");
    assert_eq!(fee_fen(25_000, 5_400), 135, "250.00 at 0.54 % is 1.35");
    assert_eq!(fee_fen(9_259, 5_400), 50, "92.59 at 0.54 % is 0.499986 → 0.50");
    assert_eq!(fee_fen(9_250, 5_400), 50, "92.50 at 0.54 % is 0.4995 → 0.50 (half up)");
    assert_eq!(fee_fen(1, 5_400), 0, "a fen pays no fee");
    assert_eq!(fee_fen(10_000, 0), 0);
}

#[test]
fn a_payment_posts_the_merchants_fee_to_the_platform_in_balanced_postings() {
    let w = paid_world(5_400);
    assert_eq!(w.balance(wallet("p1")), 4_000);
    assert_eq!(w.balance(settlement("m1")), 6_000 - 32);
    assert_eq!(w.balance(Account::PlatformFees), 32);
    assert_eq!(w.order("m1", "o1").fee_fen, 32);
    w.assert_balanced();
    let day = facepay_domain::time::shanghai_day(t0());
    let s = w.state.settlement[&(merchant("m1"), day)];
    assert_eq!(s, Settlement { gross_fen: 6_000, refunds_fen: 0, fees_fen: 32 });
    assert_eq!(s.net_fen(), 5_968);
}

#[test]
fn a_merchant_without_a_rate_pays_no_fee_and_a_rate_above_ten_percent_is_refused() {
    let mut w = paid_world(0);
    assert_eq!(w.balance(Account::PlatformFees), 0);
    assert_eq!(w.balance(settlement("m1")), 6_000);
    w.refused(fee_rate("m1", 100_001), RefusalReason::FeeRateOutOfRange);
    assert_eq!(w.ok(fee_rate("m1", 6_000)).len(), 1);
    assert_eq!(w.ok(fee_rate("m1", 6_000)), vec![], "the same rate again changes nothing");
}

// ---- reversal -----------------------------------------------------------------------------

#[test]
fn reversing_a_paid_order_refunds_it_in_full_with_its_fee() {
    let mut w = paid_world(5_400);
    let events = w.ok(reverse("m1", "o1").at_time(later(20)));
    assert!(matches!(events.as_slice(), [LedgerEvent::OrderReversed { refund_fen: 6_000, fee_refund_fen: 32, .. }]));
    assert_eq!(w.balance(wallet("p1")), 10_000);
    assert_eq!(w.balance(settlement("m1")), 0);
    assert_eq!(w.balance(Account::PlatformFees), 0);
    let o = w.order("m1", "o1");
    assert_eq!((o.status, o.refunded_fen, o.fee_refunded_fen), (OrderStatus::Reversed, 6_000, 32));
    w.assert_balanced();
}

#[test]
fn reversing_an_unpaid_order_closes_it_and_a_later_attempt_gets_orderreversed() {
    let mut w = World::new();
    w.ok(pay("m1", "o1", "60.00", 1, "p1")); // declined: no money
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Declined);
    w.ok(reverse("m1", "o1").at_time(later(20)));
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Reversed);
    w.ok(fund("p1", "100.00"));
    let retry = pay("m1", "o1", "60.00", 2, "p1").at_time(later(25));
    let events = w.ok(retry.clone());
    assert!(matches!(
        events.as_slice(),
        [LedgerEvent::PaymentDeclined { reason: DeclineReason::OrderReversed, records_order: false, .. }]
    ));
    let r = payment_result(&w.state, &retry, &events).unwrap();
    assert_eq!(r.channel_code.as_deref(), Some("ORDERREVERSED"));
    assert_eq!(w.balance(wallet("p1")), 10_000, "nothing was paid");
}

#[test]
fn reversing_an_unpaid_order_past_its_45_s_finds_it_revoked_whoever_came_first() {
    // Given an unpaid order, when the reversal comes after 45 s, the order was revoked by
    // then: the reversal records the revocation (if the clock's tick did not yet) and no more.
    let mut w = World::new();
    w.ok(pay_unresolved("m1", "o1", "60.00", 1));
    let events = w.ok(reverse("m1", "o1").at_time(later(60)));
    assert!(matches!(events.as_slice(), [LedgerEvent::OrderRevoked { .. }]));
    let first = w.order("m1", "o1");
    assert_eq!((first.status, first.updated_at), (OrderStatus::Revoked, later(45)));
    // The same order, the tick first: the same projection.
    let mut v = World::new();
    v.ok(pay_unresolved("m1", "o1", "60.00", 1));
    let due =
        facepay_ledger::sweep::Due::Order { merchant_id: merchant("m1"), out_trade_no: otn("o1"), created_at: t0() };
    v.ok(facepay_ledger::sweep::tick(&due));
    assert_eq!(v.ok(reverse("m1", "o1").at_time(later(60))), vec![]);
    assert_eq!(v.order("m1", "o1"), first);
}

#[test]
fn reversing_twice_changes_nothing_the_second_time() {
    let mut w = paid_world(5_400);
    w.ok(reverse("m1", "o1"));
    assert_eq!(w.ok(reverse("m1", "o1")), vec![]);
    assert_eq!(w.balance(wallet("p1")), 10_000);
}

#[test]
fn a_reversal_after_seven_days_is_refused() {
    let mut w = paid_world(0);
    let eight_days = reverse("m1", "o1").at_time(t0() + Duration::days(7) + Duration::seconds(1));
    w.refused(eight_days, RefusalReason::ReversalWindowClosed);
    assert_eq!(RefusalReason::ReversalWindowClosed.channel_code(), "REVERSE_EXPIRE");
    assert!(w.run(reverse("m1", "o1").at_time(t0() + Duration::days(7))).is_ok(), "7 days exactly is allowed");
}

#[test]
fn reversing_an_unknown_order_is_refused() {
    World::new().refused(reverse("m1", "nope"), RefusalReason::OrderNotFound);
}

#[test]
fn reversal_after_a_partial_refund_returns_only_what_is_left() {
    let mut w = paid_world(5_400);
    w.ok(refund("m1", "o1", "r1", "20.00"));
    let events = w.ok(reverse("m1", "o1"));
    let [LedgerEvent::OrderReversed { refund_fen, fee_refund_fen, .. }] = events.as_slice() else { panic!() };
    assert_eq!(*refund_fen, 4_000);
    let o = w.order("m1", "o1");
    assert_eq!((o.refunded_fen, o.fee_refunded_fen), (6_000, 32));
    assert_eq!(*fee_refund_fen + 11, 32, "the partial refund took 0.11 of the fee back");
    assert_eq!(
        (w.balance(wallet("p1")), w.balance(settlement("m1")), w.balance(Account::PlatformFees)),
        (10_000, 0, 0)
    );
}

// ---- automatic revocation at 45 s ----------------------------------------------------------

#[test]
fn an_order_awaiting_the_payer_is_revoked_45_s_after_creation_by_event_time() {
    let mut w = World::new();
    w.ok(pay_unresolved("m1", "o1", "60.00", 1)); // needs the payer: identity unresolved
    w.ok(fund("p1", "100.00"));
    // 44 s later the payer confirms: still in time.
    let events = w.ok(pay("m1", "o1", "60.00", 2, "p1").at_time(later(44)));
    assert!(matches!(events.as_slice(), [LedgerEvent::PaymentSucceeded { .. }]));

    w.ok(pay_unresolved("m1", "o2", "60.00", 3));
    let late = pay("m1", "o2", "60.00", 4, "p1").at_time(later(45));
    let events = w.ok(late.clone());
    assert!(matches!(
        events.as_slice(),
        [LedgerEvent::OrderRevoked { .. }, LedgerEvent::PaymentDeclined { reason: DeclineReason::OrderClosed, .. }]
    ));
    assert_eq!(w.order("m1", "o2").status, OrderStatus::Revoked);
    let r = payment_result(&w.state, &late, &events).unwrap();
    assert_eq!(r.channel_code.as_deref(), Some("ORDERCLOSED"));
    // Once revoked, every later attempt is closed too, with no second revocation.
    let again = w.ok(pay("m1", "o2", "60.00", 5, "p1").at_time(later(90)));
    assert!(matches!(again.as_slice(), [LedgerEvent::PaymentDeclined { reason: DeclineReason::OrderClosed, .. }]));
    assert_eq!(w.balance(wallet("p1")), 4_000, "only o1 was paid");
}

#[test]
fn a_query_past_45_s_sees_the_order_revoked_and_a_paid_order_is_never_revoked() {
    let mut w = World::new();
    w.ok(pay_unresolved("m1", "o1", "60.00", 1));
    let q = query("m1", "o1").at_time(later(46));
    let events = w.ok(q.clone());
    assert!(matches!(events.as_slice(), [LedgerEvent::OrderRevoked { .. }]));
    assert_eq!(payment_result(&w.state, &q, &events).unwrap().status, OrderStatus::Revoked);
    assert_eq!(w.ok(query("m1", "o1").at_time(later(100))), vec![], "revoked once");

    let mut w = paid_world(0);
    assert_eq!(w.ok(query("m1", "o1").at_time(later(3_600))), vec![]);
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Paid);
}

#[test]
fn the_clocks_tick_revokes_an_order_at_its_deadline_and_nothing_else() {
    use facepay_ledger::sweep::{tick, Due};
    let mut w = World::new();
    w.ok(pay_unresolved("m1", "o1", "60.00", 1));
    let due = Due::Order { merchant_id: merchant("m1"), out_trade_no: otn("o1"), created_at: t0() };
    let t = tick(&due);
    // The tick is stamped with the deadline and named by the order: the same tick every time.
    assert_eq!(t.accepted_at, later(45));
    assert_eq!(t.event_id, tick(&due).event_id);
    let other = Due::Order { merchant_id: merchant("m1"), out_trade_no: otn("o2"), created_at: t0() };
    assert_ne!(t.event_id, tick(&other).event_id);
    // A second early is a second too early; at the deadline the order is revoked, once.
    assert_eq!(w.ok(t.clone().at_time(later(44))), vec![]);
    assert!(matches!(w.ok(t.clone()).as_slice(), [LedgerEvent::OrderRevoked { .. }]));
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Revoked);
    assert_eq!(w.ok(t), vec![]);
    // A paid order is never revoked by the clock.
    let mut w = paid_world(0);
    let due = Due::Order { merchant_id: merchant("m1"), out_trade_no: otn("o1"), created_at: t0() };
    assert_eq!(w.ok(tick(&due).at_time(later(3_600))), vec![]);
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Paid);
}

#[test]
fn the_clocks_tick_expires_an_open_hold_after_30_days_and_leaves_an_ended_one() {
    use facepay_ledger::sweep::{tick, Due};
    let mut w = authorised_world("100.00");
    w.ok(hold("m1", "h1", "p1", "30.00"));
    let due = Due::Hold { merchant_id: merchant("m1"), out_order_no: ono("h1"), created_at: t0() };
    let t = tick(&due);
    assert_eq!(t.accepted_at, later(30 * 86_400));
    assert_eq!(w.ok(t.clone().at_time(later(30 * 86_400 - 1))), vec![]);
    assert!(matches!(w.ok(t.clone()).as_slice(), [LedgerEvent::HoldExpired { .. }]));
    assert_eq!((w.balance(wallet("p1")), w.balance(Account::Hold(payer("p1")))), (10_000, 0));
    assert_eq!(w.ok(t), vec![], "expired once");
}

#[test]
fn revocation_is_decided_on_event_time_so_replay_agrees() {
    let cmds = vec![
        pay_unresolved("m1", "o1", "60.00", 1),
        fund("p1", "100.00").at_time(later(10)),
        pay("m1", "o1", "60.00", 2, "p1").at_time(later(50)),
    ];
    let mut w = World::new();
    let mut log = Vec::new();
    for c in cmds {
        let at = c.accepted_at;
        log.extend(w.ok(c).into_iter().map(|e| (at, e)));
    }
    let mut replayed = LedgerState::default();
    for (at, e) in &log {
        apply(&mut replayed, e, *at);
    }
    assert_eq!(replayed, w.state);
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Revoked);
}

// ---- refunds ------------------------------------------------------------------------------

#[test]
fn a_partial_refund_returns_its_share_of_the_fee() {
    let mut w = paid_world(5_400);
    let events = w.ok(refund("m1", "o1", "r1", "20.00"));
    let [LedgerEvent::RefundSucceeded { fee_refund_fen, transfer, .. }] = events.as_slice() else { panic!() };
    assert_eq!(*fee_refund_fen, 11, "32 × 20/60 = 10.67 → 11");
    transfer.assert_balanced();
    assert_eq!(w.balance(wallet("p1")), 6_000);
    assert_eq!(w.balance(settlement("m1")), 5_968 - (2_000 - 11));
    assert_eq!(w.balance(Account::PlatformFees), 21);
    let o = w.order("m1", "o1");
    assert_eq!((o.status, o.refunded_fen, o.fee_refunded_fen), (OrderStatus::Paid, 2_000, 11));
    let day = facepay_domain::time::shanghai_day(t0());
    let s = w.state.settlement[&(merchant("m1"), day)];
    assert_eq!((s.gross_fen, s.refunds_fen, s.fees_fen, s.net_fen()), (6_000, 2_000, 21, 3_979));
    w.assert_balanced();
}

#[test]
fn refunds_up_to_the_payment_return_the_whole_fee_and_no_more() {
    let mut w = paid_world(5_400);
    w.ok(refund("m1", "o1", "r1", "20.00"));
    w.ok(refund("m1", "o1", "r2", "20.00"));
    w.ok(refund("m1", "o1", "r3", "20.00"));
    let o = w.order("m1", "o1");
    assert_eq!((o.refunded_fen, o.fee_refunded_fen), (6_000, 32));
    assert_eq!((w.balance(settlement("m1")), w.balance(Account::PlatformFees)), (0, 0));
    w.refused(refund("m1", "o1", "r4", "0.01"), RefusalReason::RefundExceedsPaid);
}

#[test]
fn a_refund_above_what_is_left_is_refused() {
    let mut w = paid_world(0);
    w.ok(refund("m1", "o1", "r1", "50.00"));
    w.refused(refund("m1", "o1", "r2", "10.01"), RefusalReason::RefundExceedsPaid);
    assert_eq!(RefusalReason::RefundExceedsPaid.channel_code(), "INVALID_REQUEST");
    w.ok(refund("m1", "o1", "r2", "10.00"));
}

#[test]
fn a_refund_is_idempotent_per_refund_number_and_another_amount_under_it_is_refused() {
    let mut w = paid_world(0);
    assert_eq!(w.ok(refund("m1", "o1", "r1", "10.00")).len(), 1);
    assert_eq!(w.ok(refund("m1", "o1", "r1", "10.00")), vec![], "the same refund again posts nothing");
    assert_eq!(w.balance(wallet("p1")), 5_000);
    w.refused(refund("m1", "o1", "r1", "11.00"), RefusalReason::RefundNoUsed);
}

#[test]
fn refunds_of_unpaid_reversed_or_unknown_orders_are_refused() {
    let mut w = World::new();
    w.ok(pay("m1", "o1", "60.00", 1, "p1")); // declined (no money)
    w.refused(refund("m1", "o1", "r1", "1.00"), RefusalReason::OrderNotPaid);
    w.refused(refund("m1", "nope", "r1", "1.00"), RefusalReason::OrderNotFound);
    let mut w = paid_world(0);
    w.ok(reverse("m1", "o1"));
    w.refused(refund("m1", "o1", "r1", "1.00"), RefusalReason::OrderReversed);
}

// ---- Pay Score holds ----------------------------------------------------------------------

/// A world where p1 has `amount` and authorised m1's and m2's Pay Score.
fn authorised_world(amount: &str) -> World {
    let mut w = World::new();
    w.ok(fund("p1", amount));
    w.ok(authorise_pay_score("m1", "p1"));
    w.ok(authorise_pay_score("m2", "p1"));
    w
}

fn held_world() -> World {
    let mut w = authorised_world("300.00");
    w.ok(fee_rate("m1", 6_000));
    w.ok(hold("m1", "h1", "p1", "200.00"));
    w
}

#[test]
fn a_hold_reduces_the_available_balance() {
    let mut w = held_world();
    assert_eq!((w.balance(wallet("p1")), w.balance(hold_account("p1"))), (10_000, 20_000));
    let events = w.ok(pay("m1", "o1", "150.00", 1, "p1"));
    assert!(
        matches!(events.as_slice(), [LedgerEvent::PaymentDeclined { reason: DeclineReason::InsufficientBalance, .. }]),
        "only 100.00 is available"
    );
    w.refused(hold("m1", "h2", "p1", "100.01"), RefusalReason::InsufficientBalance);
    w.assert_balanced();
}

#[test]
fn completing_posts_the_total_less_the_fee_and_releases_the_rest() {
    let mut w = held_world();
    let events = w.ok(complete("m1", "h1", "60.00"));
    assert!(matches!(events.as_slice(), [LedgerEvent::HoldCompleted { fee_fen: 36, .. }]));
    assert_eq!(w.balance(wallet("p1")), 30_000 - 6_000);
    assert_eq!(w.balance(hold_account("p1")), 0);
    assert_eq!((w.balance(settlement("m1")), w.balance(Account::PlatformFees)), (6_000 - 36, 36));
    let h = &w.state.holds[&(merchant("m1"), ono("h1"))];
    assert_eq!((h.status, h.total_fen), (HoldStatus::Done, Some(6_000)));
    w.assert_balanced();
}

#[test]
fn completing_the_whole_hold_empties_it_exactly() {
    let mut w = held_world();
    w.ok(complete("m1", "h1", "200.00"));
    assert_eq!((w.balance(wallet("p1")), w.balance(hold_account("p1"))), (10_000, 0));
}

#[test]
fn a_completion_above_the_hold_is_refused() {
    let mut w = held_world();
    w.refused(complete("m1", "h1", "200.01"), RefusalReason::CompletionAboveHold);
}

#[test]
fn cancelling_releases_the_whole_hold() {
    let mut w = held_world();
    w.ok(cancel("m1", "h1"));
    assert_eq!((w.balance(wallet("p1")), w.balance(hold_account("p1"))), (30_000, 0));
    assert_eq!(w.state.holds[&(merchant("m1"), ono("h1"))].status, HoldStatus::Revoked);
}

#[test]
fn completing_or_cancelling_twice_and_complete_after_cancel_are_refused() {
    let mut w = held_world();
    w.ok(complete("m1", "h1", "10.00"));
    w.refused(complete("m1", "h1", "10.00"), RefusalReason::HoldCompleted);
    w.refused(cancel("m1", "h1"), RefusalReason::HoldCompleted);
    let mut w = held_world();
    w.ok(cancel("m1", "h1"));
    w.refused(cancel("m1", "h1"), RefusalReason::HoldCancelled);
    w.refused(complete("m1", "h1", "10.00"), RefusalReason::HoldCancelled);
    assert_eq!(RefusalReason::HoldCancelled.channel_code(), "ORDER_CANCELED");
}

#[test]
fn creating_a_hold_is_idempotent_and_its_number_cannot_be_reused() {
    let mut w = held_world();
    assert_eq!(w.ok(hold("m1", "h1", "p1", "200.00")), vec![]);
    w.refused(hold("m1", "h1", "p1", "100.00"), RefusalReason::OutOrderNoUsed);
    w.refused(complete("m1", "nope", "1.00"), RefusalReason::OrderNotFound);
}

#[test]
fn a_frozen_payer_cannot_take_a_hold() {
    let mut w = authorised_world("300.00");
    w.ok(freeze("p1"));
    w.refused(hold("m1", "h1", "p1", "1.00"), RefusalReason::PayerFrozen);
}

#[test]
fn a_hold_expires_after_30_days_of_event_time_and_then_refuses_completion() {
    let mut w = held_world();
    assert_eq!(w.ok(expire("m1", "h1").at_time(t0() + Duration::days(29))), vec![], "not yet");
    let late = complete("m1", "h1", "10.00").at_time(t0() + Duration::days(30));
    let before = w.balance(wallet("p1"));
    assert_eq!(w.run(late), Err(DomainError::Refused(RefusalReason::HoldExpired)));
    assert_eq!(w.state.holds[&(merchant("m1"), ono("h1"))].status, HoldStatus::Expired);
    assert_eq!(w.balance(wallet("p1")), before + 20_000, "the expiry released the hold");
    assert_eq!(w.balance(hold_account("p1")), 0);
    w.refused(cancel("m1", "h1").at_time(t0() + Duration::days(31)), RefusalReason::HoldExpired);
}

#[test]
fn a_clock_tick_expires_a_forgotten_hold() {
    let mut w = held_world();
    let events = w.ok(expire("m1", "h1").at_time(t0() + Duration::days(30)));
    assert!(matches!(events.as_slice(), [LedgerEvent::HoldExpired { .. }]));
    assert_eq!(w.ok(expire("m1", "h1").at_time(t0() + Duration::days(31))), vec![], "expired once");
    assert_eq!(w.balance(wallet("p1")), 30_000);
}

#[test]
fn a_payment_after_30_days_releases_the_payers_expired_holds_first_whether_or_not_the_clock_ran() {
    // Given p1 with 100.00 free and 200.00 held by m1 since t0, and the clock not yet run,
    let mut w = held_world();
    w.ok(hold("m2", "h2", "p1", "50.00").at_time(t0() + Duration::days(10)));
    // when p1 pays 250.00 31 days later,
    let events = w.ok(pay("m1", "o1", "250.00", 1, "p1").at_time(t0() + Duration::days(31)));
    // then the expired hold (and only it) is released first and the payment succeeds on it.
    assert!(
        matches!(
            events.as_slice(),
            [LedgerEvent::HoldExpired { out_order_no, .. }, LedgerEvent::PaymentSucceeded { .. }] if *out_order_no == ono("h1")
        ),
        "{events:?}"
    );
    assert_eq!(w.state.holds[&(merchant("m1"), ono("h1"))].status, HoldStatus::Expired);
    assert_eq!(w.state.holds[&(merchant("m2"), ono("h2"))].status, HoldStatus::Created);
    assert_eq!((w.balance(wallet("p1")), w.balance(hold_account("p1"))), (0, 5_000));
    // The clock's later tick finds nothing left to do.
    assert_eq!(w.ok(expire("m1", "h1").at_time(t0() + Duration::days(32))), vec![]);
    w.assert_balanced();
}

#[test]
fn a_new_hold_after_30_days_releases_the_payers_expired_hold_first() {
    let mut w = held_world();
    let events = w.ok(hold("m1", "h2", "p1", "250.00").at_time(t0() + Duration::days(30)));
    assert!(
        matches!(events.as_slice(), [LedgerEvent::HoldExpired { .. }, LedgerEvent::HoldCreated { .. }]),
        "{events:?}"
    );
    assert_eq!((w.balance(wallet("p1")), w.balance(hold_account("p1"))), (5_000, 25_000));
    w.assert_balanced();
}

#[test]
fn a_declined_payment_still_releases_the_expired_hold_and_each_release_has_its_own_transfer() {
    let mut w = held_world();
    w.ok(hold("m2", "h2", "p1", "100.00"));
    let events = w.ok(pay("m1", "o1", "400.01", 1, "p1").at_time(t0() + Duration::days(30)));
    let ids: std::collections::BTreeSet<_> = events.iter().filter_map(|e| e.transfer()).map(|t| t.txn_id).collect();
    assert_eq!(ids.len(), 2, "two expiries, two transfers: {events:?}");
    assert!(matches!(events.last(), Some(LedgerEvent::PaymentDeclined { .. })));
    assert_eq!((w.balance(wallet("p1")), w.balance(hold_account("p1"))), (30_000, 0));
}

#[test]
fn every_refusal_has_a_distinct_stable_code_and_a_channel_code() {
    let codes: std::collections::BTreeSet<_> = RefusalReason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), RefusalReason::ALL.len());
    for r in RefusalReason::ALL {
        assert_eq!(RefusalReason::from_code(r.code()), Some(r));
        assert!(!r.channel_code().is_empty());
        assert_eq!(DomainError::Refused(r).code(), r.code());
    }
}

// ---- a timeout success confirmed by the channel's bill (issue 6) --------------------------

fn confirm(m: &str, o: &str, amount: &str, break_n: u128) -> Command {
    let c = facepay_ledger::reconcile::settle::ConfirmPaid {
        merchant_id: merchant(m),
        out_trade_no: otn(o),
        amount: cny(amount),
        paid_at: later(2),
        channel_txn_id: "4200000000000000000000000001".into(),
        break_id: uuid::Uuid::from_u128(break_n),
    };
    c.command(later(86_400))
}

/// m1 at 0.54 %; o1 60.00 declined with an unresolved identity (the network timed out).
fn timeout_world() -> World {
    let mut w = World::new();
    w.ok(fee_rate("m1", 5_400));
    w.ok(pay_unresolved("m1", "o1", "60.00", 1));
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Declined);
    w
}

#[test]
fn a_payment_the_bill_proves_is_settled_from_funding_with_the_merchants_fee() {
    let mut w = timeout_world();
    let events = w.ok(confirm("m1", "o1", "60.00", 1));
    let [LedgerEvent::PaymentConfirmed { fee_fen, transfer, paid_at, .. }] = events.as_slice() else {
        panic!("one confirmation: {events:?}")
    };
    assert_eq!((*fee_fen, *paid_at), (32, later(2)), "60.00 at 0.54 % is 0.32, counted when the channel took it");
    assert_eq!(transfer.postings.iter().map(|p| p.amount_fen).sum::<i64>(), 0);
    assert_eq!(w.balance(Account::Funding), -6_000);
    assert_eq!(w.balance(settlement("m1")), 6_000 - 32);
    assert_eq!(w.balance(Account::PlatformFees), 32);
    w.assert_balanced();
    let o = w.order("m1", "o1");
    assert_eq!((o.status, o.fee_fen, o.reason), (OrderStatus::Paid, 32, None));
    // The settlement counts it on the day the channel took the money, not the resolution's.
    let day = facepay_domain::time::shanghai_day(later(2));
    assert_eq!(w.state.settlement[&(merchant("m1"), day)].gross_fen, 6_000);
}

#[test]
fn a_confirmation_of_an_order_already_paid_is_refused_and_posts_nothing() {
    let mut w = timeout_world();
    w.ok(confirm("m1", "o1", "60.00", 1));
    w.refused(confirm("m1", "o1", "60.00", 2), RefusalReason::OrderPaid);
    assert_eq!(DomainError::Refused(RefusalReason::OrderPaid).code(), "ORDER_PAID");
    assert_eq!(w.balance(Account::PlatformFees), 32, "posted once");
}

#[test]
fn a_confirmation_of_another_amount_an_unknown_or_a_reversed_order_is_refused() {
    let mut w = timeout_world();
    w.refused(confirm("m1", "o1", "61.00", 1), RefusalReason::AmountMismatch);
    w.refused(confirm("m1", "o-none", "60.00", 1), RefusalReason::OrderNotFound);
    w.ok(reverse("m1", "o1").at_time(later(20)));
    w.refused(confirm("m1", "o1", "60.00", 1), RefusalReason::OrderReversed);
}

#[test]
fn a_confirmation_of_a_revoked_order_pays_it() {
    let mut w = timeout_world();
    w.ok(query("m1", "o1").at_time(later(46)));
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Revoked);
    w.ok(confirm("m1", "o1", "60.00", 1));
    assert_eq!(w.order("m1", "o1").status, OrderStatus::Paid);
    w.assert_balanced();
}

// ---- Pay Score authorisation: by face, once, per merchant -----------------------------------

#[test]
fn a_hold_needs_the_payers_authorisation_of_that_merchants_pay_score() {
    // Given p1 with money who authorised m1's Pay Score only,
    let mut w = World::new();
    w.ok(fund("p1", "300.00"));
    w.refused(hold("m1", "h1", "p1", "10.00"), RefusalReason::PayScoreNotAuthorised);
    let events = w.ok(authorise_pay_score("m1", "p1"));
    assert!(matches!(events.as_slice(), [LedgerEvent::PayScoreAuthorised { .. }]));
    // then m1 may hold p1's money, and m2 may not.
    w.ok(hold("m1", "h1", "p1", "10.00"));
    w.refused(hold("m2", "h2", "p1", "10.00"), RefusalReason::PayScoreNotAuthorised);
    assert_eq!(RefusalReason::PayScoreNotAuthorised.code(), "PAY_SCORE_NOT_AUTHORISED");
    // Authorising again changes nothing.
    assert_eq!(w.ok(authorise_pay_score("m1", "p1")), vec![]);
}

#[test]
fn a_hold_or_an_authorisation_whose_capture_did_not_resolve_is_refused() {
    let mut w = authorised_world("300.00");
    let unresolved = || facepay_ledger::Identity::Unresolved { rule: "no_match".into() };
    let mut h = hold("m1", "h1", "p1", "10.00");
    if let CommandKind::Lifecycle(Lifecycle::HoldCreate { identity, .. }) = &mut h.kind {
        *identity = unresolved();
    }
    w.refused(h, RefusalReason::IdentityUnresolved);
    let a = life(Lifecycle::PayScoreAuthorise {
        merchant_id: merchant("m3"),
        face_code: fresh_face(),
        identity: unresolved(),
    });
    w.refused(a, RefusalReason::IdentityUnresolved);
    assert_eq!(RefusalReason::IdentityUnresolved.channel_code(), "AUTH_CODE_INVALID");
}

#[test]
fn a_capture_authorises_once_whatever_it_was_spent_on() {
    // Given a capture spent on a payment,
    let mut w = authorised_world("300.00");
    w.ok(pay("m1", "o1", "10.00", 7, "p1"));
    // when it is offered again for a hold, a card or an authorisation, each is refused.
    let mut h = hold("m1", "h1", "p1", "10.00");
    if let CommandKind::Lifecycle(Lifecycle::HoldCreate { face_code, .. }) = &mut h.kind {
        *face_code = face(7);
    }
    w.refused(h, RefusalReason::CaptureUsed);
    let card = open_card_with("m1", face(7), resolved("p1"), "c1");
    assert_eq!(w.run(card), Err(DomainError::Refused(RefusalReason::CaptureUsed)));
    let a = life(Lifecycle::PayScoreAuthorise {
        merchant_id: merchant("m3"),
        face_code: face(7),
        identity: resolved("p1"),
    });
    w.refused(a, RefusalReason::CaptureUsed);
    // And a capture spent on a hold cannot pay.
    let h = hold("m1", "h2", "p1", "10.00");
    let spent = h.kind.capture().unwrap().0.clone();
    w.ok(h);
    let mut p = pay("m1", "o2", "10.00", 0, "p1");
    if let CommandKind::Pay { face_code, .. } = &mut p.kind {
        *face_code = spent;
    }
    assert!(matches!(w.ok(p).as_slice(), [LedgerEvent::PaymentDeclined { reason: DeclineReason::CaptureUsed, .. }]));
}
