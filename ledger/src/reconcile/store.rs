//! Reconciliation in the database: importing a bill, running the matcher over the day, and
//! keeping runs, breaks and resolutions. The SQL lives per backend ([`ReconStore`] for
//! [`crate::SqliteStore`] and [`crate::PgStore`]); this module holds what both share: the
//! rows, the errors, and the flows that drive the pure core of [`super::classify`].
//!
//! - [`import_bill`] streams the file through the parser on a blocking thread and writes its
//!   lines in one transaction: a bad line anywhere leaves nothing imported. The same file
//!   again (its SHA-256) is recognised and not imported twice; another file for the same
//!   account and day becomes its next version (both are kept; the highest is current).
//! - [`run_reconciliation`] merges the import's lines and the ledger's entries of the day,
//!   both read sorted from the database, on a blocking thread; breaks are written with one
//!   ledger event each, in one transaction with the run.
//! - [`resolve_break`] appends a resolution (who, how, why) as a ledger event; as
//!   `confirmed_paid` it first has the ledger settle the order ([`super::settle`]).
//! - Runs are idempotent: a break's id comes from its import and what was found, so a
//!   re-run of the same bill records only the breaks that are new.

use std::collections::HashSet;
use std::io::BufRead;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use facepay_domain::limits::{RECON_BREAKS_MAX, RECON_CLOSE_PAGE_ROWS, RECON_IMPORT_CHUNK_ROWS, RECON_NOTE_LEN_MAX};
use facepay_domain::time::shanghai_day;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bill::{BillDigest, BillError, BillLine, BillReader, ColumnMapping};
use super::classify::{
    billed_near_midnight, billed_twice, near_midnight, reconcile, settle_timing, Class, Counterpart, Finding,
    LedgerEntry, Midnights, Report, TxnRescue,
};
use super::settle::ConfirmPaid;
use super::EntryKind;
use crate::model::LedgerEvent;
use crate::rows::Cells;
use crate::store::{LedgerStore, NewEvent, StoreError};
use crate::{Ledger, Policy};

/// Why a reconciliation operation failed: bad input or a refused request (domain), apart
/// from the database failing (infrastructure).
#[derive(Debug, thiserror::Error)]
pub enum ReconError {
    #[error(transparent)]
    Bill(#[from] BillError),
    #[error("no bill import {0}")]
    ImportNotFound(Uuid),
    #[error("no break {0}")]
    BreakNotFound(Uuid),
    #[error("break {0} is already resolved")]
    AlreadyResolved(Uuid),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("more than {max} breaks: the wrong bill or the wrong day?")]
    TooManyBreaks { max: usize },
    /// The ledger refused what a resolution asked of it (`code`: the stable refusal code,
    /// e.g. `ORDER_PAID`).
    #[error("refused by the ledger: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the embedded store in memory has one connection; reconciliation needs a database file")]
    InMemoryStore,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReconError {
    fn from(e: sqlx::Error) -> Self {
        ReconError::Store(StoreError::Database(e))
    }
}

/// What the parser hands the importer.
#[derive(Debug)]
pub enum Parsed {
    Lines(Vec<BillLine>),
    Done(BillDigest),
}

/// What is being imported.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The bill's day (China time).
    pub day: NaiveDate,
    pub file_name: String,
    /// The account to file it under when the bill names none (a bill with no rows).
    pub account: String,
    pub at: DateTime<Utc>,
}

/// An imported bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportRow {
    pub import_id: Uuid,
    pub account: String,
    pub day: NaiveDate,
    pub version: i64,
    pub content_sha256: String,
    pub layout: String,
    pub file_name: String,
    pub line_count: i64,
    pub settle_fen: i64,
    pub refund_fen: i64,
    pub fee_mfen: i64,
    pub imported_at: DateTime<Utc>,
}

/// The result of an import: the import (new, or the one this very file already was).
#[derive(Debug, Clone, Serialize)]
pub struct ImportOutcome {
    pub import: ImportRow,
    /// True when this file had been imported before: nothing was written.
    pub already_imported: bool,
    /// The import this one supersedes (the same account and day, the previous version).
    pub supersedes: Option<Uuid>,
}

/// One reconciliation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub run_id: Uuid,
    pub import_id: Uuid,
    pub day: NaiveDate,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub bill_lines: i64,
    pub breaks: i64,
    pub report: Report,
}

/// One break, as kept and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BreakRow {
    pub break_id: Uuid,
    pub run_id: Uuid,
    pub day: NaiveDate,
    pub merchant_id: String,
    pub class: Class,
    pub kind: EntryKind,
    pub number: String,
    /// The ledger's own order or refund number, when the break has a ledger side: not
    /// `number` when the line was paired by the channel's transaction id (the bill names the
    /// order otherwise). `confirmed_paid` settles this order.
    pub ledger_number: Option<String>,
    pub line_no: Option<i64>,
    pub bill_amount_fen: Option<i64>,
    pub ledger_amount_fen: Option<i64>,
    pub detail: String,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    /// Filled when served: whether a resolution exists.
    pub resolved: bool,
}

/// How a break was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A known, harmless difference.
    Accepted,
    /// The payment was confirmed (e.g. by the cashier) as paid on the channel.
    ConfirmedPaid,
    /// The money went back to the payer.
    RefundIssued,
    /// The ledger was corrected by a compensating entry elsewhere.
    LedgerCorrected,
    /// The channel's bill is wrong; taken up with the channel.
    BillDisputed,
    /// A newer version of the bill was reconciled: its run's breaks stand for this one
    /// (recorded by facepay, never sent by finance).
    Superseded,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Accepted,
        Action::ConfirmedPaid,
        Action::RefundIssued,
        Action::LedgerCorrected,
        Action::BillDisputed,
        Action::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accepted => "accepted",
            Action::ConfirmedPaid => "confirmed_paid",
            Action::RefundIssued => "refund_issued",
            Action::LedgerCorrected => "ledger_corrected",
            Action::BillDisputed => "bill_disputed",
            Action::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One resolution of a break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResolutionRow {
    pub break_id: Uuid,
    pub action: Action,
    pub resolved_by: String,
    pub reason: String,
    pub resolved_at: DateTime<Utc>,
    pub event_id: Uuid,
}

/// A page of breaks.
#[derive(Debug, Clone, Default)]
pub struct BreakFilter {
    pub run_id: Option<Uuid>,
    pub day: Option<NaiveDate>,
    pub class: Option<Class>,
    pub merchant_id: Option<String>,
    pub unresolved: bool,
    /// Only breaks after this one (by id): the cursor of the previous page.
    pub after: Option<Uuid>,
    pub limit: u32,
}

/// What each database does its own way in reconciliation: a bill's lines and the ledger's
/// entries of a day read in bulk (and, through the hooks of `reconcile/sql.rs`, a bill's
/// lines and a run's breaks written in bulk, an import committed). Streams of sorted rows go
/// through bounded channels, so memory stays bounded whatever the day's size.
#[async_trait]
pub trait BillStore: Send + Sync + 'static {
    /// Sends the import's lines sorted by (merchant, kind, number, line), in pages.
    async fn send_bill_lines(&self, import_id: Uuid, tx: mpsc::Sender<Vec<BillLine>>) -> Result<(), ReconError>;

    /// Sends the ledger's entries of `day` sorted by (merchant, kind, number), in pages.
    async fn send_ledger_entries(&self, day: NaiveDate, tx: mpsc::Sender<Vec<LedgerEntry>>) -> Result<(), ReconError>;
}

/// Reconciliation's store: imports, runs, breaks and resolutions (the SQL both databases
/// run, written once: `reconcile/sql.rs`), over a [`BillStore`].
#[async_trait]
pub trait ReconStore: BillStore {
    /// Writes the lines received from `rx` and then the import row, in one transaction
    /// (rolled back on any error, or when the file was already imported).
    /// Writes the run, its breaks and their ledger events in one transaction. Breaks already
    /// recorded (the same `break_id`: the same import found it before) are skipped with their
    /// events; their ids are returned.
    async fn record_run(
        &self,
        run: &RunRow,
        breaks: &[BreakRow],
        events: &[NewEvent],
    ) -> Result<HashSet<Uuid>, ReconError>;

    /// Whether `day` has a current bill (of any account and kind).
    async fn has_current_bill(&self, day: NaiveDate) -> Result<bool, ReconError>;

    /// The unresolved breaks of the versions `import` supersedes (the same account, day and
    /// kind of document, a lower version), at most `limit`.
    async fn superseded_open_breaks(&self, import: &ImportRow, limit: u32) -> Result<Vec<BreakRow>, ReconError>;

    /// Marks an import refused (its run found more breaks than a run may record): it is not
    /// its day's current bill until a run of it completes. Once per import.
    async fn refuse_import(&self, import_id: Uuid, reason: &str, at: DateTime<Utc>) -> Result<(), ReconError>;

    async fn import(
        &self,
        req: &ImportRequest,
        rx: &mut mpsc::Receiver<Result<Parsed, BillError>>,
    ) -> Result<ImportOutcome, ReconError>;

    async fn import_row(&self, import_id: Uuid) -> Result<Option<ImportRow>, ReconError>;

    /// The current (highest-version) imports, newest day first.
    async fn imports(&self, limit: u32) -> Result<Vec<ImportRow>, ReconError>;

    /// The ledger's money-moving entry with this key, on whatever day.
    async fn ledger_counterpart(&self, key: (&str, EntryKind, &str)) -> Result<Option<Counterpart>, ReconError>;

    /// The line with this key in the current bills of `day`.
    async fn bill_counterpart(
        &self,
        day: NaiveDate,
        key: (&str, EntryKind, &str),
    ) -> Result<Option<Counterpart>, ReconError>;

    async fn runs(&self, limit: u32) -> Result<Vec<RunRow>, ReconError>;

    async fn breaks(&self, filter: &BreakFilter) -> Result<Vec<BreakRow>, ReconError>;

    async fn break_row(&self, break_id: Uuid) -> Result<Option<BreakRow>, ReconError>;

    /// Writes the resolution and its ledger event in one transaction;
    /// [`ReconError::AlreadyResolved`] if the break has one.
    async fn resolve(&self, resolution: &ResolutionRow, event: &NewEvent) -> Result<(), ReconError>;

    async fn resolutions(&self, limit: u32) -> Result<Vec<ResolutionRow>, ReconError>;

    /// The bill line a break is about (none for a break of the ledger's side).
    async fn break_line(&self, b: &BreakRow) -> Result<Option<BillLine>, ReconError>;

    /// The same database as a ledger store: resolutions that move money go through the
    /// ledger's pure core and its commit.
    fn ledger_store(&self) -> Arc<dyn LedgerStore>;
}

/// Imports the bill of `req.day` read from `input` (a WeChat bill, or through `mapping`
/// another CSV): all of it, or nothing when a line is bad or falls on another day.
pub async fn import_bill(
    store: &dyn ReconStore,
    input: impl BufRead + Send + 'static,
    mapping: Option<ColumnMapping>,
    req: ImportRequest,
) -> Result<ImportOutcome, ReconError> {
    let (tx, mut rx) = mpsc::channel(4);
    let day = req.day;
    let parser = tokio::task::spawn_blocking(move || {
        let send = |p: Result<Parsed, BillError>| tx.blocking_send(p).is_ok();
        if let Err(e) = parse_bill(input, mapping.as_ref(), day, send) {
            send(Err(e));
        }
    });
    let outcome = store.import(&req, &mut rx).await;
    drop(rx);
    parser.await.map_err(|e| ReconError::Invalid(format!("the parser failed: {e}")))?;
    outcome
}

/// Reads a bill of `day` and sends its lines in chunks, then its digest. Stops quietly when
/// the receiver is gone.
fn parse_bill(
    input: impl BufRead,
    mapping: Option<&ColumnMapping>,
    day: NaiveDate,
    send: impl Fn(Result<Parsed, BillError>) -> bool,
) -> Result<(), BillError> {
    let mut reader = match mapping {
        None => BillReader::wechat(input)?,
        Some(m) => BillReader::generic(input, m)?,
    };
    let mut chunk = Vec::with_capacity(RECON_IMPORT_CHUNK_ROWS);
    while let Some(line) = reader.next_line()? {
        on_the_day(&line, day)?;
        chunk.push(line);
        if chunk.len() == RECON_IMPORT_CHUNK_ROWS && !send(Ok(Parsed::Lines(std::mem::take(&mut chunk)))) {
            return Ok(());
        }
    }
    if !chunk.is_empty() && !send(Ok(Parsed::Lines(chunk))) {
        return Ok(());
    }
    send(Ok(Parsed::Done(reader.finish()?)));
    Ok(())
}

/// A bill line belongs to the bill's day: its transaction time falls on `day` (Asia/Shanghai)
/// or within the timing window of either of its midnights (the channel books a payment made
/// at 23:59:59 on the next day at times).
pub fn on_the_day(line: &BillLine, day: NaiveDate) -> Result<(), BillError> {
    let trade_day = shanghai_day(line.trade_at);
    if trade_day == day || near_midnight(line.trade_at, day) {
        return Ok(());
    }
    let trade_at =
        line.trade_at.with_timezone(&facepay_domain::time::shanghai()).format("%Y-%m-%d %H:%M:%S").to_string();
    Err(BillError::OffDay { line: line.line_no, trade_at, trade_day, day })
}

/// A run's result: the run and its breaks.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run: RunRow,
    /// Every break this run found; those an earlier run of the same import had found already
    /// are the rows recorded then (their run, their `resolved`), not recorded again.
    pub breaks: Vec<BreakRow>,
    /// How many of `breaks` this run recorded (with one ledger event each).
    pub new_breaks: usize,
}

/// Reconciles the import's bill against the ledger's entries of its day.
pub async fn run_reconciliation(
    store: Arc<dyn ReconStore>,
    import_id: Uuid,
    at: DateTime<Utc>,
) -> Result<RunOutcome, ReconError> {
    let import = store.import_row(import_id).await?.ok_or(ReconError::ImportNotFound(import_id))?;
    let day = import.day;
    let covers = covered_kinds(&import.layout);
    let (mut held, mut report) = merge_day(store.clone(), import_id, day, covers).await?;
    if let Some(rescue) = TxnRescue::new(&mut held) {
        held = rescue_by_txn(store.clone(), day, covers, held, rescue).await?;
    }
    let mut breaks = Vec::new();
    let neighbours = billed_neighbours(store.as_ref(), day).await?;
    let midnights = Midnights::of(day);
    for mut f in held {
        if f.near_midnight {
            let other = counterpart(store.as_ref(), &f, day).await?;
            settle_timing(&mut f, day, other);
        }
        if !neighbours.is_empty() && billed_near_midnight(&f, &midnights) {
            let again = billed_elsewhere(store.as_ref(), &f, &neighbours).await?;
            billed_twice(&mut f, again);
        }
        report.add(&f);
        if f.class.is_break() {
            breaks.push(f);
        }
    }
    let run_id = Uuid::new_v4();
    let finished_at = at.max(Utc::now());
    let rows: Vec<BreakRow> = breaks.iter().map(|f| break_row(run_id, import_id, day, f, finished_at)).collect();
    let events: Vec<NewEvent> = rows.iter().map(|b| break_event(b, finished_at)).collect();
    let run = RunRow {
        run_id,
        import_id,
        day,
        started_at: at,
        finished_at,
        bill_lines: report.bill_lines as i64,
        breaks: rows.len() as i64,
        report,
    };
    let known = store.record_run(&run, &rows, &events).await?;
    close_superseded(store.as_ref(), &import, finished_at).await?;
    let new_breaks = rows.len() - known.len();
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        // Found before by an earlier run of this import: served as recorded then.
        match known.contains(&row.break_id) {
            true => found.push(store.break_row(row.break_id).await?.unwrap_or(row)),
            false => found.push(row),
        }
    }
    Ok(RunOutcome { run, breaks: found, new_breaks })
}

/// Streams both sides into the pure merge on a blocking thread. Returns the findings held
/// back (breaks and near-midnight ones, at most [`RECON_BREAKS_MAX`]) and the report of the
/// rest.
async fn merge_day(
    store: Arc<dyn ReconStore>,
    import_id: Uuid,
    day: NaiveDate,
    covers: fn(EntryKind) -> bool,
) -> Result<(Vec<Finding>, Report), ReconError> {
    let (btx, mut brx) = mpsc::channel::<Vec<BillLine>>(4);
    let (ltx, mut lrx) = mpsc::channel::<Vec<LedgerEntry>>(4);
    let merge = tokio::task::spawn_blocking(move || {
        let bill = std::iter::from_fn(move || brx.blocking_recv()).flatten().map(Ok);
        let ledger = std::iter::from_fn(move || lrx.blocking_recv()).flatten().filter(|e| covers(e.kind)).map(Ok);
        let mut report = Report::default();
        let mut held = Vec::new();
        let midnights = Midnights::of(day);
        reconcile(day, bill, ledger, |f| {
            if !(f.class.is_break() || f.near_midnight || billed_near_midnight(&f, &midnights)) {
                report.add(&f);
                return Ok(());
            }
            if held.len() >= RECON_BREAKS_MAX {
                return Err(ReconError::TooManyBreaks { max: RECON_BREAKS_MAX });
            }
            held.push(f);
            Ok(())
        })?;
        Ok::<_, ReconError>((held, report))
    });
    let merge = async { merge.await.map_err(|e| ReconError::Invalid(format!("the matcher failed: {e}")))? };
    // Each side on its own task: a reader may block its worker thread for a page at a time
    // (the embedded store steps SQLite in place), and the two must not wait on each other.
    let bills = store.clone();
    let bill = tokio::spawn(async move { bills.send_bill_lines(import_id, btx).await });
    let ledger = tokio::spawn(async move { store.send_ledger_entries(day, ltx).await });
    let joined = |e: tokio::task::JoinError| ReconError::Invalid(format!("a reader failed: {e}"));
    let bill = async { bill.await.map_err(joined)? };
    let ledger = async { ledger.await.map_err(joined)? };
    let (_, _, out) = tokio::try_join!(bill, ledger, merge)?;
    Ok(out)
}

/// Streams the day's ledger entries again for the lines held without an entry, and pairs
/// them by channel transaction id ([`TxnRescue`]).
async fn rescue_by_txn(
    store: Arc<dyn ReconStore>,
    day: NaiveDate,
    covers: fn(EntryKind) -> bool,
    mut held: Vec<Finding>,
    mut rescue: TxnRescue,
) -> Result<Vec<Finding>, ReconError> {
    let (tx, mut rx) = mpsc::channel::<Vec<LedgerEntry>>(4);
    let producer = tokio::spawn(async move { store.send_ledger_entries(day, tx).await });
    while let Some(page) = rx.recv().await {
        for e in page.iter().filter(|e| covers(e.kind)) {
            rescue.offer(&mut held, e);
        }
    }
    producer.await.map_err(|e| ReconError::Invalid(format!("the ledger reader failed: {e}")))??;
    Ok(rescue.finish(held))
}

/// A bill imported and its day reconciled: what `facepay reconcile` and the API's upload
/// report.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub import: ImportOutcome,
    pub run: RunRow,
    pub breaks: Vec<BreakRow>,
}

/// Imports the bill read from `input` ([`import_bill`]) and reconciles its day
/// ([`run_reconciliation`]), both at `req.at`. A run refused for too many breaks leaves the
/// import refused: not its day's current bill (a later run of the same file may complete it).
pub async fn import_and_reconcile(
    recon: Arc<dyn ReconStore>,
    input: impl BufRead + Send + 'static,
    mapping: Option<ColumnMapping>,
    req: ImportRequest,
) -> Result<ReconcileReport, ReconError> {
    let at = req.at;
    let import = import_bill(recon.as_ref(), input, mapping, req).await?;
    let import_id = import.import.import_id;
    match run_reconciliation(recon.clone(), import_id, at).await {
        Ok(RunOutcome { run, breaks, .. }) => Ok(ReconcileReport { import, run, breaks }),
        // Refused for what the bill is, not for a moment's trouble: the import does not stand.
        Err(e @ ReconError::TooManyBreaks { .. }) => {
            recon.refuse_import(import_id, &e.to_string(), at).await?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The kinds of entry a bill of this layout prints: a SUCCESS bill only payments, a REFUND
/// bill only refunds and reversals; the ledger's other entries are not looked for in it.
pub fn covered_kinds(layout: &str) -> fn(EntryKind) -> bool {
    match layout {
        "success" => |k| k == EntryKind::Payment,
        "refund" => |k| k != EntryKind::Payment,
        _ => |_| true,
    }
}

/// Where a near-midnight finding's counterpart is, in the neighbouring days.
async fn counterpart(store: &dyn ReconStore, f: &Finding, day: NaiveDate) -> Result<Option<Counterpart>, ReconError> {
    let key = (f.merchant_id(), f.kind(), f.number());
    if f.bill.is_some() {
        return store.ledger_counterpart(key).await;
    }
    for other in [day + Duration::days(1), day - Duration::days(1)] {
        if let Some(c) = store.bill_counterpart(other, key).await? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The neighbouring days that have a current bill (looked up once a run: no line needs a
/// lookup when neither has).
async fn billed_neighbours(store: &dyn ReconStore, day: NaiveDate) -> Result<Vec<NaiveDate>, ReconError> {
    let mut days = Vec::with_capacity(2);
    for other in [day - Duration::days(1), day + Duration::days(1)] {
        if store.has_current_bill(other).await? {
            days.push(other);
        }
    }
    Ok(days)
}

/// The neighbouring day whose current bill has the finding's line too, if one has.
async fn billed_elsewhere(
    store: &dyn ReconStore,
    f: &Finding,
    neighbours: &[NaiveDate],
) -> Result<Option<NaiveDate>, ReconError> {
    let key = (f.merchant_id(), f.kind(), f.number());
    for other in neighbours {
        if store.bill_counterpart(*other, key).await?.is_some() {
            return Ok(Some(*other));
        }
    }
    Ok(None)
}

/// The break's id: derived from the import and what was found (class, key, bill line), so
/// that running the same bill again finds the same break instead of a new one.
pub fn break_id(import_id: Uuid, f: &Finding) -> Uuid {
    let line = f.bill.as_ref().map_or_else(|| "ledger".to_string(), |b| b.line_no.to_string());
    let what = format!("break:{}:{}:{}:{}:{line}", f.class.as_str(), f.merchant_id(), f.kind().code(), f.number());
    Uuid::new_v5(&import_id, what.as_bytes())
}

fn break_row(run_id: Uuid, import_id: Uuid, day: NaiveDate, f: &Finding, at: DateTime<Utc>) -> BreakRow {
    let break_id = break_id(import_id, f);
    BreakRow {
        break_id,
        run_id,
        day,
        merchant_id: f.merchant_id().to_string(),
        class: f.class,
        kind: f.kind(),
        number: f.number().to_string(),
        ledger_number: f.ledger.as_ref().map(|l| l.number.clone()),
        line_no: f.bill.as_ref().map(|b| b.line_no as i64),
        bill_amount_fen: f.bill.as_ref().map(|b| b.amount_fen),
        ledger_amount_fen: f.ledger.as_ref().map(|l| l.amount_fen),
        detail: f.detail(),
        event_id: Uuid::new_v5(&break_id, b"event"),
        recorded_at: at,
        resolved: false,
    }
}

fn break_event(b: &BreakRow, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        event_id: b.event_id,
        cause_event_id: b.run_id,
        occurred_at: at,
        event: LedgerEvent::ReconBreakRecorded {
            merchant_id: b.merchant_id.clone(),
            day: b.day,
            run_id: b.run_id,
            break_id: b.break_id,
            class: b.class.as_str().to_string(),
            kind: b.kind.code().to_string(),
            number: b.number.clone(),
            bill_amount_fen: b.bill_amount_fen,
            ledger_amount_fen: b.ledger_amount_fen,
            detail: b.detail.clone(),
        },
    }
}

/// Resolves a break: who, how and why, appended to the ledger as an event.
pub async fn resolve_break(
    store: &dyn ReconStore,
    break_id: Uuid,
    action: Action,
    resolved_by: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<ResolutionRow, ReconError> {
    for (what, text) in [("resolved_by", resolved_by), ("reason", reason)] {
        if text.trim().is_empty() || text.len() > RECON_NOTE_LEN_MAX {
            return Err(ReconError::Invalid(format!("{what}: 1 to {RECON_NOTE_LEN_MAX} bytes")));
        }
    }
    if action == Action::Superseded {
        return Err(ReconError::Invalid("superseded is recorded by facepay when a newer bill is reconciled".into()));
    }
    let b = store.break_row(break_id).await?.ok_or(ReconError::BreakNotFound(break_id))?;
    if b.resolved {
        return Err(ReconError::AlreadyResolved(break_id));
    }
    if action == Action::ConfirmedPaid {
        confirm_paid(store, &b, at).await?;
    }
    let (row, event) = resolution(&b, action, resolved_by, reason, at);
    store.resolve(&row, &event).await?;
    Ok(row)
}

/// A break's resolution and the ledger event that records it (its id from the break: a
/// break is resolved once).
fn resolution(b: &BreakRow, action: Action, by: &str, reason: &str, at: DateTime<Utc>) -> (ResolutionRow, NewEvent) {
    let row = ResolutionRow {
        break_id: b.break_id,
        action,
        resolved_by: by.to_string(),
        reason: reason.to_string(),
        resolved_at: at,
        event_id: Uuid::new_v5(&b.break_id, b"resolved"),
    };
    let event = NewEvent {
        event_id: row.event_id,
        cause_event_id: b.break_id,
        occurred_at: at,
        event: LedgerEvent::ReconBreakResolved {
            merchant_id: b.merchant_id.clone(),
            break_id: b.break_id,
            action: action.as_str().to_string(),
            resolved_by: row.resolved_by.clone(),
            reason: row.reason.clone(),
        },
    };
    (row, event)
}

/// Closes the open breaks of the versions `import` supersedes (the same account, day and
/// kind of document), as `superseded`: the new version's run stands for them, so an order is
/// never open twice. A break finance resolves meanwhile stays as finance resolved it.
async fn close_superseded(store: &dyn ReconStore, import: &ImportRow, at: DateTime<Utc>) -> Result<u64, ReconError> {
    let reason =
        format!("superseded by version {} of the bill of {} (import {})", import.version, import.day, import.import_id);
    let mut closed = 0;
    loop {
        let open = store.superseded_open_breaks(import, RECON_CLOSE_PAGE_ROWS).await?;
        for b in &open {
            let (row, event) = resolution(b, Action::Superseded, "facepay", &reason, at);
            match store.resolve(&row, &event).await {
                Ok(()) => closed += 1,
                Err(ReconError::AlreadyResolved(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if open.len() < RECON_CLOSE_PAGE_ROWS as usize {
            return Ok(closed);
        }
    }
}

/// Settles a status-mismatch break through the ledger: the bill's line proves the order
/// paid; the ledger decides ([`super::settle`]) and commits the payment, or refuses it (its
/// stable code in [`ReconError::Refused`]). Resolving the same break again sends the same
/// command (its id comes from the break) and posts nothing more.
async fn confirm_paid(store: &dyn ReconStore, b: &BreakRow, at: DateTime<Utc>) -> Result<(), ReconError> {
    if b.class != Class::StatusMismatch || b.kind != EntryKind::Payment {
        let what = format!("{} of a {:?}", b.class.as_str(), b.kind);
        return Err(ReconError::Invalid(format!(
            "confirmed_paid settles a status_mismatch of a payment, not a {what}"
        )));
    }
    let line = store.break_line(b).await?.ok_or_else(|| ReconError::Invalid("the break's bill line is gone".into()))?;
    let invalid = |what: &str| ReconError::Invalid(format!("the bill line's {what} is not a valid one"));
    // The ledger's order: the bill may name it by another number (paired by transaction id).
    let order_no = b.ledger_number.clone().unwrap_or_else(|| line.out_trade_no.clone());
    let confirm = ConfirmPaid {
        merchant_id: facepay_domain::MerchantId::parse(line.merchant_id.clone()).map_err(|_| invalid("merchant"))?,
        out_trade_no: facepay_domain::OutTradeNo::parse(order_no).map_err(|_| invalid("out_trade_no"))?,
        amount: facepay_domain::Money::from_fen(line.amount_fen).ok_or_else(|| invalid("amount"))?,
        paid_at: line.trade_at,
        channel_txn_id: line.channel_txn_id.clone(),
        break_id: b.break_id,
    };
    // A ledger of its own, reading every entity from the store: the API and the CLI hold no
    // handle on the pipeline's ledger (whose cache does not see this write; see
    // docs/events.md, Reconciliation).
    let ledger = Ledger::new(store.ledger_store(), Policy::default()).uncached();
    let outcomes = ledger.handle_batch(&[confirm.command(at)]).await?;
    match outcomes.into_iter().next().map(|o| o.body) {
        Some(facepay_domain::OutcomeBody::Refused { code, message, .. }) => Err(ReconError::Refused { code, message }),
        _ => Ok(()),
    }
}

// ---- rows, shared by both backends ----------------------------------------------------

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

fn kind_from(r: &dyn Cells) -> Result<EntryKind, StoreError> {
    let k = r.text("kind")?;
    EntryKind::from_code(&k).ok_or_else(|| corrupt("entry kind", &k))
}

pub(crate) fn bill_line_from(r: &dyn Cells) -> Result<BillLine, StoreError> {
    let kind = kind_from(r)?;
    let number = r.text("number")?;
    Ok(BillLine {
        line_no: r.int("line_no")? as u64,
        trade_at: r.at("trade_at")?,
        merchant_id: r.text("merchant_id")?,
        device_id: r.text("device_id")?,
        channel_txn_id: r.text("channel_txn_id")?,
        out_trade_no: r.text("out_trade_no")?,
        kind,
        out_refund_no: if kind == EntryKind::Refund { number } else { String::new() },
        amount_fen: r.int("amount_fen")?,
        fee_mfen: r.int("fee_mfen")?,
        rate_ppm: r.opt_int("rate_ppm")?,
    })
}

pub(crate) fn ledger_entry_from(r: &dyn Cells) -> Result<LedgerEntry, StoreError> {
    let status = r.text("status")?;
    Ok(LedgerEntry {
        merchant_id: r.text("merchant_id")?,
        kind: kind_from(r)?,
        number: r.text("number")?,
        out_trade_no: r.text("out_trade_no")?,
        amount_fen: r.int("amount_fen")?,
        fee_fen: r.int("fee_fen")?,
        status: facepay_domain::OrderStatus::parse(&status).ok_or_else(|| corrupt("order status", &status))?,
        occurred_at: r.at("occurred_at")?,
    })
}

pub(crate) fn counterpart_from(r: &dyn Cells, day: Option<NaiveDate>) -> Result<Counterpart, StoreError> {
    let at = r.at("at")?;
    Ok(Counterpart { day: day.unwrap_or_else(|| shanghai_day(at)), amount_fen: r.int("amount_fen")? })
}

pub(crate) fn import_from(r: &dyn Cells) -> Result<ImportRow, StoreError> {
    Ok(ImportRow {
        import_id: r.uuid("import_id")?,
        account: r.text("account")?,
        day: r.day("day")?,
        version: r.int("version")?,
        content_sha256: r.text("content_sha256")?,
        layout: r.text("layout")?,
        file_name: r.text("file_name")?,
        line_count: r.int("line_count")?,
        settle_fen: r.int("settle_fen")?,
        refund_fen: r.int("refund_fen")?,
        fee_mfen: r.int("fee_mfen")?,
        imported_at: r.at("imported_at")?,
    })
}

pub(crate) fn run_from(r: &dyn Cells) -> Result<RunRow, StoreError> {
    let report = r.text("report")?;
    Ok(RunRow {
        run_id: r.uuid("run_id")?,
        import_id: r.uuid("import_id")?,
        day: r.day("day")?,
        started_at: r.at("started_at")?,
        finished_at: r.at("finished_at")?,
        bill_lines: r.int("bill_lines")?,
        breaks: r.int("breaks")?,
        report: serde_json::from_str(&report).map_err(|_| corrupt("run report", &report))?,
    })
}

pub(crate) fn break_from(r: &dyn Cells) -> Result<BreakRow, StoreError> {
    let class = r.text("class")?;
    Ok(BreakRow {
        break_id: r.uuid("break_id")?,
        run_id: r.uuid("run_id")?,
        day: r.day("day")?,
        merchant_id: r.text("merchant_id")?,
        class: Class::parse(&class).ok_or_else(|| corrupt("break class", &class))?,
        kind: kind_from(r)?,
        number: r.text("number")?,
        ledger_number: r.opt_text("ledger_number")?,
        line_no: r.opt_int("line_no")?,
        bill_amount_fen: r.opt_int("bill_amount_fen")?,
        ledger_amount_fen: r.opt_int("ledger_amount_fen")?,
        detail: r.text("detail")?,
        event_id: r.uuid("event_id")?,
        recorded_at: r.at("recorded_at")?,
        resolved: r.flag("resolved")?,
    })
}

pub(crate) fn resolution_from(r: &dyn Cells) -> Result<ResolutionRow, StoreError> {
    let action = r.text("action")?;
    Ok(ResolutionRow {
        break_id: r.uuid("break_id")?,
        action: Action::parse(&action).ok_or_else(|| corrupt("resolution action", &action))?,
        resolved_by: r.text("resolved_by")?,
        reason: r.text("reason")?,
        resolved_at: r.at("resolved_at")?,
        event_id: r.uuid("event_id")?,
    })
}

/// The breaks (and their events) not among `known`: what a run records.
pub(crate) fn fresh(breaks: &[BreakRow], events: &[NewEvent], known: &HashSet<Uuid>) -> (Vec<BreakRow>, Vec<NewEvent>) {
    let new_break = |e: &&NewEvent| match &e.event {
        LedgerEvent::ReconBreakRecorded { break_id, .. } => !known.contains(break_id),
        _ => true,
    };
    let rows = breaks.iter().filter(|b| !known.contains(&b.break_id)).cloned().collect();
    (rows, events.iter().filter(new_break).cloned().collect())
}

/// The digest's account, or the request's when the bill has no rows.
pub(crate) fn account_of(digest: &BillDigest, req: &ImportRequest) -> String {
    digest.account.clone().unwrap_or_else(|| req.account.clone())
}
