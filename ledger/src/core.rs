//! The pure core: `decide` what a command means, `apply` what it caused.
//!
//! Both are synchronous and free of I/O, so every rule is tested with given/when/then on
//! plain values, and replay is a fold of `apply`.

use facepay_domain::limits::{DAILY_AMOUNT_CAP_DEFAULT_FEN, DAILY_COUNT_CAP_DEFAULT};
use facepay_domain::outcome::NEEDS_PHONE_CONFIRMATION;
use facepay_domain::time::shanghai_day;
use facepay_domain::{DeclineReason, OrderStatus, PayerId, PaymentResult};

use crate::command::{Command, CommandKind, Identity};
use crate::model::{Account, Attempt, Keys, LedgerEvent, LedgerState, Member, Order, Transfer};
use crate::rules::{authorised_payer, fresh_capture, spend_capture, txn_id};
pub use crate::rules::{fee_fen, order_revoked_by_time, DomainError};

/// The payer-side caps, from configuration (defaults: the channel's community-stated caps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Most a payer may pay by face per Asia/Shanghai day, all merchants together.
    pub daily_amount_cap_fen: i64,
    /// Most face payments a payer may make per Asia/Shanghai day.
    pub daily_count_cap: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self { daily_amount_cap_fen: DAILY_AMOUNT_CAP_DEFAULT_FEN, daily_count_cap: DAILY_COUNT_CAP_DEFAULT }
    }
}

/// Decides what `cmd` means against `state`. Returns the events to append (none for a query,
/// an exact retry or a no-op), or a refusal.
pub fn decide(state: &LedgerState, cmd: &Command, policy: &Policy) -> Result<Vec<LedgerEvent>, DomainError> {
    match &cmd.kind {
        CommandKind::Pay { .. } => Ok(decide_payment(state, cmd, policy)),
        CommandKind::Query { merchant_id, out_trade_no } => {
            let key = (merchant_id.clone(), out_trade_no.clone());
            Ok(crate::lifecycle::revoke_if_due(state, &key, cmd.accepted_at).into_iter().collect())
        }
        CommandKind::Fund { payer_id, amount } => {
            let transfer = Transfer::between(txn_id(cmd), Account::Funding, Account::Wallet(payer_id.clone()), *amount);
            Ok(vec![LedgerEvent::AccountFunded { payer_id: payer_id.clone(), amount: *amount, transfer }])
        }
        CommandKind::Freeze { payer_id } if !state.is_frozen(payer_id) => {
            Ok(vec![LedgerEvent::AccountFrozen { payer_id: payer_id.clone() }])
        }
        CommandKind::Unfreeze { payer_id } if state.is_frozen(payer_id) => {
            Ok(vec![LedgerEvent::AccountUnfrozen { payer_id: payer_id.clone() }])
        }
        CommandKind::Freeze { .. } | CommandKind::Unfreeze { .. } => Ok(vec![]),
        CommandKind::SetMerchantLimit { merchant_id, single_limit } => Ok(vec![LedgerEvent::MerchantLimitChanged {
            merchant_id: merchant_id.clone(),
            single_limit: *single_limit,
        }]),
        CommandKind::OpenMemberCard { .. } | CommandKind::CloseMemberCard { .. } => decide_card(state, &cmd.kind),
        CommandKind::Lifecycle(l) => crate::lifecycle::decide(state, cmd, l),
        CommandKind::NotYetSupported { kind } => Err(DomainError::NotYetSupported { kind: kind.clone() }),
        CommandKind::ConfirmPaid(c) => crate::reconcile::settle::decide(state, cmd, c),
    }
}

/// Opens or closes a member card, for the payer the command's capture resolved to. The same
/// card asked to open again changes nothing (and spends nothing).
fn decide_card(state: &LedgerState, kind: &CommandKind) -> Result<Vec<LedgerEvent>, DomainError> {
    let (CommandKind::OpenMemberCard { merchant_id, face_code, identity, card_code, .. }
    | CommandKind::CloseMemberCard { merchant_id, face_code, identity, card_code }) = kind
    else {
        unreachable!("decide_card is only called for member cards")
    };
    let payer_id = authorised_payer(identity)?;
    let open = state.members.get(&(merchant_id.clone(), payer_id.clone())).filter(|m| m.closed_at.is_none());
    let (merchant_id, payer_id, card_code, face_code) =
        (merchant_id.clone(), payer_id.clone(), card_code.clone(), Some(face_code.clone()));
    match (kind, open) {
        (CommandKind::OpenMemberCard { .. }, Some(m)) if m.card_code == card_code => Ok(vec![]),
        (CommandKind::OpenMemberCard { .. }, Some(_)) => Err(DomainError::MemberCardAlreadyOpen),
        (CommandKind::OpenMemberCard { channel, .. }, None) => {
            fresh_capture(state, face_code.as_ref().expect("set above"))?;
            Ok(vec![LedgerEvent::MemberCardOpened { merchant_id, payer_id, card_code, channel: *channel, face_code }])
        }
        (_, Some(m)) if m.card_code == card_code => {
            fresh_capture(state, face_code.as_ref().expect("set above"))?;
            Ok(vec![LedgerEvent::MemberCardClosed { merchant_id, payer_id, card_code, face_code }])
        }
        (_, Some(_)) => Err(DomainError::CardCodeMismatch),
        (_, None) => Err(DomainError::MemberCardNotOpen),
    }
}

/// A payment, decided in the documented order. Nothing for an exact retry (the stored outcome
/// stands and nothing is posted); an order found past its 45 s is first revoked.
fn decide_payment(state: &LedgerState, cmd: &Command, policy: &Policy) -> Vec<LedgerEvent> {
    let CommandKind::Pay { device, out_trade_no, amount, face_code, identity } = &cmd.kind else {
        unreachable!("decide_payment is only called for payments")
    };
    let attempt = Attempt {
        merchant_id: device.merchant_id.clone(),
        store_id: device.store_id.clone(),
        device_id: device.device_id.clone(),
        out_trade_no: out_trade_no.clone(),
        amount: *amount,
        face_code: face_code.clone(),
        claimed_at: cmd.claimed_at,
    };
    let payer = match identity {
        Identity::Resolved { payer_id, .. } => Some(payer_id.clone()),
        Identity::Unresolved { .. } => None,
    };
    let decline = |reason, records_order| {
        vec![LedgerEvent::PaymentDeclined { attempt: attempt.clone(), payer_id: payer.clone(), reason, records_order }]
    };
    // Idempotency per (merchant, out_trade_no) comes before every other rule.
    let existing = state.orders.get(&(attempt.merchant_id.clone(), attempt.out_trade_no.clone()));
    if let Some(order) = existing {
        if order.amount_fen != amount.fen() {
            return decline(DeclineReason::OutTradeNoUsed, false);
        }
        if order.face_code == *face_code {
            return vec![];
        }
        match order.status {
            OrderStatus::Paid => return decline(DeclineReason::OrderPaid, false),
            OrderStatus::Reversed => return decline(DeclineReason::OrderReversed, false),
            OrderStatus::Revoked => return decline(DeclineReason::OrderClosed, false),
            OrderStatus::Declined if order_revoked_by_time(order, cmd.accepted_at) => {
                let revoked = LedgerEvent::OrderRevoked {
                    merchant_id: order.merchant_id.clone(),
                    out_trade_no: order.out_trade_no.clone(),
                    payer_id: order.payer_id.clone(),
                };
                return [vec![revoked], decline(DeclineReason::OrderClosed, false)].concat();
            }
            OrderStatus::Declined => {}
        }
    }
    let Some(payer_id) = payer.clone() else {
        let reason = match identity {
            Identity::Unresolved { rule } if rule == NEEDS_PHONE_CONFIRMATION => {
                DeclineReason::PhoneConfirmationRequired
            }
            _ => DeclineReason::IdentityUnresolved,
        };
        return decline(reason, true);
    };
    // The payer's holds past their 30 days are released first, whether or not the clock has
    // swept them yet: the decision never depends on when the sweep ran.
    let (expiries, released_fen) = crate::lifecycle::expire_due_holds(state, cmd, &payer_id);
    let decision = match payment_decline(state, cmd, &attempt, &payer_id, released_fen, policy) {
        Some(reason) => decline(reason, existing.is_none() || reason != DeclineReason::CaptureUsed),
        None => payment_success(state, cmd, attempt, payer_id),
    };
    [expiries, decision].concat()
}

/// Why a payment by a known payer is declined, checked in the documented order; `None`: it
/// succeeds. `released_fen` is what expired holds give back to the wallet first.
fn payment_decline(
    state: &LedgerState,
    cmd: &Command,
    attempt: &Attempt,
    payer_id: &PayerId,
    released_fen: i64,
    policy: &Policy,
) -> Option<DeclineReason> {
    let amount_fen = attempt.amount.fen();
    let usage = state.daily(payer_id, shanghai_day(cmd.accepted_at));
    if state.captures.contains_key(&attempt.face_code) {
        // A spent capture on an existing order (a late duplicate of an earlier attempt)
        // must not overwrite what the order's latest attempt decided (see the caller).
        Some(DeclineReason::CaptureUsed)
    } else if state.is_frozen(payer_id) {
        Some(DeclineReason::PayerFrozen)
    } else if amount_fen > state.single_limit_fen(&attempt.merchant_id) {
        Some(DeclineReason::OverSingleLimit)
    } else if usage.amount_fen + amount_fen > policy.daily_amount_cap_fen {
        Some(DeclineReason::DailyAmountCap)
    } else if usage.count >= policy.daily_count_cap {
        Some(DeclineReason::DailyCountCap)
    } else if state.balance_fen(&Account::Wallet(payer_id.clone())) + released_fen < amount_fen {
        Some(DeclineReason::InsufficientBalance)
    } else {
        None
    }
}

fn payment_success(state: &LedgerState, cmd: &Command, attempt: Attempt, payer_id: PayerId) -> Vec<LedgerEvent> {
    let amount_fen = attempt.amount.fen();
    let fee_fen = fee_fen(amount_fen, state.fee_rate_ppm(&attempt.merchant_id));
    let legs = vec![
        (Account::Wallet(payer_id.clone()), -amount_fen),
        (Account::Settlement(attempt.merchant_id.clone()), amount_fen - fee_fen),
        (Account::PlatformFees, fee_fen),
    ];
    let transfer = Transfer::legs(txn_id(cmd), legs).expect("a payment moves money");
    let member_quick_pay = state.is_member(&attempt.merchant_id, &payer_id);
    let day = shanghai_day(cmd.accepted_at);
    vec![LedgerEvent::PaymentSucceeded { attempt, payer_id, member_quick_pay, day, fee_fen, transfer }]
}

/// Folds one event into the state. Total and deterministic: replay depends on it.
pub fn apply(state: &mut LedgerState, event: &LedgerEvent, occurred_at: chrono::DateTime<chrono::Utc>) {
    if let Some(t) = event.transfer() {
        t.assert_balanced();
        for p in &t.postings {
            *state.balances_fen.entry(p.account.clone()).or_insert(0) += p.amount_fen;
        }
    }
    if let Some((key, s)) = event.settlement(occurred_at) {
        state.settlement.entry(key).or_default().add(&s);
    }
    match event {
        LedgerEvent::PaymentSucceeded { attempt, payer_id, member_quick_pay, day, fee_fen, .. } => {
            consume_capture(state, attempt);
            set_order(state, attempt, OrderStatus::Paid, None, Some(payer_id.clone()), *member_quick_pay, occurred_at);
            if let Some(o) = state.orders.get_mut(&(attempt.merchant_id.clone(), attempt.out_trade_no.clone())) {
                o.fee_fen = *fee_fen;
            }
            let usage = state.daily.entry((payer_id.clone(), *day)).or_default();
            usage.amount_fen += attempt.amount.fen();
            usage.count += 1;
            let member = state.members.get_mut(&(attempt.merchant_id.clone(), payer_id.clone()));
            if let Some(m) = member.filter(|m| m.closed_at.is_none()) {
                m.last_visit_at = Some(occurred_at);
            }
        }
        LedgerEvent::PaymentDeclined { attempt, payer_id, reason, records_order } => {
            consume_capture(state, attempt);
            if *records_order {
                set_order(state, attempt, OrderStatus::Declined, Some(*reason), payer_id.clone(), false, occurred_at);
            }
        }
        LedgerEvent::AccountFunded { .. } => {}
        LedgerEvent::AccountFrozen { payer_id } => {
            state.frozen.insert(payer_id.clone(), true);
        }
        LedgerEvent::AccountUnfrozen { payer_id } => {
            state.frozen.insert(payer_id.clone(), false);
        }
        LedgerEvent::MerchantLimitChanged { merchant_id, single_limit } => {
            state.limits_fen.insert(merchant_id.clone(), single_limit.fen());
        }
        LedgerEvent::MemberCardOpened { merchant_id, payer_id, card_code, channel, face_code } => {
            let member = Member {
                card_code: card_code.clone(),
                channel: *channel,
                opened_at: occurred_at,
                closed_at: None,
                last_visit_at: None,
            };
            state.members.insert((merchant_id.clone(), payer_id.clone()), member);
            spend_capture(state, face_code.as_ref(), merchant_id, format!("card|{card_code}"));
        }
        LedgerEvent::MemberCardClosed { merchant_id, payer_id, card_code, face_code } => {
            if let Some(m) = state.members.get_mut(&(merchant_id.clone(), payer_id.clone())) {
                m.closed_at = Some(occurred_at);
            }
            spend_capture(state, face_code.as_ref(), merchant_id, format!("card|{card_code}"));
        }
        LedgerEvent::PayScoreAuthorised { merchant_id, payer_id, face_code } => {
            state.pay_score.insert((merchant_id.clone(), payer_id.clone()), occurred_at);
            spend_capture(state, Some(face_code), merchant_id, "pay_score_authorised".to_string());
        }
        LedgerEvent::PaymentConfirmed { .. } => crate::reconcile::settle::apply(state, event, occurred_at),
        other => crate::lifecycle::apply(state, other, occurred_at),
    }
}

fn consume_capture(state: &mut LedgerState, attempt: &Attempt) {
    spend_capture(state, Some(&attempt.face_code), &attempt.merchant_id, attempt.out_trade_no.to_string());
}

fn set_order(
    state: &mut LedgerState,
    attempt: &Attempt,
    status: OrderStatus,
    reason: Option<DeclineReason>,
    payer_id: Option<PayerId>,
    member_quick_pay: bool,
    at: chrono::DateTime<chrono::Utc>,
) {
    let key = (attempt.merchant_id.clone(), attempt.out_trade_no.clone());
    let created_at = state.orders.get(&key).map_or(at, |o| o.created_at);
    let order = Order {
        merchant_id: attempt.merchant_id.clone(),
        out_trade_no: attempt.out_trade_no.clone(),
        amount_fen: attempt.amount.fen(),
        status,
        reason,
        payer_id,
        face_code: attempt.face_code.clone(),
        member_quick_pay,
        store_id: attempt.store_id.clone(),
        device_id: attempt.device_id.clone(),
        created_at,
        updated_at: at,
        fee_fen: 0,
        refunded_fen: 0,
        fee_refunded_fen: 0,
    };
    state.orders.insert(key, order);
}

/// The keys `decide` reads for `cmd`: what the store must load before the batch is decided.
pub fn keys_read(cmd: &Command, keys: &mut Keys) {
    match &cmd.kind {
        CommandKind::Pay { device, out_trade_no, face_code, identity, .. } => {
            keys.orders.insert((device.merchant_id.clone(), out_trade_no.clone()));
            keys.captures.insert(face_code.clone());
            keys.limits.insert(device.merchant_id.clone());
            if let Identity::Resolved { payer_id, .. } = identity {
                keys.frozen.insert(payer_id.clone());
                keys.accounts.insert(Account::Wallet(payer_id.clone()));
                keys.daily.insert((payer_id.clone(), shanghai_day(cmd.accepted_at)));
                keys.members.insert((device.merchant_id.clone(), payer_id.clone()));
            }
            keys.accounts.insert(Account::Settlement(device.merchant_id.clone()));
            keys.fee_rates.insert(device.merchant_id.clone());
        }
        CommandKind::Query { merchant_id, out_trade_no } => {
            keys.orders.insert((merchant_id.clone(), out_trade_no.clone()));
        }
        CommandKind::Fund { payer_id, .. } => {
            keys.accounts.insert(Account::Wallet(payer_id.clone()));
            keys.accounts.insert(Account::Funding);
        }
        CommandKind::Freeze { payer_id } | CommandKind::Unfreeze { payer_id } => {
            keys.frozen.insert(payer_id.clone());
        }
        CommandKind::SetMerchantLimit { merchant_id, .. } => {
            keys.limits.insert(merchant_id.clone());
        }
        CommandKind::OpenMemberCard { merchant_id, face_code, identity, .. }
        | CommandKind::CloseMemberCard { merchant_id, face_code, identity, .. } => {
            keys.captures.insert(face_code.clone());
            if let Some(payer_id) = identity.payer() {
                keys.members.insert((merchant_id.clone(), payer_id.clone()));
            }
        }
        CommandKind::Lifecycle(l) => crate::lifecycle::keys_read(l, keys),
        CommandKind::NotYetSupported { .. } => {}
        CommandKind::ConfirmPaid(c) => crate::reconcile::settle::keys_read(c, keys),
    }
}

/// The payer whose wallet `cmd`'s decision checks (a payment's, a new hold's): the store
/// must load that payer's holds past their expiry with the batch, since the decision
/// releases them first. Keys alone cannot name them: the holds are found by payer and time.
pub fn wallet_checked(cmd: &Command) -> Option<&PayerId> {
    match &cmd.kind {
        CommandKind::Pay { identity: Identity::Resolved { payer_id, .. }, .. } => Some(payer_id),
        CommandKind::Lifecycle(crate::command::Lifecycle::HoldCreate { identity, .. }) => identity.payer(),
        _ => None,
    }
}

/// The keys an event changed: what the projection writer upserts.
pub fn keys_written(event: &LedgerEvent, keys: &mut Keys) {
    if let Some(t) = event.transfer() {
        keys.accounts.extend(t.postings.iter().map(|p| p.account.clone()));
    }
    match event {
        LedgerEvent::PaymentSucceeded { attempt, payer_id, day, .. } => {
            keys.captures.insert(attempt.face_code.clone());
            keys.orders.insert((attempt.merchant_id.clone(), attempt.out_trade_no.clone()));
            keys.daily.insert((payer_id.clone(), *day));
            // A member's last visit (the writer skips a payer who holds no card here).
            keys.members.insert((attempt.merchant_id.clone(), payer_id.clone()));
        }
        LedgerEvent::PaymentDeclined { attempt, records_order, .. } => {
            keys.captures.insert(attempt.face_code.clone());
            if *records_order {
                keys.orders.insert((attempt.merchant_id.clone(), attempt.out_trade_no.clone()));
            }
        }
        LedgerEvent::AccountFunded { .. } => {}
        LedgerEvent::AccountFrozen { payer_id } | LedgerEvent::AccountUnfrozen { payer_id } => {
            keys.frozen.insert(payer_id.clone());
        }
        LedgerEvent::MerchantLimitChanged { merchant_id, .. } => {
            keys.limits.insert(merchant_id.clone());
        }
        LedgerEvent::MemberCardOpened { merchant_id, payer_id, face_code, .. }
        | LedgerEvent::MemberCardClosed { merchant_id, payer_id, face_code, .. } => {
            keys.members.insert((merchant_id.clone(), payer_id.clone()));
            keys.captures.extend(face_code.clone());
        }
        LedgerEvent::PayScoreAuthorised { merchant_id, payer_id, face_code } => {
            keys.pay_score.insert((merchant_id.clone(), payer_id.clone()));
            keys.captures.insert(face_code.clone());
        }
        LedgerEvent::PaymentConfirmed { .. } => crate::reconcile::settle::keys_written(event, keys),
        other => crate::lifecycle::keys_written(other, keys),
    }
}

/// The answer to a payment or query, read from the state after the command's events.
pub fn payment_result(state: &LedgerState, cmd: &Command, events: &[LedgerEvent]) -> Option<PaymentResult> {
    let (merchant_id, out_trade_no) = match &cmd.kind {
        CommandKind::Pay { device, out_trade_no, .. } => (&device.merchant_id, out_trade_no),
        CommandKind::Query { merchant_id, out_trade_no } => (merchant_id, out_trade_no),
        _ => return None,
    };
    let fresh_decline = events.iter().find_map(|e| match e {
        LedgerEvent::PaymentDeclined { attempt, payer_id, reason, records_order: false } => {
            Some((attempt, payer_id, reason))
        }
        _ => None,
    });
    if let Some((attempt, payer_id, reason)) = fresh_decline {
        return Some(PaymentResult {
            merchant_id: attempt.merchant_id.clone(),
            out_trade_no: attempt.out_trade_no.clone(),
            amount: attempt.amount,
            status: OrderStatus::Declined,
            reason: Some(*reason),
            channel_code: Some(reason.channel_code().to_string()),
            payer_id: payer_id.clone(),
            member_quick_pay: false,
            replayed: false,
        });
    }
    let order = state.orders.get(&(merchant_id.clone(), out_trade_no.clone()))?;
    let replayed = matches!(cmd.kind, CommandKind::Pay { .. }) && events.is_empty();
    Some(order_result(order, replayed))
}

/// An order as a device or merchant sees it.
pub fn order_result(order: &Order, replayed: bool) -> PaymentResult {
    PaymentResult {
        merchant_id: order.merchant_id.clone(),
        out_trade_no: order.out_trade_no.clone(),
        amount: facepay_domain::Money::from_fen(order.amount_fen).expect("an order's amount is a valid amount"),
        status: order.status,
        reason: order.reason,
        channel_code: order.reason.map(|r| r.channel_code().to_string()),
        payer_id: order.payer_id.clone(),
        member_quick_pay: order.member_quick_pay,
        replayed,
    }
}
