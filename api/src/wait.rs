//! The device's synchronous answer: `POST /v1/events` with `Prefer: wait=N` (RFC 7240) is
//! answered `200` with the event's outcome when it is decided within N seconds (at most
//! [`DEVICE_WAIT_MAX_S`]), with `Preference-Applied: wait=N`; otherwise `202` as without the
//! preference, and the device queries its order. A device that sends an event id again (a
//! retry after a network timeout) is answered from the stored outcome, or waits for it.
//!
//! The request registers with this process's [`Waiters`](facepay_ingest::waiters::Waiters)
//! before its event enters the pipeline, so no decision slips past it; how the decision
//! reaches it (in process, or from another process's commit) is
//! [`facepay_ingest::waiters`]'s. At most `DEVICE_WAITERS_MAX` wait at once: past it the
//! event is taken all the same and answered `202`.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use facepay_domain::limits::DEVICE_WAIT_MAX_S;
use facepay_domain::{DeviceRef, FieldError, FieldErrorKind, Outcome, OutcomeBody, PaymentResult};
use facepay_ingest::waiters::{is_replay_refusal, Waiter};
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The response header that says the wait was honoured.
pub const PREFERENCE_APPLIED: &str = "preference-applied";

/// The wait a request prefers (`Prefer: wait=N`, in seconds, among other preferences),
/// capped at [`DEVICE_WAIT_MAX_S`]; `None` without one, or for `wait=0`.
pub fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get_all(axum::http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            let (name, value) = pref.split(';').next()?.split_once('=')?;
            let value = value.trim().trim_matches('"');
            name.trim().eq_ignore_ascii_case("wait").then(|| value.parse::<u64>().ok()).flatten()
        })
        .next()?;
    (seconds > 0).then(|| Duration::from_secs(seconds.min(DEVICE_WAIT_MAX_S)))
}

/// `200` to an event decided within the wait: its outcome, as on the outcomes topic
/// (docs/events.md), with the payer named as the merchant sees them (the openid) when a
/// device asked.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Decided {
    pub in_reply_to: Uuid,
    pub decided_at: DateTime<Utc>,
    /// The device the outcome answers (none for platform and merchant events).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub device: Option<DeviceRef>,
    /// `payment_result`, `query_result`, `applied`, `refused` or `rejected`.
    #[serde(rename = "type")]
    pub kind: String,
    /// As on the outcomes topic for `type`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// The `200` answer: `outcome`, its payer ids as `outcome`'s device sees them, with the wait
/// that was applied.
pub fn decided(st: &AppState, mut outcome: Outcome, wait: Duration) -> Result<Response, ApiError> {
    if let Some(device) = &outcome.device {
        let openid =
            |r: &mut PaymentResult| r.payer_id = r.payer_id.take().map(|p| st.auth.openid(&device.merchant_id, p));
        match &mut outcome.body {
            OutcomeBody::PaymentResult(r) | OutcomeBody::QueryResult(Some(r)) => openid(r),
            _ => {}
        }
    }
    let mut body = serde_json::to_value(&outcome.body).map_err(|e| ApiError::Internal(e.into()))?;
    let kind = body["type"].as_str().unwrap_or_default().to_string();
    let payload = body["payload"].take();
    let decided = Decided {
        in_reply_to: outcome.in_reply_to,
        decided_at: outcome.decided_at,
        device: outcome.device,
        kind,
        payload,
    };
    let applied =
        HeaderValue::from_str(&format!("wait={}", wait.as_secs())).map_err(|e| ApiError::Internal(e.into()))?;
    let mut response = (StatusCode::OK, Json(decided)).into_response();
    response.headers_mut().insert(PREFERENCE_APPLIED, applied);
    Ok(response)
}

/// The outcome `waiter` hears by `deadline`, or the stored one then. An answer refusing the
/// event as a replay (a copy sent again while the first is in the pipeline, or after it was
/// decided) is not the answer: the first copy's is, stored or still to come.
pub async fn outcome_by(
    st: &AppState,
    mut waiter: Waiter,
    event_id: Uuid,
    sender: Option<&DeviceRef>,
    deadline: Instant,
) -> Result<Option<Outcome>, ApiError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match waiter.outcome(left).await {
            Some(outcome) if !is_replay_refusal(&outcome) => return Ok(Some(outcome)),
            // At the deadline, a decision this process did not hear of (a notification lost
            // with its connection) is still found where it is stored.
            None => return stored(st, event_id, sender).await,
            Some(_) => {
                let Some(again) = st.waiters.register(event_id, sender.cloned()) else { return Ok(None) };
                if let Some(outcome) = stored(st, event_id, sender).await? {
                    return Ok(Some(outcome));
                }
                waiter = again;
            }
        }
    }
}

/// A device's event id sent again, refused as a replay here (the embedded profile checks
/// replays at the door): its stored outcome, or the one still to come by `deadline`; `None`
/// (answered 202) when it is not decided by then or too many wait.
pub async fn repeated(
    st: &AppState,
    event_id: Uuid,
    sender: &DeviceRef,
    deadline: Instant,
) -> Result<Option<Outcome>, ApiError> {
    let Some(waiter) = st.waiters.register(event_id, Some(sender.clone())) else { return Ok(None) };
    if let Some(outcome) = stored(st, event_id, Some(sender)).await? {
        return Ok(Some(outcome));
    }
    outcome_by(st, waiter, event_id, Some(sender), deadline).await
}

/// The stored outcome of `event_id` if it answered `sender`'s event; an event id that
/// answered another sender is a replay (409), not a way to read that sender's outcome.
pub async fn stored(st: &AppState, event_id: Uuid, sender: Option<&DeviceRef>) -> Result<Option<Outcome>, ApiError> {
    let Some(answer) = st.store.answered(&[event_id]).await?.remove(&event_id) else { return Ok(None) };
    if !answer.answered(sender) {
        let message = "this event id was used by another sender; send a new one";
        return Err(ApiError::BadRequest(FieldError::new("event_id", FieldErrorKind::Replayed, message)));
    }
    Ok(Some(answer.outcome(event_id)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("prefer", HeaderValue::from_str(v).unwrap());
        }
        preferred_wait(&headers)
    }

    #[test]
    fn the_wait_is_read_among_other_preferences_and_capped() {
        assert_eq!(prefer(&["wait=5"]), Some(Duration::from_secs(5)));
        assert_eq!(prefer(&["respond-async, Wait=3"]), Some(Duration::from_secs(3)));
        assert_eq!(prefer(&["handling=lenient", "wait=\"2\""]), Some(Duration::from_secs(2)));
        assert_eq!(prefer(&["wait=3600"]), Some(Duration::from_secs(DEVICE_WAIT_MAX_S)));
    }

    #[test]
    fn no_wait_a_zero_wait_or_a_bad_one_is_no_wait() {
        assert_eq!(prefer(&[]), None);
        assert_eq!(prefer(&["wait=0"]), None);
        assert_eq!(prefer(&["wait=soon", "return=minimal"]), None);
        assert_eq!(prefer(&["wait=-1"]), None);
    }
}
