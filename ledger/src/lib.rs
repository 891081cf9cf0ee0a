//! facepay's ledger: an append-only, double-entry, event-sourced store that decides every
//! payment.
//!
//! Commands come in from the pipeline; the pure core [`core::decide`]s what each means and
//! [`core::apply`]s the resulting events; the [`service::Ledger`] runs that over batches and
//! commits each batch (events, postings, projections and answers) in one database
//! transaction through a [`store::LedgerStore`].
//!
//! # Layout
//! - [`command`]: what the pipeline asks (`Pay`, `Query`, `Fund`, …).
//! - [`model`]: ledger events, balanced transfers, accounts, and the state they fold into.
//! - [`core`]: `decide` and `apply`: pure, synchronous, I/O-free.
//! - [`rules`]: what every decision shares (refusals, fees, transfer ids, captures, the 45 s).
//! - [`lifecycle`]: the same for what follows a payment: reversal, refunds, fees, Pay Score holds.
//! - [`store`]: the store trait, its rows and its errors (`store_error`).
//! - [`stores`]: one database opened by URL, each role as the trait its callers take.
//! - [`sqlite`]: the embedded store; [`postgres`]: the production store, behind the same
//!   traits; `store_sql`: the SQL both run, written once (each backend keeps only what its
//!   database does differently).
//! - `rows`: what both stores share apart from SQL: the rows a batch writes, built once, and
//!   read rows parsed into the model over one `Cells` view of a row.
//! - `sqlite_raw`: prepared statements on SQLite's own handle for a bill's bulk rows (the
//!   crate's only `unsafe`).
//! - [`credentials`]: API keys and the audit log of admin and finance actions.
//! - [`console_sessions`]: the console's signed-in sessions, shared by every process.
//! - [`face_keys`]: each payer's wrapped data key, in a SQLite file of its own where deletion
//!   is real (crypto-shredding that survives a look at the disk).
//! - [`audit`]: the hash chain over each stream's events, and its verifier.
//! - `timestamp`: the one text form of an instant the ledger writes (hashed by the audit
//!   chain, stored by the embedded store).
//! - [`service`]: batching, idempotent answers, projection writing, replay.
//! - [`decided`]: which events a commit answered, told to other processes (PostgreSQL
//!   `NOTIFY`), for devices waiting on their answer.
//! - [`lookup`]: order lookups read together, a query per batch of waiting callers.
//! - [`sweep`]: the ledger's clock: revokes orders unpaid after 45 s and expires 30-day holds.
//! - [`reconcile`]: the channel's daily bill against the ledger (its own Layout).

pub mod audit;
pub mod command;
pub mod console_sessions;
pub mod core;
pub mod credentials;
pub mod decided;
pub mod face_keys;
pub mod lifecycle;
pub mod lookup;
pub mod model;
pub mod postgres;
pub mod reconcile;
mod rows;
pub mod rules;
pub mod service;
pub mod sqlite;
mod sqlite_raw;
pub mod store;
mod store_error;
mod store_sql;
pub mod stores;
pub mod sweep;
mod timestamp;

pub use command::{Command, CommandKind, Identity, Lifecycle};
pub use core::{decide, DomainError, Policy};
pub use model::{Account, LedgerEvent, LedgerState};
pub use postgres::PgStore;
pub use service::{CommitRecorder, Delivery, Ledger, OutboxTopics, Rejection};
pub use sqlite::SqliteStore;
pub use store::{LedgerStore, StoreError};
pub use stores::Stores;
