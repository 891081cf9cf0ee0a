//! The face key file: every payer's wrapped data key (and the phone digits they enrolled
//! with), kept apart from the ledger's tables, in a SQLite file of its own where a deletion
//! is real.
//!
//! Crypto-shredding is only as good as the deletion of the key. In the ledger's database a
//! deleted row stays readable: in a page's free space, in WAL frames, in a PostgreSQL dead
//! tuple and in every WAL archive and backup. This file is written so that a deleted key
//! leaves no byte behind in any of its files:
//! - `secure_delete = ON`: SQLite overwrites deleted content (cells, freed pages) with zeros;
//! - after each deletion a `wal_checkpoint(TRUNCATE)`: the zeroed pages reach the main file
//!   and the WAL, whose older frames still held the key, is truncated to nothing. A deletion
//!   counts as done only when that checkpoint completes ([`KeyFileError`] otherwise, and the
//!   caller retries it).
//!
//! Several processes on one host may share the file (WAL mode, a busy timeout). It holds no
//! template: those stay sealed in the ledger's append-only log. See docs/SECURITY.md,
//! "Biometric data", for what an operator must do about backups of this file.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use facepay_domain::limits::{FACE_KEYS_ERASE_PAUSE_MS, FACE_KEYS_ERASE_TRIES_MAX, SQLITE_BUSY_TIMEOUT_MS};
use facepay_domain::{PayerId, PhoneLast4};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

/// One payer's data key as the file keeps it. Only sizes are printed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub payer_id: PayerId,
    /// Names the data key; bound into both seals, and matches the template it opens.
    pub key_id: Uuid,
    /// The payer id's shard hash (see the ledger's `face_live`), so a shard loads its own.
    pub shard_hash: u32,
    /// The digits the payer enrolled with, for the phone-narrowed search.
    pub phone_last4: Option<PhoneLast4>,
    /// The data key sealed under the master key.
    pub wrapped_key: Vec<u8>,
}

impl KeyRecord {
    /// A key row's columns checked: the one parser of both tables that hold keys (this
    /// file's, and the ledger's from before migration 0020).
    pub(crate) fn from_columns(
        payer_id: String,
        key_id: Uuid,
        shard_hash: i64,
        phone_last4: Option<String>,
        wrapped_key: Vec<u8>,
    ) -> Result<Self, String> {
        Ok(Self {
            payer_id: PayerId::parse(payer_id).map_err(|e| format!("payer_id: {e}"))?,
            key_id,
            shard_hash: u32::try_from(shard_hash).map_err(|e| format!("shard_hash: {e}"))?,
            phone_last4: phone_last4
                .map(|p| PhoneLast4::parse(&p))
                .transpose()
                .map_err(|e| format!("phone_last4: {e}"))?,
            wrapped_key,
        })
    }
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("payer_id", &self.payer_id)
            .field("key_id", &self.key_id)
            .field("wrapped_key_bytes", &self.wrapped_key.len())
            .finish_non_exhaustive()
    }
}

/// The key file failed, or a deletion is not yet final.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("face key file {path}: {source}")]
    Sql { path: String, source: sqlx::Error },
    /// Rows were deleted but the checkpoint that removes them from the WAL could not run to
    /// its end (readers of other processes): retry the deletion.
    #[error("face key file {path}: the erasure checkpoint did not complete after {tries} tries")]
    ErasurePending { path: String, tries: u32 },
    #[error("face key file {path}: corrupt row: {what}")]
    Corrupt { path: String, what: String },
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS face_keys (
    key_id      TEXT    PRIMARY KEY,
    payer_id    TEXT    NOT NULL,
    shard_hash  INTEGER NOT NULL CHECK (shard_hash >= 0 AND shard_hash < 4294967296),
    phone_last4 TEXT    CHECK (phone_last4 IS NULL OR length(phone_last4) = 4),
    wrapped_key BLOB    NOT NULL CHECK (length(wrapped_key) > 0),
    created_at  TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS face_keys_payer ON face_keys (payer_id);
CREATE INDEX IF NOT EXISTS face_keys_shard ON face_keys (shard_hash);";

const COLUMNS: &str = "key_id, payer_id, shard_hash, phone_last4, wrapped_key";

/// The face key file (see the module's documentation).
#[derive(Clone)]
pub struct FaceKeyFile {
    pool: SqlitePool,
    path: PathBuf,
}

impl std::fmt::Debug for FaceKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceKeyFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FaceKeyFile {
    /// Opens (creating) the key file at `path`, with secure deletion on.
    pub async fn open(path: &Path) -> Result<Self, KeyFileError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| KeyFileError::Sql { path: shown.clone(), source: e.into() })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|source| KeyFileError::Sql { path: shown.clone(), source })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))
            .pragma("secure_delete", "ON");
        // One connection: the file's own readers never hold up its erasure checkpoint.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| KeyFileError::Sql { path: shown.clone(), source })?;
        let file = Self { pool, path: path.to_path_buf() };
        sqlx::raw_sql(SCHEMA).execute(&file.pool).await.map_err(|e| file.sql(e))?;
        Ok(file)
    }

    /// The files SQLite keeps this store in: the database, its WAL and its shared memory.
    pub fn files(&self) -> [PathBuf; 3] {
        let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", self.path.display()));
        [self.path.clone(), with("-wal"), with("-shm")]
    }

    fn sql(&self, source: sqlx::Error) -> KeyFileError {
        KeyFileError::Sql { path: self.path.display().to_string(), source }
    }

    /// Keeps `key` (a payer may briefly have two: an enrolment keeps its new key before the
    /// ledger makes it live, and shreds the one it replaced after, so a crash in between loses
    /// no face).
    pub async fn put(&self, key: &KeyRecord, at: DateTime<Utc>) -> Result<(), KeyFileError> {
        sqlx::query(
            "INSERT INTO face_keys (key_id, payer_id, shard_hash, phone_last4, wrapped_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key.key_id.to_string())
        .bind(key.payer_id.as_str())
        .bind(i64::from(key.shard_hash))
        .bind(key.phone_last4.as_ref().map(|p| p.as_str().to_string()))
        .bind(&key.wrapped_key)
        .bind(at.to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Erases every key of `payer`: their rows zeroed and the WAL truncated. How many there
    /// were.
    pub async fn shred(&self, payer: &PayerId) -> Result<u64, KeyFileError> {
        self.shred_where("payer_id", payer.as_str()).await
    }

    /// Erases the one key `key_id` (a template the ledger replaced: never live again).
    pub async fn shred_key(&self, key_id: Uuid) -> Result<u64, KeyFileError> {
        self.shred_where("key_id", &key_id.to_string()).await
    }

    /// Deletes the keys whose `column` is `value`, then [`Self::erase`]s; how many.
    async fn shred_where(&self, column: &'static str, value: &str) -> Result<u64, KeyFileError> {
        let done = sqlx::query(&format!("DELETE FROM face_keys WHERE {column} = $1"))
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(|e| self.sql(e))?;
        self.erase().await?;
        Ok(done.rows_affected())
    }

    /// Runs the checkpoint that makes deletions final: every WAL frame copied into the main
    /// file (whose deleted cells secure deletion zeroed) and the WAL truncated.
    pub async fn erase(&self) -> Result<(), KeyFileError> {
        for _ in 0..FACE_KEYS_ERASE_TRIES_MAX {
            let row =
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.pool).await.map_err(|e| self.sql(e))?;
            let busy: i64 = row.try_get(0).map_err(|e| self.sql(e))?;
            if busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(FACE_KEYS_ERASE_PAUSE_MS)).await;
        }
        Err(KeyFileError::ErasurePending { path: self.path.display().to_string(), tries: FACE_KEYS_ERASE_TRIES_MAX })
    }

    /// The key `key_id`, if the file still holds it.
    pub async fn get(&self, key_id: Uuid) -> Result<Option<KeyRecord>, KeyFileError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM face_keys WHERE key_id = $1"))
            .bind(key_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.sql(e))?;
        row.map(|r| self.record(&r)).transpose()
    }

    /// Every key of shard `shard` of `shards` (see `face_live.shard_hash`).
    pub async fn shard(&self, shard: u32, shards: u32) -> Result<Vec<KeyRecord>, KeyFileError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM face_keys WHERE shard_hash % $1 = $2"))
            .bind(i64::from(shards.max(1)))
            .bind(i64::from(shard))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.sql(e))?;
        rows.iter().map(|r| self.record(r)).collect()
    }

    /// How many keys the file holds for `payer`.
    pub async fn count_of(&self, payer: &PayerId) -> Result<u64, KeyFileError> {
        let row = sqlx::query("SELECT count(*) FROM face_keys WHERE payer_id = $1")
            .bind(payer.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.sql(e))?;
        let n: i64 = row.try_get(0).map_err(|e| self.sql(e))?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Where in this file's files (database, WAL, shared memory) any of `needles` occurs:
    /// the audit of an erasure. Each needle is named for the report.
    pub fn traces(&self, needles: &[(String, Vec<u8>)]) -> std::io::Result<Vec<Trace>> {
        let mut found = Vec::new();
        for file in self.files() {
            let bytes = match std::fs::read(&file) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for (what, needle) in needles {
                if let Some(offset) = find(&bytes, needle) {
                    found.push(Trace { file: file.display().to_string(), what: what.clone(), offset });
                }
            }
        }
        Ok(found)
    }

    fn record(&self, r: &sqlx::sqlite::SqliteRow) -> Result<KeyRecord, KeyFileError> {
        let corrupt = |what: String| KeyFileError::Corrupt { path: self.path.display().to_string(), what };
        let column = |e: sqlx::Error| corrupt(e.to_string());
        let key_id: String = r.try_get("key_id").map_err(column)?;
        let key_id = Uuid::parse_str(&key_id).map_err(|e| corrupt(format!("key_id: {e}")))?;
        let (payer, shard) = (r.try_get("payer_id").map_err(column)?, r.try_get("shard_hash").map_err(column)?);
        let (phone, wrapped) = (r.try_get("phone_last4").map_err(column)?, r.try_get("wrapped_key").map_err(column)?);
        KeyRecord::from_columns(payer, key_id, shard, phone, wrapped).map_err(corrupt)
    }
}

/// A needle found in a file by [`FaceKeyFile::traces`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trace {
    pub file: String,
    pub what: String,
    pub offset: usize,
}

/// The first offset of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
