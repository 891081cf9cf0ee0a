//! The merchant's refund: `POST /v1/merchants/{merchant_id}/orders/{out_trade_no}/refunds`,
//! and [`refund`], which the console's refund form calls too.
//!
//! The same rules as a device's `refund_requested`, because it is one: the request becomes a
//! `refund_requested` event of the merchant (origin `merchant_id` only), audited with the
//! key that asked, signed by the platform and decided by the ledger as any refund
//! (idempotent per `out_refund_no`, at most what is left of the paid amount, the money only
//! back to the payer who paid). The answer waits for the decision at most
//! [`MERCHANT_REFUND_WAIT_MS`]; past it the refund is `PENDING` (`202`) and the same request
//! sent again (the same `out_refund_no`) is the same refund.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use facepay_domain::event::RefundRequested;
use facepay_domain::limits::MERCHANT_REFUND_WAIT_MS;
use facepay_domain::{Envelope, EventBody, MerchantId, Money, Origin, OutRefundNo, OutTradeNo};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{Authorized, MerchantOnly};
use crate::error::{ApiError, ErrorBody};
use crate::extract::field;
use crate::extract::{ApiJson, ApiPath};
use crate::platform::{applied, send_for};
use crate::state::AppState;

/// A refund the merchant asks for.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct RefundRequest {
    /// The merchant's refund number, its idempotency key: the same number again is the same
    /// refund (with another order or amount: `409 REFUND_NO_USED`).
    #[schema(max_length = 32, pattern = r"^[0-9A-Za-z_\-|*]{1,32}$")]
    pub out_refund_no: String,
    /// CNY, a decimal string (`"12.50"`); at most what is left of the paid amount.
    #[schema(pattern = r"^[0-9]+(\.[0-9]{1,2})?$")]
    pub amount: String,
}

/// The refund as decided.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefundAnswer {
    /// The `refund_requested` event the request became.
    pub event_id: Uuid,
    pub out_trade_no: String,
    pub out_refund_no: String,
    /// CNY.
    pub amount: String,
    /// `SUCCESS`: refunded (or this refund number's refund, again); `PENDING`: not decided
    /// within the wait (send the same request again, or look at the order).
    pub status: &'static str,
}

/// `POST /v1/merchants/{merchant_id}/orders/{out_trade_no}/refunds` (merchant keys; a store
/// key its store's orders only): refunds all or part of a paid order.
#[utoipa::path(post, path = "/v1/merchants/{merchant_id}/orders/{out_trade_no}/refunds",
    params(("merchant_id" = MerchantId, Path), ("out_trade_no" = OutTradeNo, Path)),
    request_body(content = RefundRequest, content_type = "application/json"),
    responses((status = 200, body = RefundAnswer, description = "refunded (`SUCCESS`), or this refund number's refund again"),
        (status = 202, body = RefundAnswer, description = "not decided within 5 s (`PENDING`): send the same request again"),
        (status = 400, body = ErrorBody, description = "a bad field, named"),
        (status = 404, body = ErrorBody, description = "no such order, or one the key may not see"),
        (status = 409, body = ErrorBody, description = "`REFUND_NO_USED`: the refund number was used for another order or amount"),
        (status = 422, body = ErrorBody, description = "refused by the ledger: `REFUND_EXCEEDS_PAID`, `ORDER_NOT_PAID`, \
            `ORDER_REVERSED`, …")))]
pub(crate) async fn create_refund(
    State(st): State<AppState>,
    p: Authorized<MerchantOnly>,
    ApiPath((merchant, out_trade_no)): ApiPath<(String, String)>,
    ApiJson(asked): ApiJson<RefundRequest>,
) -> Result<Response, ApiError> {
    let answer = refund(&st, &p, merchant, out_trade_no, asked).await?;
    let status = match answer.status {
        "SUCCESS" => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(answer)).into_response())
}

/// Refunds `asked` of the order `out_trade_no` of `merchant`, as `p` (the API's route, the
/// console's form): another tenant's or another store's order is 404, as one that does not
/// exist.
pub(crate) async fn refund(
    st: &AppState,
    p: &Authorized<MerchantOnly>,
    merchant: String,
    out_trade_no: String,
    asked: RefundRequest,
) -> Result<RefundAnswer, ApiError> {
    let seen = crate::order_life::seen_order(st, p, merchant, out_trade_no).await?;
    let (merchant, out_trade_no) = (seen.merchant().clone(), seen.out_trade_no().clone());
    let out_refund_no = field("out_refund_no", OutRefundNo::parse(asked.out_refund_no.trim()))?;
    let amount: Money = field("amount", asked.amount.trim().parse())?;
    let body = EventBody::RefundRequested(RefundRequested {
        out_trade_no: out_trade_no.clone(),
        out_refund_no: out_refund_no.clone(),
        amount,
    });
    let envelope = Envelope::new(Uuid::new_v4(), st.clock.now(), Origin::Merchant(merchant.clone()), body);
    let event_id = envelope.event_id;
    let subject = format!("order:{merchant}:{out_trade_no}");
    let detail = serde_json::json!({ "out_refund_no": out_refund_no, "amount": amount.to_string() });
    let wait = Duration::from_millis(MERCHANT_REFUND_WAIT_MS);
    let decided = applied(send_for(st, p, envelope, &subject, detail, wait).await?)?;
    let status = if decided { "SUCCESS" } else { "PENDING" };
    Ok(RefundAnswer {
        event_id,
        out_trade_no: out_trade_no.as_str().to_string(),
        out_refund_no: out_refund_no.as_str().to_string(),
        amount: amount.to_string(),
        status,
    })
}
