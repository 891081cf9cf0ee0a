//! Signing in and out, and the language switch.
//!
//! The sign-in form carries a random token that must equal its own `SameSite=Strict` cookie's
//! (no other site can post a sign-in). The key is checked by the API's own
//! [`crate::auth::Auth::authenticate`]: every failure is the same 401 page and spends the
//! source address's budget of failed authentications (the API's throttle). A success starts
//! a new session (a new id: nothing from before sign-in is reused) and is audited.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::page::{back_to, shell, Ctx};
use super::session::{cookie, random_hex, set_cookie, LANG_COOKIE, SESSION_COOKIE, SIGN_IN_COOKIE};
use super::text::Lang;
use super::{respond, ConsoleError, NoFields, Posted};
use crate::state::AppState;

const YEAR_S: u64 = 365 * 24 * 3600;

/// `GET /console/sign-in`.
pub async fn form(headers: HeaderMap) -> Response {
    sign_in_page(&headers, StatusCode::OK, false)
}

fn sign_in_page(headers: &HeaderMap, status: StatusCode, failed: bool) -> Response {
    let ctx = Ctx { lang: Lang::of(headers), who: None, here: "/console/sign-in".into() };
    let t = ctx.t();
    let token = random_hex();
    let body = html! {
        p { (t.sign_in_hint) }
        @if failed { p class="error" role="alert" { (t.sign_in_failed) } }
        form method="post" action="/console/sign-in" class="stack" {
            input type="hidden" name="csrf" value=(token);
            label for="token" { (t.api_key) }
            input id="token" name="token" type="password" autocomplete="off" required spellcheck="false";
            button type="submit" { (t.sign_in) }
        }
    };
    let mut resp = respond(shell(&ctx, t.sign_in, body));
    *resp.status_mut() = status;
    let cookie = set_cookie(headers, SIGN_IN_COOKIE, &token, Some(3600));
    resp.headers_mut().insert(header::SET_COOKIE, cookie.parse().expect("a cookie is a header value"));
    resp
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
    csrf: String,
}

/// `POST /console/sign-in`: the key for a session.
pub async fn submit(State(st): State<AppState>, headers: HeaderMap, Form(f): Form<SignIn>) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !crate::auth::subtle_eq(f.csrf.as_bytes(), expected.as_bytes()) {
        return ConsoleError::Csrf.into_response();
    }
    let principal = match st.auth.authenticate(Some(&format!("Bearer {}", f.token.trim()))).await {
        Ok(p) => p,
        Err(crate::error::ApiError::Unauthenticated) => {
            return sign_in_page(&headers, StatusCode::UNAUTHORIZED, true);
        }
        Err(e) => return ConsoleError::from(e).into_response(),
    };
    // A session this browser held before (another key's, perhaps) ends here.
    let started = async {
        st.console.end(&headers).await?;
        st.console.start(principal.key_id.clone()).await
    };
    let id = match started.await {
        Ok((id, _)) => id,
        Err(e) => return ConsoleError::from(e).into_response(),
    };
    let entry = principal.actor().entry("console_signed_in", principal.key_id.as_str(), serde_json::json!({}));
    if let Err(e) = st.store.audit_append(&entry).await {
        if let Err(e) = st.console.end_id(&id).await {
            tracing::warn!(error = %e, "an unaudited session could not be ended; it idles out");
        }
        return ConsoleError::from(e).into_response();
    }
    let mut resp = Redirect::to("/console").into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(&headers, SESSION_COOKIE, &id, None).parse().expect("header"));
    h.append(header::SET_COOKIE, set_cookie(&headers, SIGN_IN_COOKIE, "", Some(0)).parse().expect("header"));
    resp
}

/// `POST /console/sign-out`: ends the session (audited) and forgets its cookie.
pub async fn sign_out(State(st): State<AppState>, headers: HeaderMap, posted: Posted<NoFields>) -> Response {
    let p = &posted.console.principal;
    if let Err(e) = st.console.end(&headers).await {
        return ConsoleError::from(e).into_response();
    }
    let entry = p.actor().entry("console_signed_out", p.key_id.as_str(), serde_json::json!({}));
    if let Err(e) = st.store.audit_append(&entry).await {
        tracing::warn!(error = %e, "a sign-out was not audited");
    }
    let mut resp = Redirect::to("/console/sign-in").into_response();
    let gone = set_cookie(&headers, SESSION_COOKIE, "", Some(0));
    resp.headers_mut().insert(header::SET_COOKIE, gone.parse().expect("header"));
    resp
}

#[derive(Deserialize)]
pub struct Switch {
    to: String,
    back: Option<String>,
}

/// `GET /console/lang?to=en&back=/console/…`: remembers the language, back to the page
/// (only a console path: never a redirect elsewhere).
pub async fn switch_lang(headers: HeaderMap, Query(q): Query<Switch>) -> Response {
    let lang = Lang::parse(&q.to).unwrap_or(Lang::of(&headers));
    let back = back_to(q.back, "/console");
    let mut resp = Redirect::to(back.as_deref().unwrap_or("/console")).into_response();
    let cookie = set_cookie(&headers, LANG_COOKIE, lang.tag(), Some(YEAR_S));
    resp.headers_mut().insert(header::SET_COOKIE, cookie.parse().expect("header"));
    resp
}
