//! CSV exports, streamed: a day of a merchant's transactions, and breaks. Each is read page by
//! page ([`PAGE_LIMIT_MAX`] rows a query, by cursor, through the API's own page functions and
//! their checks), and written as it is read, so a day of a million rows holds one page in
//! memory. A store failure midway aborts the answer (the download fails) rather than ending
//! it short as if complete.

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use facepay_domain::limits::PAGE_LIMIT_MAX;
use futures_util::stream::{self, StreamExt};

use super::page::{breaks_filters, history_filters};
use super::{Console, ConsoleError};
use crate::auth::{FinanceOnly, MerchantOrFinance};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::http::{history_page, HistoryItem, HistoryQuery};
use crate::page::Page;
use crate::recon_view::BreakView;
use crate::reconcile::{breaks_page, BreaksQuery};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/merchants/{merchant}/transactions.csv", get(transactions_csv))
        .route("/finance/breaks.csv", get(breaks_csv))
}

const TRANSACTIONS_HEADER: &str =
    "occurred_at,day,out_trade_no,amount,status,reason,payer_id,store_id,device_id,member_quick_pay\n";
const BREAKS_HEADER: &str =
    "break_id,run_id,day,merchant_id,class,kind,number,ledger_number,bill_line,bill_amount,ledger_amount,detail,resolved\n";

/// `GET /console/merchants/{m}/transactions.csv?date=&status=&store_id=&device_id=`: every row of the filter.
async fn transactions_csv(
    State(st): State<AppState>,
    c: Console,
    Path(merchant): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ConsoleError> {
    let p = Arc::new(c.as_role::<MerchantOrFinance>()?);
    let base = HistoryQuery { cursor: None, limit: Some(PAGE_LIMIT_MAX), ..history_filters(q) };
    let name = format!("transactions-{merchant}-{}.csv", base.date.as_deref().unwrap_or("all"));
    let query = move |cursor| HistoryQuery { cursor, ..base.clone() };
    // The first page is read before answering: a bad filter or another tenant is its error page.
    let first = history_page(&st, &p, merchant.clone(), query(None)).await?;
    let next = move |cursor| {
        let (st, p, merchant, query) = (st.clone(), p.clone(), merchant.clone(), query(Some(cursor)));
        async move { history_page(&st, &p, merchant, query).await }
    };
    Ok(csv(&name, TRANSACTIONS_HEADER, first, transaction_line, next))
}

/// `GET /console/finance/breaks.csv?run_id=&date=&class=&merchant_id=&unresolved=`.
async fn breaks_csv(
    State(st): State<AppState>,
    c: Console,
    ApiQuery(q): ApiQuery<BreaksQuery>,
) -> Result<Response, ConsoleError> {
    let p = Arc::new(c.as_role::<FinanceOnly>()?);
    let base = BreaksQuery { cursor: None, limit: Some(PAGE_LIMIT_MAX), ..breaks_filters(q) };
    let query = move |cursor| BreaksQuery { cursor, ..base.clone() };
    let first = breaks_page(&st, &p, query(None)).await?;
    let next = move |cursor| {
        let (st, p, query) = (st.clone(), p.clone(), query(Some(cursor)));
        async move { breaks_page(&st, &p, query).await }
    };
    Ok(csv("breaks.csv", BREAKS_HEADER, first, break_line, next))
}

/// A CSV download: `header`, the lines of `first`, then those of each page `next` reads by
/// the previous page's cursor, written as they are read.
fn csv<T, F, Fut>(name: &str, header: &str, first: Page<T>, line: fn(&T) -> String, next: F) -> Response
where
    T: Send + 'static,
    F: Fn(String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, ApiError>> + Send + 'static,
{
    let lines = move |items: &[T]| items.iter().map(line).collect::<String>();
    let head = Bytes::from(format!("{header}{}", lines(&first.items)));
    let rest = stream::unfold(first.next_cursor, move |cursor| {
        let read = cursor.map(&next);
        async move {
            match read?.await {
                Ok(page) => Some((Ok(Bytes::from(lines(&page.items))), page.next_cursor)),
                Err(e) => Some((Err(aborted(e)), None)),
            }
        }
    });
    let body = Body::from_stream(stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(rest));
    let headers = [
        (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
        (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
    ];
    (headers, body).into_response()
}

fn aborted(e: ApiError) -> std::io::Error {
    tracing::warn!(error = %e, "a CSV export stopped midway; the download is aborted");
    std::io::Error::other("the export stopped")
}

fn transaction_line(item: &HistoryItem) -> String {
    let r = &item.row;
    let at = r.occurred_at.with_timezone(&facepay_domain::time::shanghai()).to_rfc3339();
    let cells = [
        at,
        r.day.to_string(),
        r.out_trade_no.to_string(),
        item.amount.clone(),
        r.status.as_str().to_string(),
        r.reason.clone().unwrap_or_default(),
        r.payer_id.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        r.store_id.clone(),
        r.device_id.clone(),
        r.member_quick_pay.to_string(),
    ];
    line(&cells)
}

fn break_line(b: &BreakView) -> String {
    let r = &b.row;
    let cells = [
        r.break_id.to_string(),
        r.run_id.to_string(),
        r.day.to_string(),
        r.merchant_id.clone(),
        r.class.as_str().to_string(),
        format!("{:?}", r.kind).to_lowercase(),
        r.number.clone(),
        r.ledger_number.clone().unwrap_or_default(),
        r.line_no.map(|n| n.to_string()).unwrap_or_default(),
        b.bill_amount.clone().unwrap_or_default(),
        b.ledger_amount.clone().unwrap_or_default(),
        r.detail.clone(),
        r.resolved.to_string(),
    ];
    line(&cells)
}

/// One CSV line (RFC 4180): a cell with a comma, quote or line break is quoted; a cell a
/// spreadsheet would read as a formula (`=`, `+`, `@`, a tab; `-` unless a number) is
/// prefixed with `'`.
fn line(cells: &[String]) -> String {
    let mut out = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let formula = c.starts_with(['=', '+', '@', '\t', '\r'])
            || (c.starts_with('-') && c.parse::<rust_decimal::Decimal>().is_err());
        let c = if formula { format!("'{c}") } else { c.clone() };
        match c.contains([',', '"', '\n', '\r']) {
            true => out.push_str(&format!("\"{}\"", c.replace('"', "\"\""))),
            false => out.push_str(&c),
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::line;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let cells = ["a,b".to_string(), "say \"hi\"".into(), "=SUM(A1)".into(), "-5.00".into(), "-x".into()];
        assert_eq!(line(&cells), "\"a,b\",\"say \"\"hi\"\"\",'=SUM(A1),-5.00,'-x\n");
    }
}
