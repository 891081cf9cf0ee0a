//! The console: facepay in a browser for merchants, finance and admins, served by the API's
//! own process at `/console`, rendered on the server in Chinese or English, with no script.
//!
//! Each page reads through the same functions as the API route that serves the same data
//! (`crate::http::history_page`, `crate::reconcile::breaks_page`, …), after the same role
//! check ([`Authorized::check`]): the console holds no authorisation of its own. A page a
//! principal may not see answers the same 404 as one that does not exist.
//!
//! # Layout
//! - [`session`]: sessions, cookies, CSRF tokens.
//! - [`text`]: the two languages.
//! - [`page`]: the frame of every page and the pieces pages share.
//! - [`sign_in`]: sign-in, sign-out, the language switch.
//! - [`merchant`]: a merchant's overview, transactions, orders (with the merchant's refund),
//!   members, settlement.
//! - [`fleet`]: a merchant's devices and terms (an admin changes the terms); a payer's wallet,
//!   frozen and unfrozen by an admin.
//! - [`finance`]: reconciliation runs, bill upload, breaks and their resolution; the rejected
//!   events and the audit log (with admin).
//! - [`admin`]: API keys.
//! - [`chart`]: bar charts drawn as SVG on the server.
//! - [`export`]: CSV exports (a day's transactions, breaks), streamed page by page.
//!
//! Every answer carries `Content-Security-Policy: default-src 'self'` (no inline script or
//! style, no framing), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: same-origin` and, but for the stylesheet, `Cache-Control: no-store`.

pub mod admin;
pub mod chart;
pub mod export;
pub mod finance;
pub mod fleet;
pub mod merchant;
pub mod page;
pub mod session;
pub mod sign_in;
pub mod text;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use facepay_domain::limits::CONSOLE_FORM_BYTES_MAX;
use maud::html;
use serde::de::DeserializeOwned;

use crate::auth::{Authorized, Principal, Roles};
use crate::error::ApiError;
use crate::state::AppState;
use page::Ctx;
use text::Lang;

/// The console's routes, to be nested at `/console`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/assets/console.css", get(stylesheet))
        .route("/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/lang", get(sign_in::switch_lang))
        .merge(merchant::routes())
        .merge(finance::routes())
        .merge(admin::routes())
        .merge(fleet::routes())
        .merge(export::routes())
        .fallback(|| async { ConsoleError::Api(ApiError::NotFound) })
}

/// `/console`: the signed-in principal's first page.
async fn home(c: Console) -> Redirect {
    let p = &c.principal;
    let to = match (p.role, &p.merchant_id) {
        (facepay_domain::auth::Role::Merchant, Some(m)) => format!("/console/merchants/{m}"),
        (facepay_domain::auth::Role::Finance, _) => "/console/finance/runs".into(),
        (facepay_domain::auth::Role::Admin, _) => "/console/admin/keys".into(),
        _ => "/console/orders".into(),
    };
    Redirect::to(&to)
}

async fn stylesheet() -> Response {
    let headers = [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")];
    (headers, include_str!("assets/console.css")).into_response()
}

/// A signed-in visitor: its principal (read again from its key on every request), its
/// session's CSRF token, and its language. No session, or a key no longer live: to sign-in.
pub struct Console {
    pub principal: Principal,
    pub ctx: Ctx,
}

impl Console {
    /// The principal as one of `R`'s roles (the API's own check), else the console's 404.
    pub fn as_role<R: Roles>(&self) -> Result<Authorized<R>, ConsoleError> {
        Authorized::<R>::check(self.principal.clone()).map_err(ConsoleError::from)
    }

    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_is(&self, given: &str) -> bool {
        let expected = self.ctx.who.as_ref().map_or("", |(_, csrf)| csrf.as_str());
        !expected.is_empty() && crate::auth::subtle_eq(given.as_bytes(), expected.as_bytes())
    }
}

impl FromRequestParts<AppState> for Console {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ConsoleError> {
        let session = st.console.find(&parts.headers).await?.ok_or(ConsoleError::SignIn)?;
        let principal = match st.auth.principal_of(&session.key_id).await {
            Ok(p) => p,
            Err(ApiError::Unauthenticated) => {
                st.console.end(&parts.headers).await?;
                return Err(ConsoleError::SignIn);
            }
            Err(e) => return Err(e.into()),
        };
        tracing::Span::current().record("principal", principal.key_id.as_str());
        let here = parts.uri.path_and_query().map_or("/console".into(), |pq| pq.as_str().to_string());
        let ctx = Ctx { lang: Lang::of(&parts.headers), who: Some((principal.clone(), session.csrf)), here };
        Ok(Console { principal, ctx })
    }
}

/// A form posted by a signed-in visitor: read (at most [`CONSOLE_FORM_BYTES_MAX`]) only once
/// its `csrf` field is its session's token; else 403 and nothing is done.
pub struct Posted<T> {
    pub console: Console,
    pub form: T,
}

/// A form of no fields but its CSRF token (a button: sign out, revoke).
#[derive(serde::Deserialize)]
pub struct NoFields {}

#[derive(serde::Deserialize)]
struct CsrfField {
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, ConsoleError> {
        let (mut parts, body) = req.into_parts();
        let console = Console::from_request_parts(&mut parts, st).await?;
        let form_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !form_type.starts_with("application/x-www-form-urlencoded") {
            return Err(ApiError::UnsupportedMediaType("application/x-www-form-urlencoded").into());
        }
        let limit = CONSOLE_FORM_BYTES_MAX;
        let bytes =
            axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge { limit_bytes: limit })?;
        let csrf = serde_urlencoded::from_bytes::<CsrfField>(&bytes).map(|f| f.csrf).unwrap_or_default();
        if !console.csrf_is(&csrf) {
            return Err(ConsoleError::Csrf);
        }
        let form = serde_urlencoded::from_bytes::<T>(&bytes).map_err(|e| ConsoleError::bad_form(e.to_string()))?;
        Ok(Posted { console, form })
    }
}

/// Every failure of a console page.
#[derive(Debug)]
pub enum ConsoleError {
    /// No live session: to the sign-in page.
    SignIn,
    /// A form without its session's CSRF token: 403.
    Csrf,
    /// What the API would have answered; a role's refusal is the console's 404.
    Api(ApiError),
}

impl ConsoleError {
    /// A form that could not be read: 400, saying why.
    pub fn bad_form(message: impl Into<String>) -> Self {
        let field = facepay_domain::FieldError::new("form", facepay_domain::FieldErrorKind::Invalid, message.into());
        ConsoleError::Api(ApiError::BadRequest(field))
    }
}

impl From<facepay_ledger::StoreError> for ConsoleError {
    fn from(e: facepay_ledger::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Forbidden(_) => ConsoleError::Api(ApiError::NotFound),
            e => ConsoleError::Api(e),
        }
    }
}

/// What an error page says, for [`pages`] to draw in the visitor's language.
#[derive(Debug, Clone)]
struct ErrorPage {
    /// A message of the request's own (a field's fault); else the status's phrase.
    detail: Option<String>,
    csrf: bool,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let e = match self {
            ConsoleError::SignIn => return Redirect::to("/console/sign-in").into_response(),
            ConsoleError::Csrf => {
                let mut resp = StatusCode::FORBIDDEN.into_response();
                resp.extensions_mut().insert(ErrorPage { detail: None, csrf: true });
                return resp;
            }
            ConsoleError::Api(e) => e,
        };
        let detail = match &e {
            ApiError::BadRequest(f) => Some(format!("{}: {}", f.field, f.message)),
            ApiError::Refused { message, .. } | ApiError::Conflict { message, .. } => Some(message.clone()),
            _ => None,
        };
        // The API's own answer, for its status, headers and logging; the body is a page.
        let (parts, _) = e.into_response().into_parts();
        let mut resp = Response::from_parts(parts, axum::body::Body::empty());
        resp.extensions_mut().insert(ErrorPage { detail, csrf: false });
        resp
    }
}

/// The console's pages around the whole router ([`crate::server::router`] puts it outside the
/// throttle and the request timeout, so their 429 and 503 are pages too): a `/console` answer
/// that is not a success, a redirect or a page of its own becomes a page in the visitor's
/// language (axum's own rejections too), and every `/console` answer gets the security
/// headers. Any other path passes untouched.
pub async fn pages(req: Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    if path != "/console" && !path.starts_with("/console/") {
        return next.run(req).await;
    }
    let lang = Lang::of(req.headers());
    let mut resp = next.run(req).await;
    let status = resp.status();
    let is_page = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/"));
    if !(status.is_success() || status.is_redirection() || is_page) {
        let error = resp.extensions().get::<ErrorPage>().cloned().unwrap_or(ErrorPage { detail: None, csrf: false });
        let (mut parts, _) = resp.into_parts();
        // The same page for every path (a 404 echoes nothing of what was asked).
        let ctx = Ctx { lang, who: None, here: "/console".into() };
        let body = error_page(&ctx, status, &error).into_string();
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::WWW_AUTHENTICATE);
        resp = Response::from_parts(parts, axum::body::Body::from(body));
    }
    secure(resp.headers_mut());
    resp
}

fn error_page(ctx: &Ctx, status: StatusCode, error: &ErrorPage) -> maud::Markup {
    let t = ctx.t();
    let title = match status {
        _ if error.csrf => t.form_expired,
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => t.not_found,
        StatusCode::TOO_MANY_REQUESTS => t.too_many,
        StatusCode::SERVICE_UNAVAILABLE => t.unavailable,
        s if s.is_server_error() => t.internal,
        _ => t.bad_request,
    };
    let body = html! {
        @if let Some(detail) = &error.detail { p class="error" { (detail) } }
        p { a href="/console" { (t.back) } }
    };
    page::shell(ctx, title, body)
}

fn secure(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
}

/// A page's answer: the document, `text/html`.
pub fn respond(markup: maud::Markup) -> Response {
    let headers = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
    (headers, markup.into_string()).into_response()
}
