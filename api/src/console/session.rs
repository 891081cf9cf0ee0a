//! Console sessions: a signed-in browser holds a random session id in an `HttpOnly`,
//! `SameSite=Strict` cookie; the database holds, under the id's SHA-256, the API key's id
//! (never its secret), so any `facepay serve` process over it serves the browser
//! ([`facepay_ledger::console_sessions`]). The session's CSRF token is derived from its id
//! (an HMAC under it), so it is stored nowhere. Every request reads the key again through
//! [`crate::auth::Auth::principal_of`], so a revoked or expired key ends its sessions, and
//! charges the key's rate limit as the API does.
//!
//! Sessions end after [`CONSOLE_SESSION_IDLE_MS`] without a request (the last-seen time is
//! written at most every [`CONSOLE_SESSION_TOUCH_MS`]), [`CONSOLE_SESSION_TTL_MS`] after
//! sign-in, and at sign-out; at most [`CONSOLE_SESSIONS_PER_KEY_MAX`] of one key and
//! [`CONSOLE_SESSIONS_MAX`] in all live at once (a sign-in past either ends the least recently
//! seen: of its own key first, so a key's holder cannot sign others out by signing in). A new
//! key's token, shown once after its creation, waits for the next page sealed
//! (ChaCha20-Poly1305) under a key derived from the session id: the database alone cannot
//! open it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use facepay_domain::auth::{KeyId, SecretBytes};
use facepay_domain::limits::{
    CONSOLE_SESSIONS_MAX, CONSOLE_SESSIONS_PER_KEY_MAX, CONSOLE_SESSION_IDLE_MS, CONSOLE_SESSION_TOUCH_MS,
    CONSOLE_SESSION_TTL_MS,
};
use facepay_ledger::console_sessions::{Bounds, Live, SessionRow};
use facepay_ledger::{LedgerStore, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "fp_session";
/// The sign-in form's CSRF cookie (before there is a session).
pub const SIGN_IN_COOKIE: &str = "fp_sign_in";
/// The chosen language's cookie.
pub const LANG_COOKIE: &str = "fp_lang";

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub key_id: KeyId,
    /// Every form's hidden `csrf` field must carry this.
    pub csrf: String,
}

/// The console's sessions, kept in the store.
pub struct Sessions {
    store: Arc<dyn LedgerStore>,
    idle: Duration,
    ttl: Duration,
}

impl Sessions {
    pub fn new(store: Arc<dyn LedgerStore>) -> Self {
        Self::with_timeouts(
            store,
            Duration::from_millis(CONSOLE_SESSION_IDLE_MS),
            Duration::from_millis(CONSOLE_SESSION_TTL_MS),
        )
    }

    pub fn with_timeouts(store: Arc<dyn LedgerStore>, idle: Duration, ttl: Duration) -> Self {
        Self { store, idle, ttl }
    }

    /// A new session for `key_id`: returns the cookie's value (the session id) and the session.
    pub async fn start(&self, key_id: KeyId) -> Result<(String, Session), StoreError> {
        let (id, now_ms) = (random_hex(), now_ms());
        let row = SessionRow {
            id_hash: digest(&id),
            key_id: key_id.clone(),
            started_at_ms: now_ms,
            seen_at_ms: now_ms,
            once_sealed: None,
        };
        let bounds = Bounds { per_key: CONSOLE_SESSIONS_PER_KEY_MAX, total: CONSOLE_SESSIONS_MAX };
        self.store.session_start(&row, self.live(now_ms), bounds).await?;
        let csrf = csrf_of(&id);
        Ok((id, Session { key_id, csrf }))
    }

    /// The live session of a request's cookie, its idle clock restarted.
    pub async fn find(&self, headers: &HeaderMap) -> Result<Option<Session>, StoreError> {
        let Some(id) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
        let now_ms = now_ms();
        let Some(row) = self.store.session_get(&digest(id), self.live(now_ms)).await? else { return Ok(None) };
        if now_ms - row.seen_at_ms >= CONSOLE_SESSION_TOUCH_MS {
            self.store.session_touch(&row.id_hash, now_ms).await?;
        }
        Ok(Some(Session { key_id: row.key_id, csrf: csrf_of(id) }))
    }

    /// Keeps `token` for the session's next [`Sessions::take_once`] only, sealed for it.
    pub async fn show_once(&self, headers: &HeaderMap, token: String) -> Result<(), StoreError> {
        let Some(id) = cookie(headers, SESSION_COOKIE) else { return Ok(()) };
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = once_cipher(id).encrypt(&nonce, token.as_bytes()).expect("ChaCha20-Poly1305 seals a token");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        self.store.session_keep_once(&digest(id), &hex::encode(bytes)).await
    }

    /// What [`Sessions::show_once`] kept, and forgets it (`None` if it does not open).
    pub async fn take_once(&self, headers: &HeaderMap) -> Result<Option<String>, StoreError> {
        let Some(id) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
        let Some(sealed) = self.store.session_take_once(&digest(id)).await? else { return Ok(None) };
        let bytes = hex::decode(sealed).unwrap_or_default();
        if bytes.len() < NONCE_BYTES {
            return Ok(None);
        }
        let (nonce, ct) = bytes.split_at(NONCE_BYTES);
        let plain = once_cipher(id).decrypt(Nonce::from_slice(nonce), ct).ok();
        Ok(plain.and_then(|p| String::from_utf8(p).ok()))
    }

    /// Ends the session of a request's cookie.
    pub async fn end(&self, headers: &HeaderMap) -> Result<(), StoreError> {
        match cookie(headers, SESSION_COOKIE) {
            Some(id) => self.end_id(id).await,
            None => Ok(()),
        }
    }

    /// Ends the session of this id.
    pub async fn end_id(&self, id: &str) -> Result<(), StoreError> {
        self.store.session_end(&digest(id)).await
    }

    fn live(&self, now_ms: i64) -> Live {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Live { seen_after_ms: now_ms - ms(self.idle), started_after_ms: now_ms - ms(self.ttl) }
    }
}

const NONCE_BYTES: usize = 12;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The session's CSRF token: an HMAC under its id (the cookie's holder alone can know it).
fn csrf_of(id: &str) -> String {
    hex::encode(facepay_domain::auth::hmac_sha256(&SecretBytes::new(id.as_bytes().to_vec()), &[b"console csrf"]))
}

/// The cipher that seals a token shown once, keyed from the session id.
fn once_cipher(id: &str) -> ChaCha20Poly1305 {
    let key = facepay_domain::auth::hmac_sha256(&SecretBytes::new(id.as_bytes().to_vec()), &[b"console once"]);
    ChaCha20Poly1305::new(Key::from_slice(&key))
}

/// 32 random bytes in hex.
pub fn random_hex() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The stored name of a session: its id's SHA-256, hex.
fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, path `/console`, `Secure` when the
/// request came over TLS (`x-forwarded-proto: https` from the proxy that ended it);
/// `max_age_s` 0 deletes it.
pub fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age_s: Option<u64>) -> String {
    let tls = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if tls { "; Secure" } else { "" };
    let age = max_age_s.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict{secure}{age}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_behind_tls() {
        let mut h = HeaderMap::new();
        assert_eq!(set_cookie(&h, "n", "v", None), "n=v; Path=/console; HttpOnly; SameSite=Strict");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(set_cookie(&h, "n", "", Some(0)).ends_with("SameSite=Strict; Secure; Max-Age=0"));
    }

    #[test]
    fn the_csrf_token_and_the_once_key_come_from_the_session_id_alone() {
        let (a, b) = (random_hex(), random_hex());
        assert_eq!(csrf_of(&a), csrf_of(&a));
        assert_ne!(csrf_of(&a), csrf_of(&b));
        assert_ne!(csrf_of(&a), digest(&a), "what is stored tells nothing of the token");
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = once_cipher(&a).encrypt(&nonce, b"token".as_ref()).unwrap();
        assert_eq!(once_cipher(&a).decrypt(&nonce, sealed.as_ref()).unwrap(), b"token");
        assert!(once_cipher(&b).decrypt(&nonce, sealed.as_ref()).is_err(), "another session cannot open it");
    }
}
