//! The HTTP API: device results, merchant history and members, payer balances, ingest. The
//! read functions behind the merchant routes (`history_page`, …) serve the console too.
//! Every route but `/health` needs a principal (see [`crate::auth`]) of the roles it names.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use facepay_domain::auth::{Role, SIGNATURE_HEADER};
use facepay_domain::limits::EVENT_BYTES_MAX;
use facepay_domain::money::fen_to_string;
use facepay_domain::{
    DeviceId, FieldError, FieldErrorKind, MerchantId, OrderStatus, OutTradeNo, PayerId, PaymentResult, StoreId,
};
use facepay_ingest::authenticity::{Position, Refusal};
use facepay_ingest::validate::{learn_key, validate_signed};
use facepay_ledger::model::Keys;
use facepay_ledger::store::{device_key, HistoryFilter, HistoryRow, MemberView, MembersPage, RejectedEvent};
use facepay_ledger::Account;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Auth, Authorized, FinanceOrAdmin, MerchantOrFinance, OrderReaders, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{field, read_body, ApiPath, ApiQuery};
use crate::page::{bad_cursor, next_cursor, page_limit, LimitQuery, Page};
use crate::state::{AppState, Ingress};

/// Every route with its OpenAPI operation (each handler's `#[utoipa::path]`): what
/// [`crate::server::router`] serves and `crate::openapi::spec` describes.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(health))
        .routes(routes!(ingest))
        .routes(routes!(order))
        .routes(routes!(crate::refund::create_refund, crate::order_life::list_refunds))
        .routes(routes!(crate::order_life::list_retries))
        .routes(routes!(crate::order_life::list_repeats))
        .routes(routes!(transactions))
        .routes(routes!(members))
        .routes(routes!(settlement))
        .routes(routes!(glance))
        .routes(routes!(crate::fleet::fleet))
        .routes(routes!(balance))
        .routes(routes!(rejected))
        .routes(routes!(crate::admin::create_key, crate::admin::list_keys))
        .routes(routes!(crate::admin::revoke_key))
        .routes(routes!(crate::admin::audit))
        .layer(DefaultBodyLimit::max(EVENT_BYTES_MAX))
        .merge(crate::reconcile::routes())
}

#[utoipa::path(get, path = "/health", security(()), responses((status = 200, description = "alive")))]
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `202` to an event: it is in the pipeline; ask for the order's result afterwards.
#[derive(Serialize, utoipa::ToSchema)]
struct Accepted {
    event_id: uuid::Uuid,
    /// Always `accepted`.
    status: &'static str,
}

/// `POST /v1/events`: one event, accepted at the platform's clock. A device event is
/// authenticated by its device's signature (`facepay-signature`) before anything else is
/// read of it; platform and merchant events need an admin key (checked before the body is
/// read) and are audited. 202 when it is in the pipeline (ask for the order's result
/// afterwards); with `Prefer: wait=N` (N ≤ 10 s), 200 with the outcome when it is decided
/// within N seconds (a device's event id sent again: its stored outcome, or the one to come).
/// 401 (one body) for anything unauthenticated; 400 naming the field, 403 for an event its
/// signer may not send, 409 for a replayed event id (each kept).
#[utoipa::path(post, path = "/v1/events", security((), ("bearer" = [])),
    params(("facepay-signature" = Option<String>, Header, description = "device events: k=<key id>,t=<unix s>,v1=<hex HMAC>"),
        ("prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): answer with the outcome if it is \
            decided within N seconds (at most 10)")),
    request_body(content = facepay_domain::EventRequest, content_type = "application/json"),
    responses((status = 200, body = crate::wait::Decided, description = "decided within the wait (`Prefer: wait`); \
            `Preference-Applied: wait=N`",
            headers(("preference-applied" = String, description = "`wait=N`: the wait honoured"))),
        (status = 202, body = Accepted, description = "accepted (not decided within the wait, if one was asked)"),
        (status = 400, body = ErrorBody, description = "a bad field, named (kept with its reason)"),
        (status = 403, body = ErrorBody, description = "an event its sender may not send (a device event with a key, \
            another device's event: `wrong_origin`)"),
        (status = 409, body = ErrorBody, description = "an event id received before (`replayed`); with a wait, only \
            an event id another sender used"),
        (status = 413, body = ErrorBody, description = "larger than 64 KiB")))]
async fn ingest(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let accepted_at = st.clock.now();
    let wait = crate::wait::preferred_wait(&headers);
    let taken = match headers.contains_key(axum::http::header::AUTHORIZATION) {
        true => admin_event(&st, &headers, body, accepted_at).await?,
        false => device_event(&st, &headers, body, accepted_at, wait.is_some()).await?,
    };
    let (envelope, body, signature) = match taken {
        Taken::New { envelope, body, signature } => (envelope, body, signature),
        Taken::Repeat { event_id, sender } => {
            let wait = wait.unwrap_or_default();
            return match crate::wait::repeated(&st, event_id, &sender, started + wait).await? {
                Some(outcome) => {
                    // The device's own event sent again, answered: counted on its order.
                    st.store.note_repeat(event_id, &device_key(&sender), accepted_at).await?;
                    crate::wait::decided(&st, outcome, wait)
                }
                None => Ok(accepted(event_id)),
            };
        }
    };
    let (event_id, sender) = (envelope.event_id, envelope.origin.device().cloned());
    tracing::Span::current().record("event_id", tracing::field::display(event_id));
    // Registered before the event goes in: its decision cannot come before the waiter.
    let waiter = wait.and_then(|_| st.waiters.register(event_id, sender.clone()));
    if let (Some(_), Some(wait), Ingress::Kafka { .. }) = (&waiter, wait, &st.input) {
        // Over Kafka replays are told further on: a device's retry of a decided event is
        // answered here, from the stored outcome, and not sent on again.
        if let Some(outcome) = crate::wait::stored(&st, event_id, sender.as_ref()).await? {
            if let Some(device) = &sender {
                st.store.note_repeat(event_id, &device_key(device), accepted_at).await?;
            }
            return crate::wait::decided(&st, outcome, wait);
        }
    }
    crate::platform::enter(&st, envelope, &body, &signature, accepted_at).await?;
    tracing::info!(%event_id, "event accepted");
    if let (Some(waiter), Some(wait)) = (waiter, wait) {
        if let Some(outcome) = crate::wait::outcome_by(&st, waiter, event_id, sender.as_ref(), started + wait).await? {
            return crate::wait::decided(&st, outcome, wait);
        }
    }
    Ok(accepted(event_id))
}

fn accepted(event_id: uuid::Uuid) -> Response {
    (StatusCode::ACCEPTED, Json(Accepted { event_id, status: "accepted" })).into_response()
}

/// What the ingest path took: a new event (its envelope, its bytes, the signature it goes on
/// with), or, for a device that asked to wait, its own event id sent again.
enum Taken {
    New { envelope: facepay_domain::Envelope, body: Bytes, signature: String },
    Repeat { event_id: uuid::Uuid, sender: facepay_domain::DeviceRef },
}

/// A device's event: its signature is its credential, checked first. An unauthenticated
/// event is answered 401 and kept nowhere; an authenticated sender's bad event is kept with
/// its reason (within the sender's budget). An event id it sent before is, when it waits
/// (`waits`), a [`Taken::Repeat`] (a retry is not a fault: nothing is kept); else a 409.
async fn device_event(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    accepted_at: DateTime<Utc>,
    waits: bool,
) -> Result<Taken, ApiError> {
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).ok_or(ApiError::Unauthenticated)?;
    let body = read_body(body, EVENT_BYTES_MAX).await?;
    learn_key(Some(header), &st.registry, st.store.as_ref()).await?;
    // Over Kafka the matcher checks replays (it tells a redelivery from a replay).
    let position = match st.input {
        Ingress::Pipeline(_) => Position::Fresh,
        Ingress::Kafka { .. } => Position::Unchecked,
    };
    match validate_signed(&body, Some(header), &st.registry, &st.verifier, accepted_at, position) {
        Ok(envelope) => Ok(Taken::New { envelope, body, signature: header.to_string() }),
        Err(Refusal::Invalid { error, sender: Some(sender), .. })
            if waits && error.kind == FieldErrorKind::Replayed =>
        {
            let event_id = facepay_ingest::authenticity::event_id_of(&body).ok_or(ApiError::BadRequest(error))?;
            Ok(Taken::Repeat { event_id, sender: *sender })
        }
        Err(refusal) => {
            facepay_ingest::pipeline::refused(&body, "http", &refusal, st.store.as_ref()).await?;
            Err(match refusal {
                Refusal::Unauthenticated(_) => ApiError::Unauthenticated,
                Refusal::Invalid { error, .. } => ApiError::BadRequest(error),
            })
        }
    }
}

/// A platform or merchant event from an admin key (checked before the body is read):
/// audited, then signed by the platform for the bus.
async fn admin_event(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    accepted_at: DateTime<Utc>,
) -> Result<Taken, ApiError> {
    let auth = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal = st.auth.authenticate(auth).await?;
    principal.require(&[Role::Admin])?;
    let body = read_body(body, EVENT_BYTES_MAX).await?;
    let subject = subject_of(&body);
    let (envelope, signature) =
        crate::platform::platform_signed(st, &principal, &body, accepted_at, &subject, serde_json::json!({})).await?;
    Ok(Taken::New { envelope, body, signature })
}

/// What an admin event is about, for the audit log: its payer or merchant.
fn subject_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let payer = v.pointer("/payload/payer_id").and_then(|p| p.as_str());
    payer.or(v.get("merchant_id").and_then(|m| m.as_str())).unwrap_or("platform").to_string()
}

/// A `date` query parameter: an Asia/Shanghai day, `YYYY-MM-DD`.
fn day_param(d: String) -> Result<NaiveDate, ApiError> {
    let bad = || FieldError::new("date", FieldErrorKind::Invalid, "a day like 2026-03-02");
    NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| ApiError::BadRequest(bad()))
}

/// An order as served: its result plus its times.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OrderBody {
    #[serde(flatten)]
    pub result: PaymentResult,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The merchant's fee on the payment, CNY.
    pub fee: String,
    /// How much went back to the payer (refunds and reversal), CNY.
    pub refunded: String,
    /// The same in fen (the console's refund form).
    #[serde(skip)]
    pub refunded_fen: i64,
}

/// `GET /v1/merchants/{merchant_id}/orders/{out_trade_no}`: what a device asks after a timeout.
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/orders/{out_trade_no}",
    params(("merchant_id" = MerchantId, Path), ("out_trade_no" = OutTradeNo, Path)),
    responses((status = 200, body = OrderBody, description = "the order's result"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such order, or one the key may not see")))]
async fn order(
    State(st): State<AppState>,
    p: Authorized<OrderReaders>,
    ApiPath((merchant, out_trade_no)): ApiPath<(String, String)>,
) -> Result<Json<OrderBody>, ApiError> {
    let seen = crate::order_life::seen_order(&st, &p, merchant, out_trade_no).await?;
    Ok(Json(order_view(&st, &p, &seen)))
}

/// An order as `p` sees it (the API's order route, the console's order page): its payer as
/// the key may see it.
pub(crate) fn order_view(st: &AppState, p: &Principal, seen: &crate::order_life::SeenOrder) -> OrderBody {
    let order = seen.order();
    let mut result = facepay_ledger::core::order_result(order, false);
    result.payer_id = result.payer_id.map(|payer| st.auth.payer_for(p, seen.merchant(), payer));
    OrderBody {
        result,
        created_at: order.created_at,
        updated_at: order.updated_at,
        fee: fen_to_string(order.fee_fen),
        refunded: fen_to_string(order.refunded_fen),
        refunded_fen: order.refunded_fen,
    }
}

#[derive(Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// An Asia/Shanghai day.
    #[param(value_type = Option<NaiveDate>)]
    pub(crate) date: Option<String>,
    #[param(value_type = Option<OrderStatus>)]
    pub(crate) status: Option<String>,
    /// The `next_cursor` of the previous page (signed for the merchant: any other is a 400).
    #[param(pattern = r"^[1-9][0-9]{0,17}\.[0-9a-f]{32}$")]
    pub(crate) cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<u32>,
    /// Only this store's rows (a store-scoped key: its own store only; another is a 404).
    #[param(value_type = Option<facepay_domain::StoreId>)]
    pub(crate) store_id: Option<String>,
    /// Only this device's rows.
    #[param(value_type = Option<facepay_domain::DeviceId>)]
    pub(crate) device_id: Option<String>,
    /// Only the attempts at this order: its whole life of decided attempts.
    #[param(value_type = Option<OutTradeNo>)]
    pub(crate) out_trade_no: Option<String>,
}

/// One payment attempt in a merchant's history.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryItem {
    #[serde(flatten)]
    pub(crate) row: HistoryRow,
    pub(crate) amount: String,
}

fn history_filter(
    q: HistoryQuery,
    auth: &Auth,
    merchant: &MerchantId,
    p: &Principal,
) -> Result<HistoryFilter, ApiError> {
    let bad = |f: &str, m: &str| ApiError::BadRequest(FieldError::new(f, FieldErrorKind::Invalid, m));
    let day = q.date.map(day_param).transpose()?;
    let status = q
        .status
        .map(|s| OrderStatus::parse(&s).ok_or_else(|| bad("status", "PAID, DECLINED, REVERSED or REVOKED")))
        .transpose()?;
    let before_id = position(auth, merchant, q.cursor)?;
    let limit = page_limit(q.limit)?;
    let asked = q.store_id.filter(|s| !s.is_empty()).map(|s| field("store_id", StoreId::parse(s))).transpose()?;
    // A store-scoped key sees its store's rows only: another store is what does not exist.
    let store_id = match (&p.store_id, asked) {
        (Some(own), Some(asked)) if *own != asked => return Err(ApiError::NotFound),
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked,
    };
    let device_id =
        q.device_id.filter(|d| !d.is_empty()).map(|d| field("device_id", DeviceId::parse(d))).transpose()?;
    let out_trade_no =
        q.out_trade_no.filter(|o| !o.is_empty()).map(|o| field("out_trade_no", OutTradeNo::parse(o))).transpose()?;
    Ok(HistoryFilter { day, status, before_id, store_id, device_id, out_trade_no, limit })
}

/// `GET /v1/merchants/{merchant_id}/transactions`: newest first, by cursor; a store-scoped
/// merchant key gets its store's rows.
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/transactions",
    params(("merchant_id" = MerchantId, Path), HistoryQuery),
    responses((status = 200, body = Page<HistoryItem>, description = "a page of history, newest first"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "a merchant the key may not see")))]
async fn transactions(
    State(st): State<AppState>,
    p: Authorized<MerchantOrFinance>,
    ApiPath(merchant): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Page<HistoryItem>>, ApiError> {
    Ok(Json(history_page(&st, &p, merchant, q).await?))
}

/// A page of `merchant`'s history as `p` may see it (the API's transactions route, the
/// console's transactions page): newest first; a store-scoped key's store only.
pub(crate) async fn history_page(
    st: &AppState,
    p: &Authorized<MerchantOrFinance>,
    merchant: String,
    q: HistoryQuery,
) -> Result<Page<HistoryItem>, ApiError> {
    let merchant = field("merchant_id", MerchantId::parse(merchant))?;
    p.sees_merchant(&merchant)?;
    let filter = history_filter(q, &st.auth, &merchant, p)?;
    let rows = st.store.history(&merchant, &filter).await?;
    let next_cursor = next_cursor(&rows, filter.limit, |r| st.auth.sign_cursor(&merchant, r.id));
    let items = rows
        .into_iter()
        .map(|mut row| {
            row.payer_id = row.payer_id.map(|payer| st.auth.payer_for(p, &merchant, payer));
            HistoryItem { amount: fen_to_string(row.amount_fen), row }
        })
        .collect();
    Ok(Page { items, next_cursor })
}

/// `?cursor=&limit=` of a list read by signed position (members).
#[derive(Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CursorQuery {
    /// The `next_cursor` of the previous page (signed for the merchant: any other is a 400).
    #[param(pattern = r"^[1-9][0-9]{0,17}\.[0-9a-f]{32}$")]
    pub(crate) cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<u32>,
}

/// `GET /v1/merchants/{merchant_id}/members`: newest card holders first, by cursor.
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/members",
    params(("merchant_id" = MerchantId, Path), CursorQuery),
    responses((status = 200, body = Page<MemberView>, description = "member cards"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "a merchant the key may not see")))]
async fn members(
    State(st): State<AppState>,
    p: Authorized<MerchantOrFinance>,
    ApiPath(merchant): ApiPath<String>,
    ApiQuery(q): ApiQuery<CursorQuery>,
) -> Result<Json<Page<MemberView>>, ApiError> {
    Ok(Json(members_page(&st, &p, merchant, q).await?))
}

/// A page of `merchant`'s member cards as `p` may see them (the API, the console).
pub(crate) async fn members_page(
    st: &AppState,
    p: &Authorized<MerchantOrFinance>,
    merchant: String,
    q: CursorQuery,
) -> Result<Page<MemberView>, ApiError> {
    let merchant = merchant_route(p, merchant)?;
    let page = MembersPage { before_id: position(&st.auth, &merchant, q.cursor)?, limit: page_limit(q.limit)? };
    let mut items = st.store.members(&merchant, page).await?;
    let next_cursor = next_cursor(&items, page.limit, |m| st.auth.sign_cursor(&merchant, m.id));
    for m in &mut items {
        m.payer_id = st.auth.payer_for(p, &merchant, m.payer_id.clone());
    }
    Ok(Page { items, next_cursor })
}

/// The position a `next_cursor` names (signed for `merchant`: any other is a 400).
fn position(auth: &Auth, merchant: &MerchantId, cursor: Option<String>) -> Result<Option<i64>, ApiError> {
    cursor.map(|c| auth.open_cursor(merchant, &c).ok_or_else(bad_cursor)).transpose()
}

/// A merchant-wide route: merchant (whole-merchant keys) and finance; another tenant's
/// merchant id answers 404.
fn merchant_route(p: &Principal, merchant: String) -> Result<MerchantId, ApiError> {
    let merchant = field("merchant_id", MerchantId::parse(merchant))?;
    p.sees_merchant(&merchant)?;
    p.whole_merchant()?;
    Ok(merchant)
}

/// A payer's wallet.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BalanceBody {
    pub(crate) payer_id: PayerId,
    /// The available balance (Pay Score holds are already taken out of it).
    pub(crate) balance: String,
    /// Held for the payer's open Pay Score orders.
    pub(crate) held: String,
    pub(crate) frozen: bool,
}

/// `GET /v1/payers/{payer_id}/balance`.
#[utoipa::path(get, path = "/v1/payers/{payer_id}/balance", params(("payer_id" = PayerId, Path)),
    responses((status = 200, body = BalanceBody, description = "balance, held, frozen"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such payer")))]
async fn balance(
    State(st): State<AppState>,
    p: Authorized<FinanceOrAdmin>,
    ApiPath(payer): ApiPath<String>,
) -> Result<Json<BalanceBody>, ApiError> {
    Ok(Json(balance_view(&st, &p, payer).await?))
}

/// A payer's wallet (the API's balance route, the console's payer page).
pub(crate) async fn balance_view(
    st: &AppState,
    _: &Authorized<FinanceOrAdmin>,
    payer: String,
) -> Result<BalanceBody, ApiError> {
    let payer_id = field("payer_id", PayerId::parse(payer))?;
    let (balance_fen, frozen) = st.store.wallet(&payer_id).await?.ok_or(ApiError::NotFound)?;
    let hold = Account::Hold(payer_id.clone());
    let keys = Keys { accounts: [hold.clone()].into(), ..Keys::default() };
    let held_fen = st.store.load(&keys).await?.balance_fen(&hold);
    Ok(BalanceBody { payer_id, balance: fen_to_string(balance_fen), held: fen_to_string(held_fen), frozen })
}

/// One Asia/Shanghai day of a merchant's money.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SettlementItem {
    pub(crate) day: NaiveDate,
    pub(crate) gross: String,
    pub(crate) refunds: String,
    pub(crate) fees: String,
    pub(crate) net: String,
    /// The same in fen (the console's chart).
    #[serde(skip)]
    pub(crate) net_fen: i64,
}

/// `GET /v1/merchants/{merchant_id}/settlement`: the merchant's money per Asia/Shanghai day,
/// newest first (`limit` days).
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/settlement", params(("merchant_id" = MerchantId, Path), LimitQuery),
    responses((status = 200, body = Page<SettlementItem>, description = "money per day, newest first"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "a merchant the key may not see")))]
async fn settlement(
    State(st): State<AppState>,
    p: Authorized<MerchantOrFinance>,
    ApiPath(merchant): ApiPath<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Page<SettlementItem>>, ApiError> {
    Ok(Json(settlement_page(&st, &p, merchant, q.limit).await?))
}

/// `merchant`'s money per day as `p` may see it (the API, the console), newest first.
pub(crate) async fn settlement_page(
    st: &AppState,
    p: &Authorized<MerchantOrFinance>,
    merchant: String,
    limit: Option<u32>,
) -> Result<Page<SettlementItem>, ApiError> {
    let merchant = merchant_route(p, merchant)?;
    let limit = page_limit(limit)?;
    let items = st
        .store
        .settlement(&merchant, limit)
        .await?
        .into_iter()
        .map(|s| SettlementItem {
            day: s.day,
            gross: fen_to_string(s.gross_fen),
            refunds: fen_to_string(s.refunds_fen),
            fees: fen_to_string(s.fees_fen),
            net: fen_to_string(s.net_fen),
            net_fen: s.net_fen,
        })
        .collect();
    Ok(Page { items, next_cursor: None })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct GlanceQuery {
    /// An Asia/Shanghai day (default: today, by the platform's clock).
    #[param(value_type = Option<NaiveDate>)]
    date: Option<String>,
}

/// A day of a merchant's payment attempts at a glance.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Glance {
    pub(crate) day: NaiveDate,
    /// Payment attempts decided that day.
    pub(crate) attempts: i64,
    /// Attempts that paid.
    pub(crate) paid: i64,
    /// What they paid, CNY.
    pub(crate) paid_amount: String,
    /// Paid attempts by a recognised member with no phone confirmation.
    pub(crate) member_quick_pay: i64,
    /// Declined attempts by reason, most first.
    pub(crate) declines: Vec<DeclineCount>,
}

/// Declined attempts of one reason.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeclineCount {
    pub(crate) reason: String,
    pub(crate) attempts: i64,
}

/// `GET /v1/merchants/{merchant_id}/glance?date=`: one day of payment attempts counted by
/// outcome (a store-scoped key: its store's).
#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/glance", params(("merchant_id" = MerchantId, Path), GlanceQuery),
    responses((status = 200, body = Glance, description = "the day at a glance"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "a merchant the key may not see")))]
async fn glance(
    State(st): State<AppState>,
    p: Authorized<MerchantOrFinance>,
    ApiPath(merchant): ApiPath<String>,
    ApiQuery(q): ApiQuery<GlanceQuery>,
) -> Result<Json<Glance>, ApiError> {
    Ok(Json(glance_view(&st, &p, merchant, q.date).await?))
}

/// A day of `merchant`'s attempts as `p` may see them (the API, the console's overview).
pub(crate) async fn glance_view(
    st: &AppState,
    p: &Authorized<MerchantOrFinance>,
    merchant: String,
    date: Option<String>,
) -> Result<Glance, ApiError> {
    let merchant = field("merchant_id", MerchantId::parse(merchant))?;
    p.sees_merchant(&merchant)?;
    let day = match date.filter(|d| !d.is_empty()) {
        Some(d) => day_param(d)?,
        None => facepay_domain::time::shanghai_day(st.clock.now()),
    };
    let rows = st.store.day_glance(&merchant, p.store_id.as_ref(), day).await?;
    let paid = rows.iter().filter(|r| r.status == OrderStatus::Paid);
    let mut declines: std::collections::BTreeMap<String, i64> = Default::default();
    for r in rows.iter().filter(|r| r.status == OrderStatus::Declined) {
        *declines.entry(r.reason.clone().unwrap_or_default()).or_default() += r.attempts;
    }
    let mut declines: Vec<DeclineCount> =
        declines.into_iter().map(|(reason, attempts)| DeclineCount { reason, attempts }).collect();
    declines.sort_by(|a, b| b.attempts.cmp(&a.attempts).then(a.reason.cmp(&b.reason)));
    Ok(Glance {
        day,
        attempts: rows.iter().map(|r| r.attempts).sum(),
        paid: paid.clone().map(|r| r.attempts).sum(),
        paid_amount: fen_to_string(paid.clone().map(|r| r.amount_fen).sum()),
        member_quick_pay: paid.filter(|r| r.member_quick_pay).map(|r| r.attempts).sum(),
        declines,
    })
}

/// `GET /v1/rejected-events`: the newest rejections with their reasons (raw bodies omitted).
#[utoipa::path(get, path = "/v1/rejected-events", params(LimitQuery),
    responses((status = 200, body = Page<RejectedEvent>, description = "refused input with its reasons"),
        (status = 400, body = ErrorBody)))]
async fn rejected(
    State(st): State<AppState>,
    p: Authorized<FinanceOrAdmin>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Page<RejectedEvent>>, ApiError> {
    Ok(Json(rejected_page(&st, &p, q.limit).await?))
}

/// The newest rejected events (the API, the console): finance and admin.
pub(crate) async fn rejected_page(
    st: &AppState,
    _: &Authorized<FinanceOrAdmin>,
    limit: Option<u32>,
) -> Result<Page<RejectedEvent>, ApiError> {
    Ok(Page { items: st.store.rejected(page_limit(limit)?).await?, next_cursor: None })
}
