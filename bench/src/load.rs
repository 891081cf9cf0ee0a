//! The HTTP/1.1 load generator of `facepay-bench api` and its pages ([`crate::api`],
//! [`crate::console_pages`]): clients each on a connection of its own, sending requests back
//! to back for a phase, and the phase's figures.

use std::time::{Duration, Instant};

use facepay_domain::MerchantId;
use rand::SeedableRng;
use serde::Serialize;

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers other than 200 (must be zero).
    pub not_ok: u64,
}

/// A client: its merchant, and the header that says who it is (a key, or a console session).
pub type Client = (MerchantId, (hyper::header::HeaderName, String));

/// `clients.len()` clients, each on an HTTP/1.1 connection of its own, sending
/// `path(merchant, rng)` back to back for `seconds`.
pub async fn phase(
    base: &str,
    clients: &[Client],
    seconds: u64,
    path: impl Fn(&MerchantId, &mut rand_chacha::ChaCha8Rng) -> String + Send + Sync + Clone + 'static,
) -> anyhow::Result<PhaseReport> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut running = tokio::task::JoinSet::new();
    for (c, (merchant, who)) in clients.iter().cloned().enumerate() {
        let (addr, path) = (base.trim_start_matches("http://").to_string(), path.clone());
        running.spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c as u64);
            client(&addr, &who, until, move |r| path(&merchant, r), &mut rng).await
        });
    }
    let (mut all, mut not_ok) = (Vec::new(), 0);
    while let Some(done) = running.join_next().await {
        let (l, n) = done??;
        all.extend(l);
        not_ok += n;
    }
    all.sort_unstable();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied();
    let ms = |us: Option<u32>| f64::from(us.unwrap_or(0)) / 1000.0;
    Ok(PhaseReport {
        requests: all.len() as u64,
        requests_per_s: all.len() as f64 / seconds.max(1) as f64,
        p50_ms: ms(pct(0.50)),
        p99_ms: ms(pct(0.99)),
        max_ms: ms(all.last().copied()),
        not_ok,
    })
}

/// One client: its latencies in microseconds, and how many answers were not 200.
async fn client(
    addr: &str,
    who: &(hyper::header::HeaderName, String),
    until: Instant,
    path: impl Fn(&mut rand_chacha::ChaCha8Rng) -> String,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> anyhow::Result<(Vec<u32>, u64)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let (mut latencies_us, mut not_ok) = (Vec::with_capacity(1 << 16), 0_u64);
    while Instant::now() < until {
        let request = hyper::Request::get(path(rng))
            .header(hyper::header::HOST, addr)
            .header(who.0.clone(), who.1.as_str())
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
        let sent = Instant::now();
        let answer = sender.send_request(request).await?;
        let ok = answer.status() == hyper::StatusCode::OK;
        answer.into_body().collect().await?;
        latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        not_ok += u64::from(!ok);
    }
    Ok((latencies_us, not_ok))
}
