//! The simulated channel's daily bill: the lines the channel would print for the ledger's
//! day, with the demo's planted breaks (a lost event, an amount typo, a late timeout success,
//! a payment booked across midnight), for `facepay demo` and the tests to reconcile.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, NaiveDate};
use facepay_domain::OrderStatus;
use facepay_ledger::reconcile::bill::{BillLine, BillWriter, Layout};
use facepay_ledger::reconcile::classify::{day_start, Class, LedgerEntry};
use facepay_ledger::reconcile::store::ReconStore;
use facepay_ledger::reconcile::EntryKind;

/// The channel account (商户号) of the bills facepay writes.
pub const DEMO_ACCOUNT: &str = "1900000001";

/// A bill written: its line count and the breaks planted in it, per class.
#[derive(Debug, Clone, Default)]
pub struct WrittenBill {
    pub lines: u64,
    /// Planted per class (the near-midnight payment as `timing_difference`: not a break).
    pub planted: BTreeMap<String, u64>,
}

/// Writes to `path` the bill the channel would print for the ledger's `day` in `recon`, with
/// the demo's four plants.
pub async fn write_demo_bill(recon: &Arc<dyn ReconStore>, day: NaiveDate, path: &Path) -> anyhow::Result<WrittenBill> {
    let entries = ledger_entries(recon, day).await?;
    let previous = ledger_entries(recon, day - Duration::days(1)).await?;
    let (lines, planted) = plant(day, &entries, &previous);
    let mut w = BillWriter::new(BufWriter::new(std::fs::File::create(path)?), Layout::All, DEMO_ACCOUNT)?;
    for l in &lines {
        w.line(l)?;
    }
    std::io::Write::flush(&mut w.finish()?)?;
    Ok(WrittenBill { lines: lines.len() as u64, planted })
}

/// The day the demo reconciles: its one full day of trade (China time).
pub fn demo_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 3).expect("a date")
}

/// The ledger's entries of `day`, in key order.
pub async fn ledger_entries(recon: &Arc<dyn ReconStore>, day: NaiveDate) -> anyhow::Result<Vec<LedgerEntry>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let producer = {
        let recon = recon.clone();
        tokio::spawn(async move { recon.send_ledger_entries(day, tx).await })
    };
    let mut out = Vec::new();
    while let Some(page) = rx.recv().await {
        out.extend(page);
    }
    producer.await??;
    Ok(out)
}

/// The bill the channel would print for `entries`, with the demo's four plants; the
/// classes planted.
fn plant(day: NaiveDate, entries: &[LedgerEntry], previous: &[LedgerEntry]) -> (Vec<BillLine>, BTreeMap<String, u64>) {
    let paid: Vec<&LedgerEntry> = entries.iter().filter(|e| e.status == OrderStatus::Paid).collect();
    let mut lines: Vec<BillLine> = paid.iter().enumerate().map(|(i, e)| e.to_bill_line(i as u64 + 2, None)).collect();
    let mut planted = BTreeMap::new();
    let mut plant = |c: Class| *planted.entry(c.as_str().to_string()).or_insert(0) += 1;
    // A lost event: the channel has a payment the ledger never recorded.
    if let Some(first) = lines.first().cloned() {
        let mut lost = first;
        lost.out_trade_no = "LOST-0001".into();
        lost.channel_txn_id = "4200000000999999999999999999".into();
        lines.push(lost);
        plant(Class::MissingInLedger);
    }
    // An amount typo on one line.
    if let Some(typo) = lines.iter_mut().find(|l| l.kind == EntryKind::Payment) {
        typo.amount_fen += 100;
        plant(Class::AmountMismatch);
    }
    // A late timeout success: the ledger declined (or still waits on) an order the channel paid.
    let unpaid = entries
        .iter()
        .find(|e| e.kind == EntryKind::Payment && matches!(e.status, OrderStatus::Declined | OrderStatus::Revoked));
    if let Some(e) = unpaid {
        let mut late = e.to_bill_line(0, None);
        late.fee_mfen = 0;
        lines.push(late);
        plant(Class::StatusMismatch);
    }
    // A payment a few seconds before midnight that the channel booked just after it.
    let window = Duration::seconds(facepay_domain::limits::RECON_TIMING_WINDOW_S);
    let late_night = previous
        .iter()
        .filter(|e| e.kind == EntryKind::Payment && e.status == OrderStatus::Paid)
        .find(|e| day_start(day) - e.occurred_at < window);
    if let Some(e) = late_night {
        let mut l = e.to_bill_line(0, None);
        l.trade_at = day_start(day) + Duration::seconds(2);
        lines.push(l);
        plant(Class::TimingDifference);
    }
    for (i, l) in lines.iter_mut().enumerate() {
        l.line_no = i as u64 + 2;
    }
    (lines, planted)
}
