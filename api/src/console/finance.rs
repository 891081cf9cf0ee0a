//! Finance's pages: reconciliation runs with their reports and a bill upload; breaks, both
//! sides of each, filtered, and their resolution; with admin, the rejected events and the
//! audit log. Each reads and writes through the API's own functions (`crate::reconcile`,
//! `crate::http::rejected_page`, `crate::admin::audit_page`), audited with the signed-in key.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use facepay_domain::limits::BILL_UPLOAD_BYTES_MAX;
use facepay_ledger::reconcile::classify::Class;
use facepay_ledger::reconcile::store::Action;
use maud::html;
use serde::Deserialize;

use super::page::{at, back_to, breaks_filters, cny, next_link, shell, table, Head::Num, Head::Text};
use super::{respond, Console, ConsoleError, Posted};
use crate::admin::{audit_page, AuditQuery};
use crate::auth::{FinanceOnly, FinanceOrAdmin};
use crate::extract::ApiQuery;
use crate::http::rejected_page;
use crate::reconcile::{breaks_page, resolve_one, runs_page, upload_bill, BreaksQuery, ResolveBody, UploadQuery};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/finance/runs", get(runs))
        .route("/finance/bills", post(upload).layer(DefaultBodyLimit::max(BILL_UPLOAD_BYTES_MAX)))
        .route("/finance/breaks", get(breaks))
        .route("/finance/breaks/{break_id}/resolution", post(resolve))
        .route("/rejected", get(rejected))
        .route("/audit", get(audit))
}

/// `GET /console/finance/runs`: the upload form and the runs, newest first.
async fn runs(State(st): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    let p = c.as_role::<FinanceOnly>()?;
    let page = runs_page(&st, &p, None).await?;
    let t = c.ctx.t();
    let body = html! {
        h2 { (t.upload_bill) }
        form method="post" action="/console/finance/bills" enctype="multipart/form-data" class="filters" {
            (c.ctx.csrf_field())
            label for="date" { (t.bill_day) } input id="date" name="date" type="date" required;
            label for="bill" { (t.bill_file) } input id="bill" name="bill" type="file" accept=".csv,text/csv" required;
            button type="submit" { (t.upload_bill) }
        }
        h2 { (t.runs) }
        (table(t, &[Text(t.bill_day), Text(t.time), Num(t.lines), Num(t.breaks), Text(t.run_report)], &page.items, |r| html! {
            tr {
                td { (r.day) } td { (at(&r.finished_at)) } td class="num" { (r.bill_lines) }
                td class="num" { a href={ "/console/finance/breaks?run_id=" (r.run_id) } data-figure="breaks" { (r.breaks) } }
                td { @for (class, sums) in &r.report.totals {
                    span class="tag" { (class.as_str()) " " (sums.sums.count) } " "
                } }
            }
        }))
    };
    Ok(respond(shell(&c.ctx, t.runs, body)))
}

/// `POST /console/finance/bills` (multipart: `csrf`, `date`, `bill`): imports and reconciles,
/// then shows the run's breaks. The CSRF field must come first; nothing is imported without it.
async fn upload(State(st): State<AppState>, c: Console, mut parts: Multipart) -> Result<Response, ConsoleError> {
    let p = c.as_role::<FinanceOnly>()?;
    let bad = |e: axum::extract::multipart::MultipartError| ConsoleError::bad_form(e.to_string());
    let (mut csrf_ok, mut date, mut bill, mut file_name) = (false, None, None::<Bytes>, None);
    while let Some(field) = parts.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        if !csrf_ok {
            // The first field must be the session's token; nothing else is read before it.
            let given = if name == "csrf" { field.text().await.map_err(bad)? } else { String::new() };
            csrf_ok = c.csrf_is(&given);
            if !csrf_ok {
                return Err(ConsoleError::Csrf);
            }
            continue;
        }
        match name.as_str() {
            "date" => date = Some(field.text().await.map_err(bad)?),
            "bill" => {
                file_name = field.file_name().map(str::to_string);
                bill = Some(field.bytes().await.map_err(bad)?);
            }
            _ => {}
        }
    }
    let (Some(date), Some(bill)) = (date, bill) else {
        return Err(ConsoleError::bad_form("a bill day and a bill file are required"));
    };
    let q = UploadQuery { date, mapping: None, file_name };
    let report = upload_bill(&st, &p, q, bill).await?;
    Ok(Redirect::to(&format!("/console/finance/breaks?run_id={}", report.run.run_id)).into_response())
}

/// `GET /console/finance/breaks?run_id=&date=&class=&merchant_id=&unresolved=&cursor=`.
async fn breaks(
    State(st): State<AppState>,
    c: Console,
    ApiQuery(q): ApiQuery<BreaksQuery>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<FinanceOnly>()?;
    let query = breaks_filters(q);
    let (run_id, date) = (query.run_id.clone(), query.date.clone());
    let (class, merchant) = (query.class.clone(), query.merchant_id.clone());
    let unresolved = query.unresolved.unwrap_or(false);
    let page = breaks_page(&st, &p, query).await?;
    let t = c.ctx.t();
    let heads = [
        Text(t.class),
        Text(t.merchant),
        Text(t.day),
        Text(t.bill_side),
        Text(t.ledger_side),
        Text(t.detail),
        Text(t.state),
    ];
    let body = html! {
        form method="get" class="filters" {
            @if let Some(run) = &run_id { input type="hidden" name="run_id" value=(run); }
            label for="date" { (t.day) } input id="date" name="date" type="date" value=[date.as_deref()];
            label for="class" { (t.class) }
            select id="class" name="class" {
                option value="" { (t.all) }
                @for k in Class::ALL { option value=(k.as_str()) selected[class.as_deref() == Some(k.as_str())] { (k.as_str()) } }
            }
            label for="merchant_id" { (t.merchant) } input id="merchant_id" name="merchant_id" value=[merchant.as_deref()];
            label class="check" { input type="checkbox" name="unresolved" value="true" checked[unresolved]; (t.unresolved_only) }
            button type="submit" { (t.filter) }
        }
        (table(t, &heads, &page.items, |b| {
            let r = &b.row;
            html! { tr data-break=(r.break_id) {
                td { code { (r.class.as_str()) } } td { (r.merchant_id) } td { (r.day) }
                td { @if let Some(line) = r.line_no { "#" (line) " " } (r.number) @if let Some(a) = &b.bill_amount { " " (cny(a)) } }
                td { @if let Some(n) = &r.ledger_number { (n) } @if let Some(a) = &b.ledger_amount { " " (cny(a)) } }
                td { (r.detail) }
                td { @if r.resolved { (t.resolved) } @else { (resolve_form(&c, r.break_id, r.class)) } }
            } }
        }))
        @let filters = [("run_id", run_id), ("date", date), ("class", class), ("merchant_id", merchant),
            ("unresolved", unresolved.then(|| "true".to_string()))];
        (next_link(t, "/console/finance/breaks", &filters, page.next_cursor.as_deref()))
        p { a href={ "/console/finance/breaks.csv?" (super::page::query_string(&filters)) } download { (t.export_csv) } }
    };
    Ok(respond(shell(&c.ctx, t.breaks, body)))
}

fn resolve_form(c: &Console, break_id: uuid::Uuid, class: Class) -> maud::Markup {
    let t = c.ctx.t();
    let actions = Action::ALL.into_iter().filter(|a| *a != Action::Superseded);
    let id = break_id.to_string();
    html! {
        details {
            summary { (t.resolve) }
            form method="post" action={ "/console/finance/breaks/" (id) "/resolution" } class="stack" {
                (c.ctx.csrf_field())
                input type="hidden" name="back" value=(c.ctx.here);
                label for={ "action-" (id) } { (t.action) }
                select id={ "action-" (id) } name="action" {
                    @for a in actions { option value=(a.as_str()) selected[a == Action::Accepted && class.as_str() != "status_mismatch"] { (a.as_str()) } }
                }
                label for={ "by-" (id) } { (t.resolved_by) } input id={ "by-" (id) } name="resolved_by" required;
                label for={ "reason-" (id) } { (t.reason) } input id={ "reason-" (id) } name="reason" required;
                button type="submit" { (t.resolve) }
            }
        }
    }
}

#[derive(Deserialize)]
struct ResolveForm {
    action: String,
    resolved_by: String,
    reason: String,
    back: Option<String>,
}

/// `POST /console/finance/breaks/{id}/resolution`: the API's resolution, then back to the list.
async fn resolve(
    State(st): State<AppState>,
    Path(break_id): Path<String>,
    posted: Posted<ResolveForm>,
) -> Result<Response, ConsoleError> {
    let p = posted.console.as_role::<FinanceOnly>()?;
    let f = posted.form;
    let body = ResolveBody { action: f.action, resolved_by: f.resolved_by, reason: f.reason };
    resolve_one(&st, &p, break_id, body).await?;
    let back = back_to(f.back, "/console/finance/breaks");
    Ok(Redirect::to(back.as_deref().unwrap_or("/console/finance/breaks")).into_response())
}

/// `GET /console/rejected`: refused input with its reasons (finance, admin).
async fn rejected(State(st): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    let p = c.as_role::<FinanceOrAdmin>()?;
    let page = rejected_page(&st, &p, None).await?;
    let t = c.ctx.t();
    let heads = [Text(t.time), Text(t.source), Text(t.kind), Text(t.reason), Text(t.field), Text(t.message)];
    let body = table(t, &heads, &page.items, |r| {
        html! {
            tr { td { (at(&r.received_at)) } td { (r.source) } td { @if let Some(k) = &r.kind { (k) } }
                td { code { (r.reason_code) } } td { @if let Some(f) = &r.field { code { (f) } } } td { (r.message) } }
        }
    });
    Ok(respond(shell(&c.ctx, t.rejected, body)))
}

/// `GET /console/audit?cursor=`: who did what (finance, admin).
async fn audit(
    State(st): State<AppState>,
    c: Console,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<FinanceOrAdmin>()?;
    let page = audit_page(&st, &p, q).await?;
    let t = c.ctx.t();
    let heads = [Text(t.time), Text(t.principal), Text(t.role), Text(t.action), Text(t.subject), Text(t.detail)];
    let body = html! {
        (table(t, &heads, &page.items, |e| html! {
            tr { td { (at(&e.at)) } td { code { (e.principal) } } td { (e.role) } td { code { (e.action) } }
                td { code { (e.subject) } } td { code class="json" { (e.detail) } } }
        }))
        (next_link(t, "/console/audit", &[], page.next_cursor.as_deref()))
    };
    Ok(respond(shell(&c.ctx, t.audit, body)))
}
