//! Properties of the pure core: random command sequences over a small world (3 merchants,
//! 5 payers, a few order numbers and shared face codes, amounts over the limits, funding,
//! freezes, limit changes, member cards, exact retries, queries and same-payer payments on
//! two devices at once), folded through `decide`/`apply`, with the ledger's invariants
//! checked after every step.

use std::collections::BTreeMap;

use crate::common::*;
use chrono::{DateTime, NaiveDate, Utc};
use facepay_domain::time::shanghai_day;
use facepay_domain::{MerchantId, OrderStatus, OutTradeNo, PayerId};
use facepay_ledger::core::{apply, fee_fen, payment_result};
use facepay_ledger::lifecycle::refusal_after;
use facepay_ledger::{decide, Account, CommandKind, Identity, LedgerEvent, LedgerState, Policy};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn policy_strategy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::default()),
        // A small count cap, so sequences reach it.
        Just(Policy { daily_amount_cap_fen: 300_000, daily_count_cap: 2 }),
        // A high amount cap, so raised limits let big payments through.
        Just(Policy { daily_amount_cap_fen: 300_000, daily_count_cap: 100 }),
    ]
}

/// The state, and what the log says independently of it.
struct Fold {
    state: LedgerState,
    policy: Policy,
    /// Successful payments per order, counted from the events.
    paid: BTreeMap<(MerchantId, OutTradeNo), u32>,
    /// Successful (amount, count) per payer and Shanghai day, counted from the events.
    daily: BTreeMap<(PayerId, NaiveDate), (i64, u32)>,
    /// Balances, summed from the postings of the events.
    postings: BTreeMap<Account, i64>,
    exact_retries: u32,
    successes: u32,
    /// Every event, with its time: the log the state must replay from.
    log: Vec<(DateTime<Utc>, LedgerEvent)>,
    /// What was paid and refunded per order, counted from the events.
    paid_fen: BTreeMap<(MerchantId, OutTradeNo), i64>,
    refunded_fen: BTreeMap<(MerchantId, OutTradeNo), i64>,
    /// Lifecycle commands accepted (with events) and refused.
    life_events: u32,
    life_refusals: u32,
}

impl Fold {
    fn new(policy: Policy) -> Self {
        Self {
            state: LedgerState::default(),
            policy,
            paid: BTreeMap::new(),
            daily: BTreeMap::new(),
            postings: BTreeMap::new(),
            exact_retries: 0,
            successes: 0,
            log: Vec::new(),
            paid_fen: BTreeMap::new(),
            refunded_fen: BTreeMap::new(),
            life_events: 0,
            life_refusals: 0,
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let cmd = &step.cmd;
        let before = self.state.clone();
        let decided = decide(&before, cmd, &self.policy);
        let events = match (&cmd.kind, decided) {
            (_, Ok(events)) => events,
            (
                CommandKind::OpenMemberCard { .. }
                | CommandKind::CloseMemberCard { .. }
                | CommandKind::NotYetSupported { .. },
                Err(_),
            ) => vec![],
            (CommandKind::Lifecycle(_), Err(_)) => {
                self.life_refusals += 1;
                vec![]
            }
            (kind, Err(e)) => return Err(TestCaseError::fail(format!("{kind:?} refused: {e:?}"))),
        };
        for e in &events {
            apply(&mut self.state, e, cmd.accepted_at);
            self.record(e, cmd.accepted_at);
        }
        if matches!(cmd.kind, CommandKind::Lifecycle(_)) && !events.is_empty() {
            self.life_events += 1;
            if refusal_after(cmd, &events).is_some() {
                let expired_only = matches!(events.as_slice(), [LedgerEvent::HoldExpired { .. }]);
                prop_assert!(expired_only, "refused after {:?}", events);
            }
        }
        // A payment or query may first find its order past its 45 s and revoke it.
        let (revoked, events) = match events.split_first() {
            Some((LedgerEvent::OrderRevoked { merchant_id, out_trade_no, .. }, rest))
                if matches!(cmd.kind, CommandKind::Pay { .. }) =>
            {
                let key = (merchant_id.clone(), out_trade_no.clone());
                prop_assert_eq!(before.orders[&key].status, OrderStatus::Declined);
                prop_assert_eq!(self.state.orders[&key].status, OrderStatus::Revoked);
                (true, rest.to_vec())
            }
            _ => (false, events),
        };
        // A payment or a new hold first releases the payer's holds past their 30 days.
        let checks_wallet = facepay_ledger::core::wallet_checked(cmd).is_some();
        let expired =
            events.iter().take_while(|e| checks_wallet && matches!(e, LedgerEvent::HoldExpired { .. })).count();
        let (expiries, events) = (events[..expired].to_vec(), events[expired..].to_vec());
        let mut released_fen = 0;
        for e in &expiries {
            let LedgerEvent::HoldExpired { merchant_id, out_order_no, payer_id, transfer } = e else { unreachable!() };
            let hold = &before.holds[&(merchant_id.clone(), out_order_no.clone())];
            prop_assert!(facepay_ledger::lifecycle::hold_expired_by_time(hold, cmd.accepted_at), "{:?}", hold);
            prop_assert_eq!(&hold.payer_id, payer_id);
            prop_assert_eq!(facepay_ledger::core::wallet_checked(cmd), Some(payer_id));
            released_fen += transfer.postings.iter().filter(|p| p.amount_fen > 0).map(|p| p.amount_fen).sum::<i64>();
        }

        match &cmd.kind {
            CommandKind::Pay { device, out_trade_no, amount, face_code, identity } => {
                let key = (device.merchant_id.clone(), out_trade_no.clone());
                let exact =
                    before.orders.get(&key).is_some_and(|o| o.face_code == *face_code && o.amount_fen == amount.fen());
                if exact {
                    self.exact_retries += 1;
                    prop_assert!(events.is_empty(), "an exact retry decided {events:?}");
                    let r = payment_result(&self.state, cmd, &events).unwrap();
                    prop_assert!(r.replayed);
                    prop_assert_eq!(r.status, before.orders[&key].status);
                } else {
                    prop_assert_eq!(events.len(), 1, "a payment decides exactly one outcome");
                }
                if matches!(step.kind, StepKind::Retry { .. }) {
                    prop_assert!(
                        !events.iter().any(|e| matches!(e, LedgerEvent::PaymentSucceeded { .. })),
                        "a re-sent payment succeeded: {events:?}"
                    );
                }
                for e in &events {
                    match e {
                        LedgerEvent::PaymentSucceeded { attempt, payer_id, day, transfer, .. } => {
                            self.successes += 1;
                            prop_assert_eq!(
                                identity,
                                &Identity::Resolved { payer_id: payer_id.clone(), rule: "top1".into() }
                            );
                            prop_assert!(!before.is_frozen(payer_id));
                            prop_assert!(amount.fen() <= before.single_limit_fen(&attempt.merchant_id));
                            prop_assert!(!before.captures.contains_key(face_code));
                            let wallet_fen = before.balance_fen(&Account::Wallet(payer_id.clone())) + released_fen;
                            prop_assert!(wallet_fen >= amount.fen());
                            prop_assert!(before.orders.get(&key).is_none_or(|o| o.status != OrderStatus::Paid));
                            prop_assert_eq!(*day, shanghai_day(cmd.accepted_at));
                            prop_assert_eq!(attempt.amount, *amount);
                            let legs: Vec<(Account, i64)> =
                                transfer.postings.iter().map(|p| (p.account.clone(), p.amount_fen)).collect();
                            let fee = fee_fen(amount.fen(), before.fee_rate_ppm(&attempt.merchant_id));
                            let mut expected = vec![
                                (Account::Wallet(payer_id.clone()), -amount.fen()),
                                (Account::Settlement(attempt.merchant_id.clone()), amount.fen() - fee),
                            ];
                            if fee > 0 {
                                expected.push((Account::PlatformFees, fee));
                            }
                            prop_assert_eq!(legs, expected);
                        }
                        LedgerEvent::PaymentDeclined { records_order, reason, .. } => {
                            prop_assert!(self.state.captures.contains_key(face_code), "a declined capture is spent");
                            if revoked {
                                prop_assert!(!records_order, "a revoked order keeps its state");
                            } else if !records_order {
                                prop_assert_eq!(before.orders.get(&key), self.state.orders.get(&key));
                            } else {
                                prop_assert_eq!(self.state.orders[&key].reason, Some(*reason));
                            }
                        }
                        other => return Err(TestCaseError::fail(format!("a payment caused {other:?}"))),
                    }
                }
                let r = payment_result(&self.state, cmd, &events).expect("a payment has an answer");
                prop_assert_eq!(r.channel_code, r.reason.map(|x| x.channel_code().to_string()));
            }
            CommandKind::Query { .. } => {
                let revoked_only = matches!(events.as_slice(), [LedgerEvent::OrderRevoked { .. }]);
                prop_assert!(events.is_empty() || revoked_only, "a query decided {:?}", events)
            }
            CommandKind::Fund { payer_id, amount } => match events.as_slice() {
                [LedgerEvent::AccountFunded { transfer, .. }] => {
                    let legs: Vec<(Account, i64)> =
                        transfer.postings.iter().map(|p| (p.account.clone(), p.amount_fen)).collect();
                    prop_assert_eq!(
                        legs,
                        vec![(Account::Funding, -amount.fen()), (Account::Wallet(payer_id.clone()), amount.fen())]
                    );
                }
                other => return Err(TestCaseError::fail(format!("funding caused {other:?}"))),
            },
            CommandKind::Freeze { payer_id } => {
                prop_assert_eq!(events.is_empty(), before.is_frozen(payer_id));
                prop_assert!(self.state.is_frozen(payer_id));
            }
            CommandKind::Unfreeze { payer_id } => {
                prop_assert_eq!(events.is_empty(), !before.is_frozen(payer_id));
                prop_assert!(!self.state.is_frozen(payer_id));
            }
            _ => {}
        }
        self.check_invariants()
    }

    fn record(&mut self, e: &LedgerEvent, at: DateTime<Utc>) {
        self.log.push((at, e.clone()));
        match e {
            LedgerEvent::PaymentSucceeded { attempt, .. } => {
                let key = (attempt.merchant_id.clone(), attempt.out_trade_no.clone());
                *self.paid_fen.entry(key).or_default() += attempt.amount.fen();
            }
            LedgerEvent::RefundSucceeded { merchant_id, out_trade_no, amount, .. } => {
                *self.refunded_fen.entry((merchant_id.clone(), out_trade_no.clone())).or_default() += amount.fen();
            }
            LedgerEvent::OrderReversed { merchant_id, out_trade_no, refund_fen, .. } => {
                *self.refunded_fen.entry((merchant_id.clone(), out_trade_no.clone())).or_default() += refund_fen;
            }
            _ => {}
        }
        if let Some(t) = e.transfer() {
            for p in &t.postings {
                *self.postings.entry(p.account.clone()).or_default() += p.amount_fen;
            }
        }
        if let LedgerEvent::PaymentSucceeded { attempt, payer_id, .. } = e {
            *self.paid.entry((attempt.merchant_id.clone(), attempt.out_trade_no.clone())).or_default() += 1;
            let d = self.daily.entry((payer_id.clone(), shanghai_day(at))).or_default();
            d.0 += attempt.amount.fen();
            d.1 += 1;
        }
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        for (order, n) in &self.paid {
            prop_assert!(*n <= 1, "order {order:?} was paid {n} times");
        }
        for (order, refunded) in &self.refunded_fen {
            let paid = self.paid_fen.get(order).copied().unwrap_or(0);
            prop_assert!(*refunded <= paid, "order {order:?}: refunded {refunded} of {paid}");
            let o = &self.state.orders[order];
            prop_assert_eq!(o.refunded_fen, *refunded);
            prop_assert!(o.fee_refunded_fen <= o.fee_fen);
        }
        for (account, balance) in &self.state.balances_fen {
            // Available balances (wallets), holds, what merchants are owed and fee income
            // never go below zero; only the outside world's funding account does.
            if *account != Account::Funding {
                prop_assert!(*balance >= 0, "{} is overdrawn: {balance}", account.key());
            }
            prop_assert_eq!(self.postings.get(account).copied().unwrap_or(0), *balance, "{}", account.key());
        }
        prop_assert_eq!(self.state.balances_fen.values().sum::<i64>(), 0, "the books do not balance");
        for ((payer, day), (amount, count)) in &self.daily {
            prop_assert!(*amount <= self.policy.daily_amount_cap_fen, "{payer} paid {amount} on {day}");
            prop_assert!(*count <= self.policy.daily_count_cap, "{payer} paid {count} times on {day}");
            let usage = self.state.daily(payer, *day);
            prop_assert_eq!((usage.amount_fen, usage.count), (*amount, *count));
        }
        prop_assert_eq!(self.state.daily.len(), self.daily.len());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn every_step_keeps_the_ledger_invariants(
        policy in policy_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..160),
    ) {
        let mut fold = Fold::new(policy);
        for step in steps_from(&ops, false) {
            fold.step(&step)?;
        }
        // Replay: folding the log alone gives the same state, projections included.
        let mut replayed = LedgerState::default();
        for (at, e) in &fold.log {
            apply(&mut replayed, e, *at);
        }
        prop_assert_eq!(&replayed, &fold.state);
    }

    /// Deciding is deterministic: folding the same commands again gives the same events.
    #[test]
    fn replaying_the_same_commands_decides_the_same(ops in prop::collection::vec(op_strategy(), 1..80)) {
        let policy = Policy::default();
        let run = || {
            let mut state = LedgerState::default();
            let mut all = Vec::new();
            for step in steps_from(&ops, false) {
                let events = decide(&state, &step.cmd, &policy).unwrap_or_default();
                for e in &events {
                    apply(&mut state, e, step.cmd.accepted_at);
                }
                all.extend(events);
            }
            (state, all)
        };
        prop_assert_eq!(run(), run());
    }
}

/// What a command was answered, leaving out the clock's own events (a revocation or expiry
/// that the command itself noticed, and that a tick may have recorded before it).
fn answer(
    state: &LedgerState,
    cmd: &facepay_ledger::Command,
    policy: &Policy,
) -> (Result<Vec<LedgerEvent>, String>, Vec<LedgerEvent>) {
    match decide(state, cmd, policy) {
        Err(e) => (Err(e.code().to_string()), vec![]),
        Ok(events) => {
            let told = match refusal_after(cmd, &events) {
                Some(e) => Err(e.code().to_string()),
                None => Ok(events
                    .iter()
                    .filter(|e| !matches!(e, LedgerEvent::OrderRevoked { .. } | LedgerEvent::HoldExpired { .. }))
                    .cloned()
                    .collect()),
            };
            (told, events)
        }
    }
}

/// Decides the clock's tick of every order and every hold past its deadline at `now`.
fn sweep(state: &mut LedgerState, now: DateTime<Utc>, policy: &Policy) {
    use facepay_ledger::sweep::{due_in, tick};
    for d in due_in(state, now) {
        let t = tick(&d);
        for e in decide(state, &t, policy).expect("a tick is never refused for an entity that exists") {
            apply(state, &e, t.accepted_at);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The clock changes no decision: revoking due orders and expiring due holds before every
    /// command (as eagerly as the clock could ever run) or never, every command is answered
    /// alike (a payment releases its payer's expired holds itself), and once the clock has
    /// swept everything up to the last command the projections are equal.
    #[test]
    fn the_clock_changes_no_decision(ops in prop::collection::vec(op_strategy(), 1..120)) {
        let policy = Policy::default();
        let run = |eager: bool| {
            let (mut state, mut answers, mut last) = (LedgerState::default(), Vec::new(), None);
            for step in steps_from(&ops, false) {
                if eager {
                    sweep(&mut state, step.cmd.accepted_at, &policy);
                }
                let (told, events) = answer(&state, &step.cmd, &policy);
                for e in &events {
                    apply(&mut state, e, step.cmd.accepted_at);
                }
                answers.push(told);
                last = Some(step.cmd.accepted_at);
            }
            if let Some(end) = last {
                sweep(&mut state, end, &policy);
            }
            (state, answers)
        };
        let (lazy, eager) = (run(false), run(true));
        prop_assert_eq!(&lazy.1, &eager.1, "answers");
        prop_assert_eq!(&lazy.0, &eager.0, "projections");
    }
}

/// The generator reaches the interesting cases: without this the properties could pass
/// vacuously.
#[test]
fn the_generator_reaches_successes_retries_and_every_decline() {
    use facepay_domain::DeclineReason;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeSet;

    let mut runner = TestRunner::deterministic();
    let strategy = (policy_strategy(), prop::collection::vec(op_strategy(), 100..160));
    let mut reasons = BTreeSet::new();
    let (mut successes, mut exact, mut member_pays) = (0, 0, 0);
    let mut kinds = BTreeSet::new();
    let (mut life_events, mut life_refusals) = (0, 0);
    for _ in 0..200 {
        let (policy, ops) = strategy.new_tree(&mut runner).unwrap().current();
        let mut fold = Fold::new(policy);
        for step in steps_from(&ops, false) {
            let events = decide(&fold.state, &step.cmd, &policy).unwrap_or_default();
            for e in &events {
                kinds.insert(e.kind());
                match e {
                    LedgerEvent::PaymentDeclined { reason, .. } => {
                        reasons.insert(*reason);
                    }
                    LedgerEvent::PaymentSucceeded { member_quick_pay: true, .. } => member_pays += 1,
                    _ => {}
                }
            }
            fold.step(&step).unwrap();
        }
        successes += fold.successes;
        exact += fold.exact_retries;
        life_events += fold.life_events;
        life_refusals += fold.life_refusals;
    }
    for kind in [
        "order_revoked",
        "order_reversed",
        "refund_succeeded",
        "merchant_fee_rate_changed",
        "hold_created",
        "hold_completed",
        "hold_cancelled",
        "hold_expired",
    ] {
        assert!(kinds.contains(kind), "never decided {kind}");
    }
    assert!(life_events > 100 && life_refusals > 100, "{life_events} lifecycle events, {life_refusals} refusals");
    assert!(successes > 100, "only {successes} successes");
    assert!(exact > 20, "only {exact} exact retries");
    assert!(member_pays > 0, "no member quick pay");
    let missing: Vec<_> = DeclineReason::ALL.iter().filter(|r| !reasons.contains(r)).collect();
    assert!(missing.is_empty(), "never declined with {missing:?}");
}
