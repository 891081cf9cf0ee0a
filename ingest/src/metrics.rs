//! Process metrics in the Prometheus text format: decisions by outcome, ledger batch sizes,
//! refused input by reason, and store errors. Counters are process-wide (one pipeline per
//! process); the API serves them on their own port (`FACEPAY_METRICS_ADDR`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use facepay_domain::OutcomeBody;

/// Upper bounds of the batch-size histogram's buckets.
const BATCH_BUCKETS: [u64; 6] = [1, 8, 32, 128, 512, 2048];

/// The process's metrics.
pub struct Metrics {
    decisions: Mutex<BTreeMap<String, u64>>,
    refused_input: Mutex<BTreeMap<String, u64>>,
    batch_buckets: [AtomicU64; BATCH_BUCKETS.len()],
    batch_count: AtomicU64,
    batch_sum: AtomicU64,
    store_errors: AtomicU64,
}

/// The one instance.
pub static METRICS: Metrics = Metrics {
    decisions: Mutex::new(BTreeMap::new()),
    refused_input: Mutex::new(BTreeMap::new()),
    batch_buckets: [const { AtomicU64::new(0) }; BATCH_BUCKETS.len()],
    batch_count: AtomicU64::new(0),
    batch_sum: AtomicU64::new(0),
    store_errors: AtomicU64::new(0),
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
        };
        bump(&self.decisions, label);
    }

    /// One input refused by the validate stage, by reason code.
    pub fn refused_input(&self, reason: &str) {
        bump(&self.refused_input, reason);
    }

    /// One ledger batch of `size` commands.
    pub fn batch(&self, size: usize) {
        let size = size as u64;
        for (bucket, bound) in self.batch_buckets.iter().zip(BATCH_BUCKETS) {
            if size <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.batch_count.fetch_add(1, Ordering::Relaxed);
        self.batch_sum.fetch_add(size, Ordering::Relaxed);
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
        let _ = writeln!(out, "# TYPE facepay_ledger_batch_size histogram");
        for (bucket, bound) in self.batch_buckets.iter().zip(BATCH_BUCKETS) {
            let _ =
                writeln!(out, "facepay_ledger_batch_size_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.batch_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "facepay_ledger_batch_size_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "facepay_ledger_batch_size_sum {}", self.batch_sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "facepay_ledger_batch_size_count {count}");
        let _ = writeln!(out, "# TYPE facepay_store_errors_total counter");
        let _ = writeln!(out, "facepay_store_errors_total {}", self.store_errors.load(Ordering::Relaxed));
        out
    }
}
