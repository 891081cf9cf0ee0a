//! A merchant's fleet: its terms (the single payment limit, the fee rate) and its registered
//! devices, each with when the ledger last answered one of its events and how many of its
//! events of the last hour were refused, rejected or declined
//! (`GET /v1/merchants/{merchant_id}/fleet`); [`fleet_view`] serves the console's admin pages
//! too. The terms change by merchant events (`merchant_limit_changed`,
//! `merchant_fee_rate_changed`), sent by an admin and audited.

use axum::extract::State;
use axum::Json;
use facepay_domain::limits::FLEET_REFUSED_WINDOW_MS;
use facepay_domain::money::fen_to_string;
use facepay_domain::MerchantId;
use facepay_ledger::model::Keys;
use facepay_ledger::store::DeviceActivity;
use serde::Serialize;

use crate::auth::{Authorized, FleetReaders};
use crate::error::{ApiError, ErrorBody};
use crate::extract::field;
use crate::extract::ApiPath;
use crate::state::AppState;

/// A merchant's terms and devices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetView {
    pub merchant_id: String,
    /// The single payment limit, CNY.
    pub single_limit: String,
    /// The fee rate, parts per million of each amount (0.54 % = 5400).
    pub fee_rate_ppm: i64,
    /// By store and device; a store key sees its store's only.
    pub devices: Vec<DeviceActivity>,
}

/// `GET /v1/merchants/{merchant_id}/fleet` (the merchant's keys, finance, admin).
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/fleet", params(("merchant_id" = MerchantId, Path)),
    responses((status = 200, body = FleetView, description = "the merchant's terms and devices"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such merchant, or another tenant")))]
pub(crate) async fn fleet(
    State(st): State<AppState>,
    p: Authorized<FleetReaders>,
    ApiPath(merchant): ApiPath<String>,
) -> Result<Json<FleetView>, ApiError> {
    Ok(Json(fleet_view(&st, &p, merchant).await?))
}

/// `merchant`'s fleet as `p` may see it: another tenant's, or a merchant not registered, is 404.
pub(crate) async fn fleet_view(
    st: &AppState,
    p: &Authorized<FleetReaders>,
    merchant: String,
) -> Result<FleetView, ApiError> {
    let merchant = field("merchant_id", MerchantId::parse(merchant))?;
    p.sees_merchant(&merchant)?;
    let known = st.registry.read().unwrap_or_else(|e| e.into_inner()).merchants.contains_key(&merchant);
    if !known {
        return Err(ApiError::NotFound);
    }
    // The answers are stamped with the wall clock when they are stored (not the platform's
    // clock, which a simulation may drive): "the last hour" is the wall clock's too.
    let since = chrono::Utc::now() - chrono::Duration::milliseconds(FLEET_REFUSED_WINDOW_MS);
    let devices = st.store.devices(&merchant, since).await?;
    let own_store = p.store_id.as_ref().map(|s| s.as_str());
    let devices = devices.into_iter().filter(|d| own_store.is_none_or(|s| s == d.store_id)).collect();
    // The terms as the ledger decides with them (its defaults where they never changed).
    let keys = Keys { limits: [merchant.clone()].into(), fee_rates: [merchant.clone()].into(), ..Keys::default() };
    let terms = st.store.load(&keys).await?;
    Ok(FleetView {
        merchant_id: merchant.to_string(),
        single_limit: fen_to_string(terms.single_limit_fen(&merchant)),
        fee_rate_ppm: terms.fee_rate_ppm(&merchant),
        devices,
    })
}
