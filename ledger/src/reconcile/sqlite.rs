//! [`BillStore`] for the embedded store (its [`ReconStore`](super::store::ReconStore) is the
//! SQL both stores share: `reconcile/sql.rs`): timestamps as RFC 3339 text (which sorts by
//! time), days as `YYYY-MM-DD`, UUIDs as text. The ledger's side of a day is two streams
//! merged in key order: the paid payments straight from a covering index (no sort: the bulk
//! of a day) and the rest (unpaid orders, refunds, reversals) sorted by SQLite.
//!
//! The bulk paths (a bill's lines written at import, then read back in key order with the
//! day's paid payments) step prepared statements on the connection's own handle
//! (`crate::sqlite_raw`), a chunk or a page at a time: sqlx's SQLite driver copies every
//! bound value and every column across its worker thread, which cost most of a day's
//! reconciliation (see docs/BENCHMARKS.md). Pages are read after the last key of the
//! previous page, on one connection per stream.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{Duration, NaiveDate};
use futures_core::Stream;
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{QueryBuilder, Transaction};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bill::BillLine;
use super::classify::{day_start, LedgerEntry};
use super::store::{ledger_entry_from, BillStore, BreakRow, ReconError};
use super::EntryKind;
use crate::rows::Cells;
use crate::sqlite::{bind_at, bind_day, bind_id, ts, write_log, SqliteStore};
use crate::sqlite_raw as raw;
use crate::store::StoreError;

/// Rows per page sent to the matcher.
const PAGE_ROWS: usize = 1_024;

/// One page of an import's lines after a key, in key order straight from the table's key.
const BILL_PAGE: &str =
    "SELECT merchant_id, kind, number, line_no, out_trade_no, channel_txn_id, device_id, trade_at, \
    amount_fen, fee_mfen, rate_ppm FROM recon_bill_lines \
    WHERE import_id = ?1 AND (merchant_id, kind, number, line_no) > (?2, ?3, ?4, ?5) \
    ORDER BY merchant_id, kind, number, line_no LIMIT ?6";

/// The current row of [`BILL_PAGE`].
fn bill_line_of(s: &raw::Statement<'_>) -> Result<BillLine, StoreError> {
    let kind = s.column_text(1)?;
    let kind = EntryKind::from_code(&kind).ok_or_else(|| StoreError::Corrupt(format!("entry kind: {kind:?}")))?;
    let number = s.column_text(2)?;
    Ok(BillLine {
        merchant_id: s.column_text(0)?,
        line_no: u64::try_from(s.column_i64(3)).map_err(|e| StoreError::Corrupt(format!("line number: {e}")))?,
        out_trade_no: s.column_text(4)?,
        channel_txn_id: s.column_text(5)?,
        device_id: s.column_text(6)?,
        trade_at: crate::sqlite::parse_ts(&s.column_text(7)?)?,
        kind,
        out_refund_no: if kind == EntryKind::Refund { number } else { String::new() },
        amount_fen: s.column_i64(8),
        fee_mfen: s.column_i64(9),
        rate_ppm: s.column_opt_i64(10),
    })
}

/// One page of the day's paid payments after a key, in key order straight from the covering
/// index `history_day_paid` (migration 0008, no sort). Their fees are on `orders`: see
/// [`read_paid_page`].
const PAID_PAGE: &str = "SELECT merchant_id, out_trade_no, amount_fen, occurred_at FROM history \
    WHERE day = ?1 AND status = 'PAID' AND amount_fen > 0 AND (merchant_id, out_trade_no) > (?2, ?3) \
    ORDER BY merchant_id, out_trade_no LIMIT ?4";

/// The orders between a page's first and last key, in key order, at most `?5` of them.
const ORDER_FEES: &str = "SELECT merchant_id, out_trade_no, fee_fen FROM orders \
    WHERE (merchant_id, out_trade_no) >= (?1, ?2) AND (merchant_id, out_trade_no) <= (?3, ?4) \
    ORDER BY merchant_id, out_trade_no LIMIT ?5";

/// One order's fee, for what [`ORDER_FEES`]'s window did not reach.
const ORDER_FEE: &str = "SELECT fee_fen FROM orders WHERE merchant_id = ?1 AND out_trade_no = ?2";

/// Most orders scanned for one page's fees before the rest are looked up one at a time: a
/// day's order numbers are usually dense in their key range, but need not be.
const ORDER_FEES_SCAN_MAX: usize = 4 * PAGE_ROWS;

/// A page row's fee before its order is found (fees are never negative: `orders` checks it).
const FEE_UNKNOWN: i64 = -1;

/// The current row of [`PAID_PAGE`]; its fee comes later.
fn paid_of(s: &raw::Statement<'_>) -> Result<LedgerEntry, StoreError> {
    let out_trade_no = s.column_text(1)?;
    Ok(LedgerEntry {
        merchant_id: s.column_text(0)?,
        kind: EntryKind::Payment,
        number: out_trade_no.clone(),
        out_trade_no,
        amount_fen: s.column_i64(2),
        fee_fen: FEE_UNKNOWN,
        status: facepay_domain::OrderStatus::Paid,
        occurred_at: crate::sqlite::parse_ts(&s.column_text(3)?)?,
    })
}

/// A page of paid payments with their fees. The fees are joined in Rust by walking the
/// orders of the page's key range next to the page (both in key order): one range scan
/// instead of a B-tree seek per payment, which was most of the ledger side's time
/// (docs/BENCHMARKS.md). A payment with no order keeps [`FEE_UNKNOWN`] (the caller drops it,
/// as an inner join would, after paging on it).
async fn read_paid_page(
    conn: &mut sqlx::SqliteConnection,
    day: &str,
    after: &(String, String),
) -> Result<Vec<LedgerEntry>, StoreError> {
    raw::with_handle(conn, |handle| {
        let mut page = handle.prepare(PAID_PAGE)?;
        page.bind_text(1, day)?;
        page.bind_text(2, &after.0)?;
        page.bind_text(3, &after.1)?;
        page.bind_i64(4, PAGE_ROWS as i64)?;
        let mut rows = page.rows(paid_of)?;
        fees_by_range(handle, &mut rows)?;
        fees_by_key(handle, &mut rows)?;
        Ok(rows)
    })
    .await
}

/// Sets the fee of each row found in one bounded scan of the orders in the rows' key range.
fn fees_by_range(handle: &raw::Handle<'_>, rows: &mut [LedgerEntry]) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok(()) };
    let mut scan = handle.prepare(ORDER_FEES)?;
    scan.bind_text(1, &first.merchant_id)?;
    scan.bind_text(2, &first.out_trade_no)?;
    scan.bind_text(3, &last.merchant_id)?;
    scan.bind_text(4, &last.out_trade_no)?;
    scan.bind_i64(5, ORDER_FEES_SCAN_MAX as i64)?;
    let mut next = rows.iter_mut().peekable();
    while next.peek().is_some() && scan.step()? == raw::Step::Row {
        let key = (scan.column_str(0)?, scan.column_str(1)?);
        while let Some(row) = next.next_if(|r| (r.merchant_id.as_str(), r.out_trade_no.as_str()) <= key) {
            if (row.merchant_id.as_str(), row.out_trade_no.as_str()) == key {
                row.fee_fen = scan.column_i64(2);
            }
        }
    }
    Ok(())
}

/// Looks up, one at a time, the fees the range scan did not reach.
fn fees_by_key(handle: &raw::Handle<'_>, rows: &mut [LedgerEntry]) -> Result<(), StoreError> {
    let mut missing = rows.iter_mut().filter(|r| r.fee_fen == FEE_UNKNOWN).peekable();
    if missing.peek().is_none() {
        return Ok(());
    }
    let mut one = handle.prepare(ORDER_FEE)?;
    for row in missing {
        one.bind_text(1, &row.merchant_id)?;
        one.bind_text(2, &row.out_trade_no)?;
        if one.step()? == raw::Step::Row {
            row.fee_fen = one.column_i64(0);
        }
        one.reset()?;
    }
    Ok(())
}

/// The day's paid payments, a page at a time.
struct PaidPages {
    day: String,
    after: (String, String),
    page: std::collections::VecDeque<LedgerEntry>,
    done: bool,
}

impl PaidPages {
    async fn next(&mut self, conn: &mut sqlx::SqliteConnection) -> Result<Option<LedgerEntry>, ReconError> {
        // A loop: a page can be all payments without an order, and empty once they are dropped.
        while self.page.is_empty() && !self.done {
            let rows = read_paid_page(conn, &self.day, &self.after).await?;
            self.done = rows.len() < PAGE_ROWS;
            if let Some(last) = rows.last() {
                self.after = (last.merchant_id.clone(), last.out_trade_no.clone());
            }
            self.page.extend(rows.into_iter().filter(|r| r.fee_fen != FEE_UNKNOWN));
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

/// A bill line's row, its parameters in [`bind_line`]'s order.
const INSERT_LINE: &str = "INSERT INTO recon_bill_lines (import_id, merchant_id, kind, number, line_no, out_trade_no, \
    channel_txn_id, device_id, trade_at, amount_fen, fee_mfen, rate_ppm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Writes a chunk of lines with one prepared statement stepped once a line on the
/// connection's own handle (see `crate::sqlite_raw`): sqlx's multi-row INSERT copied every
/// bound value on its way to its worker thread.
async fn insert_lines(tx: &mut Transaction<'static, Sqlite>, id: Uuid, lines: &[BillLine]) -> Result<(), ReconError> {
    let id = id.to_string();
    raw::with_handle(tx, |handle| {
        let mut insert = handle.prepare(INSERT_LINE)?;
        insert.bind_text(1, &id)?;
        for l in lines {
            bind_line(&mut insert, l)?;
            insert.step()?;
            insert.reset()?;
        }
        Ok::<_, StoreError>(())
    })
    .await?;
    Ok(())
}

fn bind_line(s: &mut raw::Statement<'_>, l: &BillLine) -> Result<(), sqlx::Error> {
    let line_no = i64::try_from(l.line_no).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    s.bind_text(2, &l.merchant_id)?;
    s.bind_text(3, l.kind.code())?;
    s.bind_text(4, l.number())?;
    s.bind_i64(5, line_no)?;
    s.bind_text(6, &l.out_trade_no)?;
    s.bind_text(7, &l.channel_txn_id)?;
    s.bind_text(8, &l.device_id)?;
    s.bind_text(9, &ts(&l.trade_at))?;
    s.bind_i64(10, l.amount_fen)?;
    s.bind_i64(11, l.fee_mfen)?;
    s.bind_opt_i64(12, l.rate_ppm)
}

/// The breaks among `breaks` already recorded.
async fn known_breaks(tx: &mut Transaction<'static, Sqlite>, breaks: &[BreakRow]) -> Result<HashSet<Uuid>, ReconError> {
    let mut known = HashSet::new();
    for chunk in breaks.chunks(RECON_CHUNK) {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT break_id FROM recon_breaks WHERE break_id IN (");
        let mut ids = qb.separated(", ");
        for b in chunk {
            ids.push_bind(b.break_id.to_string());
        }
        qb.push(")");
        for r in qb.build().fetch_all(&mut **tx).await? {
            known.insert(r.uuid("break_id")?);
        }
    }
    Ok(known)
}

/// Writes a run's breaks, a multi-row INSERT a chunk at a time.
async fn insert_breaks(tx: &mut Transaction<'static, Sqlite>, breaks: &[BreakRow]) -> Result<(), ReconError> {
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
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Nothing to take: SQLite has one writer, so one importer at a time.
async fn lock_import_slot(_: &mut Transaction<'static, Sqlite>, _: &str, _: NaiveDate) -> Result<(), ReconError> {
    Ok(())
}

impl SqliteStore {
    /// Commits an import without checkpointing it on the way: a bill's pages are the bulk of
    /// the WAL, and copying them into the database on the committing call cost as long again
    /// as the commit. The commit is as durable (the WAL is synced); the checkpoint runs on a
    /// read connection, alongside what comes next (the day's reconciliation, reading).
    async fn commit_import(&self, mut tx: Transaction<'static, Sqlite>) -> Result<(), ReconError> {
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&mut *tx).await?;
        sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *tx).await?;
        let committed = tx.commit().await;
        // The writer's usual checkpoints come back whatever the commit did (a pool of one:
        // this is the same connection).
        let restored = sqlx::query(&format!("PRAGMA wal_autocheckpoint = {pages}")).execute(&self.writer).await;
        committed?;
        restored?;
        let reader = self.reader.clone();
        tokio::spawn(async move {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&reader).await {
                // The writer's next commit checkpoints instead.
                tracing::debug!(error = %e, "checkpoint after a bill import");
            }
        });
        Ok(())
    }
}

#[async_trait]
impl BillStore for SqliteStore {
    async fn send_bill_lines(&self, import_id: Uuid, tx: mpsc::Sender<Vec<BillLine>>) -> Result<(), ReconError> {
        if self.reader.options().get_max_connections() < 2 {
            return Err(ReconError::InMemoryStore);
        }
        let id = import_id.to_string();
        let mut after = (String::new(), "", String::new(), -1_i64);
        // One connection for every page: its page cache stays warm, and one memory map of
        // the file is touched instead of one per pooled connection.
        let mut conn = self.reader.acquire().await?;
        loop {
            let lines = raw::with_handle(&mut conn, |handle| {
                let mut page = handle.prepare(BILL_PAGE)?;
                page.bind_text(1, &id)?;
                page.bind_text(2, &after.0)?;
                page.bind_text(3, after.1)?;
                page.bind_text(4, &after.2)?;
                page.bind_i64(5, after.3)?;
                page.bind_i64(6, PAGE_ROWS as i64)?;
                page.rows(bill_line_of)
            })
            .await?;
            let Some(last) = lines.last() else { return Ok(()) };
            after = (last.merchant_id.clone(), last.kind.code(), last.number().to_string(), last.line_no as i64);
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
}

/// Breaks per multi-row insert (14 columns, under SQLite's parameter limit).
const RECON_CHUNK: usize = 1_000;

crate::reconcile::sql::recon_sql!(SqliteStore, db: Sqlite, read: reader, write: writer);

#[cfg(test)]
mod tests {
    use super::*;

    /// Paid orders of `day` (`B…0`, fee = i % 7), five orders of another day after each in key
    /// order (`B…1`–`B…5`), and, before them in key order, paid history rows with no order at all (`A…`, a page and more).
    const SETUP: &str = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < 18000) \
        INSERT INTO orders (merchant_id, out_trade_no, amount_fen, status, payer_id, face_code, member_quick_pay, \
        store_id, device_id, created_at, updated_at, fee_fen) \
        SELECT 'M1', printf('B%06d%d', i / 6, i % 6), 1000, 'PAID', 'p', 'f', 0, 'S', 'D', ?1, ?1, \
        CASE i % 6 WHEN 0 THEN (i / 6) % 7 ELSE 9 END FROM k";
    const HISTORY: &str = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?1) \
        INSERT INTO history (event_id, merchant_id, out_trade_no, amount_fen, status, payer_id, member_quick_pay, \
        store_id, device_id, occurred_at, day) \
        SELECT printf('%s-%d', ?2, i), 'M1', printf(?3, i), 1000, 'PAID', 'p', 0, 'S', 'D', ?4, ?5 FROM k";

    /// Migration 0013 rebuilds `recon_bill_lines`: a database with lines from before it keeps
    /// every one of them, and the new table refuses an unknown kind as the old one did.
    #[tokio::test]
    async fn bill_lines_survive_the_0013_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let (url, pool) = crate::sqlite::migrated_before(dir.path(), "0013").await;
        let import = "INSERT INTO recon_imports VALUES ('i1', 'a', '2026-03-03', 1, hex(zeroblob(32)), 'all', 'f', 2, 1, 0, 0, 'at')";
        sqlx::query(import).execute(&pool).await.unwrap();
        for (kind, n) in [("P", 2), ("R", 3)] {
            let line = "INSERT INTO recon_bill_lines VALUES ('i1', 'm', ?, 'n', ?, 'o', 't', 'd', 'at', 5, -1, NULL)";
            sqlx::query(line).bind(kind).bind(n).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let store = SqliteStore::open(&url).await.unwrap();
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT kind, line_no, fee_mfen FROM recon_bill_lines ORDER BY line_no")
                .fetch_all(&store.writer)
                .await
                .unwrap();
        assert_eq!(rows, [("P".into(), 2, -1), ("R".into(), 3, -1)]);
        let bad = "INSERT INTO recon_bill_lines VALUES ('i1', 'm', 'X', 'n', 4, 'o', 't', 'd', 'at', 5, 0, NULL)";
        let e = sqlx::query(bad).execute(&store.writer).await.expect_err("an unknown kind");
        assert!(StoreError::from(e).is_refusal());
    }

    /// The fees are joined by walking each page's key range of `orders`; where other days'
    /// orders crowd that range past the scan's cap, the rest are looked up one at a time, and
    /// payments without an order are dropped without ending the stream early.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paid_pages_carry_each_orders_fee_through_crowded_ranges_and_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("fees.db").display())).await.unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 3, 3).unwrap();
        let at = "2026-03-03T08:00:00.000000Z";
        sqlx::query(SETUP).bind(at).execute(&store.writer).await.unwrap();
        for (n, tag, key) in [(3_000, "b", "B%06d0"), (1_100, "a", "A%06d")] {
            let q = sqlx::query(HISTORY).bind(n).bind(tag).bind(key).bind(at).bind(day.to_string());
            q.execute(&store.writer).await.unwrap();
        }
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(async move { store.send_ledger_entries(day, tx).await });
        let mut got = Vec::new();
        while let Some(page) = rx.recv().await {
            got.extend(page.into_iter().map(|e| (e.number, e.fee_fen)));
        }
        reader.await.unwrap().unwrap();
        let want: Vec<(String, i64)> = (0..3_000).map(|i| (format!("B{i:06}0"), i64::from(i % 7))).collect();
        assert_eq!(got, want);
        // The window covers at most ORDER_FEES_SCAN_MAX orders: a page of 1 024 of this day's
        // spans 6 144 here, so both paths ran.
        const { assert!(6 * PAGE_ROWS > ORDER_FEES_SCAN_MAX) };
    }
}
