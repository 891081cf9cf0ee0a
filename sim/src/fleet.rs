//! The simulated fleet: merchants, devices and payers drawn from a seed, and the day of
//! events they send (payments, retries, queries, member cards, refunds, reversals, Pay Score
//! holds, and the bad input devices get wrong), each signed by its device.
//!
//! Deterministic from the seed: the same [`FleetOptions`] send the same events in the same
//! order (the demo, `facepay simulate`, the benchmarks and the tests).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use facepay_domain::event::{
    AccountFrozen, AccountFunded, FaceCaptured, FaceEnrolled, MemberCardOpened, MerchantFeeRateChanged,
    MerchantLimitChanged, PayScoreAuthorised, PayScoreOrderCancelled, PayScoreOrderCompleted, PayScoreOrderCreated,
    PaymentQuery, PaymentRequested, RefundRequested, ReverseRequested,
};
use facepay_domain::time::{Clock, ManualClock};
use facepay_domain::{
    CardChannel, CardCode, DeviceId, DeviceRef, Embedding, Envelope, EventBody, FaceCode, MerchantId, Money, Origin,
    OutOrderNo, OutRefundNo, OutTradeNo, PayerId, Score, StoreId,
};
use facepay_ingest::Inbound;
use facepay_matcher::synthetic::SyntheticFaces;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::keys::FleetSigner;

/// The size of a simulated fleet and its trade; the seed draws the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetOptions {
    pub seed: u64,
    pub merchants: usize,
    pub devices: usize,
    pub payers: usize,
    pub payments: usize,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self { seed: 42, merchants: 5, devices: 20, payers: 2_000, payments: 20_000 }
    }
}

/// What the fleet sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct SentCounts {
    pub total: u64,
    /// Events the fleet could not sign (garbage, a device it does not have): refused before
    /// authentication, kept and answered nowhere (but the in-process bus's `unauthenticated`).
    pub unsigned: u64,
    pub retries: u64,
    pub queries: u64,
    /// Payments whose first capture was poor (the matcher unsure: asked for the phone
    /// digits), captured again with the payer's digits on the same order.
    pub phone_confirmations: u64,
    pub bad: u64,
    pub refunds: u64,
    pub reversals: u64,
    pub holds: u64,
}

/// The simulated fleet and its payers.
struct World {
    seed: u64,
    devices: Vec<DeviceRef>,
    payers: Vec<PayerId>,
    faces: SyntheticFaces,
    payments: usize,
    start: DateTime<Utc>,
}

/// One scenario of a payment attempt, drawn per attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Normal,
    UnknownFace,
    LowLiveness,
    OverLimit,
    ReusedCapture,
    AmountChanged,
    TimeoutThenRetry,
    /// A poor capture (the matcher asks for the phone digits), then the device captures again
    /// with the payer's digits and pays the same order.
    UnsureFace,
    BadInput,
}

fn scenario(roll: f64) -> Scenario {
    match roll {
        r if r < 0.03 => Scenario::UnknownFace,
        r if r < 0.04 => Scenario::LowLiveness,
        r if r < 0.06 => Scenario::OverLimit,
        r if r < 0.07 => Scenario::ReusedCapture,
        r if r < 0.075 => Scenario::AmountChanged,
        r if r < 0.115 => Scenario::TimeoutThenRetry,
        r if r < 0.12 => Scenario::BadInput,
        r if r < 0.13 => Scenario::UnsureFace,
        _ => Scenario::Normal,
    }
}

/// Per-attempt bookkeeping the fleet keeps to plant retries and reuse.
#[derive(Default)]
struct Last {
    face_code: Option<FaceCode>,
    order: Option<(DeviceRef, OutTradeNo, Money)>,
}

/// Whose time a fleet's events carry.
#[derive(Debug, Clone)]
pub enum FleetTime {
    /// A simulated day (the demo): each event a step after the last, and the platform's clock
    /// driven along with it, so the platform accepts each at its simulated moment.
    Driven(ManualClock),
    /// The present (events for a running `facepay serve`): each event is sent now.
    Live,
}

struct Sender {
    input: mpsc::Sender<Inbound>,
    signer: FleetSigner,
    counts: SentCounts,
    time: FleetTime,
    /// The simulated moment of the last event (driven time only).
    sim: DateTime<Utc>,
    step: ChronoDuration,
    rng: ChaCha8Rng,
}

impl Sender {
    /// The moment of the next event: a step later on a driven clock (which moves with it),
    /// now on a live one.
    fn tick(&mut self) -> DateTime<Utc> {
        match &self.time {
            FleetTime::Driven(clock) => {
                self.sim += self.step;
                clock.advance_to(self.sim);
                clock.now()
            }
            FleetTime::Live => Utc::now(),
        }
    }

    /// Lets `gap` of simulated time pass (nothing on a live clock).
    fn skip(&mut self, gap: ChronoDuration) {
        self.sim += gap;
    }

    async fn send(&mut self, origin: Origin, body: EventBody) -> anyhow::Result<()> {
        let event_id = Uuid::from_u128(self.rng.random());
        let at = self.tick();
        let env = Envelope::new(event_id, at, origin, body);
        self.raw(env.to_json(), at).await
    }

    /// Sends `bytes` as sent at `at`: signed then by its device (or the platform), and taken
    /// in by the bus at the platform's `at`.
    async fn raw(&mut self, bytes: Vec<u8>, at: DateTime<Utc>) -> anyhow::Result<()> {
        self.counts.total += 1;
        let signature = self.signer.sign_at(&bytes, at.timestamp());
        self.counts.unsigned += u64::from(signature.is_none());
        self.input
            .send(Inbound::Raw { bytes, source: "bus", signature, accepted_at: at })
            .await
            .map_err(|_| anyhow::anyhow!("pipeline closed"))
    }

    /// A capture of payer `i`'s face at `device` under `code` (sent), for what it authorises.
    async fn capture(&mut self, world: &World, device: &DeviceRef, i: usize, code: u64) -> anyhow::Result<FaceCode> {
        let face_code = FaceCode::parse(format!("{code:018}")).expect("18 digits");
        let embedding = world.faces.capture(i, &mut self.rng);
        let liveness = Score::try_from(0.97).expect("in range");
        let body = FaceCaptured { face_code: face_code.clone(), embedding, liveness, phone_last4: None };
        self.send(Origin::Device(device.clone()), EventBody::FaceCaptured(body)).await?;
        Ok(face_code)
    }
}

fn payer_id(i: usize) -> PayerId {
    PayerId::parse(format!("u-{i:06}")).expect("well-formed")
}

fn money(fen: i64) -> Money {
    Money::from_fen(fen).expect("demo amounts are valid")
}

impl World {
    fn new(opts: &FleetOptions) -> Self {
        let merchants: Vec<MerchantId> = (0..opts.merchants.max(1))
            .map(|m| MerchantId::parse(format!("19000{:05}", m + 101)).expect("id"))
            .collect();
        let devices = (0..opts.devices.max(1))
            .map(|d| {
                let merchant_id = merchants[d % merchants.len()].clone();
                DeviceRef {
                    store_id: StoreId::parse(format!("S{:02}", (d / merchants.len()) % 2 + 1)).expect("id"),
                    device_id: DeviceId::parse(format!("DEV-{merchant_id}-{d:04}")).expect("id"),
                    merchant_id,
                }
            })
            .collect();
        let payers = (0..opts.payers.max(1)).map(payer_id).collect();
        let start = fleet_start();
        Self {
            seed: opts.seed,
            devices,
            payers,
            faces: SyntheticFaces::new(opts.seed, opts.payers.max(1)),
            payments: opts.payments,
            start,
        }
    }

    async fn send_all(
        self,
        input: mpsc::Sender<Inbound>,
        signer: FleetSigner,
        time: FleetTime,
    ) -> anyhow::Result<SentCounts> {
        // Two simulated days of trade, so the daily caps turn over once.
        let events_estimate = (self.payers.len() * 3 + self.payments * 2).max(1) as i64;
        let step = ChronoDuration::milliseconds((2 * 86_400_000 / events_estimate).max(1));
        let rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5eed);
        let counts = SentCounts::default();
        let mut tx = Sender { input, signer, counts, time, sim: self.start, step, rng };
        let members = self.setup(&mut tx).await?;
        let mut last = Last::default();
        let mut orders = Vec::with_capacity(self.payments);
        for i in 0..self.payments {
            self.attempt(&mut tx, i, &members, &mut last).await?;
            orders.extend(last.order.clone());
        }
        // The rest of the payments' life, with dice of its own so the day above stays the
        // same whatever happens after it.
        tx.rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x11fe);
        self.after_the_day(&mut tx, &orders).await?;
        Ok(tx.counts)
    }

    /// After the day's payments: refunds (partial, full, repeated, too large), reversals,
    /// and Pay Score orders (completed, cancelled, completed above the hold or twice).
    async fn after_the_day(&self, tx: &mut Sender, orders: &[(DeviceRef, OutTradeNo, Money)]) -> anyhow::Result<()> {
        let n = (self.payments / 40).max(1);
        for k in 0..n {
            let Some((device, out_trade_no, paid)) = orders.get(tx.rng.random_range(0..orders.len().max(1))).cloned()
            else {
                break;
            };
            let origin = Origin::Device(device);
            if tx.rng.random_bool(0.25) {
                tx.counts.reversals += 1;
                tx.send(origin, EventBody::ReverseRequested(ReverseRequested { out_trade_no })).await?;
                continue;
            }
            let out_refund_no = OutRefundNo::parse(format!("R-{k:06}")).expect("id");
            // Half of the whole payment, all of it, or one fen more than it.
            let amount = match tx.rng.random_range(0..10) {
                0..=5 => money((paid.fen() / 2).max(1)),
                6..=8 => paid,
                _ => money(paid.fen() + 1),
            };
            let body = RefundRequested { out_trade_no, out_refund_no, amount };
            // One refund in five is sent twice: the second posts nothing.
            let times = if tx.rng.random_bool(0.2) { 2 } else { 1 };
            for _ in 0..times {
                tx.counts.refunds += 1;
                tx.send(origin.clone(), EventBody::RefundRequested(body.clone())).await?;
            }
        }
        for k in 0..n {
            self.pay_score_order(tx, k).await?;
        }
        // A month later a payer tops up: the ledger's clock moves past the open holds' 30
        // days, and the sweeper expires them (and revokes every order left unpaid).
        tx.skip(ChronoDuration::days(31));
        let payer_id = self.payers[tx.rng.random_range(0..self.payers.len())].clone();
        let top_up = AccountFunded { payer_id, amount: money(10_000) };
        tx.send(Origin::Platform, EventBody::AccountFunded(top_up)).await
    }

    /// One Pay Score order of a payer at a device, authorised by face: four payers in five
    /// have authorised the merchant's Pay Score by face first (the rest are refused
    /// `PAY_SCORE_NOT_AUTHORISED`); then the order is created by a new capture and
    /// completed, cancelled, left open (the ledger's clock expires it a month later), or
    /// ended wrongly.
    async fn pay_score_order(&self, tx: &mut Sender, k: usize) -> anyhow::Result<()> {
        let device = self.devices[tx.rng.random_range(0..self.devices.len())].clone();
        let out_order_no = OutOrderNo::parse(format!("PS-{k:06}")).expect("id");
        let payer = tx.rng.random_range(0..self.payers.len());
        let hold_fen = tx.rng.random_range(5_000..20_000);
        let origin = Origin::Device(device.clone());
        let code = 300_000_000_000_000_000_u64 + 2 * k as u64;
        if tx.rng.random_bool(0.8) {
            let face_code = tx.capture(self, &device, payer, code).await?;
            tx.counts.holds += 1;
            tx.send(origin.clone(), EventBody::PayScoreAuthorised(PayScoreAuthorised { face_code })).await?;
        }
        let face_code = tx.capture(self, &device, payer, code + 1).await?;
        let create =
            PayScoreOrderCreated { out_order_no: out_order_no.clone(), face_code, hold_amount: money(hold_fen) };
        tx.counts.holds += 1;
        tx.send(origin.clone(), EventBody::PayScoreOrderCreated(create)).await?;
        let complete =
            |total| PayScoreOrderCompleted { out_order_no: out_order_no.clone(), total_amount: money(total) };
        let cancel = PayScoreOrderCancelled { out_order_no: out_order_no.clone() };
        let ops: Vec<EventBody> = match tx.rng.random_range(0..10) {
            // Left open: the ledger's clock expires it a month later.
            0 => vec![],
            1..=5 => vec![EventBody::PayScoreOrderCompleted(complete(tx.rng.random_range(1..hold_fen)))],
            6 | 7 => vec![
                EventBody::PayScoreOrderCancelled(cancel.clone()),
                EventBody::PayScoreOrderCompleted(complete(100)),
            ],
            8 => vec![EventBody::PayScoreOrderCompleted(complete(hold_fen + 1))],
            _ => vec![EventBody::PayScoreOrderCompleted(complete(hold_fen)), EventBody::PayScoreOrderCancelled(cancel)],
        };
        for body in ops {
            tx.counts.holds += 1;
            tx.send(origin.clone(), body).await?;
        }
        Ok(())
    }

    /// Enrols every payer, funds their wallets, freezes a few, raises one merchant's limit
    /// and opens member cards. Returns each merchant's members.
    async fn setup(&self, tx: &mut Sender) -> anyhow::Result<BTreeMap<MerchantId, Vec<usize>>> {
        for (i, payer) in self.payers.iter().enumerate() {
            let phone = Some(self.faces.phone_last4(i));
            let body = FaceEnrolled { payer_id: payer.clone(), embedding: self.faces.enrolment(i), phone_last4: phone };
            tx.send(Origin::Platform, EventBody::FaceEnrolled(body)).await?;
            // One wallet in ten is nearly empty: insufficient balance shows up.
            let fen = if tx.rng.random_bool(0.1) {
                tx.rng.random_range(100..5_000)
            } else {
                tx.rng.random_range(20_000..300_000)
            };
            let body = AccountFunded { payer_id: payer.clone(), amount: money(fen) };
            tx.send(Origin::Platform, EventBody::AccountFunded(body)).await?;
            if tx.rng.random_bool(0.02) {
                tx.send(Origin::Platform, EventBody::AccountFrozen(AccountFrozen { payer_id: payer.clone() })).await?;
            }
        }
        // Each merchant's contracted fee rate: 0.54 % or 0.60 %.
        let mut merchants: Vec<&MerchantId> = self.devices.iter().map(|d| &d.merchant_id).collect();
        merchants.dedup();
        for (k, m) in merchants.into_iter().enumerate() {
            let body = MerchantFeeRateChanged { fee_rate_ppm: if k % 2 == 0 { 5_400 } else { 6_000 } };
            tx.send(Origin::Merchant(m.clone()), EventBody::MerchantFeeRateChanged(body)).await?;
        }
        let first = &self.devices[0].merchant_id;
        let body = MerchantLimitChanged { single_limit: money(500_000) };
        tx.send(Origin::Merchant(first.clone()), EventBody::MerchantLimitChanged(body)).await?;
        let mut members: BTreeMap<MerchantId, Vec<usize>> = BTreeMap::new();
        for i in 0..self.payers.len() {
            if !tx.rng.random_bool(0.1) {
                continue;
            }
            // The payer opens the card by face at one of the merchant's devices.
            let device = self.devices[tx.rng.random_range(0..self.devices.len())].clone();
            let channel = if tx.rng.random_bool(0.5) { CardChannel::CardPackage } else { CardChannel::MiniProgram };
            let card_code = CardCode::parse(format!("C{i:08}")).expect("id");
            members.entry(device.merchant_id.clone()).or_default().push(i);
            let face_code = tx.capture(self, &device, i, 200_000_000_000_000_000_u64 + i as u64).await?;
            let body = MemberCardOpened { face_code, card_code, channel };
            tx.send(Origin::Device(device), EventBody::MemberCardOpened(body)).await?;
        }
        Ok(members)
    }

    /// One payment attempt of the fleet, in the scenario the dice pick.
    async fn attempt(
        &self,
        tx: &mut Sender,
        i: usize,
        members: &BTreeMap<MerchantId, Vec<usize>>,
        last: &mut Last,
    ) -> anyhow::Result<()> {
        let mut device = self.devices[tx.rng.random_range(0..self.devices.len())].clone();
        let sc = scenario(tx.rng.random::<f64>());
        if sc == Scenario::BadInput {
            tx.counts.bad += 1;
            let at = tx.tick();
            let bytes = bad_event(i, &device, &mut tx.rng, at);
            return tx.raw(bytes, at).await;
        }
        let (payer, heavy) = self.pick_payer(&mut tx.rng, members.get(&device.merchant_id));
        let mut amount_fen = match (sc, heavy) {
            (Scenario::OverLimit, _) => tx.rng.random_range(100_001..300_000),
            // Payer 0 buys many small things (the daily count cap); the other heavy payers
            // buy a few large ones (the daily amount cap).
            (_, true) if payer == 0 => tx.rng.random_range(100..500),
            (_, true) => tx.rng.random_range(30_000..60_000),
            _ if tx.rng.random_bool(0.8) => tx.rng.random_range(100..10_000),
            _ => tx.rng.random_range(10_000..60_000),
        };
        let mut out_trade_no = OutTradeNo::parse(format!("{}-{i:08}", device.merchant_id)).expect("id");
        if let (Scenario::AmountChanged, Some((d, no, m))) = (sc, &last.order) {
            (device, out_trade_no, amount_fen) = (d.clone(), no.clone(), m.fen() + 1);
        }
        // A reused capture is offered again at the device that took it (another device's
        // use of it resolves to nobody).
        if let (Scenario::ReusedCapture, Some((d, _, _))) = (sc, &last.order) {
            out_trade_no = OutTradeNo::parse(format!("{}-{i:08}", d.merchant_id)).expect("id");
            device = d.clone();
        }
        let face_code = match (sc, &last.face_code) {
            (Scenario::ReusedCapture, Some(code)) => code.clone(),
            _ => {
                let code =
                    FaceCode::parse(format!("{:018}", 100_000_000_000_000_000_u64 + i as u64)).expect("18 digits");
                let embedding = match sc {
                    Scenario::UnknownFace => SyntheticFaces::stranger(&mut tx.rng),
                    Scenario::UnsureFace => self.poor_capture(payer, &mut tx.rng),
                    _ => self.faces.capture(payer, &mut tx.rng),
                };
                let liveness = if sc == Scenario::LowLiveness { 0.3 } else { 0.97 };
                let liveness = Score::try_from(liveness).expect("in range");
                let body = FaceCaptured { face_code: code.clone(), embedding, liveness, phone_last4: None };
                tx.send(Origin::Device(device.clone()), EventBody::FaceCaptured(body)).await?;
                code
            }
        };
        let pay = PaymentRequested {
            out_trade_no: out_trade_no.clone(),
            amount: money(amount_fen),
            face_code: face_code.clone(),
        };
        tx.send(Origin::Device(device.clone()), EventBody::PaymentRequested(pay.clone())).await?;
        if sc == Scenario::TimeoutThenRetry {
            // The device saw no answer: it queries first, then retries the very same request.
            let query = PaymentQuery { out_trade_no: out_trade_no.clone() };
            tx.send(Origin::Device(device.clone()), EventBody::PaymentQuery(query)).await?;
            tx.counts.queries += 1;
            tx.send(Origin::Device(device.clone()), EventBody::PaymentRequested(pay.clone())).await?;
            tx.counts.retries += 1;
        }
        if sc == Scenario::UnsureFace {
            // Asked for the digits: the payer types them, the device captures again.
            let code = FaceCode::parse(format!("{:018}", 300_000_000_000_000_000_u64 + i as u64)).expect("18 digits");
            let body = FaceCaptured {
                face_code: code.clone(),
                embedding: self.faces.capture(payer, &mut tx.rng),
                liveness: Score::try_from(0.97).expect("in range"),
                phone_last4: Some(self.faces.phone_last4(payer)),
            };
            tx.send(Origin::Device(device.clone()), EventBody::FaceCaptured(body)).await?;
            let again = PaymentRequested { face_code: code, ..pay };
            tx.send(Origin::Device(device.clone()), EventBody::PaymentRequested(again)).await?;
            tx.counts.phone_confirmations += 1;
        }
        last.face_code = Some(face_code);
        last.order = Some((device, out_trade_no, money(amount_fen)));
        Ok(())
    }

    /// A poor capture of `payer`: cosine 0.45 with the enrolled template, in the band where
    /// the matcher asks for the phone digits (between its ask floor and accept threshold).
    fn poor_capture(&self, payer: usize, rng: &mut ChaCha8Rng) -> Embedding {
        let template: Vec<f32> = self.faces.enrolment(payer).into();
        let noise: Vec<f32> = SyntheticFaces::stranger(rng).into();
        let along: f32 = noise.iter().zip(&template).map(|(n, t)| n * t).sum();
        let a = 0.45f32;
        let mixed: Vec<f32> =
            template.iter().zip(&noise).map(|(t, n)| a * t + (1.0 - a * a).sqrt() * (n - along * t)).collect();
        Embedding::try_from(mixed).expect("a unit template and a unit direction")
    }

    /// A payer for this attempt: often one of the merchant's members, sometimes one of the
    /// few heavy spenders who run into the daily caps. Returns (index, heavy).
    fn pick_payer(&self, rng: &mut ChaCha8Rng, members: Option<&Vec<usize>>) -> (usize, bool) {
        let heavy_count = (self.payers.len() / 100).max(1);
        match members {
            Some(m) if !m.is_empty() && rng.random_bool(0.15) => (m[rng.random_range(0..m.len())], false),
            _ if rng.random_bool(0.02) => (0, true),
            _ if rng.random_bool(0.03) => (rng.random_range(0..heavy_count), true),
            _ => (rng.random_range(0..self.payers.len()), false),
        }
    }
}

/// A bad event of one of the kinds devices get wrong, in rotation.
fn bad_event(i: usize, device: &DeviceRef, rng: &mut ChaCha8Rng, at: DateTime<Utc>) -> Vec<u8> {
    let pay = PaymentRequested {
        out_trade_no: OutTradeNo::parse(format!("BAD-{i:08}")).expect("id"),
        amount: money(1_000),
        face_code: FaceCode::parse(format!("{:018}", 900_000_000_000_000_000_u64 + i as u64)).expect("18 digits"),
    };
    let env = Envelope::new(
        Uuid::from_u128(rng.random()),
        at,
        Origin::Device(device.clone()),
        EventBody::PaymentRequested(pay),
    );
    let mut v = serde_json::to_value(&env).expect("serialises");
    match i % 6 {
        0 => return br#"{"event_id": "broken"#.to_vec(),
        1 => v["payload"]["amount"] = "12.345".into(),
        2 => v["device_id"] = "DEV-GHOST".into(),
        3 => v["payload"]["amount"] = "0.00".into(),
        4 => v["payload"]["out_trade_no"] = "X".repeat(40).into(),
        _ => {
            v["type"] = "face_captured".into();
            v["payload"] =
                serde_json::json!({ "face_code": "900000000000000001", "embedding": [0.1, 0.2, 0.3], "liveness": 0.9 });
        }
    }
    serde_json::to_vec(&v).expect("serialises")
}

/// The simulated moment of a fleet's first event: 2026-03-02 00:00 UTC (its first full day
/// of trade, in China time, is 2026-03-03).
pub fn fleet_start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_772_409_600, 0).expect("a valid moment")
}

/// The devices of the fleet the demo simulates for `opts` (to register before sending).
pub fn fleet_devices(opts: &FleetOptions) -> Vec<DeviceRef> {
    World::new(opts).devices
}

/// Sends the demo's events for `opts` into `input`, as the demo does (the same seed, the
/// same events, in the same order), each at the moment `time` says; for `facepay simulate`
/// and the benchmarks ([`FleetTime::Live`]: sent now, for a running `facepay serve`).
pub async fn send_fleet(
    opts: &FleetOptions,
    signer: FleetSigner,
    input: mpsc::Sender<Inbound>,
    time: FleetTime,
) -> anyhow::Result<SentCounts> {
    World::new(opts).send_all(input, signer, time).await
}
