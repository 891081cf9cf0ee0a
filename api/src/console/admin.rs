//! The admin's pages: API keys (create: the token is shown once, on the answer to the form;
//! revoke). Through the API's own functions (`crate::admin`), audited with the signed-in key.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use facepay_domain::auth::Role;
use facepay_domain::{DeviceId, FieldError, MerchantId, StoreId};
use maud::html;
use serde::Deserialize;

use super::page::{at, next_link, shell, table, Head::Text};
use super::{respond, Console, ConsoleError, NoFields, Posted};
use crate::admin::{create, keys_page, revoke, CreatedKey, KeysQuery};
use crate::auth::{AdminOnly, NewKey};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(keys).post(create_key))
        .route("/admin/keys/{key_id}/revocation", post(revoke_key))
}

/// `GET /console/admin/keys`: the keys, and a key just created with its token (once).
async fn keys(
    State(st): State<AppState>,
    headers: HeaderMap,
    c: Console,
    ApiQuery(q): ApiQuery<KeysQuery>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<AdminOnly>()?;
    let page = keys_page(&st, &p, q).await?;
    let created = st.console.take_once(&headers).await?;
    let t = c.ctx.t();
    let roles = [Role::Merchant, Role::Finance, Role::Device, Role::Admin];
    let heads = [
        Text(t.key_id),
        Text(t.role),
        Text(t.merchant),
        Text(t.label),
        Text(t.created),
        Text(t.expires),
        Text(t.revoked),
    ];
    let body = html! {
        @if let Some(token) = &created {
            div class="notice" role="status" {
                p { (t.token_once) }
                p { code class="token" data-token=(token.split('_').nth(1).unwrap_or_default()) { (token) } }
            }
        }
        h2 { (t.create_key) }
        form method="post" action="/console/admin/keys" class="filters" {
            (c.ctx.csrf_field())
            label for="role" { (t.role) }
            select id="role" name="role" { @for r in roles { option value=(r.as_str()) { (r.as_str()) } } }
            label for="merchant_id" { (t.merchant) } input id="merchant_id" name="merchant_id";
            label for="store_id" { (t.store) } input id="store_id" name="store_id";
            label for="device_id" { (t.device) } input id="device_id" name="device_id";
            label for="label" { (t.label) } input id="label" name="label" maxlength="200";
            button type="submit" { (t.create_key) }
        }
        h2 { (t.keys) }
        (table(t, &heads, &page.items, |k| html! {
            tr data-key=(k.key_id) {
                td { code { (k.key_id) } } td { (k.role.as_str()) }
                td { @if let Some(m) = &k.merchant_id { (m) } @if let Some(s) = &k.store_id { " / " (s) }
                    @if let Some(d) = &k.device_id { " / " (d) } }
                td { (k.label) } td { (at(&k.created_at)) } td { (at(&k.expires_at)) }
                td {
                    @if let Some(r) = &k.revoked_at { (at(r)) }
                    @else if k.key_id != c.principal.key_id {
                        form method="post" action={ "/console/admin/keys/" (k.key_id) "/revocation" } {
                            (c.ctx.csrf_field())
                            button type="submit" class="danger" aria-label={ (t.revoke) " " (k.key_id) } { (t.revoke) }
                        }
                    }
                }
            }
        }))
        (next_link(t, "/console/admin/keys", &[], page.next_cursor.as_deref()))
    };
    Ok(respond(shell(&c.ctx, t.keys, body)))
}

#[derive(Deserialize)]
struct KeyForm {
    role: String,
    #[serde(default)]
    merchant_id: String,
    #[serde(default)]
    store_id: String,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    label: String,
}

impl KeyForm {
    /// The API's [`NewKey`]: empty fields are absent, each id checked as the API checks it.
    fn into_new_key(self) -> Result<NewKey, ApiError> {
        fn opt<T>(
            name: &str,
            v: String,
            parse: fn(String) -> Result<T, facepay_domain::ValueError>,
        ) -> Result<Option<T>, ApiError> {
            let v = v.trim().to_string();
            match v.is_empty() {
                true => Ok(None),
                false => parse(v).map(Some).map_err(|e| ApiError::BadRequest(FieldError::new(name, e.kind, e.message))),
            }
        }
        let role =
            Role::parse(&self.role).map_err(|e| ApiError::BadRequest(FieldError::new("role", e.kind, e.message)))?;
        Ok(NewKey {
            role,
            merchant_id: opt("merchant_id", self.merchant_id, MerchantId::parse)?,
            store_id: opt("store_id", self.store_id, StoreId::parse)?,
            device_id: opt("device_id", self.device_id, DeviceId::parse)?,
            label: self.label,
            expires_in_days: None,
        })
    }
}

/// `POST /console/admin/keys`: creates the key, then to the keys page, which shows its token
/// once (a reload shows it no more, and makes no second key).
async fn create_key(
    State(st): State<AppState>,
    headers: HeaderMap,
    posted: Posted<KeyForm>,
) -> Result<Response, ConsoleError> {
    let p = posted.console.as_role::<AdminOnly>()?;
    let CreatedKey { token, .. } = create(&st, &p, posted.form.into_new_key()?).await?;
    st.console.show_once(&headers, token).await?;
    Ok(Redirect::to("/console/admin/keys").into_response())
}

/// `POST /console/admin/keys/{key_id}/revocation`.
async fn revoke_key(
    State(st): State<AppState>,
    Path(key_id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, ConsoleError> {
    let p = posted.console.as_role::<AdminOnly>()?;
    revoke(&st, &p, key_id).await?;
    Ok(Redirect::to("/console/admin/keys").into_response())
}
