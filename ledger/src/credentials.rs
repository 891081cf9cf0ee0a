//! API credentials and the audit log, as the store keeps them.
//!
//! [`CredentialStore`] is part of every [`crate::LedgerStore`]; both stores implement it with
//! the same SQL (see [`credential_store`]), over the tables of migration `0007_auth`.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use facepay_domain::auth::{KeyId, Role};
use facepay_domain::{DeviceId, MerchantId, StoreId};
use serde::Serialize;

use crate::store_error::StoreError;

/// One credential's row. `secret_hash` is `HMAC-SHA256(pepper, secret)`, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Credential {
    pub key_id: KeyId,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<MerchantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    #[serde(skip)]
    pub secret_hash: String,
    pub label: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Credential {
    /// Usable at `now`: not revoked, not expired.
    pub fn live_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// One admin or finance action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Assigned by the store; 0 on a new entry.
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The acting key's id, or `cli`.
    pub principal: String,
    pub role: String,
    /// `key_created`, `key_revoked`, `merchant_limit_changed`, `account_frozen`, …
    pub action: String,
    /// What the action was about: a key id, a merchant, a payer.
    pub subject: String,
    /// Anything else, as JSON (never a secret).
    pub detail: serde_json::Value,
}

/// A key's place in the list (newest first, then by id): where a page of keys ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPosition {
    pub created_at_ms: i64,
    pub key_id: KeyId,
}

impl KeyPosition {
    pub fn of(key: &Credential) -> Self {
        Self { created_at_ms: millis(&key.created_at), key_id: key.key_id.clone() }
    }

    /// As a cursor: `<created_at_ms>.<key_id>`.
    pub fn cursor(&self) -> String {
        format!("{}.{}", self.created_at_ms, self.key_id)
    }

    /// A cursor [`KeyPosition::cursor`] made, else `None`.
    pub fn parse(cursor: &str) -> Option<Self> {
        let (ms, key_id) = cursor.split_once('.')?;
        Some(Self { created_at_ms: ms.parse().ok().filter(|ms| *ms >= 0)?, key_id: KeyId::parse(key_id).ok()? })
    }
}

/// The credential tables.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Adds a key; its creation is audited in the same transaction.
    async fn key_insert(&self, key: &Credential, audit: &AuditEntry) -> Result<(), StoreError>;
    async fn key_get(&self, key_id: &KeyId) -> Result<Option<Credential>, StoreError>;
    /// A page of keys, newest first, after `after` (secrets never; hashes are not served
    /// either): at most `limit`.
    async fn key_list(&self, after: Option<&KeyPosition>, limit: u32) -> Result<Vec<Credential>, StoreError>;
    /// Revokes a live key; false if there is none. Audited in the same transaction.
    async fn key_revoke(&self, key_id: &KeyId, at: DateTime<Utc>, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// Every unrevoked device key, by key id.
    async fn device_keys(&self) -> Result<HashMap<KeyId, Credential>, StoreError>;
    async fn audit_append(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Newest first, below `before_seq` when given.
    async fn audit_list(&self, before_seq: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}

pub(crate) fn millis(at: &DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms).single().ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

/// The columns of `api_keys`, in the order [`credential_from`] reads them.
pub(crate) const KEY_COLUMNS: &str = "key_id, role, merchant_id, store_id, device_id, secret_hash, label, \
     created_by, created_at, expires_at, revoked_at";

/// A row's cells, as the store read them.
pub(crate) struct KeyCells {
    pub key_id: String,
    pub role: String,
    pub merchant_id: Option<String>,
    pub store_id: Option<String>,
    pub device_id: Option<String>,
    pub secret_hash: String,
    pub label: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

pub(crate) fn credential_from(c: KeyCells) -> Result<Credential, StoreError> {
    let bad = |what: &str, e: facepay_domain::ValueError| StoreError::Corrupt(format!("api_keys.{what}: {e}"));
    Ok(Credential {
        key_id: KeyId::parse(c.key_id).map_err(|e| bad("key_id", e))?,
        role: Role::parse(&c.role).map_err(|e| bad("role", e))?,
        merchant_id: c.merchant_id.map(MerchantId::parse).transpose().map_err(|e| bad("merchant_id", e))?,
        store_id: c.store_id.map(StoreId::parse).transpose().map_err(|e| bad("store_id", e))?,
        device_id: c.device_id.map(DeviceId::parse).transpose().map_err(|e| bad("device_id", e))?,
        secret_hash: c.secret_hash,
        label: c.label,
        created_by: c.created_by,
        created_at: from_millis(c.created_at)?,
        expires_at: from_millis(c.expires_at)?,
        revoked_at: c.revoked_at.map(from_millis).transpose()?,
    })
}

/// Implements [`CredentialStore`] for a store type over sqlx database `$db` (rows `$row`)
/// with `$pool` (a pool field), binding with `$p` (1-based parameter number → placeholder).
macro_rules! credential_store {
    ($store:ty, $db:ty, $row:ty, $pool:ident, $p:expr) => {
        #[async_trait::async_trait]
        impl $crate::credentials::CredentialStore for $store {
            async fn key_insert(
                &self,
                key: &$crate::credentials::Credential,
                audit: &$crate::credentials::AuditEntry,
            ) -> Result<(), $crate::store_error::StoreError> {
                use $crate::credentials::millis;
                let ph: Vec<String> = (1..=11).map($p).collect();
                let sql =
                    format!("INSERT INTO api_keys ({}) VALUES ({})", $crate::credentials::KEY_COLUMNS, ph.join(", "));
                let mut tx = self.begin_write().await?;
                sqlx::query(&sql)
                    .bind(key.key_id.as_str())
                    .bind(key.role.as_str())
                    .bind(key.merchant_id.as_ref().map(|m| m.as_str().to_string()))
                    .bind(key.store_id.as_ref().map(|m| m.as_str().to_string()))
                    .bind(key.device_id.as_ref().map(|m| m.as_str().to_string()))
                    .bind(&key.secret_hash)
                    .bind(&key.label)
                    .bind(&key.created_by)
                    .bind(millis(&key.created_at))
                    .bind(millis(&key.expires_at))
                    .bind(key.revoked_at.as_ref().map(millis))
                    .execute(&mut *tx)
                    .await?;
                Self::audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn key_get(
                &self,
                key_id: &facepay_domain::auth::KeyId,
            ) -> Result<Option<$crate::credentials::Credential>, $crate::store_error::StoreError> {
                let sql = format!("SELECT {} FROM api_keys WHERE key_id = {}", $crate::credentials::KEY_COLUMNS, $p(1));
                let row = sqlx::query(&sql).bind(key_id.as_str()).fetch_optional(&self.$pool).await?;
                row.map(|r| Self::key_row(&r)).transpose()
            }

            async fn key_list(
                &self,
                after: Option<&$crate::credentials::KeyPosition>,
                limit: u32,
            ) -> Result<Vec<$crate::credentials::Credential>, $crate::store_error::StoreError> {
                let cols = $crate::credentials::KEY_COLUMNS;
                let order = "ORDER BY created_at DESC, key_id";
                let rows = match after {
                    None => {
                        let sql = format!("SELECT {cols} FROM api_keys {order} LIMIT {}", $p(1));
                        sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.$pool).await?
                    }
                    Some(a) => {
                        let sql = format!(
                            "SELECT {cols} FROM api_keys WHERE created_at < {} OR (created_at = {} AND key_id > {}) \
                             {order} LIMIT {}",
                            $p(1),
                            $p(2),
                            $p(3),
                            $p(4)
                        );
                        let q = sqlx::query(&sql).bind(a.created_at_ms).bind(a.created_at_ms).bind(a.key_id.as_str());
                        q.bind(i64::from(limit)).fetch_all(&self.$pool).await?
                    }
                };
                rows.iter().map(Self::key_row).collect()
            }

            async fn key_revoke(
                &self,
                key_id: &facepay_domain::auth::KeyId,
                at: chrono::DateTime<chrono::Utc>,
                audit: &$crate::credentials::AuditEntry,
            ) -> Result<bool, $crate::store_error::StoreError> {
                let sql = format!(
                    "UPDATE api_keys SET revoked_at = {} WHERE key_id = {} AND revoked_at IS NULL",
                    $p(1),
                    $p(2)
                );
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(&sql)
                    .bind($crate::credentials::millis(&at))
                    .bind(key_id.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if done == 1 {
                    Self::audit_in(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(done == 1)
            }

            async fn device_keys(
                &self,
            ) -> Result<
                std::collections::HashMap<facepay_domain::auth::KeyId, $crate::credentials::Credential>,
                $crate::store_error::StoreError,
            > {
                let sql = format!(
                    "SELECT {} FROM api_keys WHERE role = 'device' AND revoked_at IS NULL",
                    $crate::credentials::KEY_COLUMNS
                );
                let rows = sqlx::query(&sql).fetch_all(&self.$pool).await?;
                rows.iter().map(|r| Self::key_row(r).map(|c| (c.key_id.clone(), c))).collect()
            }

            async fn audit_append(
                &self,
                entry: &$crate::credentials::AuditEntry,
            ) -> Result<(), $crate::store_error::StoreError> {
                let mut tx = self.begin_write().await?;
                Self::audit_in(&mut tx, entry).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn audit_list(
                &self,
                before_seq: Option<i64>,
                limit: u32,
            ) -> Result<Vec<$crate::credentials::AuditEntry>, $crate::store_error::StoreError> {
                use sqlx::Row;
                let sql = format!(
                    "SELECT seq, at, principal, role, action, subject, detail FROM audit_log \
                     WHERE seq < {} ORDER BY seq DESC LIMIT {}",
                    $p(1),
                    $p(2)
                );
                let rows = sqlx::query(&sql)
                    .bind(before_seq.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&self.$pool)
                    .await?;
                rows.iter()
                    .map(|r| -> Result<$crate::credentials::AuditEntry, $crate::store_error::StoreError> {
                        let detail: String = r.try_get("detail")?;
                        Ok($crate::credentials::AuditEntry {
                            seq: r.try_get("seq")?,
                            at: $crate::credentials::from_millis(r.try_get("at")?)?,
                            principal: r.try_get("principal")?,
                            role: r.try_get("role")?,
                            action: r.try_get("action")?,
                            subject: r.try_get("subject")?,
                            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
                        })
                    })
                    .collect()
            }
        }

        impl $store {
            fn key_row(r: &$row) -> Result<$crate::credentials::Credential, $crate::store_error::StoreError> {
                use sqlx::Row;
                $crate::credentials::credential_from($crate::credentials::KeyCells {
                    key_id: r.try_get("key_id")?,
                    role: r.try_get("role")?,
                    merchant_id: r.try_get("merchant_id")?,
                    store_id: r.try_get("store_id")?,
                    device_id: r.try_get("device_id")?,
                    secret_hash: r.try_get("secret_hash")?,
                    label: r.try_get("label")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            }

            async fn audit_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                e: &$crate::credentials::AuditEntry,
            ) -> Result<(), $crate::store_error::StoreError> {
                let ph: Vec<String> = (1..=6).map($p).collect();
                let sql = format!(
                    "INSERT INTO audit_log (at, principal, role, action, subject, detail) VALUES ({})",
                    ph.join(", ")
                );
                sqlx::query(&sql)
                    .bind($crate::credentials::millis(&e.at))
                    .bind(e.principal.clone())
                    .bind(e.role.clone())
                    .bind(e.action.clone())
                    .bind(e.subject.clone())
                    .bind(e.detail.to_string())
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use credential_store;
