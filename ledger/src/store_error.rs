//! [`StoreError`]: the store's failures, apart from domain refusals, and which of them a
//! caller may retry.

/// Infrastructure failures, apart from domain refusals: the caller retries or stops, it never
/// turns these into a decision.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    /// Another consumer committed this partition since the batch was read: nothing of the
    /// batch landed; re-read the stored offsets and resume from there.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A read shared by several callers failed (the text is the failure) or its reader has
    /// stopped: transient, ask again.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// True when the store refused what it was asked to write (a constraint, a value it cannot
    /// hold): the same write fails again, so the command that caused it is refused and kept.
    /// False for every failure of the service itself (connection lost, pool exhausted, server
    /// shutting down, serialization conflict): those are retried, never turned into a decision.
    pub fn is_refusal(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                use sqlx::error::ErrorKind;
                match db.kind() {
                    ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation => true,
                    // PostgreSQL's data exceptions (class 22: a value out of range, bad text).
                    _ => db.code().is_some_and(|c| c.starts_with("22")),
                }
            }
            StoreError::Database(_) | StoreError::Migration(_) | StoreError::Fenced(_) | StoreError::Unavailable(_) => {
                false
            }
            StoreError::Corrupt(_) | StoreError::Conflict(_) => true,
        }
    }

    /// True for a failure that passes by itself: the pool timed out or closed, the
    /// connection was lost, the server is shutting down or out of resources, a serialization
    /// conflict or deadlock, SQLite busy or locked, or a shared read that failed for one of
    /// those. An HTTP caller is told to retry (503 with Retry-After) instead of a 500.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::Fenced(_) => true,
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                    // PostgreSQL: connection exceptions (08), insufficient resources (53),
                    // shutdown or not yet accepting (57P0x), serialization failure and
                    // deadlock (40001, 40P01). SQLite: BUSY (5) and LOCKED (6), extended too.
                    let sqlite_busy = c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
                    c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57P0")
                        || c == "40001"
                        || c == "40P01"
                        || sqlite_busy
                }),
                _ => false,
            },
            StoreError::Migration(_) | StoreError::Corrupt(_) | StoreError::Conflict(_) => false,
        }
    }
}
