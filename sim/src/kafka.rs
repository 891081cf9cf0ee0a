//! `facepay simulate --kafka`: the simulated fleet, published to the device-events topic
//! of a running production deployment, for load and end-to-end runs.
//!
//! The fleet is registered in the configured store first (with one device key per device,
//! under the configured pepper; every event is signed) (the serving processes pick it up
//! within `REGISTRY_REFRESH_MS`, which `simulate` waits out), then its events are published
//! keyed by device, as devices would.

use std::time::{Duration, Instant};

use facepay_domain::limits::{REGISTRY_REFRESH_MS, SIMULATE_ACKS_MAX, STAGE_CHANNEL_CAPACITY};
use facepay_ingest::kafka::{self, device_event_headers, device_event_key_of, KafkaConfig, DEVICE_EVENTS};
use facepay_ingest::Inbound;
use facepay_ledger::LedgerStore;
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::fleet::{fleet_devices, send_fleet, FleetOptions, FleetTime};
use crate::keys::FleetSigner;
use facepay_domain::auth::{AcceptStamp, Pepper};

/// What `simulate` publishes and how fast.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub fleet: FleetOptions,
    /// The pepper the fleet's device keys are made under (the configured one).
    pub pepper: Pepper,
    /// Events per second to offer; `None`: as fast as the broker takes them.
    pub rate_per_s: Option<u64>,
    /// Whose time: [`FleetTime::Live`] (the CLI: events sent now, accepted when the matcher
    /// reads them, as from real devices); a driven clock replays the demo's simulated days,
    /// each event stamped with its simulated accept time under the platform's MAC, as the
    /// HTTP ingest stamps what it passes on (tests comparing the two profiles).
    pub time: FleetTime,
}

/// What `simulate` did (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct SimulateReport {
    pub events: u64,
    pub bad_events: u64,
    /// Of the bad events, those the fleet could not sign: refused before authentication, so
    /// kept and answered nowhere.
    pub unsigned_events: u64,
    pub elapsed_ms: u128,
    pub events_per_s: f64,
    pub topic: String,
}

/// Registers the fleet in `store`, then publishes its events to `cfg`'s device-events topic.
pub async fn publish(
    opts: &SimulateOptions,
    cfg: &KafkaConfig,
    store: &dyn LedgerStore,
) -> anyhow::Result<SimulateReport> {
    kafka::ensure_topics(cfg).await?;
    let devices = fleet_devices(&opts.fleet);
    for d in &devices {
        store.register_merchant(&d.merchant_id, &format!("Merchant {}", d.merchant_id)).await?;
        store.register_device(d).await?;
    }
    let signer = FleetSigner::enrol(store, &opts.pepper, &devices).await?;
    // Serving processes re-read the registry on this period: let them see the new fleet.
    tokio::time::sleep(Duration::from_millis(REGISTRY_REFRESH_MS + 500)).await;
    let started = Instant::now();
    let (input, output) = mpsc::channel(STAGE_CHANNEL_CAPACITY);
    let fleet = opts.fleet;
    let time = opts.time.clone();
    let sender = tokio::spawn(async move { send_fleet(&fleet, signer, input, time).await });
    let platform = facepay_domain::auth::platform_secret(&opts.pepper);
    let stamp = matches!(opts.time, FleetTime::Driven(_)).then_some(&platform);
    let published = publish_all(cfg, output, opts.rate_per_s, stamp).await?;
    let sent = sender.await??;
    anyhow::ensure!(published == sent.total, "published {published} of {} events", sent.total);
    let elapsed = started.elapsed();
    Ok(SimulateReport {
        events: published,
        bad_events: sent.bad,
        unsigned_events: sent.unsigned,
        elapsed_ms: elapsed.as_millis(),
        events_per_s: published as f64 / elapsed.as_secs_f64().max(1e-9),
        topic: cfg.topic(DEVICE_EVENTS),
    })
}

impl SimulateReport {
    /// The events facepay answers (with an outcome or a dead letter) and keeps: all but the
    /// unsigned ones.
    pub fn answerable(&self) -> u64 {
        self.events - self.unsigned_events
    }
}

/// Publishes everything `output` yields, paced to `rate_per_s`, each stamped with its accept
/// time under `stamp` (the platform's secret) when given; how many.
async fn publish_all(
    cfg: &KafkaConfig,
    mut output: mpsc::Receiver<Inbound>,
    rate_per_s: Option<u64>,
    stamp: Option<&facepay_domain::auth::SecretBytes>,
) -> anyhow::Result<u64> {
    let producer = cfg.producer()?;
    let topic = cfg.topic(DEVICE_EVENTS);
    let started = Instant::now();
    let mut acks = Vec::with_capacity(SIMULATE_ACKS_MAX);
    let mut published = 0_u64;
    while let Some(item) = output.recv().await {
        let (bytes, signature, accepted_at) = match item {
            Inbound::Raw { bytes, signature, accepted_at, .. } => (bytes, signature, accepted_at),
            Inbound::Checked { envelope, .. } => (envelope.to_json(), None, envelope.accepted_at),
        };
        let key = device_event_key_of(&bytes);
        let stamped = stamp.map(|p| AcceptStamp::sign(p, accepted_at.timestamp_millis(), &bytes).header());
        let headers = device_event_headers(signature.as_deref(), stamped.as_deref(), None);
        let record = FutureRecord::to(&topic).key(key.as_str()).payload(bytes.as_slice()).headers(headers);
        acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
        published += 1;
        if acks.len() >= SIMULATE_ACKS_MAX {
            kafka::acknowledged(std::mem::take(&mut acks), cfg.send_timeout).await?;
        }
        if let Some(rate) = rate_per_s.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64(published as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    kafka::acknowledged(acks, cfg.send_timeout).await?;
    Ok(published)
}
