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
    /// Another writer changed what the batch decided on since it was read (an order's row):
    /// nothing landed; decide again on the new state.
    #[error("write conflict: {0}")]
    WriteConflict(String),
}

impl StoreError {
    /// True when the store refused what it was asked to write (a constraint, a value it cannot
    /// hold): the same write fails again, so the command that caused it is refused and kept.
    /// False for every failure of the service itself (connection lost, pool exhausted, server
    /// shutting down, serialization conflict): those are retried, never turned into a decision.
    pub fn is_refusal(&self) -> bool {
        if self.is_write_conflict() {
            return false;
        }
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
            StoreError::Database(_)
            | StoreError::Migration(_)
            | StoreError::Fenced(_)
            | StoreError::Unavailable(_)
            | StoreError::WriteConflict(_) => false,
            StoreError::Corrupt(_) | StoreError::Conflict(_) => true,
        }
    }

    /// True for a failure that passes by itself: the pool timed out or closed, the
    /// connection was lost, the server is shutting down or out of resources, a serialization
    /// conflict or deadlock, SQLite busy or locked, or a shared read that failed for one of
    /// those. An HTTP caller is told to retry (503 with Retry-After) instead of a 500.
    pub fn is_transient(&self) -> bool {
        if self.is_write_conflict() {
            return true;
        }
        match self {
            StoreError::Unavailable(_) | StoreError::Fenced(_) | StoreError::WriteConflict(_) => true,
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

    /// True when another ledger process wrote first what this transaction writes, after this
    /// one read the state it decided on: a second successor to an event of a stream (the audit
    /// chain's link, `events_chain_link`: two processes chaining one merchant's declines), or
    /// a second answer to one inbound event (`inbound_event_id_unique`, `events_event_id_unique`:
    /// an at-least-once matcher that routed one event twice, to two partitions). Optimistic
    /// concurrency, never the command's fault: deciding again on the new state succeeds or
    /// answers from the stored outcome (see `Ledger::handle_delivery`).
    pub fn is_write_conflict(&self) -> bool {
        if let StoreError::WriteConflict(_) = self {
            return true;
        }
        // PostgreSQL's deadlock: two commits locking the same orders (retried whole).
        if let StoreError::Database(sqlx::Error::Database(db)) = self {
            if db.code().as_deref() == Some("40P01") {
                return true;
            }
        }
        self.unique_violation().is_some_and(|(constraint, message)| {
            CONFLICTS.iter().any(|(name, columns)| constraint == Some(*name) || message.contains(columns))
        })
    }

    /// True when one of the ledger's at-most-once rules refused the write (an order paid, a
    /// hold ended, an order reversed or revoked, a refund number used: once each). Between two
    /// ledger processes that is a race, decided again on fresh state; if the fresh decision
    /// still breaks the rule, the store refuses it for good ([`Self::is_refusal`]).
    pub fn is_once_violation(&self) -> bool {
        self.unique_violation().is_some_and(|(constraint, message)| {
            ONCE.iter().any(|name| constraint == Some(*name) || message.contains(name))
        })
    }

    /// The constraint and message of a unique violation.
    fn unique_violation(&self) -> Option<(Option<&str>, &str)> {
        let StoreError::Database(sqlx::Error::Database(db)) = self else { return None };
        matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation).then(|| (db.constraint(), db.message()))
    }
}

/// The unique constraints a second writer of the same thing meets, as PostgreSQL names them
/// and as SQLite names their columns: one successor per event of a stream (migration 0004),
/// one answer per inbound event, one log entry per event id (migration 0001).
const CONFLICTS: [(&str, &str); 3] = [
    ("events_chain_link", "events.stream, events.prev_hash"),
    ("inbound_event_id_unique", "inbound.event_id"),
    ("events_event_id_unique", "events.event_id"),
];

/// The ledger's at-most-once indexes (migrations 0001, 0004, 0009); SQLite names them too.
const ONCE: [&str; 5] = [
    "events_order_paid_once",
    "events_hold_ends_once",
    "events_order_reversed_once",
    "events_refund_once",
    "events_order_revoked_once",
];
