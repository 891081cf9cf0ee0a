//! [`Stores`]: one database opened by its URL (SQLite or PostgreSQL), each of its roles as the
//! trait its callers take: the ledger's store, and reconciliation's.

use std::path::Path;
use std::sync::Arc;

use crate::reconcile::store::ReconStore;
use crate::store::LedgerStore;
use crate::store_error::StoreError;
use crate::{PgStore, SqliteStore};

/// One database, as the ledger's store and as reconciliation's.
#[derive(Clone)]
pub struct Stores {
    pub ledger: Arc<dyn LedgerStore>,
    pub recon: Arc<dyn ReconStore>,
}

impl Stores {
    /// Both roles of `store`.
    pub fn of<S: LedgerStore + ReconStore>(store: S) -> Self {
        let store = Arc::new(store);
        Self { ledger: store.clone(), recon: store }
    }

    /// Opens the database at `url` (`sqlite://…`, `sqlite:…`, `postgres://…` or
    /// `postgresql://…`), creating a SQLite file's folder, and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
            }
        }
        if url.starts_with("sqlite:") {
            return Ok(Self::of(SqliteStore::open(url).await?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::of(PgStore::open(url).await?));
        }
        Err(StoreError::Conflict("expected a sqlite://, postgres:// or postgresql:// URL".into()))
    }
}
