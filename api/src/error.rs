//! The one HTTP error type: it owns the mapping to status codes and the one error body,
//! `{code, message, field?, request_id}`.

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
    /// A request field is malformed or refers to nothing: 400, naming the field. Signature
    /// failures of an event are 401, a replayed event id 409.
    #[error("{0}")]
    BadRequest(#[from] FieldError),
    /// No key, or a key that is unknown, revoked or expired: 401.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid key whose role may not do this: 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such resource, or one of another tenant: 404.
    #[error("{0} not found")]
    NotFound(&'static str),
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
                _ => StatusCode::BAD_REQUEST,
            },
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
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
            ApiError::Unauthorized(_) => "unauthorized".into(),
            ApiError::Forbidden(_) => "forbidden".into(),
            ApiError::NotFound(_) => "not_found".into(),
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
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
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
