//! Reconciliation in the binary (issue 6): `facepay reconcile`, `facepay bench reconcile`,
//! the demo's bill with planted breaks, and the reconciliation routes of the API. The
//! engine itself is `facepay_ledger::reconcile`.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Duration, NaiveDate, Utc};
use facepay_domain::limits::BILL_UPLOAD_BYTES_MAX;
use facepay_domain::money::fen_to_string;
use facepay_domain::{FieldError, FieldErrorKind, OrderStatus};
use facepay_ledger::reconcile::bill::{BillLine, BillWriter, ColumnMapping, Layout};
use facepay_ledger::reconcile::classify::{day_start, Class, LedgerEntry};
use facepay_ledger::reconcile::store::{
    import_bill, resolve_break, run_reconciliation, Action, BreakFilter, BreakRow, ImportOutcome, ImportRequest,
    ReconError, ReconStore, ResolutionRow, RunOutcome, RunRow,
};
use facepay_ledger::reconcile::EntryKind;
use facepay_ledger::LedgerStore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::{open_store, Config};
use crate::auth::{Authorized, FinanceOnly, Principal};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::{page_limit, AppState};
use crate::recon_view::{BreakView, ImportView, ReconcileView, RunView};

/// The channel account (商户号) of the bills facepay writes.
pub const DEMO_ACCOUNT: &str = "1900000001";

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

/// The store's reconciliation side.
fn recon_of(store: &Arc<dyn LedgerStore>) -> anyhow::Result<Arc<dyn ReconStore>> {
    store.recon().ok_or_else(|| anyhow::anyhow!("this store has no reconciliation tables"))
}

/// Runs `facepay reconcile`.
pub async fn run_cli(args: ReconcileArgs, config: &Config) -> anyhow::Result<()> {
    let recon = recon_of(&open_store(&config.database_url).await?)?;
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
    let (path, day) = (args.bill.expect("clap requires --bill"), args.date.expect("clap requires --date"));
    let mapping = args.mapping.as_deref().map(ColumnMapping::parse).transpose().map_err(anyhow::Error::msg)?;
    let file = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let req = ImportRequest { day, file_name: file_name(&path), account: args.account, at: Utc::now() };
    let report = import_and_run(recon, BufReader::with_capacity(1 << 20, file), mapping, req).await?;
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => print!("{}", render(&report)),
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// What `facepay reconcile` and the upload report.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub import: ImportOutcome,
    pub run: RunRow,
    pub breaks: Vec<BreakRow>,
}

async fn import_and_run(
    recon: Arc<dyn ReconStore>,
    input: impl std::io::BufRead + Send + 'static,
    mapping: Option<ColumnMapping>,
    req: ImportRequest,
) -> Result<ReconcileReport, ReconError> {
    let at = req.at;
    let import = import_bill(recon.as_ref(), input, mapping, req).await?;
    let RunOutcome { run, breaks, .. } = run_reconciliation(recon, import.import.import_id, at).await?;
    Ok(ReconcileReport { import, run, breaks })
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

/// The day the demo reconciles: its one full day of trade (China time).
pub fn demo_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 3).expect("a date")
}

/// Writes the demo day's bill as the channel would (from the ledger), plants a lost event,
/// an amount typo, a late timeout success and a near-midnight payment, reconciles it and
/// resolves the breaks it found.
pub async fn demo(store: &Arc<dyn LedgerStore>, data_dir: &Path) -> anyhow::Result<DemoReconciliation> {
    let recon = recon_of(store)?;
    let day = demo_day();
    let entries = ledger_entries(&recon, day).await?;
    let previous = ledger_entries(&recon, day - Duration::days(1)).await?;
    let (lines, planted) = plant(day, &entries, &previous);
    let path = data_dir.join(format!("bill-{day}.csv"));
    let mut w = BillWriter::new(BufWriter::new(std::fs::File::create(&path)?), Layout::All, DEMO_ACCOUNT)?;
    for l in &lines {
        w.line(l)?;
    }
    std::io::Write::flush(&mut w.finish()?)?;
    let req = ImportRequest { day, file_name: file_name(&path), account: DEMO_ACCOUNT.into(), at: Utc::now() };
    let file = BufReader::new(std::fs::File::open(&path)?);
    let report = import_and_run(recon.clone(), file, None, req).await?;
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
        bill_lines: lines.len() as u64,
        run_id: report.run.run_id.to_string(),
        all_found: found == planted,
        planted,
        found,
        matched: report.run.report.count(Class::Matched),
        resolved,
    })
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

// ---- the benchmark --------------------------------------------------------------------

/// `facepay bench reconcile`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long)]
    pub json: bool,
    /// Lines of the bill (and paid orders of the ledger).
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: usize,
}

/// Runs the benchmark ([`facepay_ledger::reconcile::bench`]) in a temporary folder.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<facepay_ledger::reconcile::bench::BenchReport> {
    let dir = tempfile::tempdir()?;
    Ok(facepay_ledger::reconcile::bench::run(dir.path(), args.lines).await?)
}

// ---- the API --------------------------------------------------------------------------

/// The reconciliation routes, merged into the API's router (with a bill-sized body limit).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/reconciliation/bills", post(upload).get(imports))
        .route("/v1/reconciliation/runs", get(runs))
        .route("/v1/reconciliation/breaks", get(breaks))
        .route("/v1/reconciliation/breaks/{break_id}/resolution", post(resolve))
        .route("/v1/reconciliation/resolutions", get(resolutions))
        .layer(DefaultBodyLimit::max(BILL_UPLOAD_BYTES_MAX))
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(FieldError::new(field, FieldErrorKind::Invalid, message.into()))
}

impl From<ReconError> for ApiError {
    fn from(e: ReconError) -> Self {
        match e {
            ReconError::Bill(b) => bad("body", b.to_string()),
            ReconError::Invalid(m) => bad("body", m),
            ReconError::BreakNotFound(_) | ReconError::ImportNotFound(_) => ApiError::NotFound,
            ReconError::AlreadyResolved(id) => bad("break_id", format!("break {id} is already resolved")),
            e @ ReconError::TooManyBreaks { .. } => bad("body", e.to_string()),
            ReconError::Refused { code, message } => ApiError::Refused {
                code: facepay_domain::RefusalReason::from_code(&code).map_or("REFUSED", |r| r.code()),
                message: format!("{code}: {message}"),
            },
            ReconError::Store(s) => s.into(),
            e => ApiError::Internal(e.into()),
        }
    }
}

fn recon_api(st: &AppState) -> Result<Arc<dyn ReconStore>, ApiError> {
    st.store.recon().ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    date: String,
    mapping: Option<String>,
    file_name: Option<String>,
}

/// `POST /v1/reconciliation/bills?date=YYYY-MM-DD`: the bill as the body; imports it and
/// reconciles its day.
async fn upload(
    State(st): State<AppState>,
    p: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReconcileView>), ApiError> {
    let day = q.date.parse::<NaiveDate>().map_err(|_| bad("date", "YYYY-MM-DD is required"))?;
    let mapping = q.mapping.as_deref().map(ColumnMapping::parse).transpose().map_err(|m| bad("mapping", m))?;
    let file_name = q.file_name.unwrap_or_else(|| format!("upload-{day}.csv"));
    let req = ImportRequest { day, file_name, account: "default".into(), at: Utc::now() };
    let report = import_and_run(recon_api(&st)?, Cursor::new(body), mapping, req).await?;
    let detail = serde_json::json!({ "date": day.to_string() });
    audit(&st, &p.0, "bill_imported", &day.to_string(), detail).await?;
    Ok((StatusCode::CREATED, Json(report.into())))
}

#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct Items<T> {
    items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

async fn imports(
    State(st): State<AppState>,
    _: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Items<ImportView>>, ApiError> {
    let items = recon_api(&st)?.imports(page_limit(q.limit)?).await?;
    Ok(Json(Items { items: items.into_iter().map(Into::into).collect(), next_cursor: None }))
}

async fn runs(
    State(st): State<AppState>,
    _: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Items<RunView>>, ApiError> {
    let items = recon_api(&st)?.runs(page_limit(q.limit)?).await?;
    Ok(Json(Items { items: items.into_iter().map(Into::into).collect(), next_cursor: None }))
}

async fn resolutions(
    State(st): State<AppState>,
    _: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Items<ResolutionRow>>, ApiError> {
    Ok(Json(Items { items: recon_api(&st)?.resolutions(page_limit(q.limit)?).await?, next_cursor: None }))
}

#[derive(Debug, Deserialize)]
struct BreaksQuery {
    run_id: Option<String>,
    date: Option<String>,
    class: Option<String>,
    merchant_id: Option<String>,
    unresolved: Option<bool>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/reconciliation/breaks?run_id=&date=&class=&merchant_id=&unresolved=&cursor=&limit=`
async fn breaks(
    State(st): State<AppState>,
    _: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<BreaksQuery>,
) -> Result<Json<Items<BreakView>>, ApiError> {
    let uuid =
        |f: &str, v: Option<String>| v.map(|s| s.parse::<Uuid>().map_err(|_| bad(f, "a UUID is required"))).transpose();
    let filter = BreakFilter {
        run_id: uuid("run_id", q.run_id)?,
        day: q.date.map(|d| d.parse::<NaiveDate>().map_err(|_| bad("date", "YYYY-MM-DD"))).transpose()?,
        class: q.class.map(|c| Class::parse(&c).ok_or_else(|| bad("class", "not a break class"))).transpose()?,
        merchant_id: q
            .merchant_id
            .map(|m| facepay_domain::MerchantId::parse(m).map(String::from))
            .transpose()
            .map_err(|e| ApiError::BadRequest(FieldError::new("merchant_id", e.kind, e.message)))?,
        unresolved: q.unresolved.unwrap_or(false),
        after: uuid("cursor", q.cursor)?,
        limit: page_limit(q.limit)?,
    };
    let items = recon_api(&st)?.breaks(&filter).await?;
    let next_cursor =
        (items.len() == filter.limit as usize).then(|| items.last().map(|b| b.break_id.to_string())).flatten();
    Ok(Json(Items { items: items.into_iter().map(Into::into).collect(), next_cursor }))
}

#[derive(Debug, Deserialize)]
struct ResolveBody {
    action: String,
    resolved_by: String,
    reason: String,
}

/// `POST /v1/reconciliation/breaks/{break_id}/resolution`: `{action, resolved_by, reason}`.
async fn resolve(
    State(st): State<AppState>,
    p: Authorized<FinanceOnly>,
    ApiPath(break_id): ApiPath<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<(StatusCode, Json<ResolutionRow>), ApiError> {
    let break_id = break_id.parse::<Uuid>().map_err(|_| bad("break_id", "a UUID is required"))?;
    let action = Action::parse(&body.action).ok_or_else(|| bad("action", "not a resolution action"))?;
    let recon = recon_api(&st)?;
    // Who: the person named in the request, through the key that sent it.
    let by = format!("{} (key {})", body.resolved_by, p.key_id);
    let row = resolve_break(recon.as_ref(), break_id, action, &by, &body.reason, Utc::now()).await?;
    let detail = serde_json::json!({ "action": body.action, "resolved_by": body.resolved_by, "reason": body.reason });
    audit(&st, &p.0, "break_resolved", &break_id.to_string(), detail).await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// Appends a finance action to the audit log, with the key that did it.
async fn audit(
    st: &AppState,
    p: &Principal,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    st.store.audit_append(&p.actor().entry(action, subject, detail)).await?;
    Ok(())
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
