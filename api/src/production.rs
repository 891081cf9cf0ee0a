//! The production profile: the same stages, joined by Kafka topics; the ledger on the
//! configured store (PostgreSQL in production). Run several `facepay serve` processes with the
//! same group names and they share the partitions.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use facepay_domain::limits::REGISTRY_REFRESH_MS;
use facepay_domain::Origin;
use facepay_ingest::kafka::{self, KafkaConfig, DEVICE_EVENTS};
use facepay_ingest::matching::MatchStage;
use facepay_ingest::{Inbound, SharedRegistry};
use facepay_ledger::{Ledger, LedgerStore, Policy};
use facepay_matcher::{Gallery, MatchPolicy};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::http::AppState;

/// Which parts this process runs (`FACEPAY_ROLES`, comma-separated; default all of them).
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub matcher: bool,
    pub ledger: bool,
    pub relay: bool,
}

impl Roles {
    pub fn from_env() -> Self {
        match std::env::var("FACEPAY_ROLES").ok().filter(|v| !v.is_empty()) {
            None => Self { matcher: true, ledger: true, relay: true },
            Some(v) => {
                let has = |r: &str| v.split(',').any(|x| x.trim() == r);
                Self { matcher: has("match"), ledger: has("ledger"), relay: has("relay") }
            }
        }
    }
}

/// The running Kafka stages of this process.
pub struct Production {
    pub http: AppState,
    pub shutdown: watch::Sender<bool>,
    pub tasks: JoinSet<anyhow::Result<()>>,
}

/// Creates the topics and starts this process's stages over `store`.
pub async fn start(store: Arc<dyn LedgerStore>, cfg: KafkaConfig, roles: Roles) -> anyhow::Result<Production> {
    kafka::ensure_topics(&cfg).await.context("creating the Kafka topics")?;
    let registry: SharedRegistry = Arc::new(RwLock::new(store.registry().await?));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if roles.matcher {
        let stage = MatchStage::new(Gallery::new(), MatchPolicy::default());
        let (c, r, s, rx) = (cfg.clone(), registry.clone(), store.clone(), rx.clone());
        tasks.spawn(async move { Ok(kafka::run_match_stage(c, r, stage, s, rx).await?) });
    }
    if roles.ledger {
        let ledger = Ledger::new(store.clone(), Policy::default()).uncached();
        let (c, rx) = (cfg.clone(), rx.clone());
        tasks.spawn(async move { Ok(kafka::run_ledger_stage(c, ledger, rx).await?) });
    }
    if roles.relay {
        let (c, s, rx) = (cfg.clone(), store.clone(), rx.clone());
        tasks.spawn(async move { Ok(kafka::run_outbox_relay(c, s, rx).await?) });
    }
    let (input, inbound) = mpsc::channel(facepay_domain::limits::STAGE_CHANNEL_CAPACITY);
    tasks.spawn(forward_http_events(cfg, inbound, rx.clone()));
    tasks.spawn(refresh_registry(store.clone(), registry.clone(), rx));
    Ok(Production { http: AppState { store, registry, input }, shutdown, tasks })
}

/// `POST /v1/events` in the production profile: checked events go to the device-events
/// topic, keyed by device (or by payer for platform events).
async fn forward_http_events(
    cfg: KafkaConfig,
    mut inbound: mpsc::Receiver<Inbound>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let producer = cfg.producer()?;
    let topic = cfg.topic(DEVICE_EVENTS);
    loop {
        let item = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            item = inbound.recv() => item,
        };
        let Some(item) = item else { return Ok(()) };
        let (key, bytes) = match item {
            Inbound::Checked(env) => {
                let key = match &env.origin {
                    Origin::Device(d) => d.device_id.to_string(),
                    Origin::Merchant(m) => m.to_string(),
                    Origin::Platform => env.event_id.to_string(),
                };
                (key, env.to_json())
            }
            Inbound::Raw { bytes, .. } => (String::new(), bytes),
        };
        kafka::publish(&producer, &topic, &key, &bytes).await?;
    }
}

/// Picks up devices registered after start-up.
async fn refresh_registry(
    store: Arc<dyn LedgerStore>,
    registry: SharedRegistry,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(REGISTRY_REFRESH_MS)) => {}
        }
        let fresh = store.registry().await?;
        *registry.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}
