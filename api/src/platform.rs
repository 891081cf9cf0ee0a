//! Events sent through the platform for an authenticated principal: an admin's platform and
//! merchant events (`POST /v1/events` with an admin key, the console's admin forms) and a
//! merchant's refund. Each is checked as any event (a bad one kept with its reason), audited
//! with the principal, signed by the platform and put into the pipeline; [`send_for`] also
//! waits for its outcome, which [`applied`] turns into the API's answer.

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use facepay_domain::auth::{AcceptStamp, EventSignature, KeyId};
use facepay_domain::FieldError;
use facepay_domain::FieldErrorKind;
use facepay_ingest::authenticity::Refusal;
use facepay_ingest::validate::validate;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// An event `principal` sends through the platform (an admin's platform or merchant event, a
/// merchant's refund): parsed and checked as any event (a bad one kept with its reason, a
/// device's event refused: a device signs its own), audited under `subject` with `detail`
/// and the event id, then signed by the platform for the bus: the envelope and the signature.
pub(crate) async fn platform_signed(
    st: &AppState,
    principal: &Principal,
    body: &[u8],
    accepted_at: DateTime<Utc>,
    subject: &str,
    mut detail: serde_json::Value,
) -> Result<(facepay_domain::Envelope, String), ApiError> {
    let envelope = match validate(body, &st.registry, accepted_at) {
        Ok(env) if env.origin.device().is_some() => {
            return Err(ApiError::Forbidden("device events are signed by their device, not sent with a key"))
        }
        Ok(env) => env,
        Err(error) => {
            let refusal = Refusal::Invalid { keep: st.verifier.may_keep(&principal.key_id), error, sender: None };
            facepay_ingest::pipeline::refused(body, "http", &refusal, st.store.as_ref()).await?;
            return Err(ApiError::BadRequest(refusal.error().clone()));
        }
    };
    detail["event_id"] = serde_json::json!(envelope.event_id);
    let entry = principal.actor().entry(envelope.body.kind(), subject, detail);
    st.store.audit_append(&entry).await?;
    let sig = EventSignature::sign(
        KeyId::platform(),
        st.verifier.platform_secret(),
        accepted_at.timestamp(),
        envelope.event_id,
        body,
    );
    Ok((envelope, sig.header()))
}

/// Sends `envelope` for `principal` through the platform (checked, audited under `subject`
/// with `detail`, signed: [`platform_signed`]) and waits at most `wait` for its outcome:
/// `None` when it is not decided by then (or too many wait). An admin's action in the console
/// and a merchant's refund are sent so.
pub(crate) async fn send_for(
    st: &AppState,
    principal: &Principal,
    envelope: facepay_domain::Envelope,
    subject: &str,
    detail: serde_json::Value,
    wait: std::time::Duration,
) -> Result<Option<facepay_domain::Outcome>, ApiError> {
    let (event_id, accepted_at, bytes) = (envelope.event_id, envelope.accepted_at, Bytes::from(envelope.to_json()));
    let (envelope, signature) = platform_signed(st, principal, &bytes, accepted_at, subject, detail).await?;
    let waiter = st.waiters.register(event_id, None);
    enter(st, envelope, &bytes, &signature, accepted_at).await?;
    match waiter {
        Some(waiter) => crate::wait::outcome_by(st, waiter, event_id, None, tokio::time::Instant::now() + wait).await,
        None => Ok(None),
    }
}

/// An outcome of an event sent for a principal ([`send_for`]) as the API answers it: applied
/// (`true`), not decided yet (`false`), or the ledger's refusal: a refund number used for
/// another refund is a conflict (409), any other refusal the domain's (422), with its code.
pub(crate) fn applied(outcome: Option<facepay_domain::Outcome>) -> Result<bool, ApiError> {
    use facepay_domain::{OutcomeBody, RefusalReason};
    let (code, message) = match outcome.map(|o| o.body) {
        None => return Ok(false),
        Some(OutcomeBody::Applied { .. }) => return Ok(true),
        Some(OutcomeBody::Refused { code, message, .. }) => (code, message),
        Some(OutcomeBody::Rejected { field, message, .. }) => {
            return Err(ApiError::BadRequest(FieldError::new(field, FieldErrorKind::Invalid, message)))
        }
        Some(other) => return Err(ApiError::Internal(anyhow::anyhow!("answered {:?}", other.kind()))),
    };
    match RefusalReason::ALL.into_iter().find(|r| r.code() == code) {
        Some(RefusalReason::RefundNoUsed) => {
            Err(ApiError::Conflict { code: RefusalReason::RefundNoUsed.code(), message })
        }
        Some(reason) => Err(ApiError::Refused { code: reason.code(), message }),
        None => Err(ApiError::Internal(anyhow::anyhow!("refused with an unknown code {code:?}"))),
    }
}

/// Puts an event into the pipeline with the platform's accept stamp.
pub(crate) async fn enter(
    st: &AppState,
    envelope: facepay_domain::Envelope,
    body: &Bytes,
    signature: &str,
    accepted_at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let stamp = AcceptStamp::sign(st.verifier.platform_secret(), accepted_at.timestamp_millis(), body).header();
    st.input.accept(envelope, body, signature, &stamp).await?;
    Ok(())
}
