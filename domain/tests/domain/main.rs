//! `facepay-domain`'s integration tests, one binary: parsing every field, tokens and
//! signatures, and the examples of `docs/events.md`.

mod auth;
mod docs;
mod parse;
