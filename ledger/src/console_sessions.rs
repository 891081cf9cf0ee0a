//! The console's sessions at rest (migration 0028), so that any `facepay serve` process over
//! the same database serves a signed-in browser: no sticky sessions behind a load balancer.
//!
//! A row holds the SHA-256 of the session id (the browser's cookie; the id itself is never
//! stored), the API key's id (never its secret), when the session started and was last seen,
//! and a new key's token sealed with a key only the cookie's holder can derive, to be shown
//! once. [`SessionStore`] is part of every [`crate::LedgerStore`]; both stores run the same
//! SQL ([`session_store`]). Times are unix milliseconds, as the credentials'.

use async_trait::async_trait;
use facepay_domain::auth::KeyId;

use crate::store_error::StoreError;

/// One session's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the session id, hex.
    pub id_hash: String,
    pub key_id: KeyId,
    pub started_at_ms: i64,
    pub seen_at_ms: i64,
    /// A new key's token, sealed for this session, shown on its next page only.
    pub once_sealed: Option<String>,
}

/// How many sessions may live at once: of one key, and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub per_key: i64,
    pub total: i64,
}

/// Which sessions still live: seen since `seen_after_ms` and started since `started_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub seen_after_ms: i64,
    pub started_after_ms: i64,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Adds `row` after dropping the sessions no longer `live` and, past the `bounds`, the
    /// least recently seen ones: of the same key first (a key's holder ends only its own
    /// sessions), then of all.
    async fn session_start(&self, row: &SessionRow, live: Live, bounds: Bounds) -> Result<(), StoreError>;
    /// The session of `id_hash` if it is `live`.
    async fn session_get(&self, id_hash: &str, live: Live) -> Result<Option<SessionRow>, StoreError>;
    /// Restarts the session's idle clock.
    async fn session_touch(&self, id_hash: &str, seen_at_ms: i64) -> Result<(), StoreError>;
    /// Keeps `sealed` for the session's next page.
    async fn session_keep_once(&self, id_hash: &str, sealed: &str) -> Result<(), StoreError>;
    /// What [`SessionStore::session_keep_once`] kept, taken (a second take finds nothing).
    async fn session_take_once(&self, id_hash: &str) -> Result<Option<String>, StoreError>;
    /// Ends the session.
    async fn session_end(&self, id_hash: &str) -> Result<(), StoreError>;
}

/// Implements [`SessionStore`] for a store type with `$pool` (a pool field).
macro_rules! session_store {
    ($store:ty, $pool:ident) => {
        #[async_trait::async_trait]
        impl $crate::console_sessions::SessionStore for $store {
            async fn session_start(
                &self,
                row: &$crate::console_sessions::SessionRow,
                live: $crate::console_sessions::Live,
                bounds: $crate::console_sessions::Bounds,
            ) -> Result<(), $crate::store_error::StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM console_sessions WHERE NOT (seen_at_ms > $1 AND started_at_ms > $2)")
                    .bind(live.seen_after_ms)
                    .bind(live.started_after_ms)
                    .execute(&mut *tx)
                    .await?;
                let key = row.key_id.as_str();
                let of_key: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_sessions WHERE key_id = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                if of_key >= bounds.per_key {
                    sqlx::query(
                        "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions \
                         WHERE key_id = $1 ORDER BY seen_at_ms LIMIT $2)",
                    )
                    .bind(key)
                    .bind(of_key - bounds.per_key + 1)
                    .execute(&mut *tx)
                    .await?;
                }
                let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_sessions").fetch_one(&mut *tx).await?;
                if held >= bounds.total {
                    sqlx::query(
                        "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions \
                         ORDER BY seen_at_ms LIMIT $1)",
                    )
                    .bind(held - bounds.total + 1)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO console_sessions (id_hash, key_id, started_at_ms, seen_at_ms) VALUES ($1, $2, $3, $4)",
                )
                .bind(&row.id_hash)
                .bind(key)
                .bind(row.started_at_ms)
                .bind(row.seen_at_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session_get(
                &self,
                id_hash: &str,
                live: $crate::console_sessions::Live,
            ) -> Result<Option<$crate::console_sessions::SessionRow>, $crate::store_error::StoreError> {
                use $crate::rows::Cells;
                let sql =
                    "SELECT * FROM console_sessions WHERE id_hash = $1 AND seen_at_ms > $2 AND started_at_ms > $3";
                let row = sqlx::query(sql)
                    .bind(id_hash)
                    .bind(live.seen_after_ms)
                    .bind(live.started_after_ms)
                    .fetch_optional(&self.$pool)
                    .await?;
                let Some(r) = row else { return Ok(None) };
                let key_id = $crate::rows::id("key", r.text("key_id")?, facepay_domain::auth::KeyId::parse)?;
                Ok(Some($crate::console_sessions::SessionRow {
                    id_hash: r.text("id_hash")?,
                    key_id,
                    started_at_ms: r.int("started_at_ms")?,
                    seen_at_ms: r.int("seen_at_ms")?,
                    once_sealed: r.opt_text("once_sealed")?,
                }))
            }

            async fn session_touch(
                &self,
                id_hash: &str,
                seen_at_ms: i64,
            ) -> Result<(), $crate::store_error::StoreError> {
                sqlx::query("UPDATE console_sessions SET seen_at_ms = $2 WHERE id_hash = $1 AND seen_at_ms < $2")
                    .bind(id_hash)
                    .bind(seen_at_ms)
                    .execute(&self.$pool)
                    .await?;
                Ok(())
            }

            async fn session_keep_once(
                &self,
                id_hash: &str,
                sealed: &str,
            ) -> Result<(), $crate::store_error::StoreError> {
                sqlx::query("UPDATE console_sessions SET once_sealed = $2 WHERE id_hash = $1")
                    .bind(id_hash)
                    .bind(sealed)
                    .execute(&self.$pool)
                    .await?;
                Ok(())
            }

            async fn session_take_once(
                &self,
                id_hash: &str,
            ) -> Result<Option<String>, $crate::store_error::StoreError> {
                let kept: Option<Option<String>> =
                    sqlx::query_scalar("SELECT once_sealed FROM console_sessions WHERE id_hash = $1")
                        .bind(id_hash)
                        .fetch_optional(&self.$pool)
                        .await?;
                let Some(sealed) = kept.flatten() else { return Ok(None) };
                // Taken by whoever clears it: of two pages at once, one shows it.
                let taken = sqlx::query(
                    "UPDATE console_sessions SET once_sealed = NULL WHERE id_hash = $1 AND once_sealed = $2",
                )
                .bind(id_hash)
                .bind(&sealed)
                .execute(&self.$pool)
                .await?;
                Ok((taken.rows_affected() == 1).then_some(sealed))
            }

            async fn session_end(&self, id_hash: &str) -> Result<(), $crate::store_error::StoreError> {
                sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.$pool)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use session_store;
