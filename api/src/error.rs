//! The one HTTP error type: it owns the mapping to status codes and the one error body,
//! `{code, message, field?, request_id}`. axum's own rejections come through it too: the
//! extractors in [`crate::extract`] turn theirs into an [`ApiError`], and
//! [`json_errors`] gives any other non-2xx answer (an unknown route, a wrong method, a body
//! over its limit) the same body, so no failure is ever plain text or empty.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use facepay_domain::{FieldError, FieldErrorKind};
use facepay_ledger::StoreError;
use serde::Serialize;

tokio::task_local! {
    /// The id of the request being served (set by [`crate::observe::request_id`]).
    pub static REQUEST_ID: String;
}

/// The current request's id, or empty outside a request.
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Every failure an HTTP handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is malformed or refers to nothing: 400, naming the field. A replayed
    /// event id is 409, an event its signer may not send 403.
    #[error("{0}")]
    BadRequest(#[from] FieldError),
    /// No key or signature, or one that is unknown, revoked, expired, wrong or stale: 401,
    /// always the same body, so a caller learns nothing of the registry or the keys.
    #[error("authentication failed")]
    Unauthenticated,
    /// A valid key whose role may not do this: 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such resource, or one the principal may not see: 404, always the same body.
    #[error("not found")]
    NotFound,
    /// A body of another type than the route reads: 415.
    #[error("the body must be {0}")]
    UnsupportedMediaType(&'static str),
    /// A body over its route's limit: 413.
    #[error("the body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    /// A repeated request that contradicts the first (idempotency): 409.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Well-formed, but the domain refuses it: 422.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// The key's request budget is spent: 429 with Retry-After.
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The pipeline is full: 503 with Retry-After, so devices back off instead of piling on.
    #[error("the pipeline is busy; retry shortly")]
    Overloaded,
    /// The store failed in a way that passes ([`StoreError::is_transient`]: connection
    /// lost, pool exhausted, busy): 503 with Retry-After; logged, answered quietly.
    #[error("the store is unavailable for a moment; retry shortly")]
    Unavailable(#[source] StoreError),
    /// Anything else: 500, logged in full, answered quietly.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e.into())
        }
    }
}

/// The error body of every failure.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `too_many_decimals`.
    pub code: String,
    pub message: String,
    /// The dotted path of the field at fault, for field errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request's id (also the `x-request-id` response header), for support.
    pub request_id: String,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(e) => match e.kind {
                FieldErrorKind::BadSignature | FieldErrorKind::ClockSkew => StatusCode::UNAUTHORIZED,
                FieldErrorKind::Replayed => StatusCode::CONFLICT,
                FieldErrorKind::WrongOrigin => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            },
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> String {
        match self {
            ApiError::BadRequest(e) => e.kind.as_str().to_string(),
            ApiError::Unauthenticated => "unauthorized".into(),
            ApiError::Forbidden(_) => "forbidden".into(),
            ApiError::NotFound => "not_found".into(),
            ApiError::PayloadTooLarge { .. } => "payload_too_large".into(),
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type".into(),
            ApiError::Conflict { code, .. } | ApiError::Refused { code, .. } => (*code).into(),
            ApiError::RateLimited { .. } => "rate_limited".into(),
            ApiError::Overloaded => "overloaded".into(),
            ApiError::Unavailable(_) => "unavailable".into(),
            ApiError::Internal(_) => "internal".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            ApiError::Unavailable(e) => tracing::warn!(error = %e, "store unavailable; the caller is told to retry"),
            _ => {}
        }
        let field = match &self {
            ApiError::BadRequest(e) => Some(e.field.clone()),
            _ => None,
        };
        let message = match &self {
            ApiError::BadRequest(e) => e.message.clone(),
            other => other.to_string(),
        };
        let body = ErrorBody { code: self.code(), message, field, request_id: request_id() };
        let mut resp = (self.status(), Json(body)).into_response();
        let retry_after = match &self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Overloaded | ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::Unauthenticated) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The code of a failure answered by the framework rather than a handler, by its status.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// The outermost layer: a request target over [`URI_LEN_MAX`](facepay_domain::limits::URI_LEN_MAX)
/// is a 414 before anything reads it; an answer that is neither a success nor already an
/// [`ErrorBody`] (the router's 404 and 405, a body limit's 413, anything a layer answered by
/// itself) is given the one error body, with a message that says only what its status says.
/// Headers (`Allow`, `Retry-After`) stay.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let target_len = req.uri().path().len() + req.uri().query().map_or(0, |q| q.len() + 1);
    let resp = match target_len > facepay_domain::limits::URI_LEN_MAX {
        true => StatusCode::URI_TOO_LONG.into_response(),
        false => next.run(req).await,
    };
    let status = resp.status();
    let json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_success() || status.is_informational() || status.is_redirection() || json {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let message = status.canonical_reason().unwrap_or("the request failed").to_lowercase();
    let body = ErrorBody { code: code_of(status).into(), message, field: None, request_id: request_id() };
    let bytes = serde_json::to_vec(&body).expect("an error body serialises");
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: StoreError) -> (StatusCode, Option<String>, ErrorBody) {
        let resp = ApiError::from(e).into_response();
        let status = resp.status();
        let retry = resp.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_store_failure_that_passes_is_a_quiet_503_with_retry_after() {
        for e in [
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Database(sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))),
            StoreError::Unavailable("connection refused to 10.0.0.7".into()),
        ] {
            let (status, retry, body) = answer(e).await;
            assert_eq!(
                (status, retry.as_deref(), body.code.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, Some("1"), "unavailable")
            );
            assert!(!body.message.contains("10.0.0.7"), "quiet: {}", body.message);
        }
    }

    #[tokio::test]
    async fn a_store_failure_that_stays_is_a_quiet_500() {
        for e in [StoreError::Corrupt("orders row 7: bad status \"X\"".into()), StoreError::Conflict("x".into())] {
            let (status, retry, body) = answer(e).await;
            assert_eq!((status, retry, body.code.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, None, "internal"));
            assert_eq!(body.message, "internal error");
        }
    }
}
