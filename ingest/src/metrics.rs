//! Process metrics in the Prometheus text format: decisions by outcome, ledger batch sizes,
//! refused input by reason, matcher latency, the time of each step on the hot path from a
//! device event to its published outcome ([`Step`]), ingest lag per partition, store and
//! broker errors. Counters are process-wide (one pipeline per
//! process); the API serves them on their own port (`FACEPAY_METRICS_ADDR`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use facepay_domain::OutcomeBody;

/// Upper bounds of the batch-size histogram's buckets.
const BATCH_BUCKETS: [u64; 6] = [1, 8, 32, 128, 512, 2048];

/// Upper bounds of the matcher-latency histogram's buckets, in microseconds: an exact 1:N
/// search of a large gallery takes milliseconds, a member search tens of microseconds.
const MATCH_BUCKETS_US: [u64; 10] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000];

/// Upper bounds of the hot-path steps' histogram buckets, in microseconds.
const STEP_BUCKETS_US: [u64; 10] = [500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// A step on the hot path from a device event to its published outcome, timed per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The ledger stage reads the offsets stored for its partitions (the fence).
    LedgerOffsets,
    /// The ledger stage decides a batch and commits it (state loaded, one transaction).
    LedgerCommit,
    /// The relay reads the pending outbox.
    RelayRead,
    /// The relay sends a batch and waits for the broker's acknowledgements.
    RelayAcks,
    /// The relay waits for its previous batch's mark before starting this one's.
    RelayMarkWait,
    /// The matcher stage validates, identifies and routes a batch of device events (sent,
    /// not yet acknowledged).
    MatchRoute,
    /// Inside [`Step::MatchRoute`]: the matcher stage keeps a batch's identified captures (one
    /// commit), before the batch is sent.
    MatchMemo,
    /// The matcher stage waits for the broker's acknowledgements of a batch it sent.
    MatchAcks,
    /// A stage's ownership tick: its position kept, its leases renewed, what moved taken
    /// (on the stage's own loop, between two batches; once a tick, not per batch).
    OwnershipTick,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::LedgerOffsets,
        Step::LedgerCommit,
        Step::RelayRead,
        Step::RelayAcks,
        Step::RelayMarkWait,
        Step::MatchRoute,
        Step::MatchMemo,
        Step::MatchAcks,
        Step::OwnershipTick,
    ];

    /// Its name, in the metric's name and in the pipeline benchmark's report.
    pub fn name(self) -> &'static str {
        match self {
            Step::LedgerOffsets => "ledger_offsets_read",
            Step::LedgerCommit => "ledger_commit",
            Step::RelayRead => "relay_read",
            Step::RelayAcks => "relay_acks",
            Step::RelayMarkWait => "relay_mark_wait",
            Step::MatchRoute => "match_route",
            Step::MatchMemo => "match_memo",
            Step::MatchAcks => "match_acks",
            Step::OwnershipTick => "ownership_tick",
        }
    }
}

/// One step's count and total time in microseconds so far.
#[derive(Debug, Clone, Copy)]
pub struct StepTotal {
    pub step: Step,
    pub count: u64,
    pub sum_us: u64,
}

/// Every step's totals, and how many ledger batches of how many items in all.
#[derive(Debug, Clone)]
pub struct StepTotals {
    pub steps: Vec<StepTotal>,
    pub batches: u64,
    pub batch_items: u64,
}

/// A histogram over fixed bucket bounds (Prometheus's cumulative buckets).
pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: [u64; N]) -> Self {
        Self { bounds, buckets: [const { AtomicU64::new(0) }; N], count: AtomicU64::new(0), sum: AtomicU64::new(0) }
    }

    /// How many values were observed, and their sum.
    fn totals(&self) -> (u64, u64) {
        (self.count.load(Ordering::Relaxed), self.sum.load(Ordering::Relaxed))
    }

    /// Observes a duration, in microseconds.
    fn observe_duration(&self, took: std::time::Duration) {
        self.observe(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    fn observe(&self, value: u64) {
        for (bucket, bound) in self.buckets.iter().zip(self.bounds) {
            if value <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Renders as `name`, dividing bounds and sum by `scale` (1e6 for microseconds → seconds).
    fn render(&self, out: &mut String, name: &str, scale: f64) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(self.bounds) {
            let le = bound as f64 / scale;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Ordering::Relaxed) as f64 / scale);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The process's metrics.
pub struct Metrics {
    decisions: Mutex<BTreeMap<String, u64>>,
    refused_input: Mutex<BTreeMap<String, u64>>,
    unauthenticated: Mutex<BTreeMap<String, u64>>,
    rejections_unkept: AtomicU64,
    batch: Histogram<{ BATCH_BUCKETS.len() }>,
    match_latency_us: Histogram<{ MATCH_BUCKETS_US.len() }>,
    steps_us: [Histogram<{ STEP_BUCKETS_US.len() }>; Step::ALL.len()],
    store_errors: AtomicU64,
    broker_errors: AtomicU64,
    /// The last consumer lag each partition reported, by topic (a gauge).
    ingest_lag: Mutex<BTreeMap<String, BTreeMap<i32, i64>>>,
}

/// The one instance.
pub static METRICS: Metrics = Metrics {
    decisions: Mutex::new(BTreeMap::new()),
    refused_input: Mutex::new(BTreeMap::new()),
    unauthenticated: Mutex::new(BTreeMap::new()),
    rejections_unkept: AtomicU64::new(0),
    batch: Histogram::new(BATCH_BUCKETS),
    match_latency_us: Histogram::new(MATCH_BUCKETS_US),
    steps_us: [const { Histogram::new(STEP_BUCKETS_US) }; Step::ALL.len()],
    store_errors: AtomicU64::new(0),
    broker_errors: AtomicU64::new(0),
    ingest_lag: Mutex::new(BTreeMap::new()),
};

fn bump(map: &Mutex<BTreeMap<String, u64>>, label: &str) {
    *map.lock().unwrap_or_else(|p| p.into_inner()).entry(label.to_string()).or_default() += 1;
}

impl Metrics {
    /// One outcome: payments by status, anything else by applied / refused.
    pub fn decision(&self, body: &OutcomeBody) {
        let label = match body {
            OutcomeBody::PaymentResult(r) => r.status.as_str(),
            OutcomeBody::QueryResult(_) => "QUERY",
            OutcomeBody::Applied { .. } => "APPLIED",
            OutcomeBody::Refused { .. } => "REFUSED",
            OutcomeBody::Rejected { .. } => "REJECTED",
        };
        bump(&self.decisions, label);
    }

    /// One input refused by the validate stage, by reason code.
    pub fn refused_input(&self, reason: &str) {
        bump(&self.refused_input, reason);
    }

    /// One request or message that failed authentication (nothing of it is kept), by where it
    /// came from: `http`, `http_throttled` (refused 429 before any work), `kafka`, `bus`.
    pub fn unauthenticated(&self, source: &str) {
        bump(&self.unauthenticated, source);
    }

    /// One authenticated sender's rejection refused but not kept: its budget was spent.
    pub fn rejection_unkept(&self) {
        self.rejections_unkept.fetch_add(1, Ordering::Relaxed);
    }

    /// One ledger batch of `size` commands.
    pub fn batch(&self, size: usize) {
        self.batch.observe(size as u64);
    }

    /// One identification (a face capture matched against the gallery) and how long it took.
    pub fn matched(&self, took: std::time::Duration) {
        self.match_latency_us.observe_duration(took);
    }

    /// One batch's `step` and how long it took.
    pub fn step(&self, step: Step, took: std::time::Duration) {
        self.steps_us[step as usize].observe_duration(took);
    }

    /// Each step's count and total time so far, and the ledger batches' (the pipeline
    /// benchmark reports the means over one run).
    pub fn steps(&self) -> StepTotals {
        let steps = Step::ALL.iter().map(|&step| {
            let (count, sum_us) = self.steps_us[step as usize].totals();
            StepTotal { step, count, sum_us }
        });
        let (batches, batch_items) = self.batch.totals();
        StepTotals { steps: steps.collect(), batches, batch_items }
    }

    /// One error of a broker (a connection lost, a produce or fetch that failed).
    pub fn broker_error(&self) {
        self.broker_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The consumer lag (messages not yet read) of each partition of `topic` this process
    /// consumes, replacing what it reported before (a partition that moved away drops out).
    pub fn ingest_lag(&self, topic: &str, lags: BTreeMap<i32, i64>) {
        self.ingest_lag.lock().unwrap_or_else(|p| p.into_inner()).insert(topic.to_string(), lags);
    }

    /// One database failure a stage saw.
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let labelled = |out: &mut String, name: &str, label: &str, map: &Mutex<BTreeMap<String, u64>>| {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (k, v) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
            }
        };
        labelled(&mut out, "facepay_decisions_total", "outcome", &self.decisions);
        labelled(&mut out, "facepay_refused_input_total", "reason", &self.refused_input);
        labelled(&mut out, "facepay_unauthenticated_total", "source", &self.unauthenticated);
        let _ = writeln!(out, "# TYPE facepay_rejections_unkept_total counter");
        let _ = writeln!(out, "facepay_rejections_unkept_total {}", self.rejections_unkept.load(Ordering::Relaxed));
        self.batch.render(&mut out, "facepay_ledger_batch_size", 1.0);
        self.match_latency_us.render(&mut out, "facepay_match_seconds", 1e6);
        for step in Step::ALL {
            self.steps_us[step as usize].render(&mut out, &format!("facepay_{}_seconds", step.name()), 1e6);
        }
        let _ = writeln!(out, "# TYPE facepay_store_errors_total counter");
        let _ = writeln!(out, "facepay_store_errors_total {}", self.store_errors.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE facepay_broker_errors_total counter");
        let _ = writeln!(out, "facepay_broker_errors_total {}", self.broker_errors.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE facepay_ingest_lag gauge");
        for (topic, lags) in self.ingest_lag.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (partition, lag) in lags {
                let _ = writeln!(out, "facepay_ingest_lag{{topic=\"{topic}\",partition=\"{partition}\"}} {lag}");
            }
        }
        out
    }
}
