//! A merchant's fleet and terms, and the admin's actions on merchants and payers: the devices
//! with when each was last heard of and its refusals of the last hour (the merchant's keys,
//! finance, admin); the single limit and fee rate (an admin changes them); a payer's wallet
//! with freeze and unfreeze (admin). Every change is the event an admin would send to the API
//! (`crate::admin::send_admin_event`): checked, audited with the signed-in key, decided by
//! the ledger.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use facepay_domain::auth::Role;
use facepay_domain::event::{AccountFrozen, AccountUnfrozen, MerchantFeeRateChanged, MerchantLimitChanged};
use facepay_domain::{EventBody, FieldError, FieldErrorKind, MerchantId, Money, Origin, PayerId};
use maud::html;
use serde::Deserialize;

use super::page::{at, cny, encode, next_link, shell, table, Head::Num, Head::Text};
use super::{respond, Console, ConsoleError, NoFields, Posted};
use crate::admin::send_admin_event;
use crate::auth::{AdminOnly, Authorized, FinanceOrAdmin, FleetReaders};
use crate::error::ApiError;
use crate::extract::{field, ApiQuery};
use crate::fleet::{fleet_view, FleetQuery};
use crate::http::balance_view;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/merchants/{merchant}/fleet", get(fleet))
        .route("/merchants/{merchant}/limit", post(set_limit))
        .route("/merchants/{merchant}/fee-rate", post(set_fee_rate))
        .route("/admin/payers", get(payer))
        .route("/admin/payers/{payer}/{action}", post(wallet_action))
}

/// `GET /console/merchants/{m}/fleet`: terms and devices; an admin's forms to change terms.
async fn fleet(
    State(st): State<AppState>,
    c: Console,
    Path(merchant): Path<String>,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> Result<Response, ConsoleError> {
    let p = c.as_role::<FleetReaders>()?;
    let f = fleet_view(&st, &p, merchant, q).await?;
    let t = c.ctx.t();
    let base = format!("/console/merchants/{}", encode(&f.merchant_id));
    let admin = c.principal.role == Role::Admin;
    let heads = [Text(t.device), Text(t.store), Text(t.created), Text(t.last_event), Num(t.refused_last_hour)];
    let body = html! {
        dl class="facts" {
            dt { (t.single_limit) } dd data-figure="single_limit" { (cny(&f.single_limit)) }
            dt { (t.fee_rate) } dd data-figure="fee_rate_ppm" { (f.fee_rate_ppm) " ppm" }
        }
        @if admin {
            form method="post" action={ (base) "/limit" } class="filters" {
                (c.ctx.csrf_field())
                label for="single_limit" { (t.single_limit) }
                input id="single_limit" name="single_limit" inputmode="decimal" required pattern=r"[0-9]+(\.[0-9]{1,2})?";
                button type="submit" { (t.set) }
            }
            form method="post" action={ (base) "/fee-rate" } class="filters" {
                (c.ctx.csrf_field())
                label for="fee_rate_ppm" { (t.fee_rate) }
                input id="fee_rate_ppm" name="fee_rate_ppm" type="number" min="0" max="100000" required;
                button type="submit" { (t.set) }
            }
        }
        h2 { (t.devices) }
        (table(t, &heads, &f.devices, |d| html! {
            tr data-device=(d.device_id) {
                td { code { (d.device_id) } } td { (d.store_id) } td { (at(&d.registered_at)) }
                td { @match &d.last_event_at { Some(a) => (at(a)), None => (t.never) } }
                td class="num" data-figure="refused" { (d.refused_last_hour) }
            }
        }))
        (next_link(t, &format!("{base}/fleet"), &[], f.next_cursor.as_deref()))
    };
    let title = format!("{} · {}", t.devices, f.merchant_id);
    Ok(respond(shell(&c.ctx, &title, body)))
}

#[derive(Deserialize)]
struct LimitForm {
    single_limit: String,
}

/// `POST /console/merchants/{m}/limit` (admin): `merchant_limit_changed`.
async fn set_limit(
    State(st): State<AppState>,
    Path(merchant): Path<String>,
    posted: Posted<LimitForm>,
) -> Result<Response, ConsoleError> {
    let p = posted.console.as_role::<AdminOnly>()?;
    let single_limit: Money = field("single_limit", posted.form.single_limit.trim().parse())?;
    terms_changed(&st, &p, &merchant, EventBody::MerchantLimitChanged(MerchantLimitChanged { single_limit })).await
}

#[derive(Deserialize)]
struct FeeRateForm {
    fee_rate_ppm: String,
}

/// `POST /console/merchants/{m}/fee-rate` (admin): `merchant_fee_rate_changed`.
async fn set_fee_rate(
    State(st): State<AppState>,
    Path(merchant): Path<String>,
    posted: Posted<FeeRateForm>,
) -> Result<Response, ConsoleError> {
    let p = posted.console.as_role::<AdminOnly>()?;
    let invalid = || ApiError::BadRequest(FieldError::new("fee_rate_ppm", FieldErrorKind::Invalid, "0 to 100000"));
    let fee_rate_ppm: u32 = posted.form.fee_rate_ppm.trim().parse().map_err(|_| invalid())?;
    let body = EventBody::MerchantFeeRateChanged(MerchantFeeRateChanged { fee_rate_ppm });
    terms_changed(&st, &p, &merchant, body).await
}

/// Sends a merchant event of `merchant` for the admin `p`, then shows its fleet again.
async fn terms_changed(
    st: &AppState,
    p: &Authorized<AdminOnly>,
    merchant: &str,
    body: EventBody,
) -> Result<Response, ConsoleError> {
    let m = field("merchant_id", MerchantId::parse(merchant))?;
    send_admin_event(st, p, Origin::Merchant(m.clone()), body, m.as_str()).await?;
    Ok(Redirect::to(&format!("/console/merchants/{}/fleet", encode(m.as_str()))).into_response())
}

#[derive(Deserialize)]
struct PayerQuery {
    payer_id: Option<String>,
}

/// `GET /console/admin/payers?payer_id=`: a payer's wallet, and freeze or unfreeze.
async fn payer(
    State(st): State<AppState>,
    c: Console,
    ApiQuery(q): ApiQuery<PayerQuery>,
) -> Result<Response, ConsoleError> {
    c.as_role::<AdminOnly>()?;
    let p = c.as_role::<FinanceOrAdmin>()?;
    let t = c.ctx.t();
    let asked = q.payer_id.filter(|s| !s.trim().is_empty());
    let wallet = match &asked {
        Some(id) => Some(balance_view(&st, &p, id.trim().to_string()).await?),
        None => None,
    };
    let body = html! {
        form method="get" class="filters" {
            label for="payer_id" { (t.payer) } input id="payer_id" name="payer_id" required value=[asked.as_deref()];
            button type="submit" { (t.filter) }
        }
        @if let Some(w) = &wallet {
            @let action = if w.frozen { "unfreeze" } else { "freeze" };
            dl class="facts" {
                dt { (t.payer) } dd { code { (w.payer_id) } }
                dt { (t.balance) } dd data-figure="balance" { (cny(&w.balance)) }
                dt { (t.held) } dd { (cny(&w.held)) }
                dt { (t.state) } dd data-figure="frozen" { @if w.frozen { (t.frozen) } @else { (t.active) } }
            }
            form method="post" action={ "/console/admin/payers/" (encode(w.payer_id.as_str())) "/" (action) } {
                (c.ctx.csrf_field())
                button type="submit" { @if w.frozen { (t.unfreeze) } @else { (t.freeze) } }
            }
        }
    };
    Ok(respond(shell(&c.ctx, t.payers, body)))
}

/// `POST /console/admin/payers/{payer}/freeze` and `…/unfreeze` (admin): `account_frozen`,
/// `account_unfrozen`; then the payer's page again.
async fn wallet_action(
    State(st): State<AppState>,
    Path((payer, action)): Path<(String, String)>,
    posted: Posted<NoFields>,
) -> Result<Response, ConsoleError> {
    let p = posted.console.as_role::<AdminOnly>()?;
    let payer_id = field("payer_id", PayerId::parse(payer))?;
    let body = match action.as_str() {
        "freeze" => EventBody::AccountFrozen(AccountFrozen { payer_id: payer_id.clone() }),
        "unfreeze" => EventBody::AccountUnfrozen(AccountUnfrozen { payer_id: payer_id.clone() }),
        _ => return Err(ApiError::NotFound.into()),
    };
    send_admin_event(&st, &p, Origin::Platform, body, payer_id.as_str()).await?;
    Ok(Redirect::to(&format!("/console/admin/payers?payer_id={}", encode(payer_id.as_str()))).into_response())
}
