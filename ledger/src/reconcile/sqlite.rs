//! [`ReconStore`] for the embedded store: timestamps as RFC 3339 text (which sorts by
//! time), days as `YYYY-MM-DD`, UUIDs as text. The ledger's side of a day is two streams
//! merged in key order: the paid payments straight from a covering index (no sort: the bulk
//! of a day) and the rest (unpaid orders, refunds, reversals) sorted by SQLite.
//!
//! The two bulk streams (the bill's lines, the paid payments) are read a page at a time
//! after the last key of the previous page, each page one JSON array built by SQLite
//! (`json_group_array`) on one connection: sqlx's SQLite driver hands rows over from its
//! worker thread one at a time and copies every column, which cost most of a day's
//! reconciliation (see docs/BENCHMARKS.md).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration, NaiveDate};
use futures_core::Stream;
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{QueryBuilder, Transaction};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bill::{BillError, BillLine};
use super::classify::{day_start, Counterpart, LedgerEntry};
use super::store::{
    account_of, bill_line_from, break_from, counterpart_from, fresh, import_from, ledger_entry_from, resolution_from,
    run_from, BreakFilter, BreakRow, ImportOutcome, ImportRequest, ImportRow, Parsed, ReconError, ReconStore,
    ResolutionRow, RunRow,
};
use super::EntryKind;
use crate::rows::Cells;
use crate::sqlite::{ts, write_log, SqliteStore};
use crate::store::{NewEvent, StoreError};

/// Rows per page sent to the matcher.
const PAGE_ROWS: usize = 1_024;

/// One page of an import's lines after a key, as one JSON array: a page crosses from sqlx's
/// worker thread as one value, not a row (and a column) at a time.
const BILL_PAGE: &str = "SELECT json_group_array(json_array(merchant_id, kind, number, line_no, out_trade_no, \
    channel_txn_id, device_id, trade_at, amount_fen, fee_mfen, rate_ppm) ORDER BY merchant_id, kind, number, line_no) \
    FROM (SELECT * FROM recon_bill_lines WHERE import_id = ?1 AND (merchant_id, kind, number, line_no) > (?2, ?3, ?4, ?5) \
    ORDER BY merchant_id, kind, number, line_no LIMIT ?6)";

/// A bill line as [`BILL_PAGE`] gives it.
type LineRow = (String, String, String, i64, String, String, String, String, i64, i64, Option<i64>);

fn corrupt_page(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("a page of {what} rows: {e}"))
}

fn bill_line_of(r: LineRow) -> Result<BillLine, StoreError> {
    let (merchant_id, kind, number, line_no, out_trade_no, channel_txn_id, device_id, at, amount_fen, fee_mfen, rate) =
        r;
    let kind = EntryKind::from_code(&kind).ok_or_else(|| StoreError::Corrupt(format!("entry kind: {kind:?}")))?;
    Ok(BillLine {
        line_no: line_no as u64,
        trade_at: crate::sqlite::parse_ts(&at)?,
        merchant_id,
        device_id,
        channel_txn_id,
        out_trade_no,
        kind,
        out_refund_no: if kind == EntryKind::Refund { number } else { String::new() },
        amount_fen,
        fee_mfen,
        rate_ppm: rate,
    })
}

/// One page of the day's paid payments after a key, in key order straight from the covering
/// index `history_day_paid` (migration 0008, no sort), as one JSON array (see [`BILL_PAGE`]).
const PAID_PAGE: &str =
    "SELECT json_group_array(json_array(merchant_id, out_trade_no, amount_fen, fee_fen, occurred_at) \
    ORDER BY merchant_id, out_trade_no) FROM (SELECT h.merchant_id, h.out_trade_no, h.amount_fen, o.fee_fen, \
    h.occurred_at FROM history h JOIN orders o ON o.merchant_id = h.merchant_id AND o.out_trade_no = h.out_trade_no \
    WHERE h.day = ?1 AND h.status = 'PAID' AND h.amount_fen > 0 AND (h.merchant_id, h.out_trade_no) > (?2, ?3) \
    ORDER BY h.merchant_id, h.out_trade_no LIMIT ?4)";

/// A paid payment as [`PAID_PAGE`] gives it.
type PaidRow = (String, String, i64, i64, String);

/// The day's paid payments, a page at a time.
struct PaidPages {
    day: String,
    after: (String, String),
    page: std::collections::VecDeque<LedgerEntry>,
    done: bool,
}

impl PaidPages {
    async fn next(&mut self, conn: &mut sqlx::SqliteConnection) -> Result<Option<LedgerEntry>, ReconError> {
        if self.page.is_empty() && !self.done {
            let page: String = sqlx::query_scalar(PAID_PAGE)
                .bind(&self.day)
                .bind(&self.after.0)
                .bind(&self.after.1)
                .bind(PAGE_ROWS as i64)
                .fetch_one(&mut *conn)
                .await?;
            let rows: Vec<PaidRow> = serde_json::from_str(&page).map_err(|e| corrupt_page("payment", e))?;
            self.done = rows.len() < PAGE_ROWS;
            if let Some(last) = rows.last() {
                self.after = (last.0.clone(), last.1.clone());
            }
            for (merchant_id, out_trade_no, amount_fen, fee_fen, at) in rows {
                let occurred_at = crate::sqlite::parse_ts(&at)?;
                let number = out_trade_no.clone();
                let status = facepay_domain::OrderStatus::Paid;
                let kind = EntryKind::Payment;
                self.page.push_back(LedgerEntry {
                    merchant_id,
                    kind,
                    number,
                    out_trade_no,
                    amount_fen,
                    fee_fen,
                    status,
                    occurred_at,
                });
            }
        }
        Ok(self.page.pop_front())
    }
}

/// The rest of the day's entries (unpaid orders, refunds, reversals), sorted by key: few
/// rows on a normal day.
const OTHER_ENTRIES: &str =
    "SELECT merchant_id, kind, number, out_trade_no, amount_fen, fee_fen, status, occurred_at FROM (
    SELECT merchant_id, 'P' AS kind, out_trade_no AS number, out_trade_no, amount_fen, 0 AS fee_fen, status,
           created_at AS occurred_at FROM orders
     WHERE created_at >= ?1 AND created_at < ?2
       AND (status IN ('DECLINED', 'REVOKED') OR (status = 'REVERSED' AND refunded_fen = 0))
    UNION ALL
    SELECT merchant_id, 'R', out_refund_no, out_trade_no, amount_fen, -fee_refund_fen, 'PAID', refunded_at
      FROM refunds WHERE refunded_at >= ?1 AND refunded_at < ?2
    UNION ALL
    SELECT o.merchant_id, 'V', o.out_trade_no, o.out_trade_no,
           o.refunded_fen - COALESCE(SUM(r.amount_fen), 0), -(o.fee_refunded_fen - COALESCE(SUM(r.fee_refund_fen), 0)),
           'PAID', o.updated_at
      FROM orders o LEFT JOIN refunds r ON r.merchant_id = o.merchant_id AND r.out_trade_no = o.out_trade_no
     WHERE o.status = 'REVERSED' AND o.refunded_fen > 0 AND o.updated_at >= ?1 AND o.updated_at < ?2
     GROUP BY o.merchant_id, o.out_trade_no
) WHERE amount_fen > 0 ORDER BY merchant_id, kind, number";

const BREAK_COLUMNS: &str = "SELECT b.*, EXISTS (SELECT 1 FROM recon_resolutions s WHERE s.break_id = b.break_id) \
    AS resolved FROM recon_breaks b";

const CURRENT_IMPORTS: &str = "SELECT i.* FROM recon_imports i WHERE i.version = \
    (SELECT MAX(j.version) FROM recon_imports j WHERE j.account = i.account AND j.day = i.day)";

/// The next row of `rows`, parsed.
async fn next_entry(
    rows: &mut (impl Stream<Item = Result<SqliteRow, sqlx::Error>> + Unpin),
) -> Result<Option<LedgerEntry>, ReconError> {
    match std::future::poll_fn(|cx| std::pin::Pin::new(&mut *rows).poll_next(cx)).await {
        Some(row) => Ok(Some(ledger_entry_from(&row?)?)),
        None => Ok(None),
    }
}

/// Merges the paid payments and the other entries, each sorted by key, into pages on `tx`
/// (keys are unique across both: a paid payment is never unpaid). Stops quietly if the
/// receiver is gone.
async fn send_merged(
    mut paid: PaidPages,
    conn: &mut sqlx::SqliteConnection,
    mut other: impl Stream<Item = Result<SqliteRow, sqlx::Error>> + Unpin,
    tx: mpsc::Sender<Vec<LedgerEntry>>,
) -> Result<(), ReconError> {
    let (mut next_a, mut next_b) = (paid.next(conn).await?, next_entry(&mut other).await?);
    let mut page = Vec::with_capacity(PAGE_ROWS);
    loop {
        let take_a = match (&next_a, &next_b) {
            (None, None) => break,
            (Some(x), Some(y)) => x.key() < y.key(),
            (x, _) => x.is_some(),
        };
        let entry = match take_a {
            true => std::mem::replace(&mut next_a, paid.next(conn).await?),
            false => std::mem::replace(&mut next_b, next_entry(&mut other).await?),
        };
        page.extend(entry);
        if page.len() == PAGE_ROWS && tx.send(std::mem::take(&mut page)).await.is_err() {
            return Ok(());
        }
    }
    if !page.is_empty() {
        let _ = tx.send(page).await;
    }
    Ok(())
}

async fn insert_lines(tx: &mut Transaction<'static, Sqlite>, id: &str, lines: &[BillLine]) -> Result<(), ReconError> {
    let mut qb = QueryBuilder::<Sqlite>::new(
        "INSERT INTO recon_bill_lines (import_id, merchant_id, kind, number, line_no, out_trade_no, channel_txn_id, \
         device_id, trade_at, amount_fen, fee_mfen, rate_ppm) ",
    );
    qb.push_values(lines, |mut s, l| {
        s.push_bind(id)
            .push_bind(l.merchant_id.as_str())
            .push_bind(l.kind.code())
            .push_bind(l.number())
            .push_bind(l.line_no as i64)
            .push_bind(l.out_trade_no.as_str())
            .push_bind(l.channel_txn_id.as_str())
            .push_bind(l.device_id.as_str())
            .push_bind(ts(&l.trade_at))
            .push_bind(l.amount_fen)
            .push_bind(l.fee_mfen)
            .push_bind(l.rate_ppm);
    });
    qb.build().execute(&mut **tx).await?;
    Ok(())
}

async fn import_by_hash(tx: &mut Transaction<'static, Sqlite>, sha: &str) -> Result<Option<ImportRow>, ReconError> {
    let row =
        sqlx::query("SELECT * FROM recon_imports WHERE content_sha256 = ?").bind(sha).fetch_optional(&mut **tx).await?;
    Ok(row.map(|r| import_from(&r)).transpose()?)
}

#[async_trait]
impl ReconStore for SqliteStore {
    async fn import(
        &self,
        req: &ImportRequest,
        rx: &mut mpsc::Receiver<Result<Parsed, BillError>>,
    ) -> Result<ImportOutcome, ReconError> {
        let import_id = Uuid::new_v4();
        let id = import_id.to_string();
        let mut tx = self.writer.begin().await?;
        let digest = loop {
            match rx.recv().await {
                Some(Ok(Parsed::Lines(lines))) => insert_lines(&mut tx, &id, &lines).await?,
                Some(Ok(Parsed::Done(d))) => break d,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ReconError::Invalid("the parser stopped before the end of the bill".into())),
            }
        };
        if let Some(existing) = import_by_hash(&mut tx, &digest.content_sha256).await? {
            tx.rollback().await?;
            return Ok(ImportOutcome { import: existing, already_imported: true, supersedes: None });
        }
        let account = account_of(&digest, req);
        let prev =
            sqlx::query("SELECT * FROM recon_imports WHERE account = ? AND day = ? ORDER BY version DESC LIMIT 1")
                .bind(&account)
                .bind(req.day.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| import_from(&r))
                .transpose()?;
        let row = ImportRow {
            import_id,
            account,
            day: req.day,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            content_sha256: digest.content_sha256.clone(),
            layout: digest.layout.as_str().to_string(),
            file_name: req.file_name.clone(),
            line_count: digest.totals.lines as i64,
            settle_fen: digest.totals.settle_fen,
            refund_fen: digest.totals.refund_fen,
            fee_mfen: digest.totals.fee_mfen,
            imported_at: req.at,
        };
        sqlx::query(
            "INSERT INTO recon_imports (import_id, account, day, version, content_sha256, layout, file_name, line_count, \
             settle_fen, refund_fen, fee_mfen, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&row.account)
        .bind(row.day.to_string())
        .bind(row.version)
        .bind(&row.content_sha256)
        .bind(&row.layout)
        .bind(&row.file_name)
        .bind(row.line_count)
        .bind(row.settle_fen)
        .bind(row.refund_fen)
        .bind(row.fee_mfen)
        .bind(ts(&row.imported_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ImportOutcome { import: row, already_imported: false, supersedes: prev.map(|p| p.import_id) })
    }

    async fn import_row(&self, import_id: Uuid) -> Result<Option<ImportRow>, ReconError> {
        let row = sqlx::query("SELECT * FROM recon_imports WHERE import_id = ?")
            .bind(import_id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| import_from(&r)).transpose()?)
    }

    async fn imports(&self, limit: u32) -> Result<Vec<ImportRow>, ReconError> {
        let sql = format!("{CURRENT_IMPORTS} ORDER BY i.day DESC, i.account LIMIT ?");
        let rows = sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.reader).await?;
        Ok(rows.iter().map(|r| import_from(r)).collect::<Result<_, _>>()?)
    }

    async fn send_bill_lines(&self, import_id: Uuid, tx: mpsc::Sender<Vec<BillLine>>) -> Result<(), ReconError> {
        if self.reader.options().get_max_connections() < 2 {
            return Err(ReconError::InMemoryStore);
        }
        let id = import_id.to_string();
        let mut after = (String::new(), String::new(), String::new(), -1_i64);
        // One connection for every page: its page cache stays warm, and one memory map of
        // the file is touched instead of one per pooled connection.
        let mut conn = self.reader.acquire().await?;
        loop {
            let page: String = sqlx::query_scalar(BILL_PAGE)
                .bind(&id)
                .bind(&after.0)
                .bind(&after.1)
                .bind(&after.2)
                .bind(after.3)
                .bind(PAGE_ROWS as i64)
                .fetch_one(&mut *conn)
                .await?;
            let rows: Vec<LineRow> = serde_json::from_str(&page).map_err(|e| corrupt_page("bill", e))?;
            let Some(last) = rows.last() else { return Ok(()) };
            after = (last.0.clone(), last.1.clone(), last.2.clone(), last.3);
            let lines = rows.into_iter().map(bill_line_of).collect::<Result<Vec<_>, _>>()?;
            if tx.send(lines).await.is_err() {
                return Ok(());
            }
        }
    }

    async fn send_ledger_entries(&self, day: NaiveDate, tx: mpsc::Sender<Vec<LedgerEntry>>) -> Result<(), ReconError> {
        if self.reader.options().get_max_connections() < 2 {
            return Err(ReconError::InMemoryStore);
        }
        let (from, to) = (ts(&day_start(day)), ts(&day_start(day + Duration::days(1))));
        let paid = PaidPages { day: day.to_string(), after: Default::default(), page: Default::default(), done: false };
        let other = sqlx::query(OTHER_ENTRIES).bind(from).bind(to).fetch(&self.reader);
        let mut conn = self.reader.acquire().await?;
        send_merged(paid, &mut conn, other, tx).await
    }

    async fn ledger_counterpart(&self, key: (&str, EntryKind, &str)) -> Result<Option<Counterpart>, ReconError> {
        let sql = match key.1 {
            EntryKind::Payment => {
                "SELECT occurred_at AS at, amount_fen FROM history WHERE merchant_id = ? AND out_trade_no = ? \
                 AND status = 'PAID' LIMIT 1"
            }
            EntryKind::Refund => {
                "SELECT refunded_at AS at, amount_fen FROM refunds WHERE merchant_id = ? AND out_refund_no = ?"
            }
            EntryKind::Reversal => {
                "SELECT updated_at AS at, refunded_fen AS amount_fen FROM orders WHERE merchant_id = ? \
                 AND out_trade_no = ? AND status = 'REVERSED' AND refunded_fen > 0"
            }
        };
        let row = sqlx::query(sql).bind(key.0).bind(key.2).fetch_optional(&self.reader).await?;
        Ok(row.map(|r| counterpart_from(&r, None)).transpose()?)
    }

    async fn bill_counterpart(
        &self,
        day: NaiveDate,
        key: (&str, EntryKind, &str),
    ) -> Result<Option<Counterpart>, ReconError> {
        let sql = format!(
            "SELECT l.trade_at AS at, l.amount_fen FROM recon_bill_lines l WHERE l.import_id IN \
             (SELECT import_id FROM ({CURRENT_IMPORTS} AND i.day = ?)) AND l.merchant_id = ? AND l.kind = ? \
             AND l.number = ? LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(day.to_string())
            .bind(key.0)
            .bind(key.1.code())
            .bind(key.2)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| counterpart_from(&r, Some(day))).transpose()?)
    }

    async fn record_run(
        &self,
        run: &RunRow,
        breaks: &[BreakRow],
        events: &[NewEvent],
    ) -> Result<HashSet<Uuid>, ReconError> {
        let mut tx = self.writer.begin().await?;
        let mut known = HashSet::new();
        for chunk in breaks.chunks(RECON_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new("SELECT break_id FROM recon_breaks WHERE break_id IN (");
            let mut ids = qb.separated(", ");
            for b in chunk {
                ids.push_bind(b.break_id.to_string());
            }
            qb.push(")");
            for r in qb.build().fetch_all(&mut *tx).await? {
                known.insert(r.uuid("break_id")?);
            }
        }
        let (breaks, events) = fresh(breaks, events, &known);
        write_log(&mut tx, &events).await?;
        let report = serde_json::to_string(&run.report).expect("a report serialises");
        sqlx::query(
            "INSERT INTO recon_runs (run_id, import_id, day, started_at, finished_at, bill_lines, breaks, report) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(run.run_id.to_string())
        .bind(run.import_id.to_string())
        .bind(run.day.to_string())
        .bind(ts(&run.started_at))
        .bind(ts(&run.finished_at))
        .bind(run.bill_lines)
        .bind(run.breaks)
        .bind(report)
        .execute(&mut *tx)
        .await?;
        for chunk in breaks.chunks(RECON_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO recon_breaks (break_id, run_id, day, merchant_id, class, kind, number, line_no, \
                 bill_amount_fen, ledger_amount_fen, detail, event_id, recorded_at, ledger_number) ",
            );
            qb.push_values(chunk, |mut s, b| {
                s.push_bind(b.break_id.to_string())
                    .push_bind(b.run_id.to_string())
                    .push_bind(b.day.to_string())
                    .push_bind(b.merchant_id.as_str())
                    .push_bind(b.class.as_str())
                    .push_bind(b.kind.code())
                    .push_bind(b.number.as_str())
                    .push_bind(b.line_no)
                    .push_bind(b.bill_amount_fen)
                    .push_bind(b.ledger_amount_fen)
                    .push_bind(b.detail.as_str())
                    .push_bind(b.event_id.to_string())
                    .push_bind(ts(&b.recorded_at))
                    .push_bind(b.ledger_number.as_deref());
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(known)
    }

    async fn runs(&self, limit: u32) -> Result<Vec<RunRow>, ReconError> {
        let rows = sqlx::query("SELECT * FROM recon_runs ORDER BY started_at DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(|r| run_from(r)).collect::<Result<_, _>>()?)
    }

    async fn breaks(&self, f: &BreakFilter) -> Result<Vec<BreakRow>, ReconError> {
        let mut qb = QueryBuilder::<Sqlite>::new(format!("SELECT * FROM ({BREAK_COLUMNS}) WHERE 1 = 1"));
        if let Some(run) = f.run_id {
            qb.push(" AND run_id = ").push_bind(run.to_string());
        }
        if let Some(day) = f.day {
            qb.push(" AND day = ").push_bind(day.to_string());
        }
        if let Some(class) = f.class {
            qb.push(" AND class = ").push_bind(class.as_str());
        }
        if let Some(m) = &f.merchant_id {
            qb.push(" AND merchant_id = ").push_bind(m.clone());
        }
        if f.unresolved {
            qb.push(" AND NOT resolved");
        }
        if let Some(after) = f.after {
            qb.push(" AND break_id > ").push_bind(after.to_string());
        }
        qb.push(" ORDER BY break_id LIMIT ").push_bind(i64::from(f.limit));
        let rows = qb.build().fetch_all(&self.reader).await?;
        Ok(rows.iter().map(|r| break_from(r)).collect::<Result<_, _>>()?)
    }

    async fn break_row(&self, break_id: Uuid) -> Result<Option<BreakRow>, ReconError> {
        let sql = format!("{BREAK_COLUMNS} WHERE b.break_id = ?");
        let row = sqlx::query(&sql).bind(break_id.to_string()).fetch_optional(&self.writer).await?;
        Ok(row.map(|r| break_from(&r)).transpose()?)
    }

    async fn resolve(&self, r: &ResolutionRow, event: &NewEvent) -> Result<(), ReconError> {
        let mut tx = self.writer.begin().await?;
        write_log(&mut tx, std::slice::from_ref(event)).await.map_err(|e| unique_to(e, r.break_id))?;
        let done = sqlx::query(
            "INSERT INTO recon_resolutions (break_id, action, resolved_by, reason, resolved_at, event_id) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(r.break_id.to_string())
        .bind(r.action.as_str())
        .bind(&r.resolved_by)
        .bind(&r.reason)
        .bind(ts(&r.resolved_at))
        .bind(r.event_id.to_string())
        .execute(&mut *tx)
        .await;
        done.map_err(|e| unique_to(StoreError::Database(e), r.break_id))?;
        tx.commit().await?;
        Ok(())
    }

    async fn resolutions(&self, limit: u32) -> Result<Vec<ResolutionRow>, ReconError> {
        let rows = sqlx::query("SELECT * FROM recon_resolutions ORDER BY resolved_at DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(|r| resolution_from(r)).collect::<Result<_, _>>()?)
    }

    async fn break_line(&self, b: &BreakRow) -> Result<Option<BillLine>, ReconError> {
        let Some(line_no) = b.line_no else { return Ok(None) };
        let row = sqlx::query(BREAK_LINE)
            .bind(b.run_id.to_string())
            .bind(&b.merchant_id)
            .bind(b.kind.code())
            .bind(&b.number)
            .bind(line_no)
            .fetch_optional(&self.writer)
            .await?;
        Ok(row.map(|r| bill_line_from(&r)).transpose()?)
    }

    fn ledger_store(&self) -> Arc<dyn crate::LedgerStore> {
        Arc::new(self.clone())
    }
}

/// The bill line of a break: the line of its run's import, by the line's key.
const BREAK_LINE: &str = "SELECT l.* FROM recon_bill_lines l JOIN recon_runs r ON r.import_id = l.import_id \
    WHERE r.run_id = ?1 AND l.merchant_id = ?2 AND l.kind = ?3 AND l.number = ?4 AND l.line_no = ?5";

/// Breaks per multi-row insert (14 columns, under SQLite's parameter limit).
const RECON_CHUNK: usize = 1_000;

/// A unique violation while resolving means a resolution (or its event) is already there.
pub(crate) fn unique_to(e: StoreError, break_id: Uuid) -> ReconError {
    match &e {
        StoreError::Database(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            ReconError::AlreadyResolved(break_id)
        }
        _ => ReconError::Store(e),
    }
}
