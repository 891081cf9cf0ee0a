//! `facepay-bench reconcile`: an n-line bill imported and reconciled against a ledger holding
//! the same n paid orders, on SQLite. Reports lines per second (file to stored run, both
//! phases) and the process's peak resident memory.

use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, NaiveDate, Utc};
use facepay_domain::OrderStatus;
use serde::Serialize;

use facepay_ledger::reconcile::bill::{BillWriter, Layout};
use facepay_ledger::reconcile::classify::{day_start, Class, LedgerEntry};
use facepay_ledger::reconcile::store::{import_bill, run_reconciliation, ImportRequest, ReconError, ReconStore};
use facepay_ledger::reconcile::EntryKind;
use facepay_ledger::SqliteStore;
use sqlx::sqlite::SqlitePoolOptions;

/// The benchmark's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub lines: usize,
    pub bill_bytes: u64,
    /// Bill lines imported and reconciled per second (file to stored run, both phases).
    pub lines_per_s: f64,
    pub import_s: f64,
    pub reconcile_s: f64,
    pub breaks: i64,
    pub matched: u64,
    /// Phases of the reconcile step, each measured alone after the timed run (where the time
    /// goes): reading the day's ledger entries sorted, and the bill's lines sorted, each
    /// drained without the merge.
    pub ledger_read_s: f64,
    pub bill_read_s: f64,
    /// The process's peak resident memory (VmHWM), ledger set-up and bill writing included.
    pub peak_rss_bytes: u64,
    pub store: &'static str,
}

/// The bench's day and the channel account of its bill.
const ACCOUNT: &str = "1900000001";

fn bench_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 3).expect("a date")
}

/// Runs the benchmark with its database and bill in `dir`.
pub async fn run(dir: &Path, n: usize) -> Result<BenchReport, ReconError> {
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let store = SqliteStore::open(&url).await?;
    let day = bench_day();
    fill_ledger(&url, day, n).await?;
    let recon: Arc<dyn ReconStore> = Arc::new(store);
    let path = dir.join("bill.csv");
    write_bill(&path, day, n).map_err(|e| ReconError::Invalid(format!("writing the bill: {e}")))?;
    let bill_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let began = Instant::now();
    let req = ImportRequest { day, file_name: "bill.csv".into(), account: ACCOUNT.into(), at: Utc::now() };
    let file = std::fs::File::open(&path).map_err(|e| ReconError::Invalid(format!("reading the bill: {e}")))?;
    let import = import_bill(recon.as_ref(), BufReader::with_capacity(1 << 20, file), None, req).await?;
    let import_s = began.elapsed().as_secs_f64();
    let run = run_reconciliation(recon.clone(), import.import.import_id, Utc::now()).await?;
    let total_s = began.elapsed().as_secs_f64();
    let (ledger_read_s, bill_read_s) = phases(&recon, import.import.import_id, day).await?;
    Ok(BenchReport {
        lines: n,
        bill_bytes,
        lines_per_s: n as f64 / total_s,
        import_s,
        reconcile_s: total_s - import_s,
        breaks: run.run.breaks,
        matched: run.run.report.count(Class::Matched),
        ledger_read_s,
        bill_read_s,
        peak_rss_bytes: peak_rss_bytes(),
        store: "SQLite WAL, synchronous=FULL",
    })
}

/// Seconds to drain the day's ledger entries, then the import's lines, each alone.
async fn phases(recon: &Arc<dyn ReconStore>, import_id: uuid::Uuid, day: NaiveDate) -> Result<(f64, f64), ReconError> {
    let began = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (read, n) = tokio::join!(recon.send_ledger_entries(day, tx), drain(rx));
    read?;
    let ledger_s = began.elapsed().as_secs_f64();
    let began = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (read, m) = tokio::join!(recon.send_bill_lines(import_id, tx), drain(rx));
    read?;
    tracing::debug!(entries = n, lines = m, "phases drained");
    Ok((ledger_s, began.elapsed().as_secs_f64()))
}

async fn drain<T>(mut rx: tokio::sync::mpsc::Receiver<Vec<T>>) -> usize {
    let mut n = 0;
    while let Some(page) = rx.recv().await {
        n += page.len();
    }
    n
}

/// Order `i`: one of five merchants, its number, amount and fee (0.54 %, half up).
fn order(i: usize) -> (String, String, i64, i64) {
    let amount_fen = 100 + (i as i64 * 7919) % 99_900;
    let fee_fen = (amount_fen * 5_400 + 500_000) / 1_000_000;
    (format!("19000{:05}", 101 + i % 5), format!("B{i:012}"), amount_fen, fee_fen)
}

/// The ledger's side: `n` paid orders of `day`, written straight into the projections the
/// matcher reads, over a connection of the benchmark's own to the store's database (through
/// the ledger, 1 M payments take minutes at ~5 000/s).
async fn fill_ledger(url: &str, day: NaiveDate, n: usize) -> Result<(), ReconError> {
    let pool = SqlitePoolOptions::new().max_connections(1).connect(url).await.map_err(store_error)?;
    let start = day_start(day).timestamp();
    let rows = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1), \
        o AS (SELECT i, '19000' || printf('%05d', 101 + i % 5) AS m, 'B' || printf('%012d', i) AS otn, \
              100 + (i * 7919) % 99900 AS amt, \
              strftime('%Y-%m-%dT%H:%M:%S', ?2 + i * 86399 / ?1, 'unixepoch') || '.000000Z' AS at FROM k) ";
    let mut tx = pool.begin().await.map_err(store_error)?;
    sqlx::query(&format!(
        "{rows} INSERT INTO orders (merchant_id, out_trade_no, amount_fen, status, payer_id, face_code, \
         member_quick_pay, store_id, device_id, created_at, updated_at, fee_fen) \
         SELECT m, otn, amt, 'PAID', 'u-bench', printf('%018d', 100000000000000000 + i), 0, 'S01', 'DEV-BENCH', \
         at, at, (amt * 5400 + 500000) / 1000000 FROM o"
    ))
    .bind(n as i64)
    .bind(start)
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    sqlx::query(&format!(
        "{rows} INSERT INTO history (event_id, merchant_id, out_trade_no, amount_fen, status, payer_id, \
         member_quick_pay, store_id, device_id, occurred_at, day) \
         SELECT printf('bench-%d', i), m, otn, amt, 'PAID', 'u-bench', 0, 'S01', 'DEV-BENCH', at, ?3 FROM o"
    ))
    .bind(n as i64)
    .bind(start)
    .bind(day.to_string())
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    tx.commit().await.map_err(store_error)?;
    pool.close().await;
    Ok(())
}

fn store_error(e: sqlx::Error) -> ReconError {
    ReconError::Invalid(format!("filling the ledger: {e}"))
}

/// The channel's bill of those orders, in the ALL layout, in time order.
fn write_bill(path: &Path, day: NaiveDate, n: usize) -> std::io::Result<()> {
    let out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut w = BillWriter::new(out, Layout::All, ACCOUNT)?;
    let start = day_start(day);
    for i in 0..n {
        let (merchant_id, out_trade_no, amount_fen, fee_fen) = order(i);
        let e = LedgerEntry {
            merchant_id,
            kind: EntryKind::Payment,
            number: out_trade_no.clone(),
            out_trade_no,
            amount_fen,
            fee_fen,
            status: OrderStatus::Paid,
            occurred_at: start + Duration::seconds((i as i64 * 86_399) / n as i64),
        };
        w.line(&e.to_bill_line(i as u64 + 2, Some(5_400)))?;
    }
    std::io::Write::flush(&mut w.finish()?)
}

/// The process's peak resident set (Linux `VmHWM`), in bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// `facepay-bench reconcile`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long)]
    pub json: bool,
    /// Lines of the bill (and paid orders of the ledger).
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: usize,
}

/// Runs the benchmark in a temporary folder.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let dir = tempfile::tempdir()?;
    Ok(run(dir.path(), args.lines).await?)
}

#[cfg(test)]
mod tests {
    /// Both sides are read a page at a time (1 024 rows) after the last key of the previous
    /// page: a day of several pages, with keys that interleave across merchants, must come
    /// back whole and in order (any row lost, repeated or out of order would be a break or a
    /// panic).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_day_of_several_pages_reconciles_to_every_line_matched() {
        let dir = tempfile::tempdir().unwrap();
        let report = super::run(dir.path(), 3_333).await.unwrap();
        assert_eq!((report.matched, report.breaks), (3_333, 0));
    }
}
