//! The API's own extractors: axum's `Json`, `Query` and `Path` with their rejections turned
//! into [`ApiError`] (the one error body, naming the field at fault), and the body read under
//! its route's limit (413 past it).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use facepay_domain::{FieldError, FieldErrorKind};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body (`Content-Type: application/json`), parsed field by field: a bad field is a
/// 400 naming it, a body that is not JSON a 400 `malformed`, another content type a 415.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let limit = facepay_domain::limits::EVENT_BYTES_MAX;
        let bytes =
            Bytes::from_request(req, state).await.map_err(|_| ApiError::PayloadTooLarge { limit_bytes: limit })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(ApiJson).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            // serde_json reports some shape errors (a number where an enum goes) as syntax:
            // only a body that is not JSON at all is malformed.
            let not_json = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err();
            match not_json {
                true => FieldError::new(".", FieldErrorKind::Malformed, "the body is not valid JSON").into(),
                false => FieldError::new(field, FieldErrorKind::Invalid, without_position(&inner.to_string())).into(),
            }
        })
    }
}

/// A query string, parsed field by field: `limit=abc` is a 400 naming `limit`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => "query".to_string(),
                p => p,
            };
            FieldError::new(field, FieldErrorKind::Invalid, e.into_inner().to_string()).into()
        })
    }
}

/// Path parameters: one that does not decode is a 400 naming the route's parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(FieldError::new("path", FieldErrorKind::Invalid, e.body_text()).into()),
        }
    }
}

/// Reads `body` whole, at most `limit_bytes` (413 past it).
pub async fn read_body(body: Body, limit_bytes: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit_bytes).await.map_err(|_| ApiError::PayloadTooLarge { limit_bytes })
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// serde's message without its ` at line 1 column 7` tail.
fn without_position(text: &str) -> String {
    text.rfind(" at line ").map_or(text, |i| &text[..i]).to_string()
}

/// A typed value read from a request field, or a 400 naming `name`.
pub(crate) fn field<T>(name: &str, r: Result<T, facepay_domain::ValueError>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::BadRequest(FieldError::new(name, e.kind, e.message)))
}
