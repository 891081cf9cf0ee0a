//! Workspace-level end-to-end tests of facepay live in `tests/tests/`; this crate has no code.
