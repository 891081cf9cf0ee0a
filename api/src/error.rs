//! The one HTTP error type: it owns the mapping to status codes and the error body.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use facepay_domain::FieldError;
use facepay_ledger::StoreError;
use serde::Serialize;

/// Every failure an HTTP handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is malformed or refers to nothing: 400, naming the field.
    #[error("{0}")]
    BadRequest(#[from] FieldError),
    /// No such resource: 404.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The pipeline is full: 503 with Retry-After, so devices back off instead of piling on.
    #[error("the pipeline is busy; retry shortly")]
    Overloaded,
    /// Anything else: 500, logged in full, answered quietly.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.into())
    }
}

/// The error body: `{code, message, field?}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadRequest(e) => (
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    code: e.kind.as_str().to_string(),
                    message: e.message.clone(),
                    field: Some(e.field.clone()),
                },
            ),
            ApiError::NotFound(what) => {
                (StatusCode::NOT_FOUND, ErrorBody { code: "not_found".into(), message: self.to_string(), field: None })
                    .tap(|_| tracing::debug!(what, "not found"))
            }
            ApiError::Overloaded => {
                let body = ErrorBody { code: "overloaded".into(), message: self.to_string(), field: None };
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], Json(body)).into_response();
            }
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody { code: "internal".into(), message: self.to_string(), field: None },
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}

impl<T> Tap for T {}
