//! A merchant's pages: the day at a glance, transactions (filters, cursor pages), an order,
//! members, settlement per day with its chart. Finance sees any merchant's (from the
//! merchants list); a merchant's keys their own; a store key its store's attempts only.
//! A device key may look up its merchant's orders.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use facepay_domain::auth::Role;
use maud::html;
use serde::Deserialize;

use super::page::{at, cny, encode, history_filters, next_link, query_string, shell, table, Head::Num, Head::Text};
use super::{respond, Console, ConsoleError, Posted};
use crate::auth::{FinanceOrAdmin, MerchantOnly, MerchantOrFinance, OrderReaders};
use crate::extract::ApiQuery;
use crate::http::{glance_view, history_page, members_page, order_view, settlement_page, CursorQuery, HistoryQuery};
use crate::order_life::{refunds_of, repeats_of, retries_of, seen_order};
use crate::refund::RefundRequest;
use crate::state::AppState;

/// Days of settlement the overview links and the settlement page draws.
const SETTLEMENT_DAYS_SHOWN: u32 = 30;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/merchants", get(merchants))
        .route("/merchants/{merchant}", get(overview))
        .route("/merchants/{merchant}/transactions", get(transactions))
        .route("/merchants/{merchant}/orders/{out_trade_no}", get(order))
        .route("/merchants/{merchant}/orders/{out_trade_no}/refunds", post(refund))
        .route("/merchants/{merchant}/members", get(members))
        .route("/merchants/{merchant}/settlement", get(settlement))
        .route("/orders", get(order_lookup))
}

/// `GET /console/merchants` (finance, admin): every registered merchant, with its day at a
/// glance (finance) and its devices and terms.
async fn merchants(State(st): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    c.as_role::<FinanceOrAdmin>()?;
    let finance = c.principal.role == Role::Finance;
    let t = c.ctx.t();
    let mut ids: Vec<String> = {
        let registry = st.registry.read().unwrap_or_else(|e| e.into_inner());
        registry.merchants.keys().map(|m| m.to_string()).collect()
    };
    ids.sort();
    let body = html! {
        ul class="cards" { @for m in &ids { li {
            @if finance { a href={ "/console/merchants/" (encode(m)) } { (m) } " · " } @else { (m) " · " }
            a href={ "/console/merchants/" (encode(m)) "/fleet" } { (t.devices) }
        } } }
        @if ids.is_empty() { p { (t.none) } }
    };
    Ok(respond(shell(&c.ctx, t.merchants, body)))
}

#[derive(Deserialize)]
struct DayQuery {
    date: Option<String>,
}

/// `GET /console/merchants/{m}?date=`: a day at a glance (default today), and the recent days.
async fn overview(
    State(st): State<AppState>,
    c: Console,
    Path(merchant): Path<String>,
    ApiQuery(q): ApiQuery<DayQuery>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<MerchantOrFinance>()?;
    let g = glance_view(&st, &p, merchant.clone(), q.date).await?;
    // The recent days, for a whole-merchant key (a store key has no settlement).
    let days = match p.store_id {
        None => settlement_page(&st, &p, merchant.clone(), Some(7)).await?.items,
        Some(_) => Vec::new(),
    };
    let t = c.ctx.t();
    let share = match g.paid {
        0 => "–".to_string(),
        paid => {
            let permille = g.member_quick_pay * 1000 / paid;
            format!("{}.{} %", permille / 10, permille % 10)
        }
    };
    let base = format!("/console/merchants/{}", encode(&merchant));
    let body = html! {
        form method="get" class="filters" {
            label for="date" { (t.day) } input id="date" name="date" type="date" value=(g.day);
            button type="submit" { (t.filter) }
        }
        dl class="figures" {
            div { dt { (t.payments) } dd data-figure="attempts" { (g.paid) " / " (g.attempts) } }
            div { dt { (t.paid_amount) } dd data-figure="paid" { (cny(&g.paid_amount)) } }
            div { dt { (t.quick_pay_share) } dd data-figure="quick-pay" { (share) } }
        }
        h2 { (t.declines_by_reason) }
        (table(t, &[Text(t.reason), Num(t.payments)], &g.declines, |d| html! {
            tr { td { code { (d.reason) } } td class="num" { (d.attempts) } }
        }))
        @if !days.is_empty() {
            h2 { (t.settlement) }
            ul class="days" { @for d in &days { li { a href={ (base) "?date=" (d.day) } { (d.day) } " " (cny(&d.net)) } } }
        }
        p { a href={ (base) "/transactions?date=" (g.day) } { (t.transactions) " → " } }
    };
    let title = format!("{} · {}", t.overview, merchant);
    Ok(respond(shell(&c.ctx, &title, body)))
}

/// `GET /console/merchants/{m}/transactions?date=&status=&cursor=`: the API's page of history.
async fn transactions(
    State(st): State<AppState>,
    c: Console,
    Path(merchant): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<MerchantOrFinance>()?;
    let query = history_filters(q);
    let (date, status) = (query.date.clone(), query.status.clone());
    let (store, device) = (query.store_id.clone(), query.device_id.clone());
    let page = history_page(&st, &p, merchant.clone(), query).await?;
    let t = c.ctx.t();
    let base = format!("/console/merchants/{}", encode(&merchant));
    let statuses = ["PAID", "DECLINED", "REVERSED", "REVOKED"];
    let heads = [
        Text(t.time),
        Text(t.out_trade_no),
        Num(t.amount),
        Text(t.status),
        Text(t.reason),
        Text(t.payer),
        Text(t.store),
        Text(t.device),
        Text(t.quick_pay),
    ];
    let body = html! {
        form method="get" class="filters" {
            label for="date" { (t.day) } input id="date" name="date" type="date" value=[date.as_deref()];
            label for="status" { (t.status) }
            select id="status" name="status" {
                option value="" { (t.all) }
                @for s in statuses { option value=(s) selected[status.as_deref() == Some(s)] { (s) } }
            }
            @if c.principal.store_id.is_none() {
                label for="store_id" { (t.store) } input id="store_id" name="store_id" size="8" value=[store.as_deref()];
            }
            label for="device_id" { (t.device) } input id="device_id" name="device_id" size="10" value=[device.as_deref()];
            button type="submit" { (t.filter) }
        }
        (table(t, &heads, &page.items, |item| {
            let r = &item.row;
            html! { tr {
                td { (at(&r.occurred_at)) }
                td { a href={ (base) "/orders/" (encode(r.out_trade_no.as_str())) } { (r.out_trade_no) } }
                td class="num" { (cny(&item.amount)) }
                td { span class={ "status " (r.status.as_str()) } { (r.status.as_str()) } }
                td { @if let Some(reason) = &r.reason { code { (reason) } } }
                td { @if let Some(payer) = &r.payer_id { code { (payer) } } }
                td { (r.store_id) } td { (r.device_id) }
                td { @if r.member_quick_pay { (t.yes) } @else { (t.no) } }
            } }
        }))
        @let filters = [("date", date), ("status", status), ("store_id", store), ("device_id", device)];
        (next_link(t, &format!("{base}/transactions"), &filters, page.next_cursor.as_deref()))
        p { a href={ (base) "/transactions.csv?" (query_string(&filters)) } download { (t.export_csv) } }
    };
    let title = format!("{} · {}", t.transactions, merchant);
    Ok(respond(shell(&c.ctx, &title, body)))
}

/// `GET /console/merchants/{m}/orders/{out_trade_no}`: the order as the API serves it.
async fn order(
    State(st): State<AppState>,
    c: Console,
    Path((merchant, out_trade_no)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<OrderReaders>()?;
    let seen = seen_order(&st, &p, merchant.clone(), out_trade_no.clone()).await?;
    let o = order_view(&st, &p, &seen);
    let refunds = refunds_of(&st, &seen).await?;
    let retries = retries_of(&st, &seen).await?;
    let repeats = repeats_of(&st, &seen).await?;
    // Its whole life of decided attempts, for those who read the merchant's history.
    let attempts = match c.as_role::<MerchantOrFinance>() {
        Ok(reader) => {
            let q = HistoryQuery { out_trade_no: Some(out_trade_no.clone()), ..HistoryQuery::default() };
            history_page(&st, &reader, merchant.clone(), q).await?.items
        }
        Err(_) => Vec::new(),
    };
    let t = c.ctx.t();
    let r = &o.result;
    let body = html! {
        dl class="facts" {
            dt { (t.merchant) } dd { (r.merchant_id) }
            dt { (t.out_trade_no) } dd { (r.out_trade_no) }
            dt { (t.amount) } dd data-figure="amount" { (cny(&r.amount.to_string())) }
            dt { (t.status) } dd { span class={ "status " (r.status.as_str()) } data-figure="status" { (r.status.as_str()) } }
            @if let Some(reason) = &r.reason { dt { (t.reason) } dd { code { (reason.code()) } } }
            @if let Some(payer) = &r.payer_id { dt { (t.payer) } dd { code { (payer) } } }
            dt { (t.quick_pay) } dd { @if r.member_quick_pay { (t.yes) } @else { (t.no) } }
            dt { (t.fee) } dd { (cny(&o.fee)) }
            dt { (t.refunded) } dd data-figure="refunded" { (cny(&o.refunded)) }
            dt { (t.created) } dd { (at(&o.created_at)) }
            dt { (t.updated) } dd { (at(&o.updated_at)) }
        }
        @if !attempts.is_empty() {
            h2 { (t.attempts) }
            (table(t, &[Text(t.time), Text(t.status), Text(t.reason), Num(t.amount), Text(t.device)], &attempts, |a| html! {
                tr data-attempt=(a.row.id) {
                    td { (at(&a.row.occurred_at)) }
                    td { span class={ "status " (a.row.status.as_str()) } { (a.row.status.as_str()) } }
                    td { @if let Some(r) = &a.row.reason { code { (r) } } }
                    td class="num" { (cny(&a.amount)) } td { code { (a.row.device_id) } }
                }
            }))
        }
        @if !retries.is_empty() {
            h2 { (t.retries) }
            (table(t, &[Text(t.time), Text(t.device), Text(t.event_id)], &retries, |r| html! {
                tr data-retry=(r.event_id) { td { (at(&r.answered_at)) }
                    td { @if let Some(d) = &r.device { code { (d) } } } td { code { (r.event_id) } } }
            }))
        }
        @if !repeats.is_empty() {
            h2 { (t.repeats) }
            (table(t, &[Text(t.event_id), Num(t.copies), Text(t.last_copy)], &repeats, |r| html! {
                tr data-repeat=(r.event_id) { td { code { (r.event_id) } } td class="num" { (r.repeats) }
                    td { (at(&r.last_at)) } }
            }))
        }
        @if !refunds.is_empty() {
            h2 { (t.refunds) }
            (table(t, &[Text(t.out_refund_no), Num(t.amount), Num(t.fee), Text(t.time)], &refunds, |f| html! {
                tr data-refund=(f.out_refund_no) { td { code { (f.out_refund_no) } } td class="num" { (cny(&f.amount)) }
                    td class="num" { (cny(&f.fee_refund)) } td { (at(&f.refunded_at)) } }
            }))
        }
        @if c.principal.role == Role::Merchant && r.status == facepay_domain::OrderStatus::Paid && o.refunded_fen < r.amount.fen() {
            h2 { (t.refund) }
            form method="post" action={ "/console/merchants/" (encode(&merchant)) "/orders/" (encode(&out_trade_no)) "/refunds" } class="filters" {
                (c.ctx.csrf_field())
                label for="out_refund_no" { (t.out_refund_no) }
                input id="out_refund_no" name="out_refund_no" required maxlength="32" value=(new_refund_no());
                label for="amount" { (t.amount) }
                input id="amount" name="amount" inputmode="decimal" required pattern=r"[0-9]+(\.[0-9]{1,2})?"
                    value=(facepay_domain::money::fen_to_string(r.amount.fen() - o.refunded_fen));
                button type="submit" { (t.refund) }
            }
            p class="hint" { (t.refund_hint) }
        }
    };
    let title = format!("{} {}", t.order, out_trade_no);
    Ok(respond(shell(&c.ctx, &title, body)))
}

/// `GET /console/merchants/{m}/members?cursor=`: the API's page of member cards.
async fn members(
    State(st): State<AppState>,
    c: Console,
    Path(merchant): Path<String>,
    ApiQuery(q): ApiQuery<CursorQuery>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<MerchantOrFinance>()?;
    let page = members_page(&st, &p, merchant.clone(), q).await?;
    let t = c.ctx.t();
    let heads = [Text(t.payer), Text(t.card), Text(t.channel), Text(t.opened), Text(t.closed), Text(t.last_visit)];
    let path = format!("/console/merchants/{}/members", encode(&merchant));
    let body = html! {
        (table(t, &heads, &page.items, |m| {
            html! {
                tr { td { code { (m.payer_id) } } td { (m.card_code) } td { (m.channel) } td { (at(&m.opened_at)) }
                    td { @if let Some(c) = &m.closed_at { (at(c)) } }
                    td { @if let Some(v) = &m.last_visit_at { (at(v)) } } }
            }
        }))
        (next_link(t, &path, &[], page.next_cursor.as_deref()))
    };
    let title = format!("{} · {}", t.members, merchant);
    Ok(respond(shell(&c.ctx, &title, body)))
}

/// `GET /console/merchants/{m}/settlement`: the last days' money, a chart of net per day.
async fn settlement(
    State(st): State<AppState>,
    c: Console,
    Path(merchant): Path<String>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<MerchantOrFinance>()?;
    let page = settlement_page(&st, &p, merchant.clone(), Some(SETTLEMENT_DAYS_SHOWN)).await?;
    let t = c.ctx.t();
    let bars: Vec<(String, i64)> = page.items.iter().rev().map(|d| (d.day.to_string(), d.net_fen)).collect();
    let heads = [Text(t.day), Num(t.gross), Num(t.refunds), Num(t.fees), Num(t.net)];
    let body = html! {
        figure { (super::chart::bars(t.net_by_day, &bars)) figcaption { (t.net_by_day) } }
        (table(t, &heads, &page.items, |d| html! {
            tr { td { (d.day) } td class="num" { (cny(&d.gross)) } td class="num" { (cny(&d.refunds)) }
                td class="num" { (cny(&d.fees)) } td class="num" { (cny(&d.net)) } }
        }))
    };
    let title = format!("{} · {}", t.settlement, merchant);
    Ok(respond(shell(&c.ctx, &title, body)))
}

#[derive(Deserialize)]
struct LookupQuery {
    out_trade_no: Option<String>,
}

/// `GET /console/orders?out_trade_no=`: an order of the key's merchant, by its number.
async fn order_lookup(c: Console, ApiQuery(q): ApiQuery<LookupQuery>) -> Result<Response, ConsoleError> {
    c.as_role::<OrderReaders>()?;
    let t = c.ctx.t();
    let merchant = c.principal.merchant_id.as_ref().filter(|_| c.principal.role != Role::Finance);
    if let (Some(m), Some(no)) = (merchant, q.out_trade_no.filter(|n| !n.is_empty())) {
        return Ok(
            Redirect::to(&format!("/console/merchants/{}/orders/{}", encode(m.as_str()), encode(&no))).into_response()
        );
    }
    let body = html! {
        form method="get" class="filters" {
            label for="out_trade_no" { (t.out_trade_no) } input id="out_trade_no" name="out_trade_no" required;
            button type="submit" { (t.order_lookup) }
        }
    };
    Ok(respond(shell(&c.ctx, t.order_lookup, body)))
}

/// A refund number for the form, made when the page is drawn: a form posted twice (a double
/// click, a reload) is the same refund.
fn new_refund_no() -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("RF{}", &suffix[..20])
}

/// `POST /console/merchants/{m}/orders/{no}/refunds` (merchant keys): the API's refund, then
/// back to the order.
async fn refund(
    State(st): State<AppState>,
    Path((merchant, out_trade_no)): Path<(String, String)>,
    posted: Posted<RefundRequest>,
) -> Result<Response, ConsoleError> {
    let p = posted.console.as_role::<MerchantOnly>()?;
    crate::refund::refund(&st, &p, merchant.clone(), out_trade_no.clone(), posted.form).await?;
    let to = format!("/console/merchants/{}/orders/{}", encode(&merchant), encode(&out_trade_no));
    Ok(Redirect::to(&to).into_response())
}
