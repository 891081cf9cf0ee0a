//! facepay's HTTP API: the router and its handlers, authentication, the one error type, and
//! the OpenAPI description. A library: the `facepay` binary (crate `facepay`) wires it over a
//! store and a pipeline.
//!
//! # Layout
//! - [`http`]: the axum router, and the device, merchant and order handlers.
//! - [`state`]: what every handler shares ([`state::AppState`]), and where accepted events go.
//! - [`page`]: pages of list answers, and the page size's bounds.
//! - [`reconcile`]: the reconciliation routes (finance).
//! - [`recon_view`]: the reconciliation routes' answers, money as decimal strings.
//! - [`platform`]: events sent through the platform for a principal (admin events, refunds).
//! - [`order_life`]: an order's refunds and the retries it answered.
//! - [`refund`]: the merchant's refund of a paid order (a `refund_requested` of the merchant).
//! - [`fleet`]: a merchant's terms and devices, with what the ledger last heard of each.
//! - [`admin`]: the admin and finance routes (keys, audit log).
//! - [`console`]: the web console at `/console` (sessions, pages in zh-CN and en), reading
//!   through the same functions as the routes above.
//! - [`auth`]: API keys, principals, roles, rate limits, signed cursors, openids; the
//!   throttle of failed authentication.
//! - [`error`]: [`error::ApiError`], the one HTTP error, owning the status mapping; the
//!   layer that gives every non-2xx answer its body.
//! - [`extract`]: `Json`, `Query` and `Path` whose rejections are [`error::ApiError`]s.
//! - [`observe`]: request ids, log masking, logging, the metrics server.
//! - [`openapi`]: the OpenAPI 3.1 description (`api/openapi.json`).
//! - [`server`]: the whole router (the API and the console, with their layers), served until a signal.
//! - [`wait`]: the device's synchronous answer (`Prefer: wait`): waiting for an event's
//!   outcome, a repeated event id, the `200` body.

pub mod admin;
pub mod auth;
pub mod console;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod http;
pub mod observe;
pub mod openapi;
pub mod order_life;
pub mod page;
pub mod platform;
pub mod recon_view;
pub mod reconcile;
pub mod refund;
pub mod server;
pub mod state;
pub mod wait;
