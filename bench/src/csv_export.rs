//! The console's CSV export of one big day, for `facepay-bench api`: a merchant with
//! `rows` payment attempts on one Asia/Shanghai day (history rows written by SQL), exported
//! once through `/console/merchants/{m}/transactions.csv?date=` by a signed-in client that
//! counts the lines and bytes as they stream in, while the process's resident memory is
//! sampled: the export must stream (memory flat however many rows) and carry every row.

use std::time::{Duration, Instant};

use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use facepay_ledger::LedgerStore;
use serde::Serialize;

/// The day the big merchant's attempts fall on.
pub const DAY: &str = "2026-03-01";

/// How often the resident memory is sampled during the download.
const RSS_SAMPLE_MS: u64 = 20;

/// What one export measured.
#[derive(Debug, Clone, Serialize)]
pub struct CsvExportReport {
    /// History rows of the day seeded.
    pub day_rows: u64,
    /// Data lines received (the header not counted): must equal `day_rows`.
    pub lines: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    /// Time to the first byte of the body.
    pub first_byte_ms: f64,
    /// The process's resident memory at the start of the export and its peak during it.
    pub rss_start_mib: f64,
    pub rss_peak_mib: f64,
    pub status: u16,
}

/// Registers `merchant` and writes `rows` paid attempts of it on [`DAY`].
pub async fn seed_day(
    store: &dyn LedgerStore,
    conn: &mut sqlx::PgConnection,
    merchant: &MerchantId,
    rows: u64,
) -> anyhow::Result<()> {
    store.register_merchant(merchant, "bench export").await?;
    let device = DeviceRef {
        merchant_id: merchant.clone(),
        store_id: StoreId::parse("S01")?,
        device_id: DeviceId::parse("DEV-CSV")?,
    };
    store.register_device(&device).await?;
    // Spread over the day in Asia/Shanghai (UTC+8): from 16:00 UTC the day before.
    sqlx::query(
        "INSERT INTO history (event_id, merchant_id, out_trade_no, amount_fen, status, payer_id, member_quick_pay, \
         store_id, device_id, occurred_at, day) SELECT gen_random_uuid(), $1, 'X' || lpad(i::text, 9, '0'), \
         100 + (i % 90000), 'PAID', 'u-' || lpad((i % 100000)::text, 6, '0'), false, 'S01', 'DEV-CSV', \
         timestamptz '2026-02-28 16:00:00+00' + (i * (interval '86399 seconds' / $2::float8)), $3::date \
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(merchant.as_str())
    .bind(i64::try_from(rows)?)
    .bind(DAY)
    .execute(conn)
    .await?;
    Ok(())
}

/// Downloads the day's export with the session `cookie`, counting as it streams.
pub async fn measure(
    base: &str,
    cookie: &str,
    merchant: &MerchantId,
    day_rows: u64,
) -> anyhow::Result<CsvExportReport> {
    use http_body_util::BodyExt;
    let addr = base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get(format!("/console/merchants/{merchant}/transactions.csv?date={DAY}"))
        .header(hyper::header::HOST, &addr)
        .header(hyper::header::COOKIE, cookie)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let rss_start_mib = rss_mib();
    let (stop, sampler) = sample_peak_rss();
    let started = Instant::now();
    let answer = sender.send_request(request).await?;
    let status = answer.status().as_u16();
    let mut body = answer.into_body();
    let (mut lines, mut bytes, mut first_byte_ms) = (0_u64, 0_u64, None);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            first_byte_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1000.0);
            lines += data.iter().filter(|b| **b == b'\n').count() as u64;
            bytes += data.len() as u64;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let rss_peak_mib = sampler.await?.max(rss_start_mib);
    Ok(CsvExportReport {
        day_rows,
        lines: lines.saturating_sub(1),
        bytes,
        seconds,
        rows_per_s: lines.saturating_sub(1) as f64 / seconds.max(1e-9),
        first_byte_ms: first_byte_ms.unwrap_or(0.0),
        rss_start_mib,
        rss_peak_mib,
        status,
    })
}

/// Samples the resident memory every [`RSS_SAMPLE_MS`] until told to stop: the peak, MiB.
fn sample_peak_rss() -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<f64>) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut peak = 0.0_f64;
        loop {
            peak = peak.max(rss_mib());
            tokio::select! {
                _ = &mut stopped => return peak,
                () = tokio::time::sleep(Duration::from_millis(RSS_SAMPLE_MS)) => {}
            }
        }
    });
    (stop, sampler)
}

/// This process's resident memory (`VmRSS`), MiB; 0 where `/proc` does not say.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
