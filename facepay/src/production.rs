//! The production profile: the stages over Kafka topics ([`facepay_ingest::kafka::stages`]),
//! the ledger on the configured store (PostgreSQL in production), and the HTTP API over them.
//! Run several `facepay serve` processes with the same group names and they share the
//! partitions.

use std::sync::Arc;

use anyhow::Context;
use facepay_ingest::kafka::{self, KafkaConfig, StageStopped, DEVICE_EVENTS};
use facepay_ingest::PipelineConfig;
use facepay_ledger::Stores;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use facepay_ingest::kafka::{Roles, STAGE_NAMES};

use facepay_api::state::{AppState, Ingress, Shared};

/// `--stages` if given, else `FACEPAY_STAGES`, else all.
pub fn roles_chosen(flag: Option<&str>) -> anyhow::Result<Roles> {
    let env = std::env::var("FACEPAY_STAGES").ok().filter(|v| !v.is_empty());
    match flag.map(str::to_string).or(env) {
        Some(list) => Roles::parse(&list).map_err(anyhow::Error::msg),
        None => Ok(Roles::ALL),
    }
}

/// The running Kafka stages of this process, and the HTTP state over them.
pub struct Production {
    pub http: AppState,
    pub shutdown: watch::Sender<bool>,
    pub tasks: JoinSet<Result<(), StageStopped>>,
}

/// Creates the topics and starts this process's stages over `store`, with the default match
/// policy and no face store (the gallery lives in memory only), checking signatures under
/// `pepper`.
pub async fn start(
    stores: Stores,
    cfg: KafkaConfig,
    roles: Roles,
    pepper: &facepay_domain::auth::Pepper,
) -> anyhow::Result<Production> {
    let verifier = Arc::new(facepay_ingest::authenticity::DeviceVerifier::new(pepper.clone()));
    start_with(stores, cfg, roles, PipelineConfig { verifier, ..PipelineConfig::default() }).await
}

/// As [`start`], with the match policy, face store, verifier and clock of `pipeline`.
pub async fn start_with(
    stores: Stores,
    cfg: KafkaConfig,
    roles: Roles,
    pipeline: PipelineConfig,
) -> anyhow::Result<Production> {
    let Stores { ledger: store, recon } = stores;
    let stages =
        kafka::start(store.clone(), cfg.clone(), roles, &pipeline).await.context("starting the Kafka stages")?;
    let input =
        Ingress::Kafka { producer: cfg.producer()?, topic: cfg.topic(DEVICE_EVENTS), timeout: cfg.send_timeout };
    let auth = Arc::new(facepay_api::auth::Auth::new(store.clone(), pipeline.verifier.pepper().clone()));
    let orders = facepay_ledger::lookup::OrderLookup::spawn(store.clone());
    let (verifier, clock, registry) = (pipeline.verifier.clone(), pipeline.clock.clone(), stages.registry);
    let waiters = pipeline.waiters.clone();
    let console = Arc::new(facepay_api::console::session::Sessions::new(store.clone()));
    let http = AppState::new(Shared { store, recon, registry, input, auth, verifier, orders, clock, waiters, console });
    Ok(Production { http, shutdown: stages.shutdown, tasks: stages.tasks })
}
