//! Serving the API and the console: the whole router with its layers, on a listener until
//! a signal asks for a graceful stop.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::state::AppState;

/// The router of the whole API, and the console at `/console`. From the outside in: request
/// ids, the console's pages for `/console` paths ([`crate::console::pages`]: outside the
/// throttle and the timeout, so their 429 and 503 are pages too), the throttle of failed
/// authentication ([`crate::auth::throttle`]), the request timeout; then for the API the one
/// error body for every failure ([`crate::error::json_errors`]) and each route's role check
/// before it reads anything else ([`crate::auth::Authorized`]).
pub fn router(state: AppState) -> Router {
    let (routes, _) = crate::http::api_routes().split_for_parts();
    let api =
        routes.fallback(|| async { ApiError::NotFound }).layer(axum::middleware::from_fn(crate::error::json_errors));
    Router::new()
        .nest("/console", crate::console::router())
        .merge(api)
        .layer(axum::middleware::from_fn(request_timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::throttle))
        .layer(axum::middleware::from_fn(crate::console::pages))
        .layer(axum::middleware::from_fn(crate::observe::request_id))
        .with_state(state)
}

/// Every request is answered, or abandoned with 503, within `HTTP_REQUEST_TIMEOUT_MS`.
async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = Duration::from_millis(facepay_domain::limits::HTTP_REQUEST_TIMEOUT_MS);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Overloaded.into_response(),
    }
}

/// Serves the API on `listener` until the process is stopped (each request knows its
/// source address: the throttle of failed authentication is per address).
pub async fn serve(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on ctrl-c (SIGINT) or SIGTERM, the signals a terminal or an orchestrator sends
/// to ask for a graceful stop.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
