//! Pages of a list answer: the page size's bounds and the page's shape.

use facepay_domain::limits::{PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};
use facepay_domain::{FieldError, FieldErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// A page of items, newest first where the list has an order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `?limit=`: the page size asked for (its bounds in the OpenAPI document are
/// [`PAGE_LIMIT_MAX`]'s: a test of `crate::openapi` holds them together).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LimitQuery {
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<u32>,
}

/// The `next_cursor` after a page of `items` for a `limit` asked for: `cursor` of the last
/// item; none after a short page (the last one).
pub(crate) fn next_cursor<T>(items: &[T], limit: u32, cursor: impl FnOnce(&T) -> String) -> Option<String> {
    match items.len() < limit as usize {
        true => None,
        false => items.last().map(cursor),
    }
}

/// A `cursor` that no `next_cursor` made (or made for another list): 400.
pub(crate) fn bad_cursor() -> ApiError {
    FieldError::new("cursor", FieldErrorKind::Invalid, "a cursor from next_cursor").into()
}

/// A page size: [`PAGE_LIMIT_DEFAULT`] when absent, else 1 to [`PAGE_LIMIT_MAX`] (400 outside).
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(PAGE_LIMIT_DEFAULT) {
        l @ 1..=PAGE_LIMIT_MAX => Ok(l),
        _ => {
            Err(FieldError::new("limit", FieldErrorKind::OutOfRange, format!("between 1 and {PAGE_LIMIT_MAX}")).into())
        }
    }
}
