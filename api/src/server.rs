//! Serving the API: the router on a listener until a signal asks for a graceful stop.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::http::router;
use crate::state::AppState;

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
