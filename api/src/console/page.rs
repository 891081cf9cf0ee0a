//! The page every console answer is drawn in: the document, the header with the signed-in
//! principal and its role's navigation, the language switch; and the small pieces pages
//! share (money, times, tables, a form's CSRF field, filters and page links). Everything is escaped by
//! `maud`; no page has inline script or style (the CSP forbids both).

use chrono::{DateTime, Utc};
use facepay_domain::auth::Role;
use maud::{html, Markup, DOCTYPE};

use super::text::{Lang, Text};
use crate::auth::Principal;
use crate::http::HistoryQuery;
use crate::reconcile::BreaksQuery;

/// Who is looking at a page, and in which language.
pub struct Ctx {
    pub lang: Lang,
    /// The signed-in principal and its session's CSRF token; `None` on the sign-in page.
    pub who: Option<(Principal, String)>,
    /// The page's own path and query (the language switch comes back to it).
    pub here: String,
}

impl Ctx {
    pub fn t(&self) -> &'static Text {
        self.lang.text()
    }

    /// The hidden CSRF field every form of a signed-in page carries.
    pub fn csrf_field(&self) -> Markup {
        let token = self.who.as_ref().map(|(_, csrf)| csrf.as_str()).unwrap_or("");
        html! { input type="hidden" name="csrf" value=(token); }
    }
}

/// A whole page: `title` and `body` inside the console's frame.
pub fn shell(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    let t = ctx.t();
    html! {
        (DOCTYPE)
        html lang=(ctx.lang.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (t.console) }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                a class="skip" href="#main" { (t.skip_to_content) }
                header class="top" {
                    a class="brand" href="/console" { (t.console) }
                    @if let Some((p, _)) = &ctx.who { (nav(t, p)) (who(ctx, p)) }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
                footer {
                    a href={ "/console/lang?to=" (ctx.lang.other().tag()) "&back=" (encode(&ctx.here)) }
                        lang=(ctx.lang.other().tag()) { (ctx.lang.other().text().lang_name) }
                }
            }
        }
    }
}

/// The navigation of `p`'s role: only the pages the API lets it read.
fn nav(t: &Text, p: &Principal) -> Markup {
    let mut links: Vec<(String, &str)> = Vec::new();
    if let (Role::Merchant, Some(m)) = (p.role, &p.merchant_id) {
        let base = format!("/console/merchants/{m}");
        links.push((base.clone(), t.overview));
        links.push((format!("{base}/transactions"), t.transactions));
        if p.store_id.is_none() {
            links.push((format!("{base}/members"), t.members));
            links.push((format!("{base}/settlement"), t.settlement));
        }
        links.push((format!("{base}/fleet"), t.devices));
    }
    if p.role == Role::Finance {
        links.push(("/console/merchants".into(), t.merchants));
        links.push(("/console/finance/runs".into(), t.runs));
        links.push(("/console/finance/breaks".into(), t.breaks));
    }
    if p.role == Role::Admin {
        links.push(("/console/merchants".into(), t.merchants));
        links.push(("/console/admin/payers".into(), t.payers));
        links.push(("/console/admin/keys".into(), t.keys));
    }
    if matches!(p.role, Role::Finance | Role::Admin) {
        links.push(("/console/rejected".into(), t.rejected));
        links.push(("/console/audit".into(), t.audit));
    }
    if p.role == Role::Device {
        links.push(("/console/orders".into(), t.order_lookup));
    }
    html! {
        nav aria-label=(t.main_nav) { ul { @for (href, name) in &links { li { a href=(href) { (name) } } } } }
    }
}

fn who(ctx: &Ctx, p: &Principal) -> Markup {
    let t = ctx.t();
    let scope = [p.merchant_id.as_ref().map(|m| m.to_string()), p.store_id.as_ref().map(|s| s.to_string())];
    let scope: Vec<String> = scope.into_iter().flatten().collect();
    html! {
        div class="who" {
            span { (t.signed_in_as) " " strong { (p.role.as_str()) } @if !scope.is_empty() { " · " (scope.join(" / ")) } }
            form method="post" action="/console/sign-out" {
                (ctx.csrf_field())
                button type="submit" class="link" { (t.sign_out) }
            }
        }
    }
}

/// `12.34` as `¥12.34` (the amounts come as the API's decimal strings, exact to the fen).
pub fn cny(amount: &str) -> Markup {
    html! { span class="money" { "¥" (amount) } }
}

/// A time in Asia/Shanghai (the merchants' and the bill's day), to the second.
pub fn at(t: &DateTime<Utc>) -> Markup {
    let local = t.with_timezone(&facepay_domain::time::shanghai());
    html! { time datetime=(t.to_rfc3339()) { (local.format("%Y-%m-%d %H:%M:%S")) } }
}

/// A table: its column heads (a head given as `Num(…)` is a column of figures, aligned right)
/// and one row (`tr`) per item drawn by `row`; no items, a row that says so.
pub fn table<T>(t: &Text, heads: &[Head], items: &[T], row: impl Fn(&T) -> Markup) -> Markup {
    html! {
        table class="rows" {
            thead { tr { @for h in heads { @match h {
                Head::Text(name) => th scope="col" { (name) },
                Head::Num(name) => th scope="col" class="num" { (name) },
            } } } }
            tbody {
                @for item in items { (row(item)) }
                @if items.is_empty() { tr { td colspan=(heads.len()) class="empty" { (t.none) } } }
            }
        }
    }
}

/// A column head of [`table`].
pub enum Head {
    Text(&'static str),
    Num(&'static str),
}

/// `back`, a page to return to, if it is a console path under `prefix` (never a redirect off
/// the console: no `//`, no backslash).
pub fn back_to(back: Option<String>, prefix: &str) -> Option<String> {
    back.filter(|b| b.starts_with(prefix) && !b.contains("//") && !b.contains('\\'))
}

/// A query string's value, percent-encoded.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A form's filters as the API reads them: a field left empty is a filter not set.
pub(crate) fn history_filters(q: HistoryQuery) -> HistoryQuery {
    HistoryQuery {
        date: set(q.date),
        status: set(q.status),
        store_id: set(q.store_id),
        device_id: set(q.device_id),
        ..q
    }
}

/// The same for the breaks' filters.
pub(crate) fn breaks_filters(q: BreaksQuery) -> BreaksQuery {
    BreaksQuery { run_id: set(q.run_id), date: set(q.date), class: set(q.class), merchant_id: set(q.merchant_id), ..q }
}

fn set(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

/// The filters that are set, as a query string.
pub fn query_string(query: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// A link to the next page, keeping the page's filters (`query` without its cursor).
pub fn next_link(t: &Text, path: &str, query: &[(&str, Option<String>)], cursor: Option<&str>) -> Markup {
    let first = query_string(query);
    let next = cursor.map(|c| {
        let sep = if first.is_empty() { "" } else { "&" };
        format!("{path}?{first}{sep}cursor={}", encode(c))
    });
    html! {
        p class="pages" {
            a href={ (path) "?" (first) } { (t.first_page) }
            @if let Some(next) = next { " " a href=(next) rel="next" { (t.next_page) } }
        }
    }
}
