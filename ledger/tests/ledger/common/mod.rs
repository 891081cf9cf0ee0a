//! Builders shared by the ledger's integration tests, and the random "small world" the
//! property tests drive through the core and through the store.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use facepay_domain::time::shanghai_day;
use facepay_domain::{
    CardChannel, CardCode, DeviceId, DeviceRef, FaceCode, MerchantId, Money, OutOrderNo, OutRefundNo, OutTradeNo,
    PayerId, StoreId,
};
use facepay_ledger::model::{Attempt, Transfer};
use facepay_ledger::{Account, Command, CommandKind, Identity, LedgerEvent, Lifecycle};
use proptest::prelude::*;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use uuid::Uuid;

// ---- values ---------------------------------------------------------------------------

pub fn merchant(s: &str) -> MerchantId {
    MerchantId::parse(s).unwrap()
}

pub fn payer(s: &str) -> PayerId {
    PayerId::parse(s).unwrap()
}

pub fn otn(s: &str) -> OutTradeNo {
    OutTradeNo::parse(s).unwrap()
}

pub fn card(s: &str) -> CardCode {
    CardCode::parse(s).unwrap()
}

/// The face code number `n`, as 18 digits.
pub fn face(n: u64) -> FaceCode {
    FaceCode::parse(format!("{:018}", 100_000_000_000_000_000 + n)).unwrap()
}

static NEXT_FACE: AtomicU64 = AtomicU64::new(500_000_000);

/// A face code no other builder call hands out (for the captures that authorise member
/// cards and Pay Score, when a test does not name one).
pub fn fresh_face() -> FaceCode {
    face(NEXT_FACE.fetch_add(1, Ordering::Relaxed))
}

/// A capture resolved to `payer_id`.
pub fn resolved(payer_id: &str) -> Identity {
    Identity::Resolved { payer_id: payer(payer_id), rule: "top1".into() }
}

pub fn cny(s: &str) -> Money {
    s.parse().unwrap()
}

pub fn fen(f: i64) -> Money {
    Money::from_fen(f).unwrap()
}

pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Noon in Shanghai on 2026-03-02: the default instant of the tests.
pub fn t0() -> DateTime<Utc> {
    at("2026-03-02T04:00:00Z")
}

/// Device `n` of `merchant` (store `s<n>`, device `<merchant>-d<n>`).
pub fn device_of(merchant_id: &str, n: u32) -> DeviceRef {
    DeviceRef {
        merchant_id: merchant(merchant_id),
        store_id: StoreId::parse(format!("s{n}")).unwrap(),
        device_id: DeviceId::parse(format!("{merchant_id}-d{n}")).unwrap(),
    }
}

static NEXT_EVENT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh inbound event id.
pub fn event_id() -> Uuid {
    Uuid::from_u128(u128::from(NEXT_EVENT_ID.fetch_add(1, Ordering::Relaxed)))
}

// ---- commands ---------------------------------------------------------------------------

pub fn command(kind: CommandKind) -> Command {
    let device = match &kind {
        CommandKind::Pay { device, .. } => Some(device.clone()),
        _ => None,
    };
    Command::new(event_id(), t0(), device, kind)
}

/// `payer_id` pays `amount` for `merchant`'s order `order` with capture `face_n`, on the
/// merchant's device 1.
pub fn pay(merchant_id: &str, order: &str, amount: &str, face_n: u64, payer_id: &str) -> Command {
    command(CommandKind::Pay {
        device: device_of(merchant_id, 1),
        out_trade_no: otn(order),
        amount: cny(amount),
        face_code: face(face_n),
        identity: Identity::Resolved { payer_id: payer(payer_id), rule: "top1".into() },
    })
}

/// A payment whose capture did not resolve to a payer.
pub fn pay_unresolved(merchant_id: &str, order: &str, amount: &str, face_n: u64) -> Command {
    command(CommandKind::Pay {
        device: device_of(merchant_id, 1),
        out_trade_no: otn(order),
        amount: cny(amount),
        face_code: face(face_n),
        identity: Identity::Unresolved { rule: "no_match".into() },
    })
}

pub fn query(merchant_id: &str, order: &str) -> Command {
    command(CommandKind::Query { merchant_id: merchant(merchant_id), out_trade_no: otn(order) })
}

pub fn fund(payer_id: &str, amount: &str) -> Command {
    command(CommandKind::Fund { payer_id: payer(payer_id), amount: cny(amount) })
}

pub fn freeze(payer_id: &str) -> Command {
    command(CommandKind::Freeze { payer_id: payer(payer_id) })
}

pub fn unfreeze(payer_id: &str) -> Command {
    command(CommandKind::Unfreeze { payer_id: payer(payer_id) })
}

pub fn set_limit(merchant_id: &str, limit: &str) -> Command {
    command(CommandKind::SetMerchantLimit { merchant_id: merchant(merchant_id), single_limit: cny(limit) })
}

/// `payer_id` opens `merchant_id`'s member card `code` by face (a fresh capture).
pub fn open_card(merchant_id: &str, payer_id: &str, code: &str) -> Command {
    open_card_with(merchant_id, fresh_face(), resolved(payer_id), code)
}

/// A card opening authorised by the capture `face_code`, which resolved to `identity`.
pub fn open_card_with(merchant_id: &str, face_code: FaceCode, identity: Identity, code: &str) -> Command {
    command(CommandKind::OpenMemberCard {
        merchant_id: merchant(merchant_id),
        face_code,
        identity,
        card_code: card(code),
        channel: CardChannel::CardPackage,
    })
}

/// `payer_id` closes `merchant_id`'s member card `code` by face (a fresh capture).
pub fn close_card(merchant_id: &str, payer_id: &str, code: &str) -> Command {
    close_card_with(merchant_id, fresh_face(), resolved(payer_id), code)
}

/// A card closing authorised by the capture `face_code`, which resolved to `identity`.
pub fn close_card_with(merchant_id: &str, face_code: FaceCode, identity: Identity, code: &str) -> Command {
    command(CommandKind::CloseMemberCard {
        merchant_id: merchant(merchant_id),
        face_code,
        identity,
        card_code: card(code),
    })
}

/// `payer_id` authorises `merchant_id`'s Pay Score by face (a fresh capture).
pub fn authorise_pay_score(merchant_id: &str, payer_id: &str) -> Command {
    command(CommandKind::Lifecycle(Lifecycle::PayScoreAuthorise {
        merchant_id: merchant(merchant_id),
        face_code: fresh_face(),
        identity: resolved(payer_id),
    }))
}

/// `payer_id`'s consent to `merchant_id`'s Pay Score, as an event (for `given`).
pub fn pay_score_authorised(merchant_id: &str, payer_id: &str) -> LedgerEvent {
    LedgerEvent::PayScoreAuthorised {
        merchant_id: merchant(merchant_id),
        payer_id: payer(payer_id),
        face_code: fresh_face(),
    }
}

/// Command tweaks.
pub trait CommandExt: Sized {
    fn at(self, when: &str) -> Self;
    fn at_time(self, when: DateTime<Utc>) -> Self;
    fn on_device(self, device: DeviceRef) -> Self;
}

impl CommandExt for Command {
    fn at(self, when: &str) -> Self {
        self.at_time(at(when))
    }

    fn at_time(mut self, when: DateTime<Utc>) -> Self {
        self.accepted_at = when;
        self
    }

    fn on_device(mut self, d: DeviceRef) -> Self {
        if let CommandKind::Pay { device, .. } = &mut self.kind {
            *device = d.clone();
        }
        self.device = Some(d);
        self
    }
}

/// The id the ledger gives the transfer a command causes (derived from the inbound event id).
pub fn txn_of(cmd: &Command) -> Uuid {
    Uuid::new_v5(&cmd.event_id, b"txn:0")
}

// ---- events (for `given`) -------------------------------------------------------------

pub fn funded(payer_id: &str, amount: &str) -> LedgerEvent {
    let amount = cny(amount);
    LedgerEvent::AccountFunded {
        payer_id: payer(payer_id),
        amount,
        transfer: Transfer::between(Uuid::new_v4(), Account::Funding, Account::Wallet(payer(payer_id)), amount),
    }
}

pub fn frozen(payer_id: &str) -> LedgerEvent {
    LedgerEvent::AccountFrozen { payer_id: payer(payer_id) }
}

pub fn unfrozen(payer_id: &str) -> LedgerEvent {
    LedgerEvent::AccountUnfrozen { payer_id: payer(payer_id) }
}

pub fn limit_changed(merchant_id: &str, limit: &str) -> LedgerEvent {
    LedgerEvent::MerchantLimitChanged { merchant_id: merchant(merchant_id), single_limit: cny(limit) }
}

pub fn card_opened(merchant_id: &str, payer_id: &str, code: &str) -> LedgerEvent {
    LedgerEvent::MemberCardOpened {
        merchant_id: merchant(merchant_id),
        payer_id: payer(payer_id),
        card_code: card(code),
        channel: CardChannel::MiniProgram,
        face_code: None,
    }
}

pub fn card_closed(merchant_id: &str, payer_id: &str, code: &str) -> LedgerEvent {
    LedgerEvent::MemberCardClosed {
        merchant_id: merchant(merchant_id),
        payer_id: payer(payer_id),
        card_code: card(code),
        face_code: None,
    }
}

pub fn attempt(merchant_id: &str, order: &str, amount: &str, face_n: u64) -> Attempt {
    let d = device_of(merchant_id, 1);
    Attempt {
        merchant_id: d.merchant_id,
        store_id: d.store_id,
        device_id: d.device_id,
        out_trade_no: otn(order),
        amount: cny(amount),
        face_code: face(face_n),
        claimed_at: None,
    }
}

/// A payment that succeeded at `when` (its day is the Shanghai day of `when`).
pub fn paid_at(
    merchant_id: &str,
    order: &str,
    amount: &str,
    face_n: u64,
    payer_id: &str,
    when: DateTime<Utc>,
) -> LedgerEvent {
    let attempt = attempt(merchant_id, order, amount, face_n);
    let transfer = Transfer::between(
        Uuid::new_v4(),
        Account::Wallet(payer(payer_id)),
        Account::Settlement(merchant(merchant_id)),
        attempt.amount,
    );
    LedgerEvent::PaymentSucceeded {
        attempt,
        payer_id: payer(payer_id),
        member_quick_pay: false,
        day: shanghai_day(when),
        fee_fen: 0,
        transfer,
    }
}

pub fn paid(merchant_id: &str, order: &str, amount: &str, face_n: u64, payer_id: &str) -> LedgerEvent {
    paid_at(merchant_id, order, amount, face_n, payer_id, t0())
}

pub fn declined(
    merchant_id: &str,
    order: &str,
    amount: &str,
    face_n: u64,
    payer_id: Option<&str>,
    reason: facepay_domain::DeclineReason,
) -> LedgerEvent {
    LedgerEvent::PaymentDeclined {
        attempt: attempt(merchant_id, order, amount, face_n),
        payer_id: payer_id.map(payer),
        reason,
        records_order: true,
    }
}

// ---- the random small world -----------------------------------------------------------

pub const MERCHANTS: [&str; 3] = ["m1", "m2", "m3"];
pub const PAYERS: [&str; 5] = ["p1", "p2", "p3", "p4", "p5"];
pub const ORDERS: [&str; 5] = ["o1", "o2", "o3", "o4", "o5"];
/// Includes amounts over the default single limit and over the daily amount cap.
pub const AMOUNTS: [&str; 8] = ["0.01", "1.00", "50.00", "300.00", "999.99", "1000.00", "1000.01", "1500.00"];
pub const FUNDS: [&str; 4] = ["10.00", "100.00", "500.00", "2000.00"];
pub const LIMITS: [&str; 3] = ["500.00", "1000.00", "2000.00"];
/// Face codes shared by all payments (so captures are reused); fresh ones come after these.
pub const FACE_POOL: u64 = 8;

#[derive(Debug, Clone, Copy)]
pub enum FaceChoice {
    Pool(u64),
    Fresh,
}

#[derive(Debug, Clone)]
pub enum Op {
    Pay {
        m: usize,
        dev: u32,
        o: usize,
        amount: usize,
        face: FaceChoice,
        payer: Option<usize>,
    },
    /// The same payer pays on two devices at the same instant (interleaved, e.g. in one batch).
    Concurrent {
        p: usize,
        a: (usize, usize, usize),
        b: (usize, usize, usize),
    },
    /// Re-sends an earlier payment (same merchant, order, amount, capture) as a new event.
    Retry(prop::sample::Index),
    /// Re-delivers an earlier command with the same inbound event id (store tests only).
    Redeliver(prop::sample::Index),
    Fund {
        p: usize,
        amount: usize,
    },
    Freeze(usize),
    Unfreeze(usize),
    SetLimit {
        m: usize,
        limit: usize,
    },
    Open {
        m: usize,
        p: usize,
        code: usize,
    },
    Close {
        m: usize,
        p: usize,
        code: usize,
    },
    Query {
        m: usize,
        o: usize,
    },
    /// Moves the clock on by this many minutes (so Shanghai days turn).
    Wait(u32),
    Reverse {
        m: usize,
        o: usize,
    },
    Refund {
        m: usize,
        o: usize,
        no: usize,
        amount: usize,
    },
    SetFee {
        m: usize,
        rate: usize,
    },
    /// A Pay Score order, authorised by a capture of its own (the same capture for the same
    /// merchant, number and payer: a retry spends nothing more).
    Hold {
        m: usize,
        no: usize,
        p: usize,
        amount: usize,
    },
    /// A payer authorises a merchant's Pay Score by face.
    Authorise {
        m: usize,
        p: usize,
    },
    Complete {
        m: usize,
        no: usize,
        total: usize,
    },
    Cancel {
        m: usize,
        no: usize,
    },
    /// A Pay Score clock tick for one hold.
    Tick {
        m: usize,
        no: usize,
    },
    /// The clock's tick for one order (revoked if still unpaid 45 s after creation).
    OrderTick {
        m: usize,
        o: usize,
    },
    /// Moves the clock on by this many days (past the 7-day reversal window and the 30-day
    /// hold expiry).
    WaitDays(u32),
}

/// Refund and hold amounts: small, middling, and above most payments and holds.
pub const LIFE_AMOUNTS: [&str; 5] = ["0.01", "0.33", "10.00", "50.00", "300.00"];
/// Fee rates in ppm: none, 0.38 %, 0.54 %, 0.60 %, 10 % (the most), and one refused.
pub const FEE_RATES: [u32; 6] = [0, 3_800, 5_400, 6_000, 100_000, 100_001];
pub const NUMBERS: usize = 3;
/// Face codes of the captures behind Pay Score orders and authorisations: apart from the
/// payments' pool and fresh codes.
const HOLD_FACES: u64 = 800_000_000;
const AUTH_FACES: u64 = 900_000_000;

pub fn op_strategy() -> impl Strategy<Value = Op> {
    let face = prop_oneof![(0..FACE_POOL).prop_map(FaceChoice::Pool), Just(FaceChoice::Fresh), Just(FaceChoice::Fresh)];
    let pay = (0..3usize, 1..3u32, 0..ORDERS.len(), 0..AMOUNTS.len(), face, prop::option::weighted(0.9, 0..5usize))
        .prop_map(|(m, dev, o, amount, face, payer)| Op::Pay { m, dev, o, amount, face, payer });
    let triple = || (0..3usize, 0..ORDERS.len(), 0..AMOUNTS.len());
    prop_oneof![
        10 => pay,
        2 => (0..5usize, triple(), triple()).prop_map(|(p, a, b)| Op::Concurrent { p, a, b }),
        3 => any::<prop::sample::Index>().prop_map(Op::Retry),
        2 => any::<prop::sample::Index>().prop_map(Op::Redeliver),
        5 => (0..5usize, 0..FUNDS.len()).prop_map(|(p, amount)| Op::Fund { p, amount }),
        1 => (0..5usize).prop_map(Op::Freeze),
        1 => (0..5usize).prop_map(Op::Unfreeze),
        1 => (0..3usize, 0..LIMITS.len()).prop_map(|(m, limit)| Op::SetLimit { m, limit }),
        1 => (0..3usize, 0..5usize, 0..2usize).prop_map(|(m, p, code)| Op::Open { m, p, code }),
        1 => (0..3usize, 0..5usize, 0..2usize).prop_map(|(m, p, code)| Op::Close { m, p, code }),
        1 => (0..3usize, 0..ORDERS.len()).prop_map(|(m, o)| Op::Query { m, o }),
        2 => prop_oneof![0..30u32, 60..600u32, Just(24 * 60)].prop_map(Op::Wait),
        2 => (0..3usize, 0..ORDERS.len()).prop_map(|(m, o)| Op::Reverse { m, o }),
        3 => (0..3usize, 0..ORDERS.len(), 0..NUMBERS, 0..LIFE_AMOUNTS.len())
            .prop_map(|(m, o, no, amount)| Op::Refund { m, o, no, amount }),
        1 => (0..3usize, 0..FEE_RATES.len()).prop_map(|(m, rate)| Op::SetFee { m, rate }),
        2 => (0..3usize, 0..NUMBERS, 0..5usize, 0..LIFE_AMOUNTS.len())
            .prop_map(|(m, no, p, amount)| Op::Hold { m, no, p, amount }),
        2 => (0..3usize, 0..5usize).prop_map(|(m, p)| Op::Authorise { m, p }),
        2 => (0..3usize, 0..NUMBERS, 0..LIFE_AMOUNTS.len()).prop_map(|(m, no, total)| Op::Complete { m, no, total }),
        1 => (0..3usize, 0..NUMBERS).prop_map(|(m, no)| Op::Cancel { m, no }),
        1 => (0..3usize, 0..NUMBERS).prop_map(|(m, no)| Op::Tick { m, no }),
        1 => (0..3usize, 0..ORDERS.len()).prop_map(|(m, o)| Op::OrderTick { m, o }),
        1 => prop_oneof![Just(3u32), Just(8u32), Just(31u32)].prop_map(Op::WaitDays),
    ]
}

/// The command of a lifecycle op.
fn lifecycle_of(op: &Op) -> Option<Lifecycle> {
    let m = |i: usize| merchant(MERCHANTS[i]);
    let ono = |i: usize| OutOrderNo::parse(format!("h{i}")).unwrap();
    Some(match *op {
        Op::Reverse { m: mi, o } => Lifecycle::Reverse { merchant_id: m(mi), out_trade_no: otn(ORDERS[o]) },
        Op::Refund { m: mi, o, no, amount } => Lifecycle::Refund {
            merchant_id: m(mi),
            out_trade_no: otn(ORDERS[o]),
            out_refund_no: OutRefundNo::parse(format!("r{o}-{no}")).unwrap(),
            amount: cny(LIFE_AMOUNTS[amount]),
        },
        Op::SetFee { m: mi, rate } => Lifecycle::SetFeeRate { merchant_id: m(mi), fee_rate_ppm: FEE_RATES[rate] },
        Op::Hold { m: mi, no, p, amount } => Lifecycle::HoldCreate {
            merchant_id: m(mi),
            out_order_no: ono(no),
            face_code: face(HOLD_FACES + (mi * NUMBERS + no) as u64 * 100 + p as u64),
            identity: Identity::Resolved { payer_id: payer(PAYERS[p]), rule: "top1".into() },
            amount: cny(LIFE_AMOUNTS[amount]),
        },
        Op::Authorise { m: mi, p } => Lifecycle::PayScoreAuthorise {
            merchant_id: m(mi),
            face_code: face(AUTH_FACES + (mi * 10 + p) as u64),
            identity: Identity::Resolved { payer_id: payer(PAYERS[p]), rule: "top1".into() },
        },
        Op::Complete { m: mi, no, total } => {
            Lifecycle::HoldComplete { merchant_id: m(mi), out_order_no: ono(no), total: cny(LIFE_AMOUNTS[total]) }
        }
        Op::Cancel { m: mi, no } => Lifecycle::HoldCancel { merchant_id: m(mi), out_order_no: ono(no) },
        Op::Tick { m: mi, no } => Lifecycle::HoldExpire { merchant_id: m(mi), out_order_no: ono(no) },
        Op::OrderTick { m: mi, o } => Lifecycle::RevokeIfDue { merchant_id: m(mi), out_trade_no: otn(ORDERS[o]) },
        _ => return None,
    })
}

/// How a step's command relates to earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Fresh,
    /// A new event re-sending the payment of step `of`.
    Retry {
        of: usize,
    },
    /// The very command of step `of`, delivered again (same event id).
    Redelivery {
        of: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Step {
    pub cmd: Command,
    pub kind: StepKind,
}

fn push(steps: &mut Vec<Step>, kind: CommandKind, step: StepKind, id: Uuid, when: DateTime<Utc>) {
    let device = match &kind {
        CommandKind::Pay { device, .. } => Some(device.clone()),
        _ => None,
    };
    steps.push(Step { cmd: Command::new(id, when, device, kind), kind: step });
}

/// Turns ops into commands, deterministically. With `redeliver` false, `Redeliver` ops are
/// dropped (the pure core has no transport idempotency: the service does).
pub fn steps_from(ops: &[Op], redeliver: bool) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut clock = t0();
    let mut fresh_face = FACE_POOL;
    let mut ids = 0u128;
    let mut next_id = || {
        ids += 1;
        Uuid::from_u128(0xfeed_0000_0000_0000 + ids)
    };
    let mut next_face = |choice: FaceChoice| match choice {
        FaceChoice::Pool(n) => face(n),
        FaceChoice::Fresh => {
            fresh_face += 1;
            face(fresh_face)
        }
    };
    let payment = |m: usize, dev: u32, o: usize, amount: usize, face_code: FaceCode, payer_idx: Option<usize>| {
        let identity = match payer_idx {
            Some(p) => Identity::Resolved { payer_id: payer(PAYERS[p]), rule: "top1".into() },
            None if o.is_multiple_of(2) => Identity::Unresolved { rule: "ambiguous".into() },
            None => Identity::Unresolved { rule: facepay_domain::outcome::NEEDS_PHONE_CONFIRMATION.into() },
        };
        CommandKind::Pay {
            device: device_of(MERCHANTS[m], dev),
            out_trade_no: otn(ORDERS[o]),
            amount: cny(AMOUNTS[amount]),
            face_code,
            identity,
        }
    };
    for op in ops {
        clock += Duration::seconds(7);
        match op {
            Op::Pay { m, dev, o, amount, face, payer } => {
                let kind = payment(*m, *dev, *o, *amount, next_face(*face), *payer);
                push(&mut steps, kind, StepKind::Fresh, next_id(), clock);
            }
            Op::Concurrent { p, a, b } => {
                let ka = payment(a.0, 1, a.1, a.2, next_face(FaceChoice::Fresh), Some(*p));
                let kb = payment(b.0, 2, b.1, b.2, next_face(FaceChoice::Fresh), Some(*p));
                push(&mut steps, ka, StepKind::Fresh, next_id(), clock);
                push(&mut steps, kb, StepKind::Fresh, next_id(), clock);
            }
            Op::Retry(ix) => {
                let pays: Vec<usize> =
                    (0..steps.len()).filter(|i| matches!(steps[*i].cmd.kind, CommandKind::Pay { .. })).collect();
                if !pays.is_empty() {
                    let of = pays[ix.index(pays.len())];
                    let kind = steps[of].cmd.kind.clone();
                    push(&mut steps, kind, StepKind::Retry { of }, next_id(), clock);
                }
            }
            Op::Redeliver(ix) => {
                if redeliver && !steps.is_empty() {
                    let of = ix.index(steps.len());
                    let original = steps[of].cmd.clone();
                    steps.push(Step { cmd: original, kind: StepKind::Redelivery { of } });
                }
            }
            Op::Fund { p, amount } => {
                let kind = CommandKind::Fund { payer_id: payer(PAYERS[*p]), amount: cny(FUNDS[*amount]) };
                push(&mut steps, kind, StepKind::Fresh, next_id(), clock);
            }
            Op::Freeze(p) => {
                push(&mut steps, CommandKind::Freeze { payer_id: payer(PAYERS[*p]) }, StepKind::Fresh, next_id(), clock)
            }
            Op::Unfreeze(p) => push(
                &mut steps,
                CommandKind::Unfreeze { payer_id: payer(PAYERS[*p]) },
                StepKind::Fresh,
                next_id(),
                clock,
            ),
            Op::SetLimit { m, limit } => {
                let kind = CommandKind::SetMerchantLimit {
                    merchant_id: merchant(MERCHANTS[*m]),
                    single_limit: cny(LIMITS[*limit]),
                };
                push(&mut steps, kind, StepKind::Fresh, next_id(), clock);
            }
            Op::Open { m, p, code } => {
                let kind = CommandKind::OpenMemberCard {
                    merchant_id: merchant(MERCHANTS[*m]),
                    face_code: next_face(FaceChoice::Fresh),
                    identity: Identity::Resolved { payer_id: payer(PAYERS[*p]), rule: "top1".into() },
                    card_code: card(&format!("c{code}")),
                    channel: CardChannel::MiniProgram,
                };
                push(&mut steps, kind, StepKind::Fresh, next_id(), clock);
            }
            Op::Close { m, p, code } => {
                let kind = CommandKind::CloseMemberCard {
                    merchant_id: merchant(MERCHANTS[*m]),
                    face_code: next_face(FaceChoice::Fresh),
                    identity: Identity::Resolved { payer_id: payer(PAYERS[*p]), rule: "top1".into() },
                    card_code: card(&format!("c{code}")),
                };
                push(&mut steps, kind, StepKind::Fresh, next_id(), clock);
            }
            Op::Query { m, o } => {
                let kind = CommandKind::Query { merchant_id: merchant(MERCHANTS[*m]), out_trade_no: otn(ORDERS[*o]) };
                push(&mut steps, kind, StepKind::Fresh, next_id(), clock);
            }
            Op::Wait(minutes) => clock += Duration::minutes(i64::from(*minutes)),
            Op::WaitDays(days) => clock += Duration::days(i64::from(*days)),
            other => {
                let l = lifecycle_of(other).expect("every other op is a lifecycle command");
                push(&mut steps, CommandKind::Lifecycle(l), StepKind::Fresh, next_id(), clock);
            }
        }
    }
    steps
}

// ---- a throwaway PostgreSQL database per test ----------------------------------------------

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database created for one test on the PostgreSQL server, dropped when the test ends
/// (passed or failed).
pub struct PgDatabase {
    pub admin: PgConnectOptions,
    pub name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, sql) = (self.admin.clone(), format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect_with(&admin).await?;
                sqlx::query(&sql).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let colon = s + 3 + url[s + 3..at].find(':').unwrap();
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A fresh database on the test server, or `None` (with a note) if the server is unreachable
/// and not required.
pub async fn fresh_pg_database() -> Option<(PgDatabase, PgConnectOptions)> {
    let url = std::env::var("FACEPAY_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
    let admin = PgConnectOptions::from_str(&url).expect("FACEPAY_TEST_DATABASE_URL");
    let connected = tokio::time::timeout(StdDuration::from_secs(5), sqlx::PgConnection::connect_with(&admin)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            if std::env::var("FACEPAY_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PostgreSQL not reachable at {} ({why}) and FACEPAY_REQUIRE_POSTGRES=1", redacted(&url));
            }
            eprintln!("skipped: PostgreSQL not reachable at {} ({why})", redacted(&url));
            return None;
        }
    };
    let name = format!("facepay_t_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let options = admin.clone().database(&name);
    Some((PgDatabase { admin, name }, options))
}
