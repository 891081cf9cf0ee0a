//! The reconciliation routes of the API (finance only): upload a bill and reconcile its day,
//! list imports, runs, breaks and resolutions, resolve a break. The engine is
//! `facepay_ledger::reconcile`; the answers' shapes are [`crate::recon_view`].

use std::io::Cursor;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{NaiveDate, Utc};
use facepay_domain::limits::BILL_UPLOAD_BYTES_MAX;
use facepay_domain::{FieldError, FieldErrorKind};
use facepay_ledger::reconcile::bill::ColumnMapping;
use facepay_ledger::reconcile::classify::Class;
use facepay_ledger::reconcile::store::{
    import_and_reconcile, resolve_break, Action, BreakFilter, ImportRequest, ReconError, ResolutionRow,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Authorized, FinanceOnly, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{next_cursor, page_limit, LimitQuery, Page};
use crate::recon_view::{BreakView, ImportView, ReconcileView, RunView};
use crate::state::AppState;

/// The reconciliation routes with their OpenAPI operations, merged into the API's router
/// (with a bill-sized body limit).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload, imports))
        .routes(routes!(runs))
        .routes(routes!(breaks))
        .routes(routes!(resolve))
        .routes(routes!(resolutions))
        .layer(DefaultBodyLimit::max(BILL_UPLOAD_BYTES_MAX))
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(FieldError::new(field, FieldErrorKind::Invalid, message.into()))
}

impl From<ReconError> for ApiError {
    fn from(e: ReconError) -> Self {
        match e {
            ReconError::Bill(b) => bad("body", b.to_string()),
            ReconError::Invalid(m) => bad("body", m),
            ReconError::BreakNotFound(_) | ReconError::ImportNotFound(_) => ApiError::NotFound,
            ReconError::AlreadyResolved(id) => bad("break_id", format!("break {id} is already resolved")),
            e @ ReconError::TooManyBreaks { .. } => bad("body", e.to_string()),
            ReconError::Refused { code, message } => ApiError::Refused {
                code: facepay_domain::RefusalReason::from_code(&code).map_or("REFUSED", |r| r.code()),
                message: format!("{code}: {message}"),
            },
            ReconError::Store(s) => s.into(),
            e => ApiError::Internal(e.into()),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadQuery {
    /// The bill's Asia/Shanghai day.
    #[param(value_type = NaiveDate)]
    pub(crate) date: String,
    /// A generic CSV's columns: `field=Header,…`.
    pub(crate) mapping: Option<String>,
    pub(crate) file_name: Option<String>,
}

/// `POST /v1/reconciliation/bills?date=YYYY-MM-DD`: the bill as the body; imports it and
/// reconciles its day.
#[utoipa::path(post, path = "/v1/reconciliation/bills", params(UploadQuery),
    request_body(content = String, content_type = "text/csv", description = "the channel's daily bill"),
    responses((status = 201, body = ReconcileView, description = "imported (or recognised by its hash) and reconciled: \
            the run's report"),
        (status = 400, body = ErrorBody, description = "a bad bill, naming line and column"),
        (status = 413, body = ErrorBody, description = "larger than 64 MiB")))]
async fn upload(
    State(st): State<AppState>,
    p: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReconcileView>), ApiError> {
    Ok((StatusCode::CREATED, Json(upload_bill(&st, &p, q, body).await?)))
}

/// Imports a bill and reconciles its day, audited with `p`'s key (the API, the console).
pub(crate) async fn upload_bill(
    st: &AppState,
    p: &Authorized<FinanceOnly>,
    q: UploadQuery,
    body: Bytes,
) -> Result<ReconcileView, ApiError> {
    let day = q.date.parse::<NaiveDate>().map_err(|_| bad("date", "YYYY-MM-DD is required"))?;
    let mapping = q.mapping.as_deref().map(ColumnMapping::parse).transpose().map_err(|m| bad("mapping", m))?;
    let file_name = q.file_name.unwrap_or_else(|| format!("upload-{day}.csv"));
    let req = ImportRequest { day, file_name, account: "default".into(), at: Utc::now() };
    let report = import_and_reconcile(st.recon.clone(), Cursor::new(body), mapping, req).await?;
    let detail = serde_json::json!({ "date": day.to_string() });
    audit(st, p, "bill_imported", &day.to_string(), detail).await?;
    Ok(report.into())
}

/// `GET /v1/reconciliation/bills`: imported bills, newest first.
#[utoipa::path(get, path = "/v1/reconciliation/bills", params(LimitQuery),
    responses((status = 200, body = Page<ImportView>, description = "imported bills, newest first"),
        (status = 400, body = ErrorBody)))]
async fn imports(
    State(st): State<AppState>,
    _: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Page<ImportView>>, ApiError> {
    let items = st.recon.imports(page_limit(q.limit)?).await?;
    Ok(Json(Page { items: items.into_iter().map(Into::into).collect(), next_cursor: None }))
}

/// `GET /v1/reconciliation/runs`: runs with their reports, newest first.
#[utoipa::path(get, path = "/v1/reconciliation/runs", params(LimitQuery),
    responses((status = 200, body = Page<RunView>, description = "runs with their reports (counts and sums by class, \
            per merchant)"),
        (status = 400, body = ErrorBody)))]
async fn runs(
    State(st): State<AppState>,
    p: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Page<RunView>>, ApiError> {
    Ok(Json(runs_page(&st, &p, q.limit).await?))
}

/// Reconciliation runs with their reports, newest first (the API, the console).
pub(crate) async fn runs_page(
    st: &AppState,
    _: &Authorized<FinanceOnly>,
    limit: Option<u32>,
) -> Result<Page<RunView>, ApiError> {
    let items = st.recon.runs(page_limit(limit)?).await?;
    Ok(Page { items: items.into_iter().map(Into::into).collect(), next_cursor: None })
}

/// `GET /v1/reconciliation/resolutions`: resolutions, newest first.
#[utoipa::path(get, path = "/v1/reconciliation/resolutions", params(LimitQuery),
    responses((status = 200, body = Page<ResolutionRow>, description = "resolutions, newest first"),
        (status = 400, body = ErrorBody)))]
async fn resolutions(
    State(st): State<AppState>,
    _: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Page<ResolutionRow>>, ApiError> {
    Ok(Json(Page { items: st.recon.resolutions(page_limit(q.limit)?).await?, next_cursor: None }))
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct BreaksQuery {
    #[param(value_type = Option<Uuid>)]
    pub(crate) run_id: Option<String>,
    #[param(value_type = Option<NaiveDate>)]
    pub(crate) date: Option<String>,
    #[param(value_type = Option<Class>)]
    pub(crate) class: Option<String>,
    #[param(value_type = Option<facepay_domain::MerchantId>)]
    pub(crate) merchant_id: Option<String>,
    pub(crate) unresolved: Option<bool>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub(crate) cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<u32>,
}

/// `GET /v1/reconciliation/breaks?run_id=&date=&class=&merchant_id=&unresolved=&cursor=&limit=`
#[utoipa::path(get, path = "/v1/reconciliation/breaks", params(BreaksQuery),
    responses((status = 200, body = Page<BreakView>, description = "a page of breaks"), (status = 400, body = ErrorBody)))]
async fn breaks(
    State(st): State<AppState>,
    p: Authorized<FinanceOnly>,
    ApiQuery(q): ApiQuery<BreaksQuery>,
) -> Result<Json<Page<BreakView>>, ApiError> {
    Ok(Json(breaks_page(&st, &p, q).await?))
}

/// A page of breaks (the API, the console).
pub(crate) async fn breaks_page(
    st: &AppState,
    _: &Authorized<FinanceOnly>,
    q: BreaksQuery,
) -> Result<Page<BreakView>, ApiError> {
    let uuid =
        |f: &str, v: Option<String>| v.map(|s| s.parse::<Uuid>().map_err(|_| bad(f, "a UUID is required"))).transpose();
    let filter = BreakFilter {
        run_id: uuid("run_id", q.run_id)?,
        day: q.date.map(|d| d.parse::<NaiveDate>().map_err(|_| bad("date", "YYYY-MM-DD"))).transpose()?,
        class: q.class.map(|c| Class::parse(&c).ok_or_else(|| bad("class", "not a break class"))).transpose()?,
        merchant_id: q
            .merchant_id
            .map(|m| facepay_domain::MerchantId::parse(m).map(String::from))
            .transpose()
            .map_err(|e| ApiError::BadRequest(FieldError::new("merchant_id", e.kind, e.message)))?,
        unresolved: q.unresolved.unwrap_or(false),
        after: uuid("cursor", q.cursor)?,
        limit: page_limit(q.limit)?,
    };
    let items = st.recon.breaks(&filter).await?;
    let next_cursor = next_cursor(&items, filter.limit, |b| b.break_id.to_string());
    Ok(Page { items: items.into_iter().map(Into::into).collect(), next_cursor })
}

/// The actions finance may send: every one but `superseded`.
fn finance_actions() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let actions = Action::ALL.into_iter().filter(|a| *a != Action::Superseded).map(Action::as_str);
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(actions)).build()
}

/// How finance settles a break.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ResolveBody {
    /// What finance decided (`superseded` is facepay's own, when a newer bill is reconciled).
    #[schema(schema_with = finance_actions)]
    pub(crate) action: String,
    /// The person who decided (kept with the finance key that sent it).
    #[schema(min_length = 1)]
    pub(crate) resolved_by: String,
    #[schema(min_length = 1)]
    pub(crate) reason: String,
}

/// `POST /v1/reconciliation/breaks/{break_id}/resolution`: `{action, resolved_by, reason}`.
#[utoipa::path(post, path = "/v1/reconciliation/breaks/{break_id}/resolution", params(("break_id" = Uuid, Path)),
    request_body(content = ResolveBody, content_type = "application/json", description = "confirmed_paid (a \
        status_mismatch of a payment only) has the ledger settle the order first"),
    responses((status = 201, body = ResolutionRow, description = "the resolution, appended to the ledger and the audit log"),
        (status = 400, body = ErrorBody, description = "a bad field, a break already resolved, or an action its class does \
            not take"),
        (status = 404, body = ErrorBody, description = "no such break"), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "confirmed_paid refused by the ledger: ORDER_PAID, \
        ORDER_REVERSED, AMOUNT_MISMATCH or ORDER_NOT_FOUND; the break stays open")))]
async fn resolve(
    State(st): State<AppState>,
    p: Authorized<FinanceOnly>,
    ApiPath(break_id): ApiPath<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<(StatusCode, Json<ResolutionRow>), ApiError> {
    Ok((StatusCode::CREATED, Json(resolve_one(&st, &p, break_id, body).await?)))
}

/// Resolves a break, audited with `p`'s key (the API, the console).
pub(crate) async fn resolve_one(
    st: &AppState,
    p: &Authorized<FinanceOnly>,
    break_id: String,
    body: ResolveBody,
) -> Result<ResolutionRow, ApiError> {
    let break_id = break_id.parse::<Uuid>().map_err(|_| bad("break_id", "a UUID is required"))?;
    let action = Action::parse(&body.action).ok_or_else(|| bad("action", "not a resolution action"))?;
    let recon = st.recon.clone();
    // Who: the person named in the request, through the key that sent it.
    let by = format!("{} (key {})", body.resolved_by, p.key_id);
    let row = resolve_break(recon.as_ref(), break_id, action, &by, &body.reason, Utc::now()).await?;
    let detail = serde_json::json!({ "action": body.action, "resolved_by": body.resolved_by, "reason": body.reason });
    audit(st, p, "break_resolved", &break_id.to_string(), detail).await?;
    Ok(row)
}

/// Appends a finance action to the audit log, with the key that did it.
async fn audit(
    st: &AppState,
    p: &Principal,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    st.store.audit_append(&p.actor().entry(action, subject, detail)).await?;
    Ok(())
}
