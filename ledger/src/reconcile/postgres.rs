//! [`BillStore`] for the production store (its [`ReconStore`](super::store::ReconStore) is the
//! SQL both stores share: `reconcile/sql.rs`): native `UUID`, `DATE`, `TIMESTAMPTZ` and `JSONB`
//! columns; keys sort with `COLLATE "C"` (bytewise, as the matcher compares them); lines go
//! in with one `UNNEST` insert per chunk.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures_core::Stream;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Transaction};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bill::BillLine;
use super::classify::{day_start, LedgerEntry};
use super::store::{bill_line_from, ledger_entry_from, BillStore, BreakRow, ReconError};
use crate::postgres::{bind_at, bind_day, bind_id, write_log, PgStore};
use crate::rows::Cells;
use crate::store::StoreError;

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

/// One importer per (account, day) at a time: the next version number is read under a lock.
async fn lock_import_slot(tx: &mut PgTx, account: &str, day: NaiveDate) -> Result<(), ReconError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("recon:{account}:{day}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl PgStore {
    /// Commits an import.
    async fn commit_import(&self, tx: PgTx) -> Result<(), ReconError> {
        tx.commit().await?;
        Ok(())
    }
}

/// The breaks among `breaks` already recorded.
async fn known_breaks(
    tx: &mut Transaction<'static, Postgres>,
    breaks: &[BreakRow],
) -> Result<HashSet<Uuid>, ReconError> {
    let ids: Vec<Uuid> = breaks.iter().map(|b| b.break_id).collect();
    let rows = sqlx::query("SELECT break_id FROM recon_breaks WHERE break_id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.iter().map(|r| r.uuid("break_id")).collect::<Result<_, _>>()?)
}

/// Writes a run's breaks in one statement, a column an array.
async fn insert_breaks(tx: &mut Transaction<'static, Postgres>, breaks: &[BreakRow]) -> Result<(), ReconError> {
    if breaks.is_empty() {
        return Ok(());
    }
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl BillStore for PgStore {
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
}

crate::reconcile::sql::recon_sql!(PgStore, db: Postgres, read: pool, write: pool);
