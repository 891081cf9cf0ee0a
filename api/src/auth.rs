//! Who is asking: API keys, principals, roles, the per-key rate limit, signed cursors, and
//! the audit of what admins and finance do.
//!
//! A request names its key in `Authorization: Bearer fpk_<key id>_<secret>`. The key's row
//! is read (and kept for [`KEY_CACHE_TTL_MS`], so a revocation bites within that), its stored
//! hash compared in constant time with `HMAC-SHA256(pepper, secret)`, its expiry and
//! revocation checked, and its token bucket charged. The result is a [`Principal`]; each
//! handler says which roles it serves and whose data the principal may see.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use chrono::Utc;
use facepay_domain::auth::{device_secret, secret_hash, secret_matches, ApiToken, KeyId, Pepper, Role, SecretBytes};
use facepay_domain::limits::{
    API_KEY_SECRET_BYTES, API_KEY_TTL_DAYS_DEFAULT, API_KEY_TTL_DAYS_MAX, AUTH_FAILURES_PER_ADDR_BURST,
    AUTH_FAILURES_PER_ADDR_PER_SEC, KEY_CACHE_MAX, KEY_CACHE_TTL_MS, KEY_LABEL_LEN_MAX, RATE_LIMITER_KEYS_MAX,
    RATE_LIMIT_BURST, RATE_LIMIT_PER_SEC,
};
use facepay_domain::rate::RateLimiter;
use facepay_domain::{DeviceId, MerchantId, PayerId, StoreId};
use facepay_ledger::credentials::{AuditEntry, Credential};
use facepay_ledger::{LedgerStore, StoreError};
use rand::RngCore;

use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: KeyId,
    pub role: Role,
    pub merchant_id: Option<MerchantId>,
    pub store_id: Option<StoreId>,
    pub device_id: Option<DeviceId>,
}

impl Principal {
    /// 403 unless the principal has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        match roles.contains(&self.role) {
            true => Ok(()),
            false => Err(ApiError::Forbidden("this key's role may not use this route")),
        }
    }

    /// Whether the principal may see `merchant`'s data: finance (and admin) any merchant's,
    /// merchant and device keys their own only. Another tenant's data answers 404, exactly
    /// as data that does not exist, so ids cannot be probed.
    pub fn sees_merchant(&self, merchant: &MerchantId) -> Result<(), ApiError> {
        match self.role {
            Role::Finance | Role::Admin => Ok(()),
            Role::Merchant | Role::Device if self.merchant_id.as_ref() == Some(merchant) => Ok(()),
            Role::Merchant | Role::Device => Err(ApiError::NotFound),
        }
    }

    /// Whether the principal sees the data of `store` of its merchant (a store-scoped or
    /// device key sees its store only).
    pub fn sees_store(&self, store: &StoreId) -> Result<(), ApiError> {
        match &self.store_id {
            Some(own) if own != store => Err(ApiError::NotFound),
            _ => Ok(()),
        }
    }

    /// 403 for a key scoped to one store, on a route that serves the whole merchant.
    pub fn whole_merchant(&self) -> Result<(), ApiError> {
        match (self.role, &self.store_id) {
            (Role::Merchant, Some(_)) => {
                Err(ApiError::Forbidden("a store key sees its store's orders and transactions only"))
            }
            _ => Ok(()),
        }
    }

    /// Who this is, for the audit log.
    pub fn actor(&self) -> Actor {
        Actor { principal: self.key_id.to_string(), role: self.role.as_str().to_string() }
    }
}

/// Who took an audited action: a key, or `cli` (the command line on the server).
#[derive(Debug, Clone)]
pub struct Actor {
    pub principal: String,
    pub role: String,
}

impl Actor {
    pub fn cli() -> Self {
        Self { principal: "cli".into(), role: "operator".into() }
    }

    pub fn entry(&self, action: &str, subject: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: Utc::now(),
            principal: self.principal.clone(),
            role: self.role.clone(),
            action: action.into(),
            subject: subject.into(),
            detail,
        }
    }
}

/// What a new key is for (its schema's bounds are the limits': a test of `crate::openapi`
/// holds them together).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct NewKey {
    pub role: Role,
    /// Merchant and device keys: the merchant (registered).
    pub merchant_id: Option<MerchantId>,
    /// A store key of a merchant, or a device key: one of the merchant's stores.
    pub store_id: Option<StoreId>,
    /// Device keys: the device (registered, bound to that merchant and store).
    pub device_id: Option<DeviceId>,
    /// Absent and `null` are both no label.
    #[serde(default, deserialize_with = "null_as_empty")]
    #[schema(max_length = 200)]
    pub label: String,
    /// Days until it expires (default 365).
    #[serde(default, deserialize_with = "facepay_domain::json::optional_integral")]
    #[schema(minimum = 1, maximum = 1095)]
    pub expires_in_days: Option<i64>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(<Option<String> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The request contradicts the registry or the key rules: 422.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Refused(message) => ApiError::Refused { code: "key_refused", message },
            KeyError::Store(s) => s.into(),
        }
    }
}

/// Authentication for the API. One per process, shared by every request.
pub struct Auth {
    pepper: Pepper,
    store: Arc<dyn LedgerStore>,
    cache: Mutex<HashMap<KeyId, (Instant, Credential)>>,
    /// Each key's request budget.
    per_key: RateLimiter<KeyId>,
    /// Each source address's budget of failed authentications (see [`throttle`]).
    failures: RateLimiter<IpAddr>,
    cursor_key: SecretBytes,
}

impl Auth {
    pub fn new(store: Arc<dyn LedgerStore>, pepper: Pepper) -> Self {
        let cursor_key = device_secret(&pepper, &KeyId::platform());
        let per_key = RateLimiter::new(RATE_LIMIT_PER_SEC, RATE_LIMIT_BURST, KEY_CACHE_MAX);
        let failures =
            RateLimiter::new(AUTH_FAILURES_PER_ADDR_PER_SEC, AUTH_FAILURES_PER_ADDR_BURST, RATE_LIMITER_KEYS_MAX);
        Self { pepper, store, cache: Mutex::new(HashMap::new()), per_key, failures, cursor_key }
    }

    /// The same, with another rate limit per key (tests, or a deployment's own figure).
    pub fn with_rate_limit(mut self, per_sec: u32, burst: u32) -> Self {
        self.per_key = RateLimiter::new(per_sec, burst, KEY_CACHE_MAX);
        self
    }

    /// The same, with another budget of failed authentications per source address.
    pub fn with_failure_limit(mut self, per_sec: u32, burst: u32) -> Self {
        self.failures = RateLimiter::new(per_sec, burst, RATE_LIMITER_KEYS_MAX);
        self
    }

    /// The principal behind `authorization` (the header's value), rate limit charged. Every
    /// failure is the same [`ApiError::Unauthenticated`]: no key, a malformed one, an unknown
    /// id, a wrong secret, a revoked or expired key (the reason is logged, not answered).
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let failed = |reason: &'static str| {
            tracing::debug!(reason, "authentication failed");
            ApiError::Unauthenticated
        };
        let raw = authorization.ok_or_else(|| failed("no Authorization header"))?;
        let token = raw.strip_prefix("Bearer ").ok_or_else(|| failed("not a Bearer token"))?;
        let token = ApiToken::parse(token.trim()).map_err(|_| failed("not a facepay key"))?;
        let key = self.credential(&token.key_id).await?.ok_or_else(|| failed("unknown key id"))?;
        let stored = hex::decode(&key.secret_hash).unwrap_or_default();
        if !secret_matches(&self.pepper, &token.secret, &stored) {
            return Err(failed("wrong secret"));
        }
        self.live_principal(key)
    }

    /// The principal of a key authenticated before (a console session holds its key's id,
    /// never its secret): the key read again (through the cache, so a revocation or an
    /// expiry ends the session within [`KEY_CACHE_TTL_MS`]), rate limit charged.
    pub async fn principal_of(&self, key_id: &KeyId) -> Result<Principal, ApiError> {
        let key = self.credential(key_id).await?.ok_or(ApiError::Unauthenticated)?;
        self.live_principal(key)
    }

    fn live_principal(&self, key: Credential) -> Result<Principal, ApiError> {
        if !key.live_at(Utc::now()) {
            tracing::debug!(reason = "revoked or expired", "authentication failed");
            return Err(ApiError::Unauthenticated);
        }
        let taken = self.per_key.take(&key.key_id, Instant::now());
        taken.map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
        Ok(Principal {
            key_id: key.key_id,
            role: key.role,
            merchant_id: key.merchant_id,
            store_id: key.store_id,
            device_id: key.device_id,
        })
    }

    async fn credential(&self, id: &KeyId) -> Result<Option<Credential>, ApiError> {
        let ttl = Duration::from_millis(KEY_CACHE_TTL_MS);
        if let Some((at, key)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            if at.elapsed() < ttl {
                return Ok(Some(key.clone()));
            }
        }
        let Some(key) = self.store.key_get(id).await? else { return Ok(None) };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(id.clone(), (Instant::now(), key.clone()));
        Ok(Some(key))
    }

    /// Creates a key; returns its row and its token, which is shown once and never stored.
    pub async fn create_key(&self, spec: NewKey, by: &Actor) -> Result<(Credential, String), KeyError> {
        check_scope(&spec, &self.store.registry().await?)?;
        let (key, token) = mint(&self.pepper, spec, by)?;
        let detail = serde_json::json!({ "role": key.role, "merchant_id": key.merchant_id, "store_id": key.store_id,
            "device_id": key.device_id, "expires_at": key.expires_at, "label": key.label });
        self.store.key_insert(&key, &by.entry("key_created", key.key_id.as_str(), detail)).await?;
        Ok((key, token.reveal()))
    }

    /// Revokes a key at once (this process's cache forgets it); false if none was live.
    pub async fn revoke(&self, key_id: &KeyId, by: &Actor) -> Result<bool, StoreError> {
        let entry = by.entry("key_revoked", key_id.as_str(), serde_json::json!({}));
        let done = self.store.key_revoke(key_id, Utc::now(), &entry).await?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(key_id);
        Ok(done)
    }

    /// A pagination cursor bound to `merchant`: `<position>.<MAC>`.
    pub fn sign_cursor(&self, merchant: &MerchantId, position: i64) -> String {
        format!("{position}.{}", hex::encode(&self.cursor_mac(merchant, position)[..16]))
    }

    /// The position of a cursor this server signed for `merchant`; `None` for any other.
    pub fn open_cursor(&self, merchant: &MerchantId, cursor: &str) -> Option<i64> {
        let (position, mac) = cursor.split_once('.')?;
        let position: i64 = position.parse().ok().filter(|p| *p > 0)?;
        let given = hex::decode(mac).ok()?;
        let want = self.cursor_mac(merchant, position);
        let same = given.len() == 16 && subtle_eq(&given, &want[..16]);
        same.then_some(position)
    }

    /// The payer id `principal` may see: finance and admin the internal id; a merchant's keys
    /// the payer's openid at that merchant (stable per merchant, unlinkable across merchants).
    pub fn payer_for(&self, principal: &Principal, merchant: &MerchantId, payer: PayerId) -> PayerId {
        if matches!(principal.role, Role::Finance | Role::Admin) {
            return payer;
        }
        self.openid(merchant, payer)
    }

    /// The payer's openid at `merchant`: what the merchant's keys and devices see of a payer.
    pub fn openid(&self, merchant: &MerchantId, payer: PayerId) -> PayerId {
        let mac = facepay_domain::auth::hmac_sha256(
            &self.cursor_key,
            &[b"openid:", merchant.as_str().as_bytes(), b":", payer.as_str().as_bytes()],
        );
        PayerId::parse(format!("o_{}", &hex::encode(mac)[..28])).unwrap_or(payer)
    }

    fn cursor_mac(&self, merchant: &MerchantId, position: i64) -> [u8; 32] {
        let position = position.to_string();
        facepay_domain::auth::hmac_sha256(
            &self.cursor_key,
            &[b"cursor:", merchant.as_str().as_bytes(), b":", position.as_bytes()],
        )
    }
}

/// A new key's row and token (not yet stored): a random id; a random secret, or for a
/// device the secret derived from the pepper and the id.
pub fn mint(pepper: &Pepper, spec: NewKey, by: &Actor) -> Result<(Credential, ApiToken), KeyError> {
    let days = spec.expires_in_days.unwrap_or(API_KEY_TTL_DAYS_DEFAULT);
    if !(1..=API_KEY_TTL_DAYS_MAX).contains(&days) {
        return Err(KeyError::Refused(format!("expires_in_days must be 1 to {API_KEY_TTL_DAYS_MAX}")));
    }
    let mut id = [0_u8; 12];
    rand::rng().fill_bytes(&mut id);
    let key_id = KeyId::from_bytes(id);
    let secret = match spec.role {
        Role::Device => device_secret(pepper, &key_id),
        _ => {
            let mut bytes = vec![0_u8; API_KEY_SECRET_BYTES];
            rand::rng().fill_bytes(&mut bytes);
            SecretBytes::new(bytes)
        }
    };
    let now = Utc::now();
    let key = Credential {
        key_id: key_id.clone(),
        role: spec.role,
        merchant_id: spec.merchant_id,
        store_id: spec.store_id,
        device_id: spec.device_id,
        secret_hash: hex::encode(secret_hash(pepper, &secret)),
        label: spec.label,
        created_by: by.principal.clone(),
        created_at: now,
        expires_at: now + chrono::Duration::days(days),
        revoked_at: None,
    };
    Ok((key, ApiToken { key_id, secret }))
}

/// Constant-time equality of two byte strings of the same length.
pub(crate) fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A key's scope must match its role and the registry; its label is short.
fn check_scope(spec: &NewKey, registry: &facepay_ledger::store::Registry) -> Result<(), KeyError> {
    let refuse = |m: &str| Err(KeyError::Refused(m.to_string()));
    if spec.label.chars().count() > KEY_LABEL_LEN_MAX {
        return refuse("a label is at most 200 characters");
    }
    let merchant_known = spec.merchant_id.as_ref().is_some_and(|m| registry.merchants.contains_key(m));
    let store_known =
        |m: &MerchantId, s: &StoreId| registry.devices.values().any(|d| d.merchant_id == *m && d.store_id == *s);
    match spec.role {
        Role::Admin | Role::Finance
            if spec.merchant_id.is_some() || spec.store_id.is_some() || spec.device_id.is_some() =>
        {
            refuse("admin and finance keys are not scoped to a merchant")
        }
        Role::Admin | Role::Finance => Ok(()),
        Role::Merchant if !merchant_known => refuse("a merchant key needs a registered merchant_id"),
        Role::Merchant if spec.device_id.is_some() => refuse("a merchant key is not scoped to a device"),
        Role::Merchant => match (&spec.merchant_id, &spec.store_id) {
            (Some(m), Some(s)) if !store_known(m, s) => refuse("a store key needs a store of the merchant's"),
            _ => Ok(()),
        },
        Role::Device => {
            let bound = spec.device_id.as_ref().and_then(|d| registry.devices.get(d));
            match bound {
                Some(d)
                    if Some(&d.merchant_id) == spec.merchant_id.as_ref()
                        && Some(&d.store_id) == spec.store_id.as_ref() =>
                {
                    Ok(())
                }
                Some(_) => refuse("the device is bound to another merchant or store"),
                None => refuse("a device key needs a registered device_id with its merchant_id and store_id"),
            }
        }
    }
}

/// The source address of a request (from the connection; unspecified when the server was
/// not given it, as in tests that call the router directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The throttle of failed authentication, before anything else: a source address whose
/// budget of failures ([`AUTH_FAILURES_PER_ADDR_PER_SEC`]) is spent is answered 429 with
/// `Retry-After` and nothing is done; every 401 answered spends one, and is counted
/// (`facepay_unauthenticated_total{source="http"}`). Nothing an unauthenticated caller
/// sends is written anywhere.
pub async fn throttle(
    axum::extract::State(auth): axum::extract::State<Arc<Auth>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    if let Err(retry_after_secs) = auth.failures.has_room(&addr, Instant::now()) {
        facepay_ingest::metrics::METRICS.unauthenticated("http_throttled");
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }
    req.extensions_mut().insert(ClientAddr(addr));
    let resp = next.run(req).await;
    if resp.status() == axum::http::StatusCode::UNAUTHORIZED {
        facepay_ingest::metrics::METRICS.unauthenticated("http");
        let _ = auth.failures.take(&addr, Instant::now());
    }
    resp
}

/// Roles a route serves, for [`Authorized`].
pub trait Roles {
    const ROLES: &'static [Role];
}

macro_rules! roles {
    ($($name:ident => [$($role:ident),+]),* $(,)?) => {
        $(
            #[doc = concat!("The roles of a route: ", $(stringify!($role), " "),+)]
            pub struct $name;
            impl Roles for $name {
                const ROLES: &'static [Role] = &[$(Role::$role),+];
            }
        )*
    };
}

roles! {
    AdminOnly => [Admin],
    FinanceOnly => [Finance],
    FinanceOrAdmin => [Finance, Admin],
    MerchantOnly => [Merchant],
    FleetReaders => [Merchant, Finance, Admin],
    MerchantOrFinance => [Merchant, Finance],
    OrderReaders => [Merchant, Device, Finance],
}

/// A principal of one of `R`'s roles: authenticated and its role checked before any other
/// extractor runs (a route's query, path and body are read only for a caller it serves, so
/// a wrong role is a 403 whatever it sent).
pub struct Authorized<R>(pub Principal, std::marker::PhantomData<R>);

impl<R: Roles> Authorized<R> {
    /// `principal` as a principal of one of `R`'s roles, or 403: how a principal that did not
    /// come from a request's header (a console session's) passes the same role check.
    pub fn check(principal: Principal) -> Result<Self, ApiError> {
        principal.require(R::ROLES)?;
        Ok(Authorized(principal, std::marker::PhantomData))
    }
}

impl<R> std::ops::Deref for Authorized<R> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<R: Roles, S: Send + Sync> FromRequestParts<S> for Authorized<R>
where
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Self::check(Principal::from_request_parts(parts, state).await?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal
where
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let principal = Arc::<Auth>::from_ref(state).authenticate(header).await?;
        tracing::Span::current().record("principal", principal.key_id.as_str());
        Ok(principal)
    }
}
