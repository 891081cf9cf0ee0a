//! Request ids: every request gets one (or keeps a well-formed `x-request-id` it came with);
//! it is in the request's tracing span, in every error body and in the `x-request-id`
//! response header. An accepted event's span also names its event id, which the pipeline's
//! logs carry from ingest to outcome. Logged paths have payer ids masked ([`loggable`]).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::REQUEST_ID;

/// The header a request id travels in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

use facepay_domain::limits::REQUEST_ID_LEN_MAX;

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= REQUEST_ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How log lines are written (`FACEPAY_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for a log pipeline (`json`).
    Json,
    /// Human-readable lines, for a terminal (`text`).
    Text,
}

impl LogFormat {
    /// `json` or `text`; unset: text on a terminal, JSON otherwise (a service manager's or
    /// a container's log collector reads JSON).
    pub fn from_env(var: Option<&str>, terminal: bool) -> anyhow::Result<Self> {
        match var.map(str::trim) {
            Some("json") => Ok(Self::Json),
            Some("text") => Ok(Self::Text),
            Some("") | None => Ok(if terminal { Self::Text } else { Self::Json }),
            Some(other) => anyhow::bail!("FACEPAY_LOG_FORMAT must be json or text, not {other:?}"),
        }
    }
}

/// Installs the process's subscriber: `FACEPAY_LOG` filters (default `warn`),
/// `FACEPAY_LOG_FORMAT` picks the format (see [`LogFormat::from_env`]); lines go to stderr.
pub fn init_logging() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let var = std::env::var("FACEPAY_LOG_FORMAT").ok();
    let format = LogFormat::from_env(var.as_deref(), std::io::stderr().is_terminal())?;
    let filter = EnvFilter::try_from_env("FACEPAY_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// The metrics server's router: `GET /metrics`, Prometheus text format.
pub fn metrics_router() -> axum::Router {
    let render = || async {
        let body = facepay_ingest::metrics::METRICS.render();
        ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
    };
    axum::Router::new().route("/metrics", axum::routing::get(render))
}

/// Serves [`metrics_router`] on `addr` (`FACEPAY_METRICS_ADDR`) in the background.
pub async fn spawn_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics on /metrics");
    tokio::spawn(async move { axum::serve(listener, metrics_router()).await });
    Ok(())
}

/// A path as logged: a payer id in it is masked (`/v1/payers/u-00***/balance`).
pub fn loggable(path: &str) -> String {
    let mut out = Vec::new();
    let mut after_payers = false;
    for segment in path.split('/') {
        out.push(if after_payers { facepay_domain::auth::mask(segment) } else { segment.to_string() });
        after_payers = segment == "payers";
    }
    out.join("/")
}

/// Middleware: assigns the request id and runs the request inside its span.
pub async fn request_id(req: Request, next: Next) -> Response {
    let given = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).filter(|id| acceptable(id));
    let id = given.map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %loggable(req.uri().path()),
        principal = tracing::field::Empty,
        event_id = tracing::field::Empty,
    );
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req).instrument(span.clone())).await;
    span.in_scope(|| tracing::info!(status = resp.status().as_u16(), "answered"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn the_log_format_is_asked_for_or_follows_the_terminal() {
        assert_eq!(LogFormat::from_env(Some("json"), true).unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::from_env(Some("text"), false).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::from_env(None, true).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::from_env(None, false).unwrap(), LogFormat::Json);
        assert!(LogFormat::from_env(Some("xml"), true).is_err());
    }
}
