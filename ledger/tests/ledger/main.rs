//! `facepay-ledger`'s integration tests, one binary: the pure core given/when/then, its
//! properties, the stores (SQLite and PostgreSQL, the same tests against both), and
//! reconciliation, pure and against the stores.

mod common;
mod decide;
mod lifecycle;
mod properties;
mod reconcile;
mod reconcile_store;
mod store;
