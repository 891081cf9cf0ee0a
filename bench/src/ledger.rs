//! `facepay-bench ledger`: payments decided and durably committed per second on the SQLite or
//! PostgreSQL store, against the raw ceiling of writing the same rows in the same batches with
//! no logic (every row the ledger wrote; and, apart, the log's rows alone), and (on
//! PostgreSQL) against the usual design: one transaction per payment with `SELECT … FOR
//! UPDATE` on the payer's balance row ([`crate::usual_design`]).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use facepay_domain::limits::LEDGER_BATCH_MAX;
use facepay_domain::{DeviceId, DeviceRef, FaceCode, MerchantId, Money, OutTradeNo, PayerId, StoreId};
use facepay_ledger::store::CommitBatch;
use facepay_ledger::{Command, CommandKind, Identity, Ledger, LedgerStore, PgStore, Policy, SqliteStore};
use serde::Serialize;
use sqlx::Connection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A PostgreSQL server URL (a role that may CREATE DATABASE): run on PostgreSQL, a fresh
    /// database per phase, instead of SQLite files.
    pub postgres: Option<String>,
    /// Each round runs both phases on fresh databases; the report gives medians, since one
    /// machine's fsync latency varies from run to run.
    pub rounds: usize,
    pub payments: usize,
    pub batch: usize,
    pub payers: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { postgres: None, rounds: 3, payments: 100_000, batch: LEDGER_BATCH_MAX, payers: 10_000 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub rounds: usize,
    pub payments: usize,
    pub batch_size: usize,
    pub payers: usize,
    /// Payments decided (load, decide, apply) and committed with projections, per second.
    pub payments_per_s: f64,
    /// The same rows in the same batches with no logic: each batch the ledger committed
    /// (events, postings, transactions, projections, history, answers) written again, as
    /// it was, into a fresh store: no reads, no decisions.
    pub ceiling_payments_per_s: f64,
    /// `payments_per_s / ceiling_payments_per_s`.
    pub ratio_of_ceiling: f64,
    /// The log's rows alone (events, postings, transactions) in the same batches: no
    /// projections, no history, no answers.
    pub log_ceiling_payments_per_s: f64,
    /// `payments_per_s / log_ceiling_payments_per_s`.
    pub ratio_of_log_ceiling: f64,
    /// PostgreSQL only: the same payments through the usual design (one transaction per
    /// payment, the payer's balance row locked), on as many connections as the store's pool.
    pub usual_design_payments_per_s: Option<f64>,
    /// `payments_per_s / usual_design_payments_per_s`.
    pub times_usual_design: Option<f64>,
    /// How many of the payments the usual design ran (it is slow: at most
    /// [`USUAL_DESIGN_PAYMENTS_MAX`]).
    pub usual_design_payments: Option<usize>,
    /// 99th percentile of one batch: load, decide and durable commit.
    pub batch_commit_p99_ms: f64,
    pub ceiling_batch_commit_p99_ms: f64,
    pub succeeded: usize,
    /// Every round's (payments_per_s, ceiling_payments_per_s), in order.
    pub per_round: Vec<(f64, f64)>,
    pub durability: &'static str,
}

/// One round's figures.
struct Round {
    usual_payments_per_s: Option<f64>,
    payments_per_s: f64,
    ceiling_payments_per_s: f64,
    log_ceiling_payments_per_s: f64,
    p99_ms: f64,
    ceiling_p99_ms: f64,
    succeeded: usize,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `opts.rounds` rounds, each in its own temporary folder, and reports medians.
pub async fn ledger(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let mut rounds = Vec::new();
    for _ in 0..opts.rounds.max(1) {
        rounds.push(round(opts).await?);
    }
    let pick = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let payments_per_s = pick(|r| r.payments_per_s);
    let ceiling_payments_per_s = pick(|r| r.ceiling_payments_per_s);
    let log_ceiling_payments_per_s = pick(|r| r.log_ceiling_payments_per_s);
    let usual = opts.postgres.as_ref().map(|_| pick(|r| r.usual_payments_per_s.unwrap_or(0.0)));
    Ok(BenchReport {
        rounds: rounds.len(),
        payments: opts.payments,
        batch_size: opts.batch,
        payers: opts.payers,
        payments_per_s,
        ceiling_payments_per_s,
        ratio_of_ceiling: payments_per_s / ceiling_payments_per_s,
        log_ceiling_payments_per_s,
        ratio_of_log_ceiling: payments_per_s / log_ceiling_payments_per_s,
        usual_design_payments_per_s: usual,
        times_usual_design: usual.map(|u| payments_per_s / u),
        usual_design_payments: usual.map(|_| opts.payments.min(USUAL_DESIGN_PAYMENTS_MAX)),
        batch_commit_p99_ms: pick(|r| r.p99_ms),
        ceiling_batch_commit_p99_ms: pick(|r| r.ceiling_p99_ms),
        succeeded: rounds[0].succeeded,
        per_round: rounds.iter().map(|r| (r.payments_per_s, r.ceiling_payments_per_s)).collect(),
        durability: match opts.postgres {
            None => "SQLite WAL, synchronous=FULL (fsync per commit)",
            Some(_) => "PostgreSQL, synchronous_commit as the server is configured",
        },
    })
}

fn p99_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples.get(((samples.len() as f64) * 0.99).ceil() as usize - 1).copied().unwrap_or(0.0)
}

fn commands(opts: &BenchOptions, start: DateTime<Utc>) -> Vec<Command> {
    let device = DeviceRef {
        merchant_id: MerchantId::parse("1900000101").expect("id"),
        store_id: StoreId::parse("S01").expect("id"),
        device_id: DeviceId::parse("DEV-BENCH").expect("id"),
    };
    (0..opts.payments)
        .map(|i| Command {
            event_id: Uuid::from_u128(0xbe7c_0000_0000_0000_0000_0000_0000_0000 | i as u128),
            accepted_at: start + ChronoDuration::milliseconds(i as i64),
            claimed_at: None,
            request_id: None,
            device: Some(device.clone()),
            kind: CommandKind::Pay {
                device: device.clone(),
                out_trade_no: OutTradeNo::parse(format!("B{i:012}")).expect("id"),
                amount: Money::from_fen(100 + (i as i64 % 900)).expect("amount"),
                face_code: FaceCode::parse(format!("{:018}", 100_000_000_000_000_000_u64 + i as u64)).expect("code"),
                identity: Identity::Resolved {
                    payer_id: PayerId::parse(format!("u-{:06}", i % opts.payers)).expect("id"),
                    rule: "global_hit".into(),
                },
            },
        })
        .collect()
}

/// One payer in this many holds the bench merchant's member card.
pub const MEMBER_EVERY: usize = 10;

/// The member cards the bench's payers hold: one in [`MEMBER_EVERY`], each opened by a capture
/// of its own.
fn member_cards(opts: &BenchOptions, at: DateTime<Utc>) -> Vec<Command> {
    (0..opts.payers)
        .step_by(MEMBER_EVERY)
        .map(|p| Command {
            event_id: Uuid::from_u128(0xca2d_0000_0000_0000_0000_0000_0000_0000 | p as u128),
            accepted_at: at,
            claimed_at: None,
            request_id: None,
            device: None,
            kind: CommandKind::OpenMemberCard {
                merchant_id: MerchantId::parse("1900000101").expect("id"),
                face_code: FaceCode::parse(format!("{:018}", 200_000_000_000_000_000_u64 + p as u64)).expect("code"),
                identity: Identity::Resolved {
                    payer_id: PayerId::parse(format!("u-{p:06}")).expect("id"),
                    rule: "global_hit".into(),
                },
                card_code: facepay_domain::CardCode::parse(format!("C{p:06}")).expect("code"),
                channel: facepay_domain::CardChannel::MiniProgram,
            },
        })
        .collect()
}

/// The phases of a round, each on a store of its own (the usual design on PostgreSQL only).
const PHASES: [&str; 4] = ["ledger", "ceiling", "usual", "log"];

/// Most payments the usual-design phase runs (it is one round trip per statement).
pub const USUAL_DESIGN_PAYMENTS_MAX: usize = 20_000;

/// The PostgreSQL database of `phase` in the round that runs in `dir`.
fn pg_database(dir: &std::path::Path, phase: &str) -> String {
    let round = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    format!("facepay_bench_{round}_{phase}").to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_")
}

/// A fresh, empty store for one phase of a round: a SQLite file in `dir`, or a new database
/// on the PostgreSQL server of `opts.postgres` (dropped again by [`drop_databases`]).
async fn fresh_store(opts: &BenchOptions, dir: &std::path::Path, phase: &str) -> anyhow::Result<Arc<dyn LedgerStore>> {
    let Some(admin) = &opts.postgres else {
        return Ok(Arc::new(SqliteStore::open(&format!("sqlite://{}", dir.join(phase).display())).await?));
    };
    Ok(Arc::new(PgStore::open(&fresh_database(admin, dir, phase).await?).await?))
}

/// Creates the empty PostgreSQL database of `phase` on the server of `admin`; its URL.
async fn fresh_database(admin: &str, dir: &std::path::Path, phase: &str) -> anyhow::Result<String> {
    let db = pg_database(dir, phase);
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await?;
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    Ok(format!("{base}/{db}"))
}

/// Drops the PostgreSQL databases a round created.
async fn drop_databases(opts: &BenchOptions, dir: &std::path::Path) -> anyhow::Result<()> {
    let Some(admin) = &opts.postgres else { return Ok(()) };
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    for phase in PHASES {
        let db = pg_database(dir, phase);
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await?;
    }
    Ok(())
}

/// One round in a temporary folder: the ledger phase, then the ceiling phase.
async fn round(opts: &BenchOptions) -> anyhow::Result<Round> {
    let dir = tempfile::tempdir()?;
    let result = round_in(opts, dir.path()).await;
    drop_databases(opts, dir.path()).await?;
    result
}

async fn round_in(opts: &BenchOptions, dir: &std::path::Path) -> anyhow::Result<Round> {
    let store = fresh_store(opts, dir, PHASES[0]).await?;
    // Each payer gets a generous daily cap's worth of funds; the caps apply per day, and the
    // commands spread over one day, so most payments succeed and post.
    let policy = Policy { daily_amount_cap_fen: i64::MAX / 4, daily_count_cap: u32::MAX };
    let recorded = facepay_ledger::CommitRecorder::default();
    let ledger = Ledger::new(store.clone(), policy).recording(recorded.clone());
    let start: DateTime<Utc> = "2026-03-02T00:00:00Z".parse()?;
    let funding: Vec<Command> = (0..opts.payers)
        .map(|p| Command {
            event_id: Uuid::from_u128(0xf00d_0000_0000_0000_0000_0000_0000_0000 | p as u128),
            accepted_at: start,
            claimed_at: None,
            request_id: None,
            device: None,
            kind: CommandKind::Fund {
                payer_id: PayerId::parse(format!("u-{p:06}")).expect("id"),
                amount: Money::from_fen(100_000_000).expect("amount"),
            },
        })
        .collect();
    // One payer in MEMBER_EVERY holds the merchant's member card: its payments are member
    // payments (quick pay, and the card's last visit written with the batch).
    let cards = member_cards(opts, start);
    for chunk in funding.chunks(opts.batch).chain(cards.chunks(opts.batch)) {
        ledger.handle_batch(chunk).await?;
    }
    let setup_batches = funding.len().div_ceil(opts.batch) + cards.len().div_ceil(opts.batch);
    let cmds = commands(opts, start + ChronoDuration::seconds(1));
    let mut latencies = Vec::new();
    let began = Instant::now();
    for chunk in cmds.chunks(opts.batch) {
        let t = Instant::now();
        ledger.handle_batch(chunk).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let elapsed = began.elapsed().as_secs_f64();
    let batches = std::mem::take(&mut *recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let (ceiling_elapsed, ceiling_latencies) = ceiling(dir, opts, batches, setup_batches).await?;
    let (log_elapsed, succeeded) = log_ceiling(dir, &store, opts).await?;
    let usual_payments_per_s = match &opts.postgres {
        Some(admin) => {
            let url = fresh_database(admin, dir, PHASES[2]).await?;
            let some = &cmds[..cmds.len().min(USUAL_DESIGN_PAYMENTS_MAX)];
            Some(crate::usual_design::payments_per_s(&url, opts.payers, some).await?)
        }
        None => None,
    };
    Ok(Round {
        usual_payments_per_s,
        payments_per_s: opts.payments as f64 / elapsed,
        ceiling_payments_per_s: opts.payments as f64 / ceiling_elapsed,
        log_ceiling_payments_per_s: opts.payments as f64 / log_elapsed,
        p99_ms: p99_ms(latencies),
        ceiling_p99_ms: p99_ms(ceiling_latencies),
        succeeded,
    })
}

/// Writes every batch the ledger committed again, as it was, into a fresh store: the same
/// rows in the same batches with no logic (the first `untimed` batches, the funding, set the
/// store up). The time and each timed batch's commit latency.
async fn ceiling(
    dir: &std::path::Path,
    opts: &BenchOptions,
    batches: Vec<CommitBatch>,
    untimed: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let raw = fresh_store(opts, dir, PHASES[1]).await?;
    for batch in &batches[..untimed] {
        raw.commit(batch).await?;
    }
    let mut latencies = Vec::new();
    let began = Instant::now();
    for batch in &batches[untimed..] {
        let t = Instant::now();
        raw.commit(batch).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((began.elapsed().as_secs_f64(), latencies))
}

/// Re-inserts the payment events the ledger wrote (with their postings), batch for batch,
/// into a fresh store with no logic and no projections: the log's ceiling. Its time, and
/// how many payments succeeded.
async fn log_ceiling(
    dir: &std::path::Path,
    decided: &Arc<dyn LedgerStore>,
    opts: &BenchOptions,
) -> anyhow::Result<(f64, usize)> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = decided.events_after(after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        events.extend(page.into_iter().map(|e| e.new));
    }
    let payments: Vec<_> = events.split_off(opts.payers.min(events.len()));
    let succeeded = payments.iter().filter(|e| e.event.kind() == "payment_succeeded").count();
    let raw = fresh_store(opts, dir, PHASES[3]).await?;
    raw.commit_raw(&CommitBatch { events, ..Default::default() }).await?;
    let began = Instant::now();
    for chunk in payments.chunks(opts.batch) {
        raw.commit_raw(&CommitBatch { events: chunk.to_vec(), ..Default::default() }).await?;
    }
    Ok((began.elapsed().as_secs_f64(), succeeded))
}
