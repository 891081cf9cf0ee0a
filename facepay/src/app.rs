//! The wiring of one facepay: store, registry, ledger, pipeline, sweeper and the HTTP state
//! over them, as one [`App`].

use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use facepay_api::auth::Auth;
use facepay_api::state::{AppState, Ingress, Shared};
use facepay_domain::time::SharedClock;
use facepay_ingest::authenticity::DeviceVerifier;
use facepay_ingest::validate::refresh_registry;
use facepay_ingest::{Pipeline, PipelineConfig, SharedRegistry};
use facepay_ledger::reconcile::store::ReconStore;
use facepay_ledger::sweep::Sweeper;
use facepay_ledger::{Delivery, Ledger, LedgerStore, Policy, Stores};
use facepay_matcher::Gallery;

use crate::config::{Config, Secret};

/// Opens the database named by `url` (`FACEPAY_DATABASE_URL`), creating its folder and
/// bringing its schema up to date.
pub async fn open_store(url: &Secret) -> anyhow::Result<Stores> {
    Stores::open(url.expose()).await.context("FACEPAY_DATABASE_URL")
}

/// A running facepay: its store, its fleet registry and its pipeline.
pub struct App {
    pub store: Arc<dyn LedgerStore>,
    /// Reconciliation over the same database.
    pub recon: Arc<dyn ReconStore>,
    pub ledger: Ledger,
    pub registry: SharedRegistry,
    pub pipeline: Pipeline,
    /// API keys and principals (over the same pepper as the pipeline's verifier).
    pub auth: Arc<Auth>,
    pub verifier: Arc<DeviceVerifier>,
    /// The ledger's clock, sweeping while the app lives (`None`: sweeping is off).
    pub sweeper: Option<SweeperTask>,
    /// Order lookups of the API, read together (one reader per app).
    pub orders: facepay_ledger::lookup::OrderLookup,
    /// The platform's clock (the system's, or a simulation's).
    pub clock: SharedClock,
    /// Requests waiting for their event's outcome (the pipeline hands each outcome to them).
    pub waiters: Arc<facepay_ingest::waiters::Waiters>,
    /// The console's sessions.
    pub console: Arc<facepay_api::console::session::Sessions>,
}

/// The periodic sweeper of an [`App`]: stopped when the app is dropped.
pub struct SweeperTask {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SweeperTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SweeperTask {
    /// Starts `sweeper` every `interval`; `None` for a zero interval (sweeping off).
    pub fn start(sweeper: Sweeper, interval: std::time::Duration) -> Option<Self> {
        if interval.is_zero() {
            return None;
        }
        Some(Self { task: tokio::spawn(sweeper.run(interval, std::future::pending())) })
    }
}

impl App {
    /// Loads the registry and starts the pipeline over `stores`.
    pub async fn start(stores: Stores, config: PipelineConfig) -> anyhow::Result<Self> {
        let Stores { ledger: store, recon } = stores;
        let registry: SharedRegistry = Arc::new(RwLock::new(store.registry().await?));
        let ledger = Ledger::new(store.clone(), Policy::default());
        let gallery = match &config.faces {
            Some(faces) => faces.load().await?,
            None => Gallery::new(),
        };
        let (verifier, clock, waiters) = (config.verifier.clone(), config.clock.clone(), config.waiters.clone());
        let auth = Arc::new(Auth::new(store.clone(), verifier.pepper().clone()));
        let refresher = refresh_registry(Arc::downgrade(&registry), store.clone(), std::future::pending());
        tokio::spawn(refresher);
        // The sweeper decides through the same ledger (and its cache) as the ledger stage.
        let sweeper = Sweeper::new(ledger.clone(), Delivery::default(), clock.clone());
        let sweeper = SweeperTask::start(sweeper, config.sweep_interval);
        let pipeline = Pipeline::start(ledger.clone(), registry.clone(), gallery, config);
        let orders = facepay_ledger::lookup::OrderLookup::spawn(store.clone());
        let console = Arc::new(facepay_api::console::session::Sessions::new(store.clone()));
        Ok(Self { store, recon, ledger, registry, pipeline, auth, verifier, sweeper, orders, clock, waiters, console })
    }

    /// The HTTP state over this app's store, registry and pipeline input.
    pub fn http_state(&self) -> AppState {
        AppState::new(Shared {
            store: self.store.clone(),
            recon: self.recon.clone(),
            registry: self.registry.clone(),
            input: Ingress::Pipeline(self.pipeline.input.clone()),
            auth: self.auth.clone(),
            verifier: self.verifier.clone(),
            orders: self.orders.clone(),
            clock: self.clock.clone(),
            waiters: self.waiters.clone(),
            console: self.console.clone(),
        })
    }
}

/// Checks that the configuration asks only for what this build serves.
pub fn check_profile(config: &Config) -> anyhow::Result<()> {
    if config.kafka_brokers.is_some() {
        bail!("FACEPAY_KAFKA_BROKERS is set: the demo runs embedded only; unset it (facepay serve uses it)");
    }
    Ok(())
}
