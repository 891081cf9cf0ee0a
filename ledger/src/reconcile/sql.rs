//! The reconciliation SQL both stores run, written once: [`recon_sql!`] implements
//! [`ReconStore`](super::store::ReconStore) for a backend over its
//! [`BillStore`](super::store::BillStore), which keeps what each database does its own way.
//! The seam is the ledger stores' (`crate::store_sql`): the pools `read` and `write`, the
//! sqlx database `db`, the calling module's `bind_at`, `bind_day`, `bind_id`, `write_log`,
//! `insert_lines` (a bill's lines in bulk), `known_breaks` and `insert_breaks` (a run's breaks
//! looked up and written in bulk), `lock_import_slot` (one importer per account and day), and
//! the store's `commit_import`. SQL text uses `$n` placeholders.

use uuid::Uuid;

use super::store::{BreakFilter, ReconError};
use crate::store::StoreError;

/// Each break with whether it has a resolution.
macro_rules! break_columns {
    () => {
        "SELECT b.*, EXISTS (SELECT 1 FROM recon_resolutions s WHERE s.break_id = b.break_id) AS resolved \
         FROM recon_breaks b"
    };
}

/// See [`break_columns!`].
pub(crate) const BREAK_COLUMNS: &str = break_columns!();

/// The runs, each report as JSON text.
pub(crate) const RUN_COLUMNS: &str = "SELECT run_id, import_id, day, started_at, finished_at, bill_lines, breaks, \
    CAST(report AS TEXT) AS report FROM recon_runs";

/// A bill's kind of document, from its layout: the ALL bill (and its older legacy layout),
/// the SUCCESS bill, the REFUND bill, another channel's CSV. A version supersedes only the
/// versions of its own kind: a day may have an ALL bill, or a SUCCESS and a REFUND bill.
macro_rules! document_kind {
    ($layout:literal) => {
        concat!("(CASE WHEN ", $layout, " = 'legacy' THEN 'all' ELSE ", $layout, " END)")
    };
}

/// The current imports: of each (account, day, kind of document), its highest version not
/// refused. An import is refused while it has a refusal (its run found more breaks than a run
/// may record) and no run that completed.
macro_rules! current_imports {
    () => {
        concat!(
            "SELECT i.* FROM recon_imports i WHERE i.version = (SELECT MAX(j.version) FROM recon_imports j \
             WHERE j.account = i.account AND j.day = i.day AND ",
            document_kind!("j.layout"),
            " = ",
            document_kind!("i.layout"),
            " AND NOT (EXISTS (SELECT 1 FROM recon_import_refusals f WHERE f.import_id = j.import_id) \
             AND NOT EXISTS (SELECT 1 FROM recon_runs r WHERE r.import_id = j.import_id)))"
        )
    };
}

/// The current imports, newest day first, at most `$1`.
pub(crate) const CURRENT_IMPORTS_PAGE: &str = concat!(current_imports!(), " ORDER BY i.day DESC, i.account LIMIT $1");

/// One current import of day `$1`, if the day has any.
pub(crate) const A_CURRENT_BILL_OF_DAY: &str =
    concat!("SELECT c.import_id FROM (", current_imports!(), ") c WHERE c.day = $1 LIMIT 1");

/// The line with key (`$2`, `$3`, `$4`) in a current import of day `$1`: its time and amount.
pub(crate) const BILL_COUNTERPART: &str = concat!(
    "SELECT l.trade_at AS at, l.amount_fen FROM recon_bill_lines l WHERE l.import_id IN (SELECT import_id FROM (",
    current_imports!(),
    " AND i.day = $1) c) AND l.merchant_id = $2 AND l.kind = $3 AND l.number = $4 LIMIT 1"
);

/// The current import of an account, day and kind of document (`$1`, `$2`, `$3`: a layout).
pub(crate) const CURRENT_IMPORT_OF: &str = concat!(
    current_imports!(),
    " AND i.account = $1 AND i.day = $2 AND ",
    document_kind!("i.layout"),
    " = ",
    document_kind!("$3")
);

/// The unresolved breaks of the versions before `$4` of an account, day and kind of document
/// (`$1`, `$2`, `$3`: a layout), at most `$5`.
pub(crate) const SUPERSEDED_OPEN_BREAKS: &str = concat!(
    "SELECT x.* FROM (",
    break_columns!(),
    ") x JOIN recon_runs r ON r.run_id = x.run_id JOIN recon_imports i ON i.import_id = r.import_id \
     WHERE NOT x.resolved AND i.account = $1 AND i.day = $2 AND i.version < $4 AND ",
    document_kind!("i.layout"),
    " = ",
    document_kind!("$3"),
    " ORDER BY x.break_id LIMIT $5"
);

/// The bill line of a break: the line of its run's import, by the line's key.
pub(crate) const BREAK_LINE: &str =
    "SELECT l.* FROM recon_bill_lines l JOIN recon_runs r ON r.import_id = l.import_id \
    WHERE r.run_id = $1 AND l.merchant_id = $2 AND l.kind = $3 AND l.number = $4 AND l.line_no = $5";

/// Breaks under `f`, in id order: only the filters `f` sets.
pub(crate) fn breaks_sql(f: &BreakFilter) -> String {
    let mut sql = format!("SELECT * FROM ({BREAK_COLUMNS}) b WHERE 1 = 1");
    let mut n = 0;
    let mut and = |column: &str, op: &str| {
        n += 1;
        sql.push_str(&format!(" AND {column} {op} ${n}"));
    };
    if f.run_id.is_some() {
        and("run_id", "=");
    }
    if f.day.is_some() {
        and("day", "=");
    }
    if f.class.is_some() {
        and("class", "=");
    }
    if f.merchant_id.is_some() {
        and("merchant_id", "=");
    }
    if f.after.is_some() {
        and("break_id", ">");
    }
    if f.unresolved {
        sql.push_str(" AND NOT resolved");
    }
    sql.push_str(&format!(" ORDER BY break_id LIMIT ${}", n + 1));
    sql
}

/// A unique violation while resolving means a resolution (or its event) is already there.
pub(crate) fn unique_to(e: StoreError, break_id: Uuid) -> ReconError {
    match &e {
        StoreError::Database(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            ReconError::AlreadyResolved(break_id)
        }
        _ => ReconError::Store(e),
    }
}

/// Implements [`ReconStore`](super::store::ReconStore) for `$store` (see the module's seam).
macro_rules! recon_sql {
    ($store:ty, db: $db:ty, read: $read:ident, write: $write:ident) => {
        /// Writes the bill's lines as the parser sends them; the bill's digest at its end.
        async fn receive_lines(
            tx: &mut sqlx::Transaction<'static, $db>,
            import_id: uuid::Uuid,
            rx: &mut tokio::sync::mpsc::Receiver<
                Result<$crate::reconcile::store::Parsed, $crate::reconcile::bill::BillError>,
            >,
        ) -> Result<$crate::reconcile::bill::BillDigest, $crate::reconcile::store::ReconError> {
            use $crate::reconcile::store::{Parsed, ReconError};
            loop {
                match rx.recv().await {
                    Some(Ok(Parsed::Lines(lines))) => insert_lines(tx, import_id, &lines).await?,
                    Some(Ok(Parsed::Done(d))) => return Ok(d),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(ReconError::Invalid("the parser stopped before the end of the bill".into())),
                }
            }
        }

        /// The earlier import of the same file (the same content), if there is one: for the
        /// same day only.
        async fn same_file(
            tx: &mut sqlx::Transaction<'static, $db>,
            req: &$crate::reconcile::store::ImportRequest,
            digest: &$crate::reconcile::bill::BillDigest,
        ) -> Result<Option<$crate::reconcile::store::ImportOutcome>, $crate::reconcile::store::ReconError> {
            let by_hash = sqlx::query("SELECT * FROM recon_imports WHERE content_sha256 = $1")
                .bind(&digest.content_sha256)
                .fetch_optional(&mut **tx)
                .await?;
            let Some(existing) = by_hash.map(|r| $crate::reconcile::store::import_from(&r)).transpose()? else {
                return Ok(None);
            };
            if existing.day != req.day {
                return Err($crate::reconcile::store::ReconError::Invalid(format!(
                    "this file was imported as the bill of {} (import {}), not of {}",
                    existing.day, existing.import_id, req.day
                )));
            }
            Ok(Some($crate::reconcile::store::ImportOutcome {
                import: existing,
                already_imported: true,
                supersedes: None,
            }))
        }

        /// After the bill's lines: the import row (the next version of its account and day,
        /// superseding the current one), or the earlier import of the same file.
        async fn import_row_of(
            tx: &mut sqlx::Transaction<'static, $db>,
            req: &$crate::reconcile::store::ImportRequest,
            import_id: uuid::Uuid,
            digest: &$crate::reconcile::bill::BillDigest,
        ) -> Result<$crate::reconcile::store::ImportOutcome, $crate::reconcile::store::ReconError> {
            use $crate::reconcile::store::{import_from, ImportOutcome, ImportRow};
            if let Some(existing) = same_file(tx, req, digest).await? {
                return Ok(existing);
            }
            let account = $crate::reconcile::store::account_of(digest, req);
            lock_import_slot(tx, &account, req.day).await?;
            let current = sqlx::query($crate::reconcile::sql::CURRENT_IMPORT_OF)
                .bind(&account)
                .bind(bind_day(&req.day))
                .bind(digest.layout.as_str())
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| $crate::rows::Cells::uuid(&r, "import_id"))
                .transpose()?;
            let prev = sqlx::query(
                "SELECT * FROM recon_imports WHERE account = $1 AND day = $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(&account)
            .bind(bind_day(&req.day))
            .fetch_optional(&mut **tx)
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
                "INSERT INTO recon_imports (import_id, account, day, version, content_sha256, layout, file_name, \
                 line_count, settle_fen, refund_fen, fee_mfen, imported_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(bind_id(&import_id))
            .bind(&row.account)
            .bind(bind_day(&row.day))
            .bind(row.version)
            .bind(&row.content_sha256)
            .bind(&row.layout)
            .bind(&row.file_name)
            .bind(row.line_count)
            .bind(row.settle_fen)
            .bind(row.refund_fen)
            .bind(row.fee_mfen)
            .bind(bind_at(&row.imported_at))
            .execute(&mut **tx)
            .await?;
            Ok(ImportOutcome { import: row, already_imported: false, supersedes: current })
        }

        #[async_trait::async_trait]
        impl $crate::reconcile::store::ReconStore for $store {
            async fn has_current_bill(
                &self,
                day: chrono::NaiveDate,
            ) -> Result<bool, $crate::reconcile::store::ReconError> {
                let sql = $crate::reconcile::sql::A_CURRENT_BILL_OF_DAY;
                Ok(sqlx::query(sql).bind(bind_day(&day)).fetch_optional(&self.$read).await?.is_some())
            }

            async fn superseded_open_breaks(
                &self,
                import: &$crate::reconcile::store::ImportRow,
                limit: u32,
            ) -> Result<Vec<$crate::reconcile::store::BreakRow>, $crate::reconcile::store::ReconError> {
                let rows = sqlx::query($crate::reconcile::sql::SUPERSEDED_OPEN_BREAKS)
                    .bind(&import.account)
                    .bind(bind_day(&import.day))
                    .bind(&import.layout)
                    .bind(import.version)
                    .bind(i64::from(limit))
                    .fetch_all(&self.$read)
                    .await?;
                Ok(rows.iter().map(|r| $crate::reconcile::store::break_from(r)).collect::<Result<_, _>>()?)
            }

            async fn refuse_import(
                &self,
                import_id: uuid::Uuid,
                reason: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::reconcile::store::ReconError> {
                let reason: String = reason.chars().take(facepay_domain::limits::RECON_NOTE_LEN_MAX).collect();
                sqlx::query(
                    "INSERT INTO recon_import_refusals (import_id, reason, refused_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (import_id) DO NOTHING",
                )
                .bind(bind_id(&import_id))
                .bind(reason)
                .bind(bind_at(&at))
                .execute(&self.$write)
                .await?;
                Ok(())
            }

            async fn record_run(
                &self,
                run: &$crate::reconcile::store::RunRow,
                breaks: &[$crate::reconcile::store::BreakRow],
                events: &[$crate::store::NewEvent],
            ) -> Result<std::collections::HashSet<uuid::Uuid>, $crate::reconcile::store::ReconError> {
                let mut tx = self.begin_write().await?;
                let known = known_breaks(&mut tx, breaks).await?;
                let (breaks, events) = $crate::reconcile::store::fresh(breaks, events, &known);
                write_log(&mut tx, &events).await?;
                sqlx::query(
                    "INSERT INTO recon_runs (run_id, import_id, day, started_at, finished_at, bill_lines, breaks, \
                     report) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(bind_id(&run.run_id))
                .bind(bind_id(&run.import_id))
                .bind(bind_day(&run.day))
                .bind(bind_at(&run.started_at))
                .bind(bind_at(&run.finished_at))
                .bind(run.bill_lines)
                .bind(run.breaks)
                .bind(sqlx::types::Json(&run.report))
                .execute(&mut *tx)
                .await?;
                insert_breaks(&mut tx, &breaks).await?;
                tx.commit().await?;
                Ok(known)
            }

            async fn import(
                &self,
                req: &$crate::reconcile::store::ImportRequest,
                rx: &mut tokio::sync::mpsc::Receiver<
                    Result<$crate::reconcile::store::Parsed, $crate::reconcile::bill::BillError>,
                >,
            ) -> Result<$crate::reconcile::store::ImportOutcome, $crate::reconcile::store::ReconError> {
                let import_id = uuid::Uuid::new_v4();
                let mut tx = self.begin_write().await?;
                let digest = receive_lines(&mut tx, import_id, rx).await?;
                let outcome = import_row_of(&mut tx, req, import_id, &digest).await?;
                if outcome.already_imported {
                    tx.rollback().await?;
                } else {
                    self.commit_import(tx).await?;
                }
                Ok(outcome)
            }

            async fn import_row(
                &self,
                import_id: uuid::Uuid,
            ) -> Result<Option<$crate::reconcile::store::ImportRow>, $crate::reconcile::store::ReconError> {
                let row = sqlx::query("SELECT * FROM recon_imports WHERE import_id = $1")
                    .bind(bind_id(&import_id))
                    .fetch_optional(&self.$read)
                    .await?;
                Ok(row.map(|r| $crate::reconcile::store::import_from(&r)).transpose()?)
            }

            async fn imports(
                &self,
                limit: u32,
            ) -> Result<Vec<$crate::reconcile::store::ImportRow>, $crate::reconcile::store::ReconError> {
                let sql = $crate::reconcile::sql::CURRENT_IMPORTS_PAGE;
                let rows = sqlx::query(sql).bind(i64::from(limit)).fetch_all(&self.$read).await?;
                Ok(rows.iter().map(|r| $crate::reconcile::store::import_from(r)).collect::<Result<_, _>>()?)
            }

            async fn ledger_counterpart(
                &self,
                key: (&str, $crate::reconcile::EntryKind, &str),
            ) -> Result<Option<$crate::reconcile::classify::Counterpart>, $crate::reconcile::store::ReconError> {
                use $crate::reconcile::EntryKind;
                let sql = match key.1 {
                    EntryKind::Payment => {
                        "SELECT occurred_at AS at, amount_fen FROM history WHERE merchant_id = $1 \
                         AND out_trade_no = $2 AND status = 'PAID' LIMIT 1"
                    }
                    EntryKind::Refund => {
                        "SELECT refunded_at AS at, amount_fen FROM refunds WHERE merchant_id = $1 \
                         AND out_refund_no = $2"
                    }
                    EntryKind::Reversal => {
                        "SELECT updated_at AS at, refunded_fen AS amount_fen FROM orders WHERE merchant_id = $1 \
                         AND out_trade_no = $2 AND status = 'REVERSED' AND refunded_fen > 0"
                    }
                };
                let row = sqlx::query(sql).bind(key.0).bind(key.2).fetch_optional(&self.$read).await?;
                Ok(row.map(|r| $crate::reconcile::store::counterpart_from(&r, None)).transpose()?)
            }

            async fn bill_counterpart(
                &self,
                day: chrono::NaiveDate,
                key: (&str, $crate::reconcile::EntryKind, &str),
            ) -> Result<Option<$crate::reconcile::classify::Counterpart>, $crate::reconcile::store::ReconError> {
                let row = sqlx::query($crate::reconcile::sql::BILL_COUNTERPART)
                    .bind(bind_day(&day))
                    .bind(key.0)
                    .bind(key.1.code())
                    .bind(key.2)
                    .fetch_optional(&self.$read)
                    .await?;
                Ok(row.map(|r| $crate::reconcile::store::counterpart_from(&r, Some(day))).transpose()?)
            }

            async fn runs(
                &self,
                limit: u32,
            ) -> Result<Vec<$crate::reconcile::store::RunRow>, $crate::reconcile::store::ReconError> {
                let sql = format!("{} ORDER BY started_at DESC LIMIT $1", $crate::reconcile::sql::RUN_COLUMNS);
                let rows = sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.$read).await?;
                Ok(rows.iter().map(|r| $crate::reconcile::store::run_from(r)).collect::<Result<_, _>>()?)
            }

            async fn breaks(
                &self,
                f: &$crate::reconcile::store::BreakFilter,
            ) -> Result<Vec<$crate::reconcile::store::BreakRow>, $crate::reconcile::store::ReconError> {
                let sql = $crate::reconcile::sql::breaks_sql(f);
                let mut q = sqlx::query(&sql);
                if let Some(run) = f.run_id {
                    q = q.bind(bind_id(&run));
                }
                if let Some(day) = f.day {
                    q = q.bind(bind_day(&day));
                }
                if let Some(class) = f.class {
                    q = q.bind(class.as_str());
                }
                if let Some(m) = &f.merchant_id {
                    q = q.bind(m.as_str());
                }
                if let Some(after) = f.after {
                    q = q.bind(bind_id(&after));
                }
                let rows = q.bind(i64::from(f.limit)).fetch_all(&self.$read).await?;
                Ok(rows.iter().map(|r| $crate::reconcile::store::break_from(r)).collect::<Result<_, _>>()?)
            }

            async fn break_row(
                &self,
                break_id: uuid::Uuid,
            ) -> Result<Option<$crate::reconcile::store::BreakRow>, $crate::reconcile::store::ReconError> {
                let sql = format!("{} WHERE b.break_id = $1", $crate::reconcile::sql::BREAK_COLUMNS);
                let row = sqlx::query(&sql).bind(bind_id(&break_id)).fetch_optional(&self.$write).await?;
                Ok(row.map(|r| $crate::reconcile::store::break_from(&r)).transpose()?)
            }

            async fn resolve(
                &self,
                r: &$crate::reconcile::store::ResolutionRow,
                event: &$crate::store::NewEvent,
            ) -> Result<(), $crate::reconcile::store::ReconError> {
                use $crate::reconcile::sql::unique_to;
                let mut tx = self.begin_write().await?;
                write_log(&mut tx, std::slice::from_ref(event)).await.map_err(|e| unique_to(e, r.break_id))?;
                let done = sqlx::query(
                    "INSERT INTO recon_resolutions (break_id, action, resolved_by, reason, resolved_at, event_id) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(bind_id(&r.break_id))
                .bind(r.action.as_str())
                .bind(&r.resolved_by)
                .bind(&r.reason)
                .bind(bind_at(&r.resolved_at))
                .bind(bind_id(&r.event_id))
                .execute(&mut *tx)
                .await;
                done.map_err(|e| unique_to($crate::StoreError::Database(e), r.break_id))?;
                tx.commit().await?;
                Ok(())
            }

            async fn resolutions(
                &self,
                limit: u32,
            ) -> Result<Vec<$crate::reconcile::store::ResolutionRow>, $crate::reconcile::store::ReconError> {
                let rows = sqlx::query("SELECT * FROM recon_resolutions ORDER BY resolved_at DESC LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.$read)
                    .await?;
                Ok(rows.iter().map(|r| $crate::reconcile::store::resolution_from(r)).collect::<Result<_, _>>()?)
            }

            async fn break_line(
                &self,
                b: &$crate::reconcile::store::BreakRow,
            ) -> Result<Option<$crate::reconcile::bill::BillLine>, $crate::reconcile::store::ReconError> {
                let Some(line_no) = b.line_no else { return Ok(None) };
                let row = sqlx::query($crate::reconcile::sql::BREAK_LINE)
                    .bind(bind_id(&b.run_id))
                    .bind(&b.merchant_id)
                    .bind(b.kind.code())
                    .bind(&b.number)
                    .bind(line_no)
                    .fetch_optional(&self.$write)
                    .await?;
                Ok(row.map(|r| $crate::reconcile::store::bill_line_from(&r)).transpose()?)
            }

            fn ledger_store(&self) -> std::sync::Arc<dyn $crate::LedgerStore> {
                std::sync::Arc::new(self.clone())
            }
        }
    };
}

pub(crate) use recon_sql;
