//! The production profile: the same stages, joined by Kafka topics; the ledger on the
//! configured store (PostgreSQL in production). Run several `facepay serve` processes with the
//! same group names and they share the partitions.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use facepay_domain::limits::{
    REGISTRY_REFRESH_MS, STAGE_HEALTHY_MS, STAGE_RESTART_BACKOFF_MAX_MS, STAGE_RESTART_BACKOFF_MIN_MS,
};
use facepay_ingest::faces::{FaceStore, Shard};
use facepay_ingest::gather::Gather;
use facepay_ingest::kafka::{self, KafkaConfig, TransportError, DEVICE_EVENTS};
use facepay_ingest::matching::MatchStage;
use facepay_ingest::PipelineConfig;
use facepay_ingest::SharedRegistry;
use facepay_ledger::sweep::Sweeper;
use facepay_ledger::{Delivery, Ledger, LedgerStore, Policy};
use facepay_matcher::Gallery;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::http::{AppState, Ingress};

/// Which stages this process runs: `facepay serve --stages matcher,ledger,relay,api`, or
/// `FACEPAY_STAGES`; all of them by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub matcher: bool,
    pub ledger: bool,
    /// The outbox relay (one process at a time publishes; the others stand by).
    pub relay: bool,
    /// The HTTP API (and its ingest path).
    pub api: bool,
}

/// The stage names `--stages` takes.
pub const STAGE_NAMES: [&str; 4] = ["matcher", "ledger", "relay", "api"];

impl Roles {
    pub const ALL: Roles = Roles { matcher: true, ledger: true, relay: true, api: true };

    /// Parses a comma-separated list of [`STAGE_NAMES`].
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut roles = Roles { matcher: false, ledger: false, relay: false, api: false };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "matcher" | "match" => roles.matcher = true,
                "ledger" => roles.ledger = true,
                "relay" => roles.relay = true,
                "api" => roles.api = true,
                other => anyhow::bail!("unknown stage {other:?}; the stages are {}", STAGE_NAMES.join(", ")),
            }
        }
        anyhow::ensure!(roles != Roles { matcher: false, ledger: false, relay: false, api: false }, "no stage named");
        Ok(roles)
    }

    /// `--stages` if given, else `FACEPAY_STAGES`, else all.
    pub fn chosen(flag: Option<&str>) -> anyhow::Result<Self> {
        let env = std::env::var("FACEPAY_STAGES").ok().filter(|v| !v.is_empty());
        match flag.map(str::to_string).or(env) {
            Some(list) => Self::parse(&list),
            None => Ok(Self::ALL),
        }
    }
}

/// The running Kafka stages of this process.
pub struct Production {
    pub http: AppState,
    pub shutdown: watch::Sender<bool>,
    pub tasks: JoinSet<anyhow::Result<()>>,
}

/// Creates the topics and starts this process's stages over `store`, with the default match
/// policy and no face store (the gallery lives in memory only), checking signatures under
/// `pepper`.
pub async fn start(
    store: Arc<dyn LedgerStore>,
    cfg: KafkaConfig,
    roles: Roles,
    pepper: &facepay_domain::auth::Pepper,
) -> anyhow::Result<Production> {
    let verifier = Arc::new(facepay_ingest::authenticity::DeviceVerifier::new(pepper.clone()));
    start_with(store, cfg, roles, PipelineConfig { verifier, ..PipelineConfig::default() }).await
}

/// As [`start`], with the match policy and face store of `pipeline`: with a face store, the
/// matcher loads the persisted gallery at start-up and keeps what it is sent.
pub async fn start_with(
    store: Arc<dyn LedgerStore>,
    cfg: KafkaConfig,
    roles: Roles,
    pipeline: PipelineConfig,
) -> anyhow::Result<Production> {
    cfg.check().map_err(anyhow::Error::msg)?;
    kafka::ensure_topics(&cfg).await.context("creating the Kafka topics")?;
    let registry: SharedRegistry = Arc::new(RwLock::new(store.registry().await?));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if roles.matcher {
        let gallery = match &pipeline.faces {
            Some(faces) => faces.load().await.context("loading the face gallery")?,
            None => Gallery::new(),
        };
        // With a face store the stage's captures are kept per batch, and restored whenever
        // the stage is given partitions (at start-up and after a rebalance); the embedded
        // pipeline does not keep them (its bus loses queued events with the process anyway,
        // so no payment would be left to use them).
        let shard = pipeline.faces.as_ref().map_or(Shard::ALL, FaceStore::shard);
        let mut stage = MatchStage::new(gallery, pipeline.match_policy).with_shard(shard);
        if pipeline.faces.is_some() {
            stage = stage.keeping_identified();
        }
        let stage = Arc::new(tokio::sync::Mutex::new(stage));
        let (c, r, stop, faces) = (cfg.clone(), registry.clone(), rx.clone(), pipeline.faces.clone());
        let (verifier, clock) = (pipeline.verifier.clone(), pipeline.clock.clone());
        tasks.spawn(supervised("matcher", rx.clone(), move || {
            let (stage, faces, verifier, clock) = (stage.clone(), faces.clone(), verifier.clone(), clock.clone());
            kafka::run_match_stage(c.clone(), r.clone(), stage, faces, verifier, clock, stop.clone())
        }));
        if shard.count > 1 {
            // Every shard's process also takes part in the gather's group, which merges the
            // shards' partial answers into each capture's decision.
            let gather = Arc::new(tokio::sync::Mutex::new(Gather::new(pipeline.match_policy)));
            let (c, rx, faces) = (cfg.clone(), rx.clone(), pipeline.faces.clone());
            tasks.spawn(supervised("gather", rx.clone(), move || {
                kafka::run_gather_stage(c.clone(), gather.clone(), faces.clone(), rx.clone())
            }));
        }
    }
    // The ledger stage's commits wake this process's relay (another process's relay polls).
    let outbox_written = Arc::new(tokio::sync::Notify::new());
    if roles.ledger {
        let ledger = Ledger::new(store.clone(), Policy::default()).uncached();
        if !pipeline.sweep_interval.is_zero() {
            // One process of the group sweeps at a time (a lease). Its ticks are the ledger's
            // own, answered in the database for idempotency but not published: no device or
            // merchant system sent them (the revocations and expiries are in the log).
            let sweeper = Sweeper::new(ledger.clone(), Delivery::default(), pipeline.clock.clone());
            let mut stop = rx.clone();
            let interval = pipeline.sweep_interval;
            tasks.spawn(async move {
                sweeper.run(interval, async move { while stop.changed().await.is_ok() && !*stop.borrow() {} }).await;
                Ok(())
            });
        }
        let (c, rx, written) = (cfg.clone(), rx.clone(), outbox_written.clone());
        tasks.spawn(supervised("ledger", rx.clone(), move || {
            kafka::run_ledger_stage(c.clone(), ledger.clone(), written.clone(), rx.clone())
        }));
    }
    if roles.relay {
        let (c, s, rx, written) = (cfg.clone(), store.clone(), rx.clone(), outbox_written.clone());
        tasks.spawn(supervised("relay", rx.clone(), move || {
            kafka::run_outbox_relay(c.clone(), s.clone(), written.clone(), rx.clone())
        }));
    }
    let input =
        Ingress::Kafka { producer: cfg.producer()?, topic: cfg.topic(DEVICE_EVENTS), timeout: cfg.send_timeout };
    tasks.spawn(refresh_registry(store.clone(), registry.clone(), rx));
    let auth = Arc::new(crate::auth::Auth::new(store.clone(), pipeline.verifier.pepper().clone()));
    let orders = facepay_ledger::lookup::OrderLookup::spawn(store.clone());
    let verifier = pipeline.verifier.clone();
    let clock = pipeline.clock.clone();
    let http = AppState::new(crate::http::Shared { store, registry, input, auth, verifier, orders, clock });
    Ok(Production { http, shutdown, tasks })
}

/// Runs a stage, and runs it again after a pause when it fails on its database or broker
/// (transient: see [`TransportError::is_transient`]); the pause doubles with each failure in
/// a row, up to [`STAGE_RESTART_BACKOFF_MAX_MS`], so a service that is down is retried without
/// a crash loop, and the process exits only on what a restart cannot fix. A restarted stage
/// resumes from the offsets stored in the database: nothing is lost.
async fn supervised<F, Fut>(stage: &'static str, mut shutdown: watch::Receiver<bool>, mut run: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), TransportError>>,
{
    let mut pause = Duration::from_millis(STAGE_RESTART_BACKOFF_MIN_MS);
    loop {
        let started = tokio::time::Instant::now();
        match run().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                if started.elapsed() > Duration::from_millis(STAGE_HEALTHY_MS) {
                    pause = Duration::from_millis(STAGE_RESTART_BACKOFF_MIN_MS);
                }
                tracing::warn!(stage, error = %e, pause_ms = pause.as_millis() as u64, "stage failed; restarting");
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("the {stage} stage stopped"))),
        }
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(STAGE_RESTART_BACKOFF_MAX_MS));
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
        match store.registry().await {
            Ok(fresh) => *registry.write().unwrap_or_else(|p| p.into_inner()) = fresh,
            Err(e) => tracing::warn!(error = %e, "registry refresh failed; keeping the last one"),
        }
    }
}
