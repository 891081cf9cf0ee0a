//! The reconciliation routes' answers: the engine's rows with their money also as decimal
//! strings of CNY (as every other route serves money), fen kept beside them for finance's
//! tools (their schemas in the OpenAPI document are these types'); the engine's own types stay
//! as stored.

use std::collections::BTreeMap;

use facepay_domain::money::fen_to_string;
use facepay_ledger::reconcile::classify::{Class, ClassSums, Report};
use facepay_ledger::reconcile::store::{BreakRow, ImportOutcome, ImportRow, RunRow};
use serde::Serialize;
use uuid::Uuid;

use facepay_ledger::reconcile::store::ReconcileReport;

/// Milli-fen (the bill's 5-decimal fees) as a decimal string of CNY with 5 places.
pub fn mfen_to_string(mfen: i64) -> String {
    format!("{:.5}", rust_decimal::Decimal::new(mfen, 5))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportView {
    #[serde(flatten)]
    pub row: ImportRow,
    pub settle: String,
    pub refund: String,
    pub fee: String,
}

impl From<ImportRow> for ImportView {
    fn from(row: ImportRow) -> Self {
        let (settle, refund, fee) =
            (fen_to_string(row.settle_fen), fen_to_string(row.refund_fen), mfen_to_string(row.fee_mfen));
        Self { row, settle, refund, fee }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportOutcomeView {
    pub import: ImportView,
    pub already_imported: bool,
    pub supersedes: Option<Uuid>,
}

impl From<ImportOutcome> for ImportOutcomeView {
    fn from(o: ImportOutcome) -> Self {
        Self { import: o.import.into(), already_imported: o.already_imported, supersedes: o.supersedes }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClassSumsView {
    #[serde(flatten)]
    pub sums: ClassSums,
    pub bill: String,
    pub ledger: String,
}

fn sums_view(by_class: &BTreeMap<Class, ClassSums>) -> BTreeMap<Class, ClassSumsView> {
    let view = |s: &ClassSums| ClassSumsView {
        sums: *s,
        bill: fen_to_string(s.bill_fen),
        ledger: fen_to_string(s.ledger_fen),
    };
    by_class.iter().map(|(c, s)| (*c, view(s))).collect()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportView {
    pub bill_lines: u64,
    pub ledger_entries: u64,
    pub breaks: u64,
    pub by_txn_id: u64,
    pub totals: BTreeMap<Class, ClassSumsView>,
    pub merchants: BTreeMap<String, BTreeMap<Class, ClassSumsView>>,
}

impl From<&Report> for ReportView {
    fn from(r: &Report) -> Self {
        Self {
            bill_lines: r.bill_lines,
            ledger_entries: r.ledger_entries,
            breaks: r.breaks,
            by_txn_id: r.by_txn_id,
            totals: sums_view(&r.totals),
            merchants: r.merchants.iter().map(|(m, s)| (m.clone(), sums_view(s))).collect(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub run_id: Uuid,
    pub import_id: Uuid,
    pub day: chrono::NaiveDate,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub bill_lines: i64,
    pub breaks: i64,
    pub report: ReportView,
}

impl From<RunRow> for RunView {
    fn from(r: RunRow) -> Self {
        Self {
            run_id: r.run_id,
            import_id: r.import_id,
            day: r.day,
            started_at: r.started_at,
            finished_at: r.finished_at,
            bill_lines: r.bill_lines,
            breaks: r.breaks,
            report: (&r.report).into(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BreakView {
    #[serde(flatten)]
    pub row: BreakRow,
    pub bill_amount: Option<String>,
    pub ledger_amount: Option<String>,
}

impl From<BreakRow> for BreakView {
    fn from(row: BreakRow) -> Self {
        let (bill_amount, ledger_amount) =
            (row.bill_amount_fen.map(fen_to_string), row.ledger_amount_fen.map(fen_to_string));
        Self { row, bill_amount, ledger_amount }
    }
}

/// `201` to a bill upload: the import, its run and the run's breaks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReconcileView {
    pub import: ImportOutcomeView,
    pub run: RunView,
    pub breaks: Vec<BreakView>,
}

impl From<ReconcileReport> for ReconcileView {
    fn from(r: ReconcileReport) -> Self {
        Self { import: r.import.into(), run: r.run.into(), breaks: r.breaks.into_iter().map(Into::into).collect() }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fees_keep_their_five_places_and_sign() {
        assert_eq!(super::mfen_to_string(32_000), "0.32000");
        assert_eq!(super::mfen_to_string(-27_000), "-0.27000");
        assert_eq!(super::mfen_to_string(5_000), "0.05000");
        assert_eq!(super::mfen_to_string(1), "0.00001");
    }
}
