//! Console sessions: a signed-in browser holds a random session id in an `HttpOnly`,
//! `SameSite=Strict` cookie; this process holds, under the id's SHA-256, the API key's id
//! (never its secret) and the session's CSRF token. Every request reads the key again through
//! [`crate::auth::Auth::principal_of`], so a revoked or expired key ends its sessions, and
//! charges the key's rate limit as the API does.
//!
//! Sessions live in this process's memory, bounded by [`CONSOLE_SESSIONS_MAX`]; they end
//! after [`CONSOLE_SESSION_IDLE_MS`] without a request, [`CONSOLE_SESSION_TTL_MS`] after
//! sign-in, at sign-out, and when the process stops.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use facepay_domain::auth::KeyId;
use facepay_domain::limits::{CONSOLE_SESSIONS_MAX, CONSOLE_SESSION_IDLE_MS, CONSOLE_SESSION_TTL_MS};
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
    started: Instant,
    seen: Instant,
    /// A new key's token, to be shown on the next page only (post, redirect, get).
    once: Option<String>,
}

/// This process's console sessions.
pub struct Sessions {
    by_id_hash: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    ttl: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(Duration::from_millis(CONSOLE_SESSION_IDLE_MS), Duration::from_millis(CONSOLE_SESSION_TTL_MS))
    }
}

impl Sessions {
    pub fn new(idle: Duration, ttl: Duration) -> Self {
        Self { by_id_hash: Mutex::new(HashMap::new()), idle, ttl }
    }

    /// A new session for `key_id`: returns the cookie's value (the session id) and the session.
    pub fn start(&self, key_id: KeyId) -> (String, Session) {
        let (id, now) = (random_hex(), Instant::now());
        let session = Session { key_id, csrf: random_hex(), started: now, seen: now, once: None };
        let mut map = self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| self.live(s, now));
        if map.len() >= CONSOLE_SESSIONS_MAX {
            let oldest = map.iter().min_by_key(|(_, s)| s.seen).map(|(k, _)| *k);
            oldest.map(|k| map.remove(&k));
        }
        map.insert(digest(&id), session.clone());
        (id, session)
    }

    /// The live session of a request's cookie, its idle clock restarted.
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let now = Instant::now();
        let mut map = self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner());
        let key = digest(id);
        let live = map.get(&key).is_some_and(|s| self.live(s, now));
        if !live {
            map.remove(&key);
            return None;
        }
        let session = map.get_mut(&key)?;
        session.seen = now;
        Some(Session { once: None, ..session.clone() })
    }

    /// Keeps `token` for the session's next [`Sessions::take_once`] only.
    pub fn show_once(&self, headers: &HeaderMap, token: String) {
        let Some(id) = cookie(headers, SESSION_COOKIE) else { return };
        if let Some(s) = self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&digest(id)) {
            s.once = Some(token);
        }
    }

    /// What [`Sessions::show_once`] kept, and forgets it.
    pub fn take_once(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, SESSION_COOKIE)?;
        self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&digest(id))?.once.take()
    }

    /// Ends the session of a request's cookie.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.end_id(id);
        }
    }

    /// Ends the session of this id.
    pub fn end_id(&self, id: &str) {
        self.by_id_hash.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest(id));
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.seen) < self.idle && now.duration_since(s.started) < self.ttl
    }
}

/// 32 random bytes in hex.
pub fn random_hex() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
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

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, format!("a=b; {SESSION_COOKIE}={value}").parse().unwrap());
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_sign_out() {
        let sessions = Sessions::default();
        let (id, s) = sessions.start(KeyId::platform());
        let found = sessions.find(&with_cookie(&id)).expect("found");
        assert_eq!((found.key_id, found.csrf), (s.key_id, s.csrf));
        assert!(sessions.find(&with_cookie(&random_hex())).is_none(), "another id is no session");
        sessions.end(&with_cookie(&id));
        assert!(sessions.find(&with_cookie(&id)).is_none());
    }

    #[test]
    fn a_session_idle_past_its_timeout_is_gone() {
        let sessions = Sessions::new(Duration::from_millis(30), Duration::from_secs(60));
        let (id, _) = sessions.start(KeyId::platform());
        assert!(sessions.find(&with_cookie(&id)).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(sessions.find(&with_cookie(&id)).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_behind_tls() {
        let mut h = HeaderMap::new();
        assert_eq!(set_cookie(&h, "n", "v", None), "n=v; Path=/console; HttpOnly; SameSite=Strict");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(set_cookie(&h, "n", "", Some(0)).ends_with("SameSite=Strict; Secure; Max-Age=0"));
    }
}
