//! [`ReconStore`] for the production store: native `UUID`, `DATE`, `TIMESTAMPTZ` and `JSONB`
//! columns; keys sort with `COLLATE "C"` (bytewise, as the matcher compares them); lines go
//! in with one `UNNEST` insert per chunk.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures_core::Stream;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Transaction};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bill::{BillError, BillLine};
use super::classify::{day_start, Counterpart, LedgerEntry};
use super::sqlite::unique_to;
use super::store::{
    account_of, bill_line_from, break_from, counterpart_from, fresh, import_from, ledger_entry_from, resolution_from,
    run_from, BreakFilter, BreakRow, ImportOutcome, ImportRequest, ImportRow, Parsed, ReconError, ReconStore,
    ResolutionRow, RunRow,
};
use super::EntryKind;
use crate::postgres::{write_log, PgStore};
use crate::rows::Cells;
use crate::store::{NewEvent, StoreError};

type PgTx = Transaction<'static, Postgres>;

const PAGE_ROWS: usize = 1_024;

const LEDGER_ENTRIES: &str = r#"SELECT merchant_id, kind, number, out_trade_no, amount_fen, fee_fen, status, occurred_at FROM (
    SELECT h.merchant_id, 'P'::text AS kind, h.out_trade_no AS number, h.out_trade_no, h.amount_fen,
           o.fee_fen::bigint AS fee_fen, 'PAID'::text AS status, h.occurred_at
      FROM history h JOIN orders o ON o.merchant_id = h.merchant_id AND o.out_trade_no = h.out_trade_no
     WHERE h.day = $1 AND h.status = 'PAID'
    UNION ALL
    SELECT merchant_id, 'P', out_trade_no, out_trade_no, amount_fen, 0::bigint, status, created_at FROM orders
     WHERE created_at >= $2 AND created_at < $3
       AND (status IN ('DECLINED', 'REVOKED') OR (status = 'REVERSED' AND refunded_fen = 0))
    UNION ALL
    SELECT merchant_id, 'R', out_refund_no, out_trade_no, amount_fen, -fee_refund_fen, 'PAID', refunded_at
      FROM refunds WHERE refunded_at >= $2 AND refunded_at < $3
    UNION ALL
    SELECT o.merchant_id, 'V', o.out_trade_no, o.out_trade_no,
           (o.refunded_fen - COALESCE(SUM(r.amount_fen), 0))::bigint,
           (-(o.fee_refunded_fen - COALESCE(SUM(r.fee_refund_fen), 0)))::bigint, 'PAID', o.updated_at
      FROM orders o LEFT JOIN refunds r ON r.merchant_id = o.merchant_id AND r.out_trade_no = o.out_trade_no
     WHERE o.status = 'REVERSED' AND o.refunded_fen > 0 AND o.updated_at >= $2 AND o.updated_at < $3
     GROUP BY o.merchant_id, o.out_trade_no
) e WHERE amount_fen > 0 ORDER BY merchant_id COLLATE "C", kind COLLATE "C", number COLLATE "C""#;

/// The bill line of a break: the line of its run's import, by the line's key.
const BREAK_LINE: &str = "SELECT l.* FROM recon_bill_lines l JOIN recon_runs r ON r.import_id = l.import_id \
    WHERE r.run_id = $1 AND l.merchant_id = $2 AND l.kind = $3 AND l.number = $4 AND l.line_no = $5";

const BREAK_COLUMNS: &str = "SELECT b.*, EXISTS (SELECT 1 FROM recon_resolutions s WHERE s.break_id = b.break_id) \
    AS resolved FROM recon_breaks b";

const RUN_COLUMNS: &str =
    "SELECT run_id, import_id, day, started_at, finished_at, bill_lines, breaks, report::text AS report FROM recon_runs";

const CURRENT_IMPORTS: &str = "SELECT i.* FROM recon_imports i WHERE i.version = \
    (SELECT MAX(j.version) FROM recon_imports j WHERE j.account = i.account AND j.day = i.day)";

const INSERT_LINES: &str =
    "INSERT INTO recon_bill_lines (import_id, merchant_id, kind, number, line_no, out_trade_no, \
    channel_txn_id, device_id, trade_at, amount_fen, fee_mfen, rate_ppm) \
    SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], \
    $9::timestamptz[], $10::int8[], $11::int8[], $12::int8[])";

async fn send_pages<T>(
    mut rows: impl Stream<Item = Result<PgRow, sqlx::Error>> + Unpin,
    tx: mpsc::Sender<Vec<T>>,
    parse: fn(&dyn Cells) -> Result<T, StoreError>,
) -> Result<(), ReconError> {
    let mut page = Vec::with_capacity(PAGE_ROWS);
    while let Some(row) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut rows).poll_next(cx)).await {
        page.push(parse(&row?)?);
        if page.len() == PAGE_ROWS && tx.send(std::mem::take(&mut page)).await.is_err() {
            return Ok(());
        }
    }
    if !page.is_empty() {
        let _ = tx.send(page).await;
    }
    Ok(())
}

fn col<'a, U>(lines: &'a [BillLine], f: impl Fn(&'a BillLine) -> U) -> Vec<U> {
    lines.iter().map(f).collect()
}

async fn insert_lines(tx: &mut PgTx, id: Uuid, lines: &[BillLine]) -> Result<(), ReconError> {
    sqlx::query(INSERT_LINES)
        .bind(id)
        .bind(col(lines, |l| l.merchant_id.as_str()))
        .bind(col(lines, |l| l.kind.code()))
        .bind(col(lines, |l| l.number()))
        .bind(col(lines, |l| l.line_no as i64))
        .bind(col(lines, |l| l.out_trade_no.as_str()))
        .bind(col(lines, |l| l.channel_txn_id.as_str()))
        .bind(col(lines, |l| l.device_id.as_str()))
        .bind(col(lines, |l| l.trade_at))
        .bind(col(lines, |l| l.amount_fen))
        .bind(col(lines, |l| l.fee_mfen))
        .bind(col(lines, |l| l.rate_ppm))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn one_import(tx: &mut PgTx, sql: &str, a: &str, b: Option<NaiveDate>) -> Result<Option<ImportRow>, ReconError> {
    let q = sqlx::query(sql).bind(a);
    let q = match b {
        Some(day) => q.bind(day),
        None => q,
    };
    let row = q.fetch_optional(&mut **tx).await?;
    Ok(row.map(|r| import_from(&r)).transpose()?)
}

#[async_trait]
impl ReconStore for PgStore {
    async fn import(
        &self,
        req: &ImportRequest,
        rx: &mut mpsc::Receiver<Result<Parsed, BillError>>,
    ) -> Result<ImportOutcome, ReconError> {
        let import_id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        let digest = loop {
            match rx.recv().await {
                Some(Ok(Parsed::Lines(lines))) => insert_lines(&mut tx, import_id, &lines).await?,
                Some(Ok(Parsed::Done(d))) => break d,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ReconError::Invalid("the parser stopped before the end of the bill".into())),
            }
        };
        let by_hash = "SELECT * FROM recon_imports WHERE content_sha256 = $1";
        if let Some(existing) = one_import(&mut tx, by_hash, &digest.content_sha256, None).await? {
            tx.rollback().await?;
            return Ok(ImportOutcome { import: existing, already_imported: true, supersedes: None });
        }
        let account = account_of(&digest, req);
        // One importer per (account, day) at a time: the next version number is read under a lock.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("recon:{account}:{}", req.day))
            .execute(&mut *tx)
            .await?;
        let latest = "SELECT * FROM recon_imports WHERE account = $1 AND day = $2 ORDER BY version DESC LIMIT 1";
        let prev = one_import(&mut tx, latest, &account, Some(req.day)).await?;
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
             settle_fen, refund_fen, fee_mfen, imported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(import_id)
        .bind(&row.account)
        .bind(row.day)
        .bind(row.version)
        .bind(&row.content_sha256)
        .bind(&row.layout)
        .bind(&row.file_name)
        .bind(row.line_count)
        .bind(row.settle_fen)
        .bind(row.refund_fen)
        .bind(row.fee_mfen)
        .bind(row.imported_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ImportOutcome { import: row, already_imported: false, supersedes: prev.map(|p| p.import_id) })
    }

    async fn import_row(&self, import_id: Uuid) -> Result<Option<ImportRow>, ReconError> {
        let row = sqlx::query("SELECT * FROM recon_imports WHERE import_id = $1")
            .bind(import_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| import_from(&r)).transpose()?)
    }

    async fn imports(&self, limit: u32) -> Result<Vec<ImportRow>, ReconError> {
        let sql = format!("{CURRENT_IMPORTS} ORDER BY i.day DESC, i.account LIMIT $1");
        let rows = sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| import_from(r)).collect::<Result<_, _>>()?)
    }

    async fn send_bill_lines(&self, import_id: Uuid, tx: mpsc::Sender<Vec<BillLine>>) -> Result<(), ReconError> {
        let rows = sqlx::query(
            "SELECT * FROM recon_bill_lines WHERE import_id = $1 ORDER BY merchant_id, kind, number, line_no",
        )
        .bind(import_id)
        .fetch(&self.pool);
        send_pages(rows, tx, bill_line_from).await
    }

    async fn send_ledger_entries(&self, day: NaiveDate, tx: mpsc::Sender<Vec<LedgerEntry>>) -> Result<(), ReconError> {
        let (from, to): (DateTime<Utc>, DateTime<Utc>) = (day_start(day), day_start(day + Duration::days(1)));
        let rows = sqlx::query(LEDGER_ENTRIES).bind(day).bind(from).bind(to).fetch(&self.pool);
        send_pages(rows, tx, ledger_entry_from).await
    }

    async fn ledger_counterpart(&self, key: (&str, EntryKind, &str)) -> Result<Option<Counterpart>, ReconError> {
        let sql = match key.1 {
            EntryKind::Payment => {
                "SELECT occurred_at AS at, amount_fen FROM history WHERE merchant_id = $1 AND out_trade_no = $2 \
                 AND status = 'PAID' LIMIT 1"
            }
            EntryKind::Refund => {
                "SELECT refunded_at AS at, amount_fen FROM refunds WHERE merchant_id = $1 AND out_refund_no = $2"
            }
            EntryKind::Reversal => {
                "SELECT updated_at AS at, refunded_fen AS amount_fen FROM orders WHERE merchant_id = $1 \
                 AND out_trade_no = $2 AND status = 'REVERSED' AND refunded_fen > 0"
            }
        };
        let row = sqlx::query(sql).bind(key.0).bind(key.2).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| counterpart_from(&r, None)).transpose()?)
    }

    async fn bill_counterpart(
        &self,
        day: NaiveDate,
        key: (&str, EntryKind, &str),
    ) -> Result<Option<Counterpart>, ReconError> {
        let sql = format!(
            "SELECT l.trade_at AS at, l.amount_fen FROM recon_bill_lines l WHERE l.import_id IN \
             (SELECT import_id FROM ({CURRENT_IMPORTS} AND i.day = $1) c) AND l.merchant_id = $2 AND l.kind = $3 \
             AND l.number = $4 LIMIT 1"
        );
        let row =
            sqlx::query(&sql).bind(day).bind(key.0).bind(key.1.code()).bind(key.2).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| counterpart_from(&r, Some(day))).transpose()?)
    }

    async fn record_run(
        &self,
        run: &RunRow,
        breaks: &[BreakRow],
        events: &[NewEvent],
    ) -> Result<HashSet<Uuid>, ReconError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = breaks.iter().map(|b| b.break_id).collect();
        let known: HashSet<Uuid> = sqlx::query("SELECT break_id FROM recon_breaks WHERE break_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.uuid("break_id"))
            .collect::<Result<_, _>>()?;
        let (breaks, events) = fresh(breaks, events, &known);
        let breaks = breaks.as_slice();
        write_log(&mut tx, &events).await?;
        let report = serde_json::to_string(&run.report).expect("a report serialises");
        sqlx::query(
            "INSERT INTO recon_runs (run_id, import_id, day, started_at, finished_at, bill_lines, breaks, report) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
        )
        .bind(run.run_id)
        .bind(run.import_id)
        .bind(run.day)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(run.bill_lines)
        .bind(run.breaks)
        .bind(report)
        .execute(&mut *tx)
        .await?;
        if !breaks.is_empty() {
            let c = |f: fn(&BreakRow) -> String| breaks.iter().map(f).collect::<Vec<String>>();
            sqlx::query(
                "INSERT INTO recon_breaks (break_id, run_id, day, merchant_id, class, kind, number, line_no, \
                 bill_amount_fen, ledger_amount_fen, detail, event_id, recorded_at, ledger_number) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::date[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::uuid[], $13::timestamptz[], \
                 $14::text[])",
            )
            .bind(breaks.iter().map(|b| b.break_id).collect::<Vec<_>>())
            .bind(breaks.iter().map(|b| b.run_id).collect::<Vec<_>>())
            .bind(breaks.iter().map(|b| b.day).collect::<Vec<_>>())
            .bind(c(|b| b.merchant_id.clone()))
            .bind(c(|b| b.class.as_str().to_string()))
            .bind(c(|b| b.kind.code().to_string()))
            .bind(c(|b| b.number.clone()))
            .bind(breaks.iter().map(|b| b.line_no).collect::<Vec<_>>())
            .bind(breaks.iter().map(|b| b.bill_amount_fen).collect::<Vec<_>>())
            .bind(breaks.iter().map(|b| b.ledger_amount_fen).collect::<Vec<_>>())
            .bind(c(|b| b.detail.clone()))
            .bind(breaks.iter().map(|b| b.event_id).collect::<Vec<_>>())
            .bind(breaks.iter().map(|b| b.recorded_at).collect::<Vec<_>>())
            .bind(breaks.iter().map(|b| b.ledger_number.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(known)
    }

    async fn runs(&self, limit: u32) -> Result<Vec<RunRow>, ReconError> {
        let sql = format!("{RUN_COLUMNS} ORDER BY started_at DESC LIMIT $1");
        let rows = sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| run_from(r)).collect::<Result<_, _>>()?)
    }

    async fn breaks(&self, f: &BreakFilter) -> Result<Vec<BreakRow>, ReconError> {
        let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT * FROM ({BREAK_COLUMNS}) b WHERE true"));
        if let Some(run) = f.run_id {
            qb.push(" AND run_id = ").push_bind(run);
        }
        if let Some(day) = f.day {
            qb.push(" AND day = ").push_bind(day);
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
            qb.push(" AND break_id > ").push_bind(after);
        }
        qb.push(" ORDER BY break_id LIMIT ").push_bind(i64::from(f.limit));
        let rows = qb.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| break_from(r)).collect::<Result<_, _>>()?)
    }

    async fn break_row(&self, break_id: Uuid) -> Result<Option<BreakRow>, ReconError> {
        let sql = format!("{BREAK_COLUMNS} WHERE b.break_id = $1");
        let row = sqlx::query(&sql).bind(break_id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| break_from(&r)).transpose()?)
    }

    async fn resolve(&self, r: &ResolutionRow, event: &NewEvent) -> Result<(), ReconError> {
        let mut tx = self.pool.begin().await?;
        write_log(&mut tx, std::slice::from_ref(event)).await.map_err(|e| unique_to(e, r.break_id))?;
        let done = sqlx::query(
            "INSERT INTO recon_resolutions (break_id, action, resolved_by, reason, resolved_at, event_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(r.break_id)
        .bind(r.action.as_str())
        .bind(&r.resolved_by)
        .bind(&r.reason)
        .bind(r.resolved_at)
        .bind(r.event_id)
        .execute(&mut *tx)
        .await;
        done.map_err(|e| unique_to(StoreError::Database(e), r.break_id))?;
        tx.commit().await?;
        Ok(())
    }

    async fn resolutions(&self, limit: u32) -> Result<Vec<ResolutionRow>, ReconError> {
        let rows = sqlx::query("SELECT * FROM recon_resolutions ORDER BY resolved_at DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| resolution_from(r)).collect::<Result<_, _>>()?)
    }

    async fn break_line(&self, b: &BreakRow) -> Result<Option<BillLine>, ReconError> {
        let Some(line_no) = b.line_no else { return Ok(None) };
        let row = sqlx::query(BREAK_LINE)
            .bind(b.run_id)
            .bind(&b.merchant_id)
            .bind(b.kind.code())
            .bind(&b.number)
            .bind(line_no)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| bill_line_from(&r)).transpose()?)
    }

    fn ledger_store(&self) -> Arc<dyn crate::LedgerStore> {
        Arc::new(self.clone())
    }
}
