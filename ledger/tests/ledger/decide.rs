//! Given/when/then tests of the pure core: every payment rule, its order, and the channel
//! codes a device is told.

use crate::common::*;
use chrono::{DateTime, Utc};
use facepay_domain::time::shanghai_day;
use facepay_domain::{DeclineReason, OrderStatus, PaymentResult};
use facepay_ledger::core::{apply, payment_result};
use facepay_ledger::model::{Account, Transfer};
use facepay_ledger::{decide, Command, DomainError, Identity, LedgerEvent, LedgerState, Policy};

// ---- the harness ------------------------------------------------------------------------

struct Given {
    state: LedgerState,
    policy: Policy,
}

/// A ledger that has seen `events` (each applied at [`t0`]).
fn given(events: &[LedgerEvent]) -> Given {
    given_at(&events.iter().map(|e| (t0(), e.clone())).collect::<Vec<_>>())
}

/// A ledger that has seen `events`, each at its own instant.
fn given_at(events: &[(DateTime<Utc>, LedgerEvent)]) -> Given {
    let mut state = LedgerState::default();
    for (when, e) in events {
        apply(&mut state, e, *when);
    }
    Given { state, policy: Policy::default() }
}

impl Given {
    fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    fn when(self, cmd: Command) -> Then {
        let before = self.state.clone();
        let result = decide(&self.state, &cmd, &self.policy);
        let mut after = self.state;
        if let Ok(events) = &result {
            for e in events {
                apply(&mut after, e, cmd.accepted_at);
            }
        }
        Then { before, after, policy: self.policy, cmd, result }
    }
}

struct Then {
    before: LedgerState,
    after: LedgerState,
    policy: Policy,
    cmd: Command,
    result: Result<Vec<LedgerEvent>, DomainError>,
}

impl Then {
    fn events(&self) -> &[LedgerEvent] {
        self.result.as_ref().unwrap_or_else(|e| panic!("expected events, got the refusal {e:?}"))
    }

    fn then_events(self, expected: &[LedgerEvent]) -> Self {
        assert_eq!(self.events(), expected);
        self
    }

    fn then_no_events(self) -> Self {
        assert_eq!(self.events(), &[] as &[LedgerEvent], "expected nothing to be decided");
        assert_eq!(self.before, self.after);
        self
    }

    fn then_error(self, expected: DomainError) -> Self {
        assert_eq!(self.result, Err(expected));
        self
    }

    /// One `PaymentDeclined` with `reason`, answered with the reason's channel code, and no
    /// money moved.
    fn then_declined(self, reason: DeclineReason) -> Self {
        match self.events() {
            [LedgerEvent::PaymentDeclined { reason: got, .. }] => assert_eq!(*got, reason),
            other => panic!("expected one decline {reason:?}, got {other:?}"),
        }
        let r = self.result_now();
        assert_eq!(r.status, OrderStatus::Declined);
        assert_eq!(r.reason, Some(reason));
        assert_eq!(r.channel_code.as_deref(), Some(reason.channel_code()));
        assert!(!r.replayed);
        assert_eq!(self.before.balances_fen, self.after.balances_fen, "a decline moves no money");
        self
    }

    /// One `PaymentSucceeded` moving the amount from the payer's wallet to the merchant.
    fn then_paid(self) -> Self {
        let LedgerEvent::PaymentSucceeded { attempt, payer_id, day, transfer, .. } = self.single() else {
            panic!("expected a payment, got {:?}", self.events())
        };
        assert_eq!(*day, shanghai_day(self.cmd.accepted_at));
        let expected = Transfer::between(
            txn_of(&self.cmd),
            Account::Wallet(payer_id.clone()),
            Account::Settlement(attempt.merchant_id.clone()),
            attempt.amount,
        );
        assert_eq!(*transfer, expected);
        let r = self.result_now();
        assert_eq!((r.status, r.reason, r.channel_code.clone(), r.replayed), (OrderStatus::Paid, None, None, false));
        assert_eq!(r.payer_id.as_ref(), Some(payer_id));
        self
    }

    fn single(&self) -> &LedgerEvent {
        match self.events() {
            [e] => e,
            other => panic!("expected one event, got {other:?}"),
        }
    }

    /// What the device is told for this command.
    fn result_now(&self) -> PaymentResult {
        payment_result(&self.after, &self.cmd, self.events()).expect("a payment has a result")
    }

    fn member_quick_pay(self, expected: bool) -> Self {
        match self.single() {
            LedgerEvent::PaymentSucceeded { member_quick_pay, .. } => assert_eq!(*member_quick_pay, expected),
            other => panic!("expected a payment, got {other:?}"),
        }
        assert_eq!(self.result_now().member_quick_pay, expected);
        self
    }

    fn balance(self, account: Account, fen: i64) -> Self {
        assert_eq!(self.after.balance_fen(&account), fen, "balance of {}", account.key());
        self
    }

    /// Goes on from the state this command left.
    fn and_when(self, cmd: Command) -> Then {
        Given { state: self.after, policy: self.policy }.when(cmd)
    }
}

fn wallet(p: &str) -> Account {
    Account::Wallet(payer(p))
}

fn settlement(m: &str) -> Account {
    Account::Settlement(merchant(m))
}

fn order_of(state: &LedgerState, m: &str, o: &str) -> facepay_ledger::model::Order {
    state.orders.get(&(merchant(m), otn(o))).cloned().expect("the order exists")
}

// ---- a successful payment ------------------------------------------------------------------

#[test]
fn a_funded_payer_pays_and_money_moves_from_wallet_to_settlement() {
    let t = given(&[funded("p1", "100.00")])
        .when(pay("m1", "o1", "30.00", 1, "p1"))
        .then_paid()
        .member_quick_pay(false)
        .balance(wallet("p1"), 7_000)
        .balance(settlement("m1"), 3_000);
    let order = order_of(&t.after, "m1", "o1");
    assert_eq!((order.status, order.amount_fen, order.payer_id), (OrderStatus::Paid, 3_000, Some(payer("p1"))));
    assert!(t.after.captures.contains_key(&face(1)), "the capture is consumed");
    assert_eq!(t.after.daily(&payer("p1"), shanghai_day(t0())).amount_fen, 3_000);
    assert_eq!(t.after.daily(&payer("p1"), shanghai_day(t0())).count, 1);
}

#[test]
fn paying_exactly_the_balance_is_allowed_and_empties_the_wallet() {
    given(&[funded("p1", "30.00")]).when(pay("m1", "o1", "30.00", 1, "p1")).then_paid().balance(wallet("p1"), 0);
}

// ---- identity -----------------------------------------------------------------------------

#[test]
fn an_unresolved_identity_is_declined_with_auth_code_invalid() {
    let t = given(&[funded("p1", "100.00")])
        .when(pay_unresolved("m1", "o1", "10.00", 1))
        .then_declined(DeclineReason::IdentityUnresolved);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("AUTH_CODE_INVALID"));
    assert_eq!(t.result_now().payer_id, None);
    let LedgerEvent::PaymentDeclined { payer_id, records_order, .. } = t.single() else { unreachable!() };
    assert_eq!((payer_id, records_order), (&None, &true));
    assert_eq!(order_of(&t.after, "m1", "o1").reason, Some(DeclineReason::IdentityUnresolved));
    // The capture is spent even though the payment failed.
    t.and_when(pay("m1", "o2", "10.00", 1, "p1")).then_declined(DeclineReason::CaptureUsed);
}

#[test]
fn an_unsure_face_asks_for_the_phone_digits_and_the_order_pays_on_the_next_capture() {
    let mut unsure = pay_unresolved("m1", "o1", "10.00", 1);
    if let facepay_ledger::CommandKind::Pay { identity, .. } = &mut unsure.kind {
        *identity = Identity::Unresolved { rule: facepay_domain::outcome::NEEDS_PHONE_CONFIRMATION.into() };
    }
    let t = given(&[funded("p1", "100.00")]).when(unsure).then_declined(DeclineReason::PhoneConfirmationRequired);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("AUTH_CODE_INVALID"));
    assert_eq!(t.result_now().reason.map(DeclineReason::code), Some("PHONE_CONFIRMATION_REQUIRED"));
    t.and_when(pay("m1", "o1", "10.00", 2, "p1")).then_paid();
}

#[test]
fn identity_is_checked_before_the_capture() {
    given(&[funded("p1", "100.00"), paid("m1", "o1", "10.00", 1, "p1")])
        .when(pay_unresolved("m1", "o2", "10.00", 1))
        .then_declined(DeclineReason::IdentityUnresolved);
}

// ---- capture ------------------------------------------------------------------------------

#[test]
fn a_capture_used_by_a_paid_order_is_refused_with_auth_code_error() {
    let t = given(&[funded("p1", "100.00"), paid("m1", "o1", "10.00", 1, "p1")])
        .when(pay("m2", "o9", "10.00", 1, "p1"))
        .then_declined(DeclineReason::CaptureUsed);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("AUTH_CODE_ERROR"));
}

#[test]
fn a_capture_is_single_use_even_when_its_payment_failed() {
    // The first use is declined for want of money; a second use is refused, even once funded.
    given(&[])
        .when(pay("m1", "o1", "10.00", 1, "p1"))
        .then_declined(DeclineReason::InsufficientBalance)
        .and_when(fund("p1", "100.00"))
        .and_when(pay("m1", "o2", "10.00", 1, "p1"))
        .then_declined(DeclineReason::CaptureUsed)
        .balance(wallet("p1"), 10_000);
}

#[test]
fn the_capture_is_checked_before_the_freeze() {
    given(&[funded("p1", "100.00"), paid("m1", "o1", "10.00", 1, "p1"), frozen("p1")])
        .when(pay("m1", "o2", "10.00", 1, "p1"))
        .then_declined(DeclineReason::CaptureUsed);
}

#[test]
fn a_late_duplicate_of_an_earlier_attempt_does_not_overwrite_the_order() {
    // o1 was declined with capture 1, retried with capture 2 and declined again; then the
    // first request arrives late. It is refused, and the order keeps its latest attempt, so
    // the device's exact retry of that attempt is still recognised.
    let t = given(&[])
        .when(pay("m1", "o1", "10.00", 1, "p1"))
        .then_declined(DeclineReason::InsufficientBalance)
        .and_when(pay("m1", "o1", "10.00", 2, "p1"))
        .then_declined(DeclineReason::InsufficientBalance)
        .and_when(pay("m1", "o1", "10.00", 1, "p1"))
        .then_declined(DeclineReason::CaptureUsed);
    assert_eq!(order_of(&t.after, "m1", "o1").reason, Some(DeclineReason::InsufficientBalance));
    t.and_when(pay("m1", "o1", "10.00", 2, "p1")).then_no_events();
}

// ---- frozen payer ---------------------------------------------------------------------------

#[test]
fn a_frozen_payer_is_declined_with_trade_error() {
    let t = given(&[funded("p1", "100.00"), frozen("p1")])
        .when(pay("m1", "o1", "10.00", 1, "p1"))
        .then_declined(DeclineReason::PayerFrozen);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("TRADE_ERROR"));
}

#[test]
fn a_frozen_payer_over_the_limit_gets_payer_frozen() {
    given(&[funded("p1", "5000.00"), frozen("p1")])
        .when(pay("m1", "o1", "1000.01", 1, "p1"))
        .then_declined(DeclineReason::PayerFrozen);
}

#[test]
fn an_unfrozen_payer_pays_again() {
    given(&[funded("p1", "100.00"), frozen("p1"), unfrozen("p1")]).when(pay("m1", "o1", "10.00", 1, "p1")).then_paid();
}

#[test]
fn freezing_one_payer_does_not_freeze_another() {
    given(&[funded("p2", "100.00"), frozen("p1")]).when(pay("m1", "o1", "10.00", 1, "p2")).then_paid();
}

// ---- single limit ---------------------------------------------------------------------------

#[test]
fn the_default_single_limit_is_1000_cny_inclusive() {
    given(&[funded("p1", "5000.00")]).when(pay("m1", "o1", "1000.00", 1, "p1")).then_paid();
    let t = given(&[funded("p1", "5000.00")])
        .when(pay("m1", "o1", "1000.01", 1, "p1"))
        .then_declined(DeclineReason::OverSingleLimit);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("TRADE_ERROR"));
}

#[test]
fn over_the_limit_with_insufficient_balance_gets_over_single_limit() {
    given(&[funded("p1", "1.00")])
        .when(pay("m1", "o1", "1500.00", 1, "p1"))
        .then_declined(DeclineReason::OverSingleLimit);
}

#[test]
fn a_raised_limit_passes_1500_then_the_daily_amount_cap_stops_it() {
    let history = [funded("p1", "5000.00"), limit_changed("m1", "2000.00")];
    given(&history).when(pay("m1", "o1", "1500.00", 1, "p1")).then_declined(DeclineReason::DailyAmountCap);
    // With a higher daily cap it goes through.
    let policy = Policy { daily_amount_cap_fen: 200_000, ..Policy::default() };
    given(&history)
        .with_policy(policy)
        .when(pay("m1", "o1", "1500.00", 1, "p1"))
        .then_paid()
        .balance(wallet("p1"), 350_000);
    // Without the raised limit, the same policy still refuses it, on the single limit.
    given(&[funded("p1", "5000.00")])
        .with_policy(policy)
        .when(pay("m1", "o1", "1500.00", 1, "p1"))
        .then_declined(DeclineReason::OverSingleLimit);
}

#[test]
fn a_raised_limit_applies_to_its_merchant_only() {
    let policy = Policy { daily_amount_cap_fen: 500_000, ..Policy::default() };
    let history = [funded("p1", "5000.00"), limit_changed("m1", "2000.00")];
    given(&history).with_policy(policy).when(pay("m1", "o1", "1500.00", 1, "p1")).then_paid();
    given(&history)
        .with_policy(policy)
        .when(pay("m2", "o1", "1500.00", 1, "p1"))
        .then_declined(DeclineReason::OverSingleLimit);
}

#[test]
fn a_lowered_limit_refuses_what_the_default_allowed() {
    given(&[funded("p1", "5000.00"), limit_changed("m1", "500.00")])
        .when(pay("m1", "o1", "500.01", 1, "p1"))
        .then_declined(DeclineReason::OverSingleLimit);
}

#[test]
fn set_merchant_limit_records_the_change() {
    let t = given(&[]).when(set_limit("m1", "2000.00")).then_events(&[limit_changed("m1", "2000.00")]);
    assert_eq!(t.after.single_limit_fen(&merchant("m1")), 200_000);
    assert_eq!(t.after.single_limit_fen(&merchant("m2")), 100_000);
}

// ---- daily amount cap ---------------------------------------------------------------------

#[test]
fn the_daily_amount_cap_is_1000_cny_inclusive_across_merchants() {
    let t = given(&[funded("p1", "5000.00"), paid("m1", "o1", "600.00", 1, "p1")])
        .when(pay("m2", "o1", "400.00", 2, "p1"))
        .then_paid();
    let t = t.and_when(pay("m3", "o1", "0.01", 3, "p1")).then_declined(DeclineReason::DailyAmountCap);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("TRADE_ERROR"));
}

#[test]
fn declined_payments_do_not_count_towards_the_daily_caps() {
    given(&[funded("p1", "5000.00"), declined("m1", "o1", "900.00", 1, Some("p1"), DeclineReason::PayerFrozen)])
        .when(pay("m1", "o2", "1000.00", 2, "p1"))
        .then_paid();
}

#[test]
fn the_daily_caps_are_per_payer() {
    given(&[funded("p2", "100.00"), paid("m1", "o1", "1000.00", 1, "p1")])
        .when(pay("m1", "o2", "10.00", 2, "p2"))
        .then_paid();
}

#[test]
fn the_shanghai_day_turns_at_16_00_utc() {
    let before = at("2026-03-01T15:59:59Z");
    let after = at("2026-03-01T16:00:00Z");
    let history = [(before, funded("p1", "5000.00")), (before, paid_at("m1", "o1", "1000.00", 1, "p1", before))];
    // One second before the turn it is still the same day: capped.
    given_at(&history)
        .when(pay("m1", "o2", "1.00", 2, "p1").at_time(before))
        .then_declined(DeclineReason::DailyAmountCap);
    // At the turn it is a new day: allowed, and counted against the new day.
    let t = given_at(&history).when(pay("m1", "o2", "1.00", 2, "p1").at_time(after)).then_paid();
    let LedgerEvent::PaymentSucceeded { day, .. } = t.single() else { unreachable!() };
    assert_eq!(day.to_string(), "2026-03-02");
    assert_eq!(t.after.daily(&payer("p1"), shanghai_day(before)).amount_fen, 100_000);
    assert_eq!(t.after.daily(&payer("p1"), *day).amount_fen, 100);
}

#[test]
fn midnight_utc_is_still_the_same_shanghai_day() {
    // 23:00Z on the 1st and 01:00Z on the 2nd are both 2026-03-02 in Shanghai.
    let late = at("2026-03-01T23:00:00Z");
    let history = [(late, funded("p1", "5000.00")), (late, paid_at("m1", "o1", "1000.00", 1, "p1", late))];
    given_at(&history)
        .when(pay("m1", "o2", "1.00", 2, "p1").at("2026-03-02T01:00:00Z"))
        .then_declined(DeclineReason::DailyAmountCap);
}

#[test]
fn the_daily_amount_cap_is_checked_before_the_count_cap() {
    let policy = Policy { daily_count_cap: 1, ..Policy::default() };
    given(&[funded("p1", "5000.00"), paid("m1", "o1", "999.00", 1, "p1")])
        .with_policy(policy)
        .when(pay("m1", "o2", "2.00", 2, "p1"))
        .then_declined(DeclineReason::DailyAmountCap);
}

#[test]
fn the_daily_amount_cap_is_checked_before_the_balance() {
    given(&[funded("p1", "1000.00"), paid("m1", "o1", "1000.00", 1, "p1")])
        .when(pay("m1", "o2", "1.00", 2, "p1"))
        .then_declined(DeclineReason::DailyAmountCap);
}

// ---- daily count cap ----------------------------------------------------------------------

#[test]
fn the_hundred_and_first_face_payment_of_a_day_is_refused() {
    let mut t = given(&[funded("p1", "100.00")]).when(fund("p1", "0.01"));
    for i in 0..100u64 {
        t = t.and_when(pay("m1", &format!("o{i}"), "0.01", 1000 + i, "p1")).then_paid();
    }
    assert_eq!(t.after.daily(&payer("p1"), shanghai_day(t0())).count, 100);
    let t = t.and_when(pay("m1", "o100", "0.01", 2000, "p1")).then_declined(DeclineReason::DailyCountCap);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("TRADE_ERROR"));
    // The next Shanghai day the count starts again.
    t.and_when(pay("m1", "o101", "0.01", 2001, "p1").at("2026-03-02T16:00:00Z")).then_paid();
}

#[test]
fn the_count_cap_comes_from_the_policy_and_precedes_the_balance() {
    let policy = Policy { daily_count_cap: 2, ..Policy::default() };
    given(&[paid("m1", "o1", "1.00", 1, "p1"), paid("m2", "o1", "1.00", 2, "p1"), funded("p1", "2.00")])
        .with_policy(policy)
        .when(pay("m3", "o1", "1.00", 3, "p1"))
        .then_declined(DeclineReason::DailyCountCap);
}

// ---- balance ------------------------------------------------------------------------------

#[test]
fn an_insufficient_balance_is_declined_with_notenough() {
    let t = given(&[funded("p1", "10.00")])
        .when(pay("m1", "o1", "10.01", 1, "p1"))
        .then_declined(DeclineReason::InsufficientBalance)
        .balance(wallet("p1"), 1_000);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("NOTENOUGH"));
}

#[test]
fn an_unknown_payer_has_nothing_to_pay_with() {
    given(&[]).when(pay("m1", "o1", "0.01", 1, "p9")).then_declined(DeclineReason::InsufficientBalance);
}

// ---- idempotency per (merchant, out_trade_no) ---------------------------------------------

#[test]
fn an_exact_retry_of_a_paid_order_decides_nothing_and_replays_the_outcome() {
    let first = pay("m1", "o1", "30.00", 1, "p1");
    let mut retry = first.clone();
    retry.event_id = event_id();
    let t = given(&[funded("p1", "100.00")]).when(first).then_paid().and_when(retry).then_no_events();
    let r = t.result_now();
    assert!(r.replayed);
    assert_eq!((r.status, r.amount, r.payer_id), (OrderStatus::Paid, cny("30.00"), Some(payer("p1"))));
    assert_eq!(t.after.balance_fen(&wallet("p1")), 7_000);
}

#[test]
fn an_exact_retry_of_a_declined_order_replays_the_decline() {
    let t = given(&[funded("p1", "5.00")])
        .when(pay("m1", "o1", "30.00", 1, "p1"))
        .then_declined(DeclineReason::InsufficientBalance)
        .and_when(pay("m1", "o1", "30.00", 1, "p1"))
        .then_no_events();
    let r = t.result_now();
    assert!(r.replayed);
    assert_eq!(r.reason, Some(DeclineReason::InsufficientBalance));
    assert_eq!(r.channel_code.as_deref(), Some("NOTENOUGH"));
}

#[test]
fn an_exact_retry_is_answered_before_any_other_rule() {
    // Since the payment, the payer was frozen and the merchant's limit lowered: the retry
    // still just returns the stored outcome.
    given(&[funded("p1", "100.00"), paid("m1", "o1", "30.00", 1, "p1"), frozen("p1"), limit_changed("m1", "10.00")])
        .when(pay("m1", "o1", "30.00", 1, "p1"))
        .then_no_events();
}

#[test]
fn the_same_order_number_with_another_amount_is_out_trade_no_used() {
    let history = [funded("p1", "100.00"), paid("m1", "o1", "30.00", 1, "p1")];
    let t = given(&history).when(pay("m1", "o1", "31.00", 2, "p1")).then_declined(DeclineReason::OutTradeNoUsed);
    let LedgerEvent::PaymentDeclined { records_order, .. } = t.single() else { unreachable!() };
    assert!(!records_order);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("OUT_TRADE_NO_USED"));
    assert_eq!(t.result_now().amount, cny("31.00"), "the answer names the refused attempt");
    // The order keeps its state.
    assert_eq!(t.after.orders, t.before.orders);
    // Even with the original capture (so not an exact retry) it is refused the same way.
    given(&history).when(pay("m1", "o1", "31.00", 1, "p1")).then_declined(DeclineReason::OutTradeNoUsed);
}

#[test]
fn out_trade_no_used_also_protects_a_declined_order() {
    let t = given(&[declined("m1", "o1", "30.00", 1, Some("p1"), DeclineReason::InsufficientBalance)])
        .when(pay("m1", "o1", "40.00", 2, "p1"))
        .then_declined(DeclineReason::OutTradeNoUsed);
    let order = order_of(&t.after, "m1", "o1");
    assert_eq!((order.amount_fen, order.reason), (3_000, Some(DeclineReason::InsufficientBalance)));
}

#[test]
fn a_paid_order_is_never_paid_again() {
    let t = given(&[funded("p1", "100.00"), paid("m1", "o1", "30.00", 1, "p1")])
        .when(pay("m1", "o1", "30.00", 2, "p1"))
        .then_declined(DeclineReason::OrderPaid)
        .balance(wallet("p1"), 7_000);
    let LedgerEvent::PaymentDeclined { records_order, .. } = t.single() else { unreachable!() };
    assert!(!records_order);
    assert_eq!(t.result_now().channel_code.as_deref(), Some("ORDERPAID"));
    assert_eq!(t.after.orders, t.before.orders, "the paid order keeps its state");
    assert_eq!(t.after.daily, t.before.daily);
}

#[test]
fn order_paid_comes_before_a_frozen_payer_and_an_unresolved_identity() {
    let history = [funded("p1", "100.00"), paid("m1", "o1", "30.00", 1, "p1"), frozen("p1")];
    given(&history).when(pay("m1", "o1", "30.00", 2, "p1")).then_declined(DeclineReason::OrderPaid);
    given(&history).when(pay_unresolved("m1", "o1", "30.00", 3)).then_declined(DeclineReason::OrderPaid);
}

#[test]
fn a_declined_order_may_be_retried_with_a_new_capture_and_succeed() {
    let t = given(&[funded("p1", "10.00")])
        .when(pay("m1", "o1", "30.00", 1, "p1").at("2026-03-02T04:00:00Z"))
        .then_declined(DeclineReason::InsufficientBalance)
        .and_when(fund("p1", "50.00"))
        // Within the 45 s an unpaid order lives (after that it is revoked: see lifecycle.rs).
        .and_when(pay("m1", "o1", "30.00", 2, "p1").at("2026-03-02T04:00:30Z"))
        .then_paid()
        .balance(wallet("p1"), 3_000);
    let order = order_of(&t.after, "m1", "o1");
    assert_eq!((order.status, order.reason, order.face_code), (OrderStatus::Paid, None, face(2)));
    assert_eq!(order.created_at, at("2026-03-02T04:00:00Z"), "the order keeps its creation time");
    assert_eq!(order.updated_at, at("2026-03-02T04:00:30Z"));
    // And then a retry with the first capture is not exact any more: the order is paid.
    t.and_when(pay("m1", "o1", "30.00", 1, "p1")).then_declined(DeclineReason::OrderPaid);
}

#[test]
fn order_numbers_are_per_merchant() {
    given(&[funded("p1", "100.00"), paid("m1", "o1", "30.00", 1, "p1")])
        .when(pay("m2", "o1", "30.00", 2, "p1"))
        .then_paid()
        .balance(settlement("m2"), 3_000);
}

// ---- queries ------------------------------------------------------------------------------

#[test]
fn a_query_decides_nothing_and_reports_the_order() {
    let t =
        given(&[funded("p1", "100.00"), paid("m1", "o1", "30.00", 1, "p1")]).when(query("m1", "o1")).then_no_events();
    let r = t.result_now();
    assert_eq!((r.status, r.replayed, r.amount), (OrderStatus::Paid, false, cny("30.00")));
    let t = given(&[]).when(query("m1", "nope")).then_no_events();
    assert_eq!(payment_result(&t.after, &t.cmd, &[]), None);
}

// ---- members ------------------------------------------------------------------------------

#[test]
fn opening_a_member_card_records_it_and_members_pay_quick() {
    let t = given(&[funded("p1", "100.00")]).when(open_card_with("m1", face(90), resolved("p1"), "c1")).then_events(&[
        LedgerEvent::MemberCardOpened {
            merchant_id: merchant("m1"),
            payer_id: payer("p1"),
            card_code: card("c1"),
            channel: facepay_domain::CardChannel::CardPackage,
            face_code: Some(face(90)),
        },
    ]);
    assert!(t.after.is_member(&merchant("m1"), &payer("p1")));
    assert!(t.after.captures.contains_key(&face(90)), "the capture that opened it is spent");
    let t = t.and_when(pay("m1", "o1", "10.00", 1, "p1")).then_paid().member_quick_pay(true);
    assert!(order_of(&t.after, "m1", "o1").member_quick_pay);
    // A member of m1 is not a member of m2.
    t.and_when(pay("m2", "o1", "10.00", 2, "p1")).then_paid().member_quick_pay(false);
}

#[test]
fn reopening_with_the_same_card_is_a_no_op() {
    given(&[card_opened("m1", "p1", "c1")]).when(open_card("m1", "p1", "c1")).then_no_events();
}

#[test]
fn opening_another_card_while_one_is_open_is_refused() {
    given(&[card_opened("m1", "p1", "c1")])
        .when(open_card("m1", "p1", "c2"))
        .then_error(DomainError::MemberCardAlreadyOpen);
    assert_eq!(DomainError::MemberCardAlreadyOpen.code(), "MEMBER_CARD_ALREADY_OPEN");
}

#[test]
fn closing_a_card_ends_quick_pay() {
    let closed = LedgerEvent::MemberCardClosed {
        merchant_id: merchant("m1"),
        payer_id: payer("p1"),
        card_code: card("c1"),
        face_code: Some(face(91)),
    };
    let t = given(&[funded("p1", "100.00"), card_opened("m1", "p1", "c1")])
        .when(close_card_with("m1", face(91), resolved("p1"), "c1"))
        .then_events(&[closed]);
    assert!(!t.after.is_member(&merchant("m1"), &payer("p1")));
    assert!(t.after.members[&(merchant("m1"), payer("p1"))].closed_at.is_some());
    t.and_when(pay("m1", "o1", "10.00", 1, "p1")).then_paid().member_quick_pay(false);
}

#[test]
fn closing_a_card_that_is_not_open_is_refused() {
    given(&[]).when(close_card("m1", "p1", "c1")).then_error(DomainError::MemberCardNotOpen);
    given(&[card_opened("m1", "p1", "c1"), card_closed("m1", "p1", "c1")])
        .when(close_card("m1", "p1", "c1"))
        .then_error(DomainError::MemberCardNotOpen);
    // Another merchant's card does not count.
    given(&[card_opened("m2", "p1", "c1")])
        .when(close_card("m1", "p1", "c1"))
        .then_error(DomainError::MemberCardNotOpen);
}

#[test]
fn a_card_is_opened_only_by_a_face_that_resolved_and_a_capture_not_spent() {
    // An unresolved capture names nobody: refused, nothing recorded.
    let unresolved = Identity::Unresolved { rule: "no_match".into() };
    given(&[])
        .when(open_card_with("m1", face(93), unresolved, "c1"))
        .then_error(DomainError::Refused(facepay_domain::RefusalReason::IdentityUnresolved));
    // A capture already spent on a payment cannot open a card (nor bind its payer to the
    // merchant's member tier).
    let t = given(&[funded("p1", "100.00")]).when(pay("m1", "o1", "10.00", 94, "p1")).then_paid();
    t.and_when(open_card_with("m1", face(94), resolved("p1"), "c1"))
        .then_error(DomainError::Refused(facepay_domain::RefusalReason::CaptureUsed));
}

#[test]
fn closing_with_the_wrong_card_code_is_refused() {
    let t = given(&[card_opened("m1", "p1", "c1")])
        .when(close_card("m1", "p1", "c2"))
        .then_error(DomainError::CardCodeMismatch);
    assert!(t.after.is_member(&merchant("m1"), &payer("p1")), "the card stays open");
}

#[test]
fn a_closed_card_may_be_reopened_with_another_code() {
    let t = given(&[card_opened("m1", "p1", "c1"), card_closed("m1", "p1", "c1")])
        .when(open_card_with("m1", face(92), resolved("p1"), "c2"))
        .then_events(&[LedgerEvent::MemberCardOpened {
            merchant_id: merchant("m1"),
            payer_id: payer("p1"),
            card_code: card("c2"),
            channel: facepay_domain::CardChannel::CardPackage,
            face_code: Some(face(92)),
        }]);
    let m = &t.after.members[&(merchant("m1"), payer("p1"))];
    assert_eq!((m.card_code.clone(), m.closed_at), (card("c2"), None));
}

#[test]
fn a_members_accepted_payment_here_is_their_last_visit_and_nothing_else_is() {
    let member = |t: &Then| t.after.members[&(merchant("m1"), payer("p1"))].last_visit_at;
    let cmd = pay("m1", "o1", "10.00", 1, "p1");
    let visited_at = cmd.accepted_at;
    // Each later command a minute after the one before it, on the platform's clock.
    let later = |mut c: Command, minutes: i64| {
        c.accepted_at = visited_at + chrono::Duration::minutes(minutes);
        c
    };
    let t = given(&[funded("p1", "100.00"), card_opened("m1", "p1", "c1")]).when(cmd).then_paid();
    assert_eq!(member(&t), Some(visited_at), "the platform's time of the accepted payment");
    // Another merchant's payment, or a declined one here, is no visit here.
    let t = t.and_when(later(pay("m2", "o2", "10.00", 2, "p1"), 1)).then_paid();
    let t = t.and_when(later(pay("m1", "o3", "900.00", 3, "p1"), 2));
    assert_eq!(member(&t), Some(visited_at));
    let t = t.and_when(later(pay("m1", "o4", "1.00", 4, "p1"), 3)).then_paid();
    assert_eq!(member(&t), Some(visited_at + chrono::Duration::minutes(3)), "the latest accepted payment");
    // Once the card is closed its visits end; a new card starts with none.
    let t = t.and_when(later(close_card_with("m1", face(5), resolved("p1"), "c1"), 4));
    let t = t.and_when(later(pay("m1", "o6", "1.00", 6, "p1"), 5)).then_paid();
    assert_eq!(member(&t), Some(visited_at + chrono::Duration::minutes(3)));
    let t = t.and_when(later(open_card_with("m1", face(7), resolved("p1"), "c2"), 6));
    assert_eq!(member(&t), None);
}

// ---- funding, freezes, unsupported ----------------------------------------------------------

#[test]
fn funding_posts_from_funding_to_the_wallet_and_balances() {
    let cmd = fund("p1", "12.34");
    let transfer = Transfer::between(txn_of(&cmd), Account::Funding, wallet("p1"), cny("12.34"));
    let t = given(&[])
        .when(cmd)
        .then_events(&[LedgerEvent::AccountFunded { payer_id: payer("p1"), amount: cny("12.34"), transfer }])
        .balance(wallet("p1"), 1_234)
        .balance(Account::Funding, -1_234);
    let sum: i64 = t.single().transfer().unwrap().postings.iter().map(|p| p.amount_fen).sum();
    assert_eq!(sum, 0);
    assert_eq!(t.after.balances_fen.values().sum::<i64>(), 0);
}

#[test]
fn transfers_are_keyed_by_the_inbound_event() {
    let a = fund("p1", "1.00");
    let mut same = fund("p1", "1.00");
    same.event_id = a.event_id;
    let b = fund("p1", "1.00");
    let txn =
        |c: &Command| decide(&LedgerState::default(), c, &Policy::default()).unwrap()[0].transfer().unwrap().txn_id;
    assert_eq!(txn(&a), txn(&same));
    assert_ne!(txn(&a), txn(&b));
}

#[test]
#[should_panic(expected = "sum to zero")]
fn an_unbalanced_transfer_cannot_be_applied() {
    let mut t = Transfer::between(uuid::Uuid::new_v4(), Account::Funding, wallet("p1"), cny("1.00"));
    t.postings[1].amount_fen = 99;
    let e = LedgerEvent::AccountFunded { payer_id: payer("p1"), amount: cny("1.00"), transfer: t };
    apply(&mut LedgerState::default(), &e, t0());
}

#[test]
fn freeze_and_unfreeze_are_idempotent() {
    given(&[]).when(freeze("p1")).then_events(&[frozen("p1")]);
    given(&[frozen("p1")]).when(freeze("p1")).then_no_events();
    given(&[]).when(unfreeze("p1")).then_no_events();
    given(&[frozen("p1"), unfrozen("p1")]).when(unfreeze("p1")).then_no_events();
    let t = given(&[frozen("p1")]).when(unfreeze("p1")).then_events(&[unfrozen("p1")]);
    assert!(!t.after.is_frozen(&payer("p1")));
    given(&[frozen("p1"), unfrozen("p1")]).when(freeze("p1")).then_events(&[frozen("p1")]);
}

#[test]
fn unsupported_commands_are_refused() {
    given(&[])
        .when(command(facepay_ledger::CommandKind::NotYetSupported { kind: "refund_requested".into() }))
        .then_error(DomainError::NotYetSupported { kind: "refund_requested".into() });
}

// ---- channel codes ------------------------------------------------------------------------

#[test]
fn every_decline_reason_maps_to_its_channel_code() {
    use DeclineReason::*;
    let expected = [
        (IdentityUnresolved, "IDENTITY_UNRESOLVED", "AUTH_CODE_INVALID"),
        (CaptureUsed, "CAPTURE_USED", "AUTH_CODE_ERROR"),
        (PhoneConfirmationRequired, "PHONE_CONFIRMATION_REQUIRED", "AUTH_CODE_INVALID"),
        (PayerFrozen, "PAYER_FROZEN", "TRADE_ERROR"),
        (OverSingleLimit, "OVER_SINGLE_LIMIT", "TRADE_ERROR"),
        (DailyAmountCap, "DAILY_AMOUNT_CAP", "TRADE_ERROR"),
        (DailyCountCap, "DAILY_COUNT_CAP", "TRADE_ERROR"),
        (InsufficientBalance, "INSUFFICIENT_BALANCE", "NOTENOUGH"),
        (OrderPaid, "ORDER_PAID", "ORDERPAID"),
        (OutTradeNoUsed, "OUT_TRADE_NO_USED", "OUT_TRADE_NO_USED"),
        (OrderReversed, "ORDER_REVERSED", "ORDERREVERSED"),
        (OrderClosed, "ORDER_CLOSED", "ORDERCLOSED"),
    ];
    assert_eq!(expected.len(), DeclineReason::ALL.len());
    for (reason, code, channel) in expected {
        assert_eq!((reason.code(), reason.channel_code()), (code, channel), "{reason:?}");
        assert_eq!(DeclineReason::from_code(code), Some(reason));
    }
}
