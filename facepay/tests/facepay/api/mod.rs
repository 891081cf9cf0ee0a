//! The embedded app over real HTTP on port 0: authentication, the device, merchant and
//! finance routes, the answers' shapes against the OpenAPI spec, and the attacks of
//! docs/SECURITY.md.

mod auth;
mod console;
mod http;
mod openapi;
mod reconcile_http;
mod refund;
mod security;
mod wait;
