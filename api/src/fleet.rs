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
use facepay_domain::{DeviceId, MerchantId, StoreId};
use facepay_ledger::model::Keys;
use facepay_ledger::store::{DeviceActivity, DevicesPage};
use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, FleetReaders};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{field, ApiPath, ApiQuery};
use crate::page::{bad_cursor, next_cursor, page_limit};
use crate::state::AppState;

/// A merchant's terms and devices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetView {
    pub merchant_id: String,
    /// The single payment limit, CNY.
    pub single_limit: String,
    /// The fee rate, parts per million of each amount (0.54 % = 5400).
    pub fee_rate_ppm: i64,
    /// A page of them by store and device; a store key sees its store's only.
    pub devices: Vec<DeviceActivity>,
    /// Pass as `cursor` for the next page of devices; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `?cursor=&limit=` of a fleet's devices.
#[derive(Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FleetQuery {
    /// The `next_cursor` of the previous page (`<store_id>.<device_id>`).
    #[param(pattern = r"^[0-9A-Za-z_-]{1,32}\.[0-9A-Za-z_-]{1,32}$")]
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// `GET /v1/merchants/{merchant_id}/fleet` (the merchant's keys, finance, admin).
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/fleet", params(("merchant_id" = MerchantId, Path), FleetQuery),
    responses((status = 200, body = FleetView, description = "the merchant's terms and devices"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such merchant, or another tenant")))]
pub(crate) async fn fleet(
    State(st): State<AppState>,
    p: Authorized<FleetReaders>,
    ApiPath(merchant): ApiPath<String>,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Json<FleetView>, ApiError> {
    Ok(Json(fleet_view(&st, &p, merchant, q).await?))
}

/// `merchant`'s fleet as `p` may see it, a page of devices: another tenant's, or a merchant not
/// registered, is 404.
pub(crate) async fn fleet_view(
    st: &AppState,
    p: &Authorized<FleetReaders>,
    merchant: String,
    q: FleetQuery,
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
    let page = DevicesPage {
        store_id: p.store_id.clone(),
        after: q.cursor.map(after).transpose()?,
        limit: page_limit(q.limit)?,
    };
    let devices = st.store.devices(&merchant, &page, since).await?;
    let next_cursor = next_cursor(&devices, page.limit, |d| format!("{}.{}", d.store_id, d.device_id));
    // The terms as the ledger decides with them (its defaults where they never changed).
    let keys = Keys { limits: [merchant.clone()].into(), fee_rates: [merchant.clone()].into(), ..Keys::default() };
    let terms = st.store.load(&keys).await?;
    Ok(FleetView {
        merchant_id: merchant.to_string(),
        single_limit: fen_to_string(terms.single_limit_fen(&merchant)),
        fee_rate_ppm: terms.fee_rate_ppm(&merchant),
        devices,
        next_cursor,
    })
}

/// The device a `next_cursor` names.
fn after(cursor: String) -> Result<(StoreId, DeviceId), ApiError> {
    let (store, device) = cursor.split_once('.').ok_or_else(bad_cursor)?;
    Ok((StoreId::parse(store).map_err(|_| bad_cursor())?, DeviceId::parse(device).map_err(|_| bad_cursor())?))
}
