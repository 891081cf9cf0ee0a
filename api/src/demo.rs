//! `facepay demo`: a simulated fleet through the whole embedded pipeline.
//!
//! Deterministic from `--seed`: the same seed sends the same events and gets the same counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use facepay_domain::event::{
    AccountFrozen, AccountFunded, FaceCaptured, FaceEnrolled, MemberCardOpened, MerchantFeeRateChanged,
    MerchantLimitChanged, PayScoreAuthorised, PayScoreOrderCancelled, PayScoreOrderCompleted, PayScoreOrderCreated,
    PaymentQuery, PaymentRequested, RefundRequested, ReverseRequested,
};
use facepay_domain::limits::SWEEP_INTERVAL_MS;
use facepay_domain::time::{Clock, ManualClock};
use facepay_domain::{
    CardChannel, CardCode, DeviceId, DeviceRef, Envelope, EventBody, FaceCode, MerchantId, Money, OrderStatus, Origin,
    OutOrderNo, OutRefundNo, OutTradeNo, OutcomeBody, PayerId, PhoneLast4, Score, StoreId,
};
use facepay_ingest::{Inbound, PipelineConfig};
use facepay_ledger::model::HoldStatus;
use facepay_ledger::sweep::Sweeper;
use facepay_ledger::Delivery;
use facepay_matcher::synthetic::SyntheticFaces;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::app::{open_store, sqlite_url, App, Secret, SweeperTask};
use crate::fleet_keys::FleetSigner;
use facepay_domain::auth::Pepper;
use facepay_ingest::authenticity::DeviceVerifier;
use std::sync::Arc;

/// The size of the simulated fleet and its day.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub seed: u64,
    pub merchants: usize,
    pub devices: usize,
    pub payers: usize,
    pub payments: usize,
    /// The demo's database is created anew here (`demo.db`).
    pub data_dir: PathBuf,
    pub progress: bool,
    /// The pepper the fleet's device keys are made under (the configured one for the CLI, a
    /// random one by default).
    pub pepper: Pepper,
    /// After the traffic, the day's bill is written, reconciled and its breaks resolved
    /// (the late timeout success confirmed paid: that moves money). False keeps the store
    /// exactly as the pipeline left it, for comparisons with another profile's run.
    pub reconcile: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            merchants: 5,
            devices: 20,
            payers: 2_000,
            payments: 20_000,
            data_dir: PathBuf::from("facepay-data"),
            progress: true,
            pepper: random_pepper(),
            reconcile: true,
        }
    }
}

/// 32 random bytes.
pub fn random_pepper() -> Pepper {
    use rand::RngCore;
    let mut bytes = vec![0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Pepper::new(bytes)
}

/// The demo's report; `--json` prints it as is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoSummary {
    pub seed: u64,
    pub fleet: Fleet,
    pub payments: Payments,
    pub retries: Retries,
    pub queries: Queries,
    pub members: Members,
    pub rejected: Rejected,
    pub refunds: LifecycleCounts,
    pub reversals: LifecycleCounts,
    pub holds: HoldCounts,
    pub invariants: InvariantsReport,
    pub events: EventCounts,
    pub database: String,
    pub elapsed_ms: u128,
    /// The day's bill as the channel would write it, with planted breaks, reconciled (issue 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconciliation: Option<crate::reconcile::DemoReconciliation>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Fleet {
    pub merchants: usize,
    pub devices: usize,
    pub payers: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Payments {
    /// Payment requests decided (exact retries are counted under `retries`).
    pub attempted: u64,
    pub succeeded: u64,
    /// Reason code → count.
    pub declined: BTreeMap<String, u64>,
    pub member_quick_pay: u64,
    /// Sum of successful payments, CNY.
    pub amount_paid: String,
    /// Orders closed because they were still unpaid 45 s (event time) after creation: by a
    /// later attempt or query on them, or by the ledger's clock (the sweeper).
    pub revoked: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Retries {
    /// Exact retries the devices sent after a simulated network timeout.
    pub sent: u64,
    /// Answered from the stored outcome, posting nothing.
    pub replayed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Queries {
    pub sent: u64,
    pub answered: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Members {
    /// Member cards opened (card package or mini program).
    pub bound: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rejected {
    /// Bad events the fleet sent on purpose.
    pub sent: u64,
    /// Rejected and kept with their reason.
    pub kept: u64,
    pub by_reason: BTreeMap<String, u64>,
}

/// Refund or reversal requests the fleet sent after the day's payments.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LifecycleCounts {
    pub sent: u64,
    /// Accepted (including idempotent repeats, which post nothing).
    pub applied: u64,
    /// Refusal code → count; each refusal is kept in the rejected-events table.
    pub refused: BTreeMap<String, u64>,
}

/// Pay Score orders: holds created, completed, cancelled, and refused operations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HoldCounts {
    pub sent: u64,
    /// Payers who authorised a merchant's Pay Score by face.
    pub authorised: u64,
    pub created: u64,
    pub completed: u64,
    pub cancelled: u64,
    /// Holds left open that the ledger's clock expired 30 days (platform time) after creation,
    /// giving the held money back.
    pub expired: u64,
    pub refused: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InvariantsReport {
    pub balanced: bool,
    pub no_order_paid_twice: bool,
    pub no_overdraft: bool,
    pub replay_matches_live: bool,
    /// `facepay verify`: every stream's audit hash chain is intact.
    pub audit_chain_ok: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EventCounts {
    pub inbound: u64,
    pub ledger: u64,
}

/// Runs the demo to completion; returns the summary and the app, still running (for `--serve`).
pub async fn run(opts: &DemoOptions) -> anyhow::Result<(DemoSummary, App)> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.data_dir)?;
    let db = opts.data_dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store = open_store(&Secret::new(sqlite_url(&db))).await?;
    let world = World::new(opts);
    for d in &world.devices {
        store.register_merchant(&d.merchant_id, &format!("Merchant {}", d.merchant_id)).await?;
        store.register_device(d).await?;
    }
    let signer = FleetSigner::enrol(store.as_ref(), &opts.pepper, &world.devices).await?;
    let verifier = Arc::new(DeviceVerifier::new(opts.pepper.clone()));
    // The simulated day runs on a clock the demo drives, one step per event: the platform
    // accepts each event at the simulated moment it was sent. The ledger's clock sweeps once
    // the day is over (below), so the counts do not depend on when a periodic sweep ran.
    let clock = ManualClock::starting_at(world.start);
    let config = PipelineConfig {
        verifier,
        clock: clock.shared(),
        sweep_interval: std::time::Duration::ZERO,
        ..Default::default()
    };
    let mut app = App::start(store, config).await?;
    let input = app.pipeline.input.clone();
    let mut outcomes = std::mem::replace(&mut app.pipeline.outcomes, mpsc::channel(1).1);
    let (sent_tx, mut sent_rx) = tokio::sync::oneshot::channel();
    let time = FleetTime::Driven(clock.clone());
    let producer = tokio::spawn(async move {
        let sent = world.send_all(input, signer, time).await;
        let _ = sent_tx.send(sent.as_ref().map(|s| s.total).unwrap_or(0));
        sent
    });
    let mut tally = Tally::default();
    let mut expected: Option<u64> = None;
    let bar = progress_bar(opts);
    while expected.is_none_or(|n| tally.outcomes < n) {
        tokio::select! {
            outcome = outcomes.recv() => match outcome {
                Some(o) => { tally.count(&o.body); bar.inc(1); }
                None => anyhow::bail!("the pipeline stopped early"),
            },
            total = &mut sent_rx, if expected.is_none() => {
                let total = total.unwrap_or(0);
                expected = Some(total);
                bar.set_length(total);
            }
        }
    }
    bar.finish_and_clear();
    let sent = producer.await??;
    app.pipeline.outcomes = outcomes;
    // The ledger's clock brought up to the simulation's last moment.
    let sweeper = Sweeper::new(app.ledger.clone(), Delivery::default(), app.clock.clone());
    sweeper.sweep_all().await?;
    let reconciliation = match opts.reconcile {
        true => Some(crate::reconcile::demo(&app.store, &opts.data_dir).await?),
        false => None,
    };
    let mut summary = summarise(opts, &app, tally, sent, db, started).await?;
    summary.reconciliation = reconciliation;
    // The simulated day is over: from here the platform's clock is the system's (`--serve`
    // takes live requests), and the ledger's clock sweeps periodically.
    clock.release();
    app.sweeper = SweeperTask::start(sweeper, std::time::Duration::from_millis(SWEEP_INTERVAL_MS));
    Ok((summary, app))
}

fn progress_bar(opts: &DemoOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:12} [{bar:40}] {pos}/{len} events ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("simulating");
    bar
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
    fn new(opts: &DemoOptions) -> Self {
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
        let start = "2026-03-02T00:00:00Z".parse().expect("valid time");
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
            let phone = PhoneLast4::parse(&format!("{:04}", tx.rng.random_range(0..10_000))).ok();
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
            tx.send(Origin::Device(device.clone()), EventBody::PaymentRequested(pay)).await?;
            tx.counts.retries += 1;
        }
        last.face_code = Some(face_code);
        last.order = Some((device, out_trade_no, money(amount_fen)));
        Ok(())
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

/// Counts of the outcomes, as they arrive.
#[derive(Debug, Default)]
struct Tally {
    outcomes: u64,
    attempted: u64,
    succeeded: u64,
    declined: BTreeMap<String, u64>,
    member_quick_pay: u64,
    paid_fen: i64,
    replayed: u64,
    queries_answered: u64,
    members_bound: u64,
    refused: BTreeMap<String, u64>,
    refunds: LifecycleCounts,
    reversals: LifecycleCounts,
    holds: HoldCounts,
    /// Refusals of refunds, reversals and Pay Score operations (kept like bad input).
    lifecycle_refused: u64,
}

impl Tally {
    fn count(&mut self, body: &OutcomeBody) {
        self.outcomes += 1;
        match body {
            OutcomeBody::PaymentResult(r) if r.replayed => self.replayed += 1,
            OutcomeBody::PaymentResult(r) => {
                self.attempted += 1;
                match (r.status, r.reason) {
                    (OrderStatus::Paid, _) => {
                        self.succeeded += 1;
                        self.paid_fen += r.amount.fen();
                        self.member_quick_pay += u64::from(r.member_quick_pay);
                    }
                    (_, reason) => {
                        let code = reason.map_or("UNKNOWN", |r| r.code()).to_string();
                        *self.declined.entry(code).or_default() += 1;
                    }
                }
            }
            OutcomeBody::QueryResult(_) => self.queries_answered += 1,
            OutcomeBody::Applied { kind } if kind == "member_card_opened" => self.members_bound += 1,
            OutcomeBody::Applied { kind } => match kind.as_str() {
                "refund_requested" => self.refunds.applied += 1,
                "reverse_requested" => self.reversals.applied += 1,
                "pay_score_authorised" => self.holds.authorised += 1,
                "pay_score_order_created" => self.holds.created += 1,
                "pay_score_order_completed" => self.holds.completed += 1,
                "pay_score_order_cancelled" => self.holds.cancelled += 1,
                _ => {}
            },
            OutcomeBody::Refused { kind, code, .. } => {
                let map = match kind.as_str() {
                    "refund_requested" => &mut self.refunds.refused,
                    "reverse_requested" => &mut self.reversals.refused,
                    k if k.starts_with("pay_score") => &mut self.holds.refused,
                    _ => {
                        *self.refused.entry(code.clone()).or_default() += 1;
                        return;
                    }
                };
                *map.entry(code.clone()).or_default() += 1;
                self.lifecycle_refused += 1;
            }
        }
    }
}

async fn summarise(
    opts: &DemoOptions,
    app: &App,
    tally: Tally,
    sent: SentCounts,
    db: PathBuf,
    started: Instant,
) -> anyhow::Result<DemoSummary> {
    let invariants = app.store.check_invariants().await?;
    let live = app.store.load_all().await?;
    let revoked = live.orders.values().filter(|o| o.status == OrderStatus::Revoked).count() as u64;
    let expired = live.holds.values().filter(|h| h.status == HoldStatus::Expired).count() as u64;
    let replay = app.ledger.replay().await?;
    let audit = app.ledger.verify().await?;
    if let Some(b) = &audit.first_break {
        tracing::error!(seq = b.seq, stream = %b.stream, reason = b.reason, "the audit chain is broken");
    }
    for d in &replay.differences {
        tracing::error!(difference = %d, "replay differs from the live projections");
    }
    Ok(DemoSummary {
        seed: opts.seed,
        fleet: Fleet { merchants: opts.merchants, devices: opts.devices, payers: opts.payers },
        payments: Payments {
            attempted: tally.attempted,
            succeeded: tally.succeeded,
            declined: tally.declined,
            member_quick_pay: tally.member_quick_pay,
            amount_paid: facepay_domain::money::fen_to_string(tally.paid_fen),
            revoked,
        },
        retries: Retries { sent: sent.retries, replayed: tally.replayed },
        queries: Queries { sent: sent.queries, answered: tally.queries_answered },
        members: Members { bound: tally.members_bound },
        rejected: Rejected {
            sent: sent.bad,
            // Refused refunds, reversals and Pay Score operations are kept too; they are
            // reported under their own headings.
            kept: app.store.rejected(u32::MAX).await?.len() as u64 - tally.lifecycle_refused,
            by_reason: tally.refused,
        },
        refunds: LifecycleCounts { sent: sent.refunds, ..tally.refunds },
        reversals: LifecycleCounts { sent: sent.reversals, ..tally.reversals },
        holds: HoldCounts { sent: sent.holds, expired, ..tally.holds },
        invariants: InvariantsReport {
            balanced: invariants.balanced,
            no_order_paid_twice: invariants.no_order_paid_twice,
            no_overdraft: invariants.no_overdraft,
            replay_matches_live: replay.matches,
            audit_chain_ok: audit.ok,
        },
        events: EventCounts { inbound: sent.total, ledger: replay.events },
        database: db.display().to_string(),
        elapsed_ms: started.elapsed().as_millis(),
        reconciliation: None,
    })
}

impl DemoSummary {
    /// True when every invariant held.
    pub fn invariants_hold(&self) -> bool {
        let i = &self.invariants;
        i.balanced && i.no_order_paid_twice && i.no_overdraft && i.replay_matches_live && i.audit_chain_ok
    }

    /// The readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let p = &self.payments;
        let ok = |b: bool| if b { "yes" } else { "NO" };
        s += &format!(
            "facepay demo (seed {}): {} merchants, {} devices, {} payers\n\n",
            self.seed, self.fleet.merchants, self.fleet.devices, self.fleet.payers
        );
        s += &format!("payments attempted   {:>8}\n", p.attempted);
        s += &format!(
            "  succeeded          {:>8}   ({} CNY, {} by member quick pay)\n",
            p.succeeded, p.amount_paid, p.member_quick_pay
        );
        for (code, n) in &p.declined {
            s += &format!("  declined {:<22} {:>6}\n", code, n);
        }
        s += &format!(
            "exact retries        {:>8} sent, {} answered from the stored outcome\n",
            self.retries.sent, self.retries.replayed
        );
        s += &format!("queries              {:>8} sent, {} answered\n", self.queries.sent, self.queries.answered);
        s += &format!("member cards opened  {:>8}\n", self.members.bound);
        s += &format!(
            "bad events           {:>8} sent, {} kept with their reason\n",
            self.rejected.sent, self.rejected.kept
        );
        let refused =
            |m: &BTreeMap<String, u64>| m.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ");
        s += &format!(
            "refunds              {:>8} sent, {} applied; refused: {}\n",
            self.refunds.sent,
            self.refunds.applied,
            refused(&self.refunds.refused)
        );
        s += &format!(
            "reversals            {:>8} sent, {} applied; refused: {}\n",
            self.reversals.sent,
            self.reversals.applied,
            refused(&self.reversals.refused)
        );
        let h = &self.holds;
        s += &format!(
            "Pay Score            {:>8} sent: {} authorised, {} holds, {} completed, {} cancelled, {} expired; refused: {}\n",
            h.sent,
            h.authorised,
            h.created,
            h.completed,
            h.cancelled,
            h.expired,
            refused(&h.refused)
        );
        s += &format!("revoked after 45 s   {:>8} (orders left unpaid)\n", self.payments.revoked);
        if let Some(r) = &self.reconciliation {
            s += &crate::reconcile::render_demo(r);
        }
        s += "\ninvariants\n";
        s += &format!("  postings balance                 {}\n", ok(self.invariants.balanced));
        s += &format!("  no order paid twice              {}\n", ok(self.invariants.no_order_paid_twice));
        s += &format!("  no wallet overdrawn              {}\n", ok(self.invariants.no_overdraft));
        s += &format!("  replay equals live projections   {}\n", ok(self.invariants.replay_matches_live));
        s += &format!("  audit chain intact               {}\n", ok(self.invariants.audit_chain_ok));
        s += &format!(
            "\n{} inbound events, {} ledger events in {} ({} ms)\n",
            self.events.inbound, self.events.ledger, self.database, self.elapsed_ms
        );
        s
    }
}

/// The devices of the fleet the demo simulates for `opts` (to register before sending).
pub fn fleet_devices(opts: &DemoOptions) -> Vec<DeviceRef> {
    World::new(opts).devices
}

/// Sends the demo's events for `opts` into `input`, as the demo does (the same seed, the
/// same events, in the same order), each at the moment `time` says; for `facepay simulate`
/// and the benchmarks ([`FleetTime::Live`]: sent now, for a running `facepay serve`).
pub async fn send_fleet(
    opts: &DemoOptions,
    signer: FleetSigner,
    input: mpsc::Sender<Inbound>,
    time: FleetTime,
) -> anyhow::Result<SentCounts> {
    World::new(opts).send_all(input, signer, time).await
}
