//! An order's whole life beyond its row: its refunds, the retried payments it answered, and
//! its events sent again under the same id (`GET /v1/merchants/{m}/orders/{no}/refunds`,
//! `…/retries`, `…/repeats`), read by the console's order page with its decided attempts (the
//! history filtered by the order) too.

use axum::extract::State;
use axum::Json;
use facepay_domain::money::fen_to_string;
use facepay_domain::{MerchantId, OutTradeNo};
use serde::Serialize;

use facepay_ledger::model::Order;
use facepay_ledger::store::{RepeatView, RetryView};

use crate::auth::{Authorized, OrderReaders, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{field, ApiPath};
use crate::page::Page;
use crate::state::AppState;

/// One refund of an order, as served.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefundItem {
    pub out_refund_no: String,
    /// CNY.
    pub amount: String,
    /// The part of the merchant's fee that went back with it, CNY.
    pub fee_refund: String,
    pub refunded_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /v1/merchants/{merchant_id}/orders/{out_trade_no}/refunds`: the order's refunds,
/// oldest first (whoever may see the order).
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/orders/{out_trade_no}/refunds",
    params(("merchant_id" = MerchantId, Path), ("out_trade_no" = OutTradeNo, Path)),
    responses((status = 200, body = Page<RefundItem>, description = "the order's refunds, oldest first"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such order, or one the key may not see")))]
pub(crate) async fn list_refunds(
    State(st): State<AppState>,
    p: Authorized<OrderReaders>,
    ApiPath((merchant, out_trade_no)): ApiPath<(String, String)>,
) -> Result<Json<Page<RefundItem>>, ApiError> {
    let seen = seen_order(&st, &p, merchant, out_trade_no).await?;
    Ok(Json(Page { items: refunds_of(&st, &seen).await?, next_cursor: None }))
}

/// The refunds of an order (the API's list, the console's order page).
pub(crate) async fn refunds_of(st: &AppState, seen: &SeenOrder) -> Result<Vec<RefundItem>, ApiError> {
    let refunds = st.store.order_refunds(seen.merchant(), seen.out_trade_no()).await?;
    Ok(refunds
        .into_iter()
        .map(|r| RefundItem {
            out_refund_no: r.out_refund_no,
            amount: fen_to_string(r.amount_fen),
            fee_refund: fen_to_string(r.fee_refund_fen),
            refunded_at: r.refunded_at,
        })
        .collect())
}

/// An order a principal may see, made only by [`seen_order`]: whatever takes one (the order's
/// body, its refunds, its retries, a refund of it) was checked, and reads the order once.
pub(crate) struct SeenOrder {
    merchant: MerchantId,
    out_trade_no: OutTradeNo,
    order: Order,
}

impl SeenOrder {
    pub(crate) fn merchant(&self) -> &MerchantId {
        &self.merchant
    }

    pub(crate) fn out_trade_no(&self) -> &OutTradeNo {
        &self.out_trade_no
    }

    pub(crate) fn order(&self) -> &Order {
        &self.order
    }
}

/// An order `p` may see, by its path's fields: another tenant's or another store's order is
/// 404, as one that does not exist.
pub(crate) async fn seen_order(
    st: &AppState,
    p: &Principal,
    merchant: String,
    out_trade_no: String,
) -> Result<SeenOrder, ApiError> {
    let merchant = field("merchant_id", MerchantId::parse(merchant))?;
    p.sees_merchant(&merchant)?;
    let out_trade_no = field("out_trade_no", OutTradeNo::parse(out_trade_no))?;
    let order = st.orders.order((merchant.clone(), out_trade_no.clone())).await?.ok_or(ApiError::NotFound)?;
    p.sees_store(&order.store_id)?;
    Ok(SeenOrder { merchant, out_trade_no, order })
}

/// `GET /v1/merchants/{merchant_id}/orders/{out_trade_no}/retries`: the retried payments the
/// order answered, oldest first (whoever may see the order). A retry under the same event id
/// is answered from its stored outcome and counted in `…/repeats` instead.
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/orders/{out_trade_no}/retries",
    params(("merchant_id" = MerchantId, Path), ("out_trade_no" = OutTradeNo, Path)),
    responses((status = 200, body = Page<RetryView>, description = "the retries the order answered, oldest first"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such order, or one the key may not see")))]
pub(crate) async fn list_retries(
    State(st): State<AppState>,
    p: Authorized<OrderReaders>,
    ApiPath((merchant, out_trade_no)): ApiPath<(String, String)>,
) -> Result<Json<Page<RetryView>>, ApiError> {
    let seen = seen_order(&st, &p, merchant, out_trade_no).await?;
    Ok(Json(Page { items: retries_of(&st, &seen).await?, next_cursor: None }))
}

/// The retries an order answered (the API's list, the console's order page).
pub(crate) async fn retries_of(st: &AppState, seen: &SeenOrder) -> Result<Vec<RetryView>, ApiError> {
    Ok(st.store.order_retries(seen.merchant(), seen.out_trade_no()).await?)
}

/// `GET /v1/merchants/{merchant_id}/orders/{out_trade_no}/repeats`: the order's events their
/// device sent again under the same event id, by the last copy (whoever may see the order).
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/orders/{out_trade_no}/repeats",
    params(("merchant_id" = MerchantId, Path), ("out_trade_no" = OutTradeNo, Path)),
    responses((status = 200, body = Page<RepeatView>, description = "the order's events sent again"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such order, or one the key may not see")))]
pub(crate) async fn list_repeats(
    State(st): State<AppState>,
    p: Authorized<OrderReaders>,
    ApiPath((merchant, out_trade_no)): ApiPath<(String, String)>,
) -> Result<Json<Page<RepeatView>>, ApiError> {
    let seen = seen_order(&st, &p, merchant, out_trade_no).await?;
    Ok(Json(Page { items: repeats_of(&st, &seen).await?, next_cursor: None }))
}

/// The events of an order sent again (the API's list, the console's order page).
pub(crate) async fn repeats_of(st: &AppState, seen: &SeenOrder) -> Result<Vec<RepeatView>, ApiError> {
    Ok(st.store.order_repeats(seen.merchant(), seen.out_trade_no()).await?)
}
