//! Reconciliation (issue 6): the channel's daily bill against the ledger.
//!
//! - [`bill`]: reading the bill (WeChat layouts, a generic CSV) and writing one.
//! - [`classify`]: the pure core: a merge of the bill's lines and the ledger's entries of
//!   the day, both sorted by key, into findings (matched, breaks, timing differences), and
//!   the report that sums them.
//! - [`store`]: imports, runs, breaks and resolutions in the database (SQLite and
//!   PostgreSQL); breaks and resolutions are also appended to the ledger's event log.
//! - `sql`: the reconciliation SQL both stores run, written once; `sqlite` and `postgres`:
//!   what each does its own way (a bill's lines and a run's breaks in bulk, the day's
//!   entries, locking an import's slot).
//! - [`settle`]: the pure core of the one resolution that moves money (`confirmed_paid`).

pub mod bill;
pub mod classify;
pub mod settle;
mod sql;
pub mod store;

use serde::{Deserialize, Serialize};

/// What a line of the bill, or an entry of the ledger, is. The order (payment, refund,
/// reversal) is the sort order of the codes `P`, `R`, `V`, as the database sorts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A payment (bill status SUCCESS), keyed by the order number.
    Payment,
    /// A refund (bill status REFUND), keyed by the refund number.
    Refund,
    /// A paid order reversed (bill status REVOKED), keyed by the order number.
    Reversal,
}

impl EntryKind {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            EntryKind::Payment => "P",
            EntryKind::Refund => "R",
            EntryKind::Reversal => "V",
        }
    }

    pub fn from_code(s: &str) -> Option<Self> {
        match s {
            "P" => Some(EntryKind::Payment),
            "R" => Some(EntryKind::Refund),
            "V" => Some(EntryKind::Reversal),
            _ => None,
        }
    }
}

mod postgres;
mod sqlite;
