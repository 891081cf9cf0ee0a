//! Admin and finance routes: API keys (create, list, revoke), the audit log, and the admin's
//! platform and merchant events sent from the console.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use facepay_domain::auth::KeyId;
use facepay_domain::FieldError;
use facepay_ledger::credentials::{AuditEntry, Credential, KeyPosition};
use serde::{Deserialize, Serialize};

use crate::auth::{AdminOnly, Authorized, FinanceOrAdmin, NewKey};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{bad_cursor, next_cursor, page_limit, Page};
use crate::state::AppState;

/// A key just created: its token is shown here once and never again (only its hash is kept).
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub key: Credential,
    /// `fpk_<key id>_<secret>`.
    pub token: String,
}

/// `POST /v1/keys` (admin): 201 with the token, 422 when the scope contradicts the registry.
#[utoipa::path(post, path = "/v1/keys", request_body(content = NewKey, content_type = "application/json"),
    responses((status = 201, body = CreatedKey, description = "the key and its token, shown once"),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "a scope the registry does not hold (an unknown merchant, store or \
            device) or a role it does not fit")))]
pub async fn create_key(
    State(st): State<AppState>,
    p: Authorized<AdminOnly>,
    ApiJson(spec): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    Ok((StatusCode::CREATED, Json(create(&st, &p, spec).await?)))
}

/// Creates a key, audited with `p`'s (the API, the console).
pub(crate) async fn create(st: &AppState, p: &Authorized<AdminOnly>, spec: NewKey) -> Result<CreatedKey, ApiError> {
    let (key, token) = st.auth.create_key(spec, &p.actor()).await?;
    Ok(CreatedKey { key, token })
}

/// `?cursor=&limit=` of the keys.
#[derive(Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,19}\.[0-9a-f]{24}$")]
    pub(crate) cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<u32>,
}

/// `GET /v1/keys` (admin): the keys, newest first, by cursor; never a secret or a hash.
#[utoipa::path(get, path = "/v1/keys", params(KeysQuery),
    responses((status = 200, body = Page<Credential>, description = "keys, never a secret"), (status = 400, body = ErrorBody)))]
pub async fn list_keys(
    State(st): State<AppState>,
    p: Authorized<AdminOnly>,
    ApiQuery(q): ApiQuery<KeysQuery>,
) -> Result<Json<Page<Credential>>, ApiError> {
    Ok(Json(keys_page(&st, &p, q).await?))
}

/// A page of keys, newest first (the API, the console).
pub(crate) async fn keys_page(
    st: &AppState,
    _: &Authorized<AdminOnly>,
    q: KeysQuery,
) -> Result<Page<Credential>, ApiError> {
    let after = q.cursor.map(|c| KeyPosition::parse(&c).ok_or_else(bad_cursor)).transpose()?;
    let limit = page_limit(q.limit)?;
    let items = st.store.key_list(after.as_ref(), limit).await?;
    let next_cursor = next_cursor(&items, limit, |k| KeyPosition::of(k).cursor());
    Ok(Page { items, next_cursor })
}

/// `DELETE /v1/keys/{key_id}` (admin): 204, or 404 when no live key has that id.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", params(("key_id" = KeyId, Path)),
    responses((status = 204, description = "revoked"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no live key has this id")))]
pub async fn revoke_key(
    State(st): State<AppState>,
    p: Authorized<AdminOnly>,
    ApiPath(key_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    revoke(&st, &p, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a live key, audited with `p`'s (the API, the console); 404 when none has the id.
pub(crate) async fn revoke(st: &AppState, p: &Authorized<AdminOnly>, key_id: String) -> Result<(), ApiError> {
    let key_id = KeyId::parse(key_id).map_err(|e| FieldError::new("key_id", e.kind, e.message))?;
    match st.auth.revoke(&key_id, &p.actor()).await? {
        true => {
            // A device key stops signing here at once (other processes: at their next refresh).
            st.registry.write().unwrap_or_else(|e| e.into_inner()).device_keys.remove(&key_id);
            Ok(())
        }
        false => Err(ApiError::NotFound),
    }
}

#[derive(Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^[1-9][0-9]{0,17}$")]
    pub(crate) cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<u32>,
}

/// `GET /v1/audit` (admin, finance): admin and finance actions, newest first.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>, description = "admin and finance actions, newest first"),
        (status = 400, body = ErrorBody)))]
pub async fn audit(
    State(st): State<AppState>,
    p: Authorized<FinanceOrAdmin>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    Ok(Json(audit_page(&st, &p, q).await?))
}

/// A page of the audit log, newest first (the API, the console).
pub(crate) async fn audit_page(
    st: &AppState,
    _: &Authorized<FinanceOrAdmin>,
    q: AuditQuery,
) -> Result<Page<AuditEntry>, ApiError> {
    let before = q.cursor.map(|c| c.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(bad_cursor)).transpose()?;
    let limit = page_limit(q.limit)?;
    let items = st.store.audit_list(before, limit).await?;
    let next_cursor = next_cursor(&items, limit, |e| e.seq.to_string());
    Ok(Page { items, next_cursor })
}

/// Sends a platform or merchant event `body` of `origin` for the admin `p` (the console's
/// freeze, unfreeze, limit and fee-rate forms, as `POST /v1/events` with an admin key would):
/// checked, audited under `subject`, signed by the platform, and waited for at most
/// `CONSOLE_ACTION_WAIT_MS`. Whether it was applied by then; a refusal is the API's error.
pub(crate) async fn send_admin_event(
    st: &AppState,
    p: &Authorized<AdminOnly>,
    origin: facepay_domain::Origin,
    body: facepay_domain::EventBody,
    subject: &str,
) -> Result<bool, ApiError> {
    let envelope = facepay_domain::Envelope::new(uuid::Uuid::new_v4(), st.clock.now(), origin, body);
    let wait = std::time::Duration::from_millis(facepay_domain::limits::CONSOLE_ACTION_WAIT_MS);
    crate::platform::applied(crate::platform::send_for(st, p, envelope, subject, serde_json::json!({}), wait).await?)
}
