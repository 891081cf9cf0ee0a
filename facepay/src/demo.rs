//! `facepay demo`: a simulated fleet through the whole embedded pipeline.
//!
//! Deterministic from `--seed`: the same seed sends the same events and gets the same counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use facepay_domain::auth::Pepper;
use facepay_domain::limits::SWEEP_INTERVAL_MS;
use facepay_domain::time::ManualClock;
use facepay_domain::{OrderStatus, OutcomeBody};
use facepay_ingest::authenticity::DeviceVerifier;
use facepay_ingest::PipelineConfig;
use facepay_ledger::model::HoldStatus;
use facepay_ledger::sweep::Sweeper;
use facepay_ledger::Delivery;
use facepay_sim::fleet::{fleet_devices, fleet_start, send_fleet, FleetOptions, FleetTime, SentCounts};
use facepay_sim::keys::{random_pepper, FleetSigner};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::app::{open_store, App, SweeperTask};
use crate::config::{sqlite_url, Secret};

/// The demo's fleet, where its database lives, and what it does after the traffic.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub fleet: FleetOptions,
    /// The demo's database is created anew here: `facepay.db`, the data directory's one
    /// database, which every other command opens too (see [`fresh_demo_database`]).
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
            fleet: FleetOptions::default(),
            data_dir: PathBuf::from("facepay-data"),
            progress: true,
            pepper: random_pepper(),
            reconcile: true,
        }
    }
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
    /// Payments captured again with the payer's phone digits after a poor first capture.
    pub phone_confirmations_sent: u64,
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

/// Marks a data directory whose database the demo made (and may make anew).
const DEMO_MARK: &str = "demo-made";

/// The data directory's database (`facepay.db`: what `serve`, `reconcile` and every command
/// open by default), removed for the demo to start afresh. Only a database the demo made is
/// removed: a ledger made otherwise is refused, naming it.
pub fn fresh_demo_database(data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let db = data_dir.join(crate::config::DATABASE_FILE);
    let mark = data_dir.join(DEMO_MARK);
    if db.exists() && !mark.exists() {
        anyhow::bail!(
            "{} holds a ledger the demo did not make; the demo starts from an empty database: \
             set FACEPAY_DATA_DIR to another directory",
            db.display()
        );
    }
    std::fs::write(&mark, "this directory's database was made by `facepay demo`, which may make it anew\n")?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok(db)
}

/// Marks the data directory as served (`facepay serve`): its ledger is no longer the demo's
/// to make anew, so a later demo there refuses instead of wiping what was served.
pub fn served(data_dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(data_dir.join(DEMO_MARK)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs the demo to completion; returns the summary and the app, still running (for `--serve`).
pub async fn run(opts: &DemoOptions) -> anyhow::Result<(DemoSummary, App)> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.data_dir)?;
    let db = fresh_demo_database(&opts.data_dir)?;
    let stores = open_store(&Secret::new(sqlite_url(&db))).await?;
    let store = stores.ledger.clone();
    let devices = fleet_devices(&opts.fleet);
    for d in &devices {
        store.register_merchant(&d.merchant_id, &format!("Merchant {}", d.merchant_id)).await?;
        store.register_device(d).await?;
    }
    let signer = FleetSigner::enrol(store.as_ref(), &opts.pepper, &devices).await?;
    let verifier = Arc::new(DeviceVerifier::new(opts.pepper.clone()));
    // The simulated day runs on a clock the demo drives, one step per event: the platform
    // accepts each event at the simulated moment it was sent. The ledger's clock sweeps once
    // the day is over (below), so the counts do not depend on when a periodic sweep ran.
    let clock = ManualClock::starting_at(fleet_start());
    let config = PipelineConfig {
        verifier,
        clock: clock.shared(),
        sweep_interval: std::time::Duration::ZERO,
        ..Default::default()
    };
    let mut app = App::start(stores, config).await?;
    let input = app.pipeline.input.clone();
    let mut outcomes = std::mem::replace(&mut app.pipeline.outcomes, mpsc::channel(1).1);
    let (sent_tx, mut sent_rx) = tokio::sync::oneshot::channel();
    let (fleet, time) = (opts.fleet, FleetTime::Driven(clock.clone()));
    let producer = tokio::spawn(async move {
        let sent = send_fleet(&fleet, signer, input, time).await;
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
        true => Some(crate::reconcile::demo(&app.recon, &opts.data_dir).await?),
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

/// Sign-in keys for the console, one per role, for `demo --serve` to print once: admin,
/// finance, the first merchant's, a store key of that merchant's first store, and a device
/// key of that store's first device. Each is audited as made by `cli`, and expires in a day.
pub async fn console_keys(app: &App) -> anyhow::Result<Vec<(String, String)>> {
    use facepay_api::auth::{Actor, NewKey};
    use facepay_domain::auth::Role;
    let first_device = {
        let registry = app.registry.read().unwrap_or_else(|e| e.into_inner());
        registry.devices.values().min_by(|a, b| a.device_id.as_str().cmp(b.device_id.as_str())).cloned()
    };
    let device = first_device.ok_or_else(|| anyhow::anyhow!("the demo registered no device"))?;
    let key = |role, merchant: bool, store: bool, dev: bool, label: &str| NewKey {
        role,
        merchant_id: merchant.then(|| device.merchant_id.clone()),
        store_id: store.then(|| device.store_id.clone()),
        device_id: dev.then(|| device.device_id.clone()),
        label: format!("demo console: {label}"),
        expires_in_days: Some(1),
    };
    let specs = [
        ("admin", key(Role::Admin, false, false, false, "admin")),
        ("finance", key(Role::Finance, false, false, false, "finance")),
        ("merchant", key(Role::Merchant, true, false, false, "merchant")),
        ("store", key(Role::Merchant, true, true, false, "store")),
        ("device", key(Role::Device, true, true, true, "device")),
    ];
    let mut keys = Vec::new();
    for (name, spec) in specs {
        let (_, token) = app.auth.create_key(spec, &Actor::cli()).await?;
        keys.push((name.to_string(), token));
    }
    Ok(keys)
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
            OutcomeBody::Rejected { code, .. } => *self.refused.entry(code.clone()).or_default() += 1,
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
        seed: opts.fleet.seed,
        fleet: Fleet { merchants: opts.fleet.merchants, devices: opts.fleet.devices, payers: opts.fleet.payers },
        payments: Payments {
            attempted: tally.attempted,
            succeeded: tally.succeeded,
            declined: tally.declined,
            member_quick_pay: tally.member_quick_pay,
            amount_paid: facepay_domain::money::fen_to_string(tally.paid_fen),
            revoked,
            phone_confirmations_sent: sent.phone_confirmations,
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
        s +=
            &format!("phone confirmations  {:>8} captured again with the payer's digits\n", p.phone_confirmations_sent);
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
