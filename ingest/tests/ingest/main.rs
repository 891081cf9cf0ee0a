//! `facepay-ingest`'s integration tests, one binary: authentication before anything else,
//! the gallery at rest (SQLite and PostgreSQL), and time rules on the platform's time.

mod authenticity;
mod faces;
mod platform_time;
