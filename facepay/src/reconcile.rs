//! Reconciliation from the command line: `facepay reconcile` (import a bill and reconcile its
//! day, or resolve a break), and the demo's day reconciled against the bill the simulated
//! channel writes with planted breaks ([`facepay_sim::bill`]). The engine is
//! `facepay_ledger::reconcile`.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use facepay_domain::money::fen_to_string;
use facepay_ledger::reconcile::bill::ColumnMapping;
use facepay_ledger::reconcile::classify::Class;
use facepay_ledger::reconcile::store::{
    import_and_reconcile, resolve_break, Action, ImportRequest, ReconStore, ReconcileReport,
};
use facepay_sim::bill::{demo_day, write_demo_bill, DEMO_ACCOUNT};
use serde::Serialize;
use uuid::Uuid;

use crate::app::open_store;
use crate::config::Config;

/// `facepay reconcile`: import a bill and reconcile its day, or resolve a break.
#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// The channel's bill (UTF-8 CSV: a WeChat layout, or another channel's with --mapping).
    #[arg(long, required_unless_present = "resolve")]
    pub bill: Option<PathBuf>,
    /// The bill's day, YYYY-MM-DD (China time).
    #[arg(long, required_unless_present = "resolve")]
    pub date: Option<NaiveDate>,
    #[arg(long)]
    pub json: bool,
    /// Another channel's CSV: `field=Header,…` (fields: trade_time, account, sub_merchant,
    /// device, channel_txn_id, out_trade_no, trade_status, settle_amount, out_refund_no,
    /// refund_amount, fee, rate).
    #[arg(long)]
    pub mapping: Option<String>,
    /// The account a bill without rows is filed under.
    #[arg(long, default_value = "default")]
    pub account: String,
    /// Resolve this break instead (with --action, --by, --reason).
    #[arg(long, requires_all = ["action", "by", "reason"])]
    pub resolve: Option<Uuid>,
    /// accepted, confirmed_paid, refund_issued, ledger_corrected or bill_disputed.
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub by: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
}

/// Runs `facepay reconcile`.
pub async fn run_cli(args: ReconcileArgs, config: &Config) -> anyhow::Result<()> {
    let stores = open_store(&config.database_url).await?;
    let recon = stores.recon;
    if let Some(break_id) = args.resolve {
        let action = args.action.as_deref().and_then(Action::parse).ok_or_else(|| {
            anyhow::anyhow!("--action: one of accepted, confirmed_paid, refund_issued, ledger_corrected, bill_disputed")
        })?;
        let by = args.by.unwrap_or_default();
        let reason = args.reason.unwrap_or_default();
        let r = resolve_break(recon.as_ref(), break_id, action, &by, &reason, Utc::now()).await?;
        match args.json {
            true => println!("{}", serde_json::to_string_pretty(&r)?),
            false => {
                println!("break {} resolved ({}) by {}: {}", r.break_id, r.action.as_str(), r.resolved_by, r.reason)
            }
        }
        return Ok(());
    }
    if stores.ledger.events_after(0, 1).await?.is_empty() {
        anyhow::bail!(
            "the ledger in {} is empty: there is nothing to reconcile the bill against (facepay opens \
             FACEPAY_DATABASE_URL, else FACEPAY_DATA_DIR/{}); nothing was imported",
            config.database_shown(),
            crate::config::DATABASE_FILE
        );
    }
    let (path, day) = (args.bill.expect("clap requires --bill"), args.date.expect("clap requires --date"));
    let mapping = args.mapping.as_deref().map(ColumnMapping::parse).transpose().map_err(anyhow::Error::msg)?;
    let file = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let req = ImportRequest { day, file_name: file_name(&path), account: args.account, at: Utc::now() };
    let report = import_and_reconcile(recon, BufReader::with_capacity(1 << 20, file), mapping, req).await?;
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => print!("{}", render(&report)),
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The readable report.
pub fn render(r: &ReconcileReport) -> String {
    let i = &r.import.import;
    let mut s = format!(
        "bill {} of {} ({} layout, {} lines, version {}{}), sha256 {}\n",
        i.file_name,
        i.day,
        i.layout,
        i.line_count,
        i.version,
        if r.import.already_imported { ", already imported" } else { "" },
        &i.content_sha256[..16]
    );
    let rep = &r.run.report;
    s += &format!(
        "run {}: {} bill lines, {} ledger entries, {} breaks\n\n",
        r.run.run_id, rep.bill_lines, rep.ledger_entries, rep.breaks
    );
    s += &format!("{:<20} {:>9} {:>16} {:>16}\n", "class", "count", "bill CNY", "ledger CNY");
    for (class, sums) in &rep.totals {
        let (b, l) = (fen_to_string(sums.bill_fen), fen_to_string(sums.ledger_fen));
        s += &format!("{:<20} {:>9} {:>16} {:>16}\n", class.as_str(), sums.count, b, l);
    }
    s += "\nper merchant\n";
    for (merchant, classes) in &rep.merchants {
        let parts: Vec<String> = classes.iter().map(|(c, n)| format!("{} {}", c.as_str(), n.count)).collect();
        s += &format!("  {merchant:<12} {}\n", parts.join(", "));
    }
    if !r.breaks.is_empty() {
        s += "\nbreaks\n";
    }
    for b in &r.breaks {
        s += &format!(
            "  {} {:<18} {:<12} {} {}: {}\n",
            b.break_id,
            b.class.as_str(),
            b.merchant_id,
            b.kind.code(),
            b.number,
            b.detail
        );
    }
    s
}

// ---- the demo -------------------------------------------------------------------------

/// The demo's reconciliation: the bill it wrote, the breaks it planted and those found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReconciliation {
    pub day: String,
    pub bill: String,
    pub bill_lines: u64,
    pub run_id: String,
    /// Planted per class (the near-midnight payment as `timing_difference`: not a break).
    pub planted: BTreeMap<String, u64>,
    /// Found per class, matched ones aside.
    pub found: BTreeMap<String, u64>,
    pub matched: u64,
    /// Every planted break found as exactly its class, and no other break.
    pub all_found: bool,
    pub resolved: u64,
}

/// Writes the demo day's bill as the channel would (from the ledger, with the planted
/// breaks of [`facepay_sim::bill`]), reconciles it and resolves the breaks it found.
pub async fn demo(recon: &Arc<dyn ReconStore>, data_dir: &Path) -> anyhow::Result<DemoReconciliation> {
    let day = demo_day();
    let path = data_dir.join(format!("bill-{day}.csv"));
    let bill = write_demo_bill(recon, day, &path).await?;
    let req = ImportRequest { day, file_name: file_name(&path), account: DEMO_ACCOUNT.into(), at: Utc::now() };
    let file = BufReader::new(std::fs::File::open(&path)?);
    let report = import_and_reconcile(recon.clone(), file, None, req).await?;
    let mut resolved = 0;
    for b in &report.breaks {
        let (action, reason) = match b.class {
            Class::StatusMismatch => (Action::ConfirmedPaid, "confirmed by the cashier: paid after the timeout"),
            Class::AmountMismatch => {
                (Action::BillDisputed, "amount typo on the channel's side; raised with the channel")
            }
            _ => (Action::LedgerCorrected, "the lost event was replayed from the device's log"),
        };
        resolve_break(recon.as_ref(), b.break_id, action, "finance@demo", reason, Utc::now()).await?;
        resolved += 1;
    }
    let mut found: BTreeMap<String, u64> = BTreeMap::new();
    for (class, sums) in &report.run.report.totals {
        if *class != Class::Matched {
            found.insert(class.as_str().to_string(), sums.count);
        }
    }
    Ok(DemoReconciliation {
        day: day.to_string(),
        bill: path.display().to_string(),
        bill_lines: bill.lines,
        run_id: report.run.run_id.to_string(),
        all_found: found == bill.planted,
        planted: bill.planted,
        found,
        matched: report.run.report.count(Class::Matched),
        resolved,
    })
}

/// The demo report's reconciliation lines.
pub fn render_demo(r: &DemoReconciliation) -> String {
    let list = |m: &BTreeMap<String, u64>| m.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ");
    format!(
        "reconciliation       {:>8} bill lines of {} ({}): {} matched\n  planted  {}\n  found    {}  ({}; {} resolved)\n",
        r.bill_lines,
        r.day,
        r.bill,
        r.matched,
        list(&r.planted),
        list(&r.found),
        if r.all_found { "all found" } else { "NOT all found" },
        r.resolved
    )
}
