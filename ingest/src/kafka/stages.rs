//! The production profile's wiring: which stages this process runs ([`Roles`]), each started
//! over the configured topics under a supervisor that restarts it after a transient failure,
//! with the registry refreshed and the ledger's clock sweeping beside them. The HTTP API is
//! the caller's (`facepay-api`); this is the Kafka half of the topology, as
//! [`crate::pipeline`] is the embedded one.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use facepay_domain::limits::{STAGE_HEALTHY_MS, STAGE_RESTART_BACKOFF_MAX_MS, STAGE_RESTART_BACKOFF_MIN_MS};
use facepay_ledger::sweep::Sweeper;
use facepay_ledger::{Delivery, Ledger, LedgerStore, Policy};
use facepay_matcher::Gallery;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::faces::{FaceStore, Shard};
use crate::gather::Gather;
use crate::matching::MatchStage;
use crate::{PipelineConfig, SharedRegistry};

use super::{
    ensure_topics, run_gather_stage, run_ledger_stage, run_match_stage, run_outbox_relay, CommitListeners, KafkaConfig,
    MatchDeps, TransportError,
};

/// Which stages this process runs (`facepay serve --stages`, `FACEPAY_STAGES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub matcher: bool,
    pub ledger: bool,
    /// The outbox relay (one process at a time publishes; the others stand by).
    pub relay: bool,
    /// The HTTP API (and its ingest path): the caller's to serve.
    pub api: bool,
}

/// The stage names `--stages` takes.
pub const STAGE_NAMES: [&str; 4] = ["matcher", "ledger", "relay", "api"];

impl Roles {
    pub const ALL: Roles = Roles { matcher: true, ledger: true, relay: true, api: true };

    /// Parses a comma-separated list of [`STAGE_NAMES`].
    pub fn parse(list: &str) -> Result<Self, String> {
        const NONE: Roles = Roles { matcher: false, ledger: false, relay: false, api: false };
        let mut roles = NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "matcher" | "match" => roles.matcher = true,
                "ledger" => roles.ledger = true,
                "relay" => roles.relay = true,
                "api" => roles.api = true,
                other => return Err(format!("unknown stage {other:?}; the stages are {}", STAGE_NAMES.join(", "))),
            }
        }
        match roles == NONE {
            true => Err("no stage named".into()),
            false => Ok(roles),
        }
    }
}

/// A stage that stopped for good: what a restart cannot fix.
#[derive(Debug, thiserror::Error)]
#[error("the {stage} stage stopped: {source}")]
pub struct StageStopped {
    pub stage: &'static str,
    #[source]
    pub source: TransportError,
}

/// The running Kafka stages of this process.
pub struct Stages {
    /// The fleet registry the stages check events against (refreshed while they run).
    pub registry: SharedRegistry,
    /// `true` asks every stage to finish the batch in flight and stop.
    pub shutdown: watch::Sender<bool>,
    pub tasks: JoinSet<Result<(), StageStopped>>,
}

/// Creates the topics and starts this process's `roles` over `store`, with `pipeline`'s
/// match policy, face store, verifier and clock: with a face store, the matcher loads the
/// persisted gallery at start-up and keeps what it is sent.
pub async fn start(
    store: Arc<dyn LedgerStore>,
    cfg: KafkaConfig,
    roles: Roles,
    pipeline: &PipelineConfig,
) -> Result<Stages, TransportError> {
    cfg.check().map_err(TransportError::Config)?;
    ensure_topics(&cfg).await?;
    // This process's one name in every lease it takes (its stages' partitions, the relay),
    // kept across its stages' restarts.
    let holder = format!("process-{}", uuid::Uuid::new_v4());
    let registry: SharedRegistry = Arc::new(RwLock::new(store.registry().await?));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if roles.matcher {
        start_matcher(&mut tasks, &cfg, (&store, &holder), &registry, pipeline, &rx).await?;
    }
    // The ledger stage's commits wake this process's relay (another process's relay polls),
    // and answer this process's waiting requests.
    let committed = CommitListeners { waiters: pipeline.waiters.clone(), ..CommitListeners::default() };
    if roles.ledger {
        start_ledger(&mut tasks, &cfg, (&store, &holder), pipeline, &rx, &committed);
    }
    if roles.api {
        // What other processes' ledger stages answer, for the requests waiting here.
        let (s, waiters, stop) = (store.clone(), Arc::downgrade(&pipeline.waiters), stopped(rx.clone()));
        tasks.spawn(async move {
            crate::waiters::follow_decided(s, waiters, stop).await;
            Ok(())
        });
    }
    if roles.relay {
        // A relay that starts again after a broker error still holds the lease under this
        // process's name, instead of waiting it out.
        let written = committed.outbox_written.clone();
        let (c, s, rx, holder) = (cfg.clone(), store.clone(), rx.clone(), holder.clone());
        tasks.spawn(supervised("relay", rx.clone(), move || {
            run_outbox_relay(c.clone(), s.clone(), holder.clone(), written.clone(), rx.clone())
        }));
    }
    let (weak, stop) = (Arc::downgrade(&registry), stopped(rx));
    tasks.spawn(async move {
        crate::validate::refresh_registry(weak, store, stop).await;
        Ok(())
    });
    Ok(Stages { registry, shutdown, tasks })
}

/// The matcher stage (and, with the gallery split over shards, the gather: every shard's
/// process takes its share of the gather's partitions, which merges the shards' partial
/// answers).
async fn start_matcher(
    tasks: &mut JoinSet<Result<(), StageStopped>>,
    cfg: &KafkaConfig,
    (store, holder): (&Arc<dyn LedgerStore>, &str),
    registry: &SharedRegistry,
    pipeline: &PipelineConfig,
    rx: &watch::Receiver<bool>,
) -> Result<(), TransportError> {
    // With a face store the stage follows the gallery feed from where its load is current:
    // what any process enrols or deletes reaches this matcher while it runs.
    let (gallery, feed_position) = match &pipeline.faces {
        Some(faces) => {
            let (gallery, position) = faces.load_following().await?;
            (gallery, Some(position))
        }
        None => (Gallery::new(), None),
    };
    // With a face store the stage's captures are kept per batch, and restored whenever the
    // stage is given partitions (at start-up and after a rebalance); the embedded pipeline
    // does not keep them (its bus loses queued events with the process anyway, so no payment
    // would be left to use them).
    let shard = pipeline.faces.as_ref().map_or(Shard::ALL, FaceStore::shard);
    let mut stage = MatchStage::new(gallery, pipeline.match_policy).with_shard(shard);
    if let Some(position) = feed_position {
        stage = stage.following(position);
    }
    if pipeline.faces.is_some() {
        stage = stage.keeping_identified();
    }
    let stage = Arc::new(tokio::sync::Mutex::new(stage));
    let deps = Arc::new(MatchDeps {
        registry: registry.clone(),
        verifier: pipeline.verifier.clone(),
        clock: pipeline.clock.clone(),
        faces: pipeline.faces.clone(),
        store: store.clone(),
        holder: holder.to_string(),
    });
    let (c, stop, matcher_deps) = (cfg.clone(), rx.clone(), deps.clone());
    tasks.spawn(supervised("matcher", rx.clone(), move || {
        run_match_stage(c.clone(), matcher_deps.clone(), stage.clone(), stop.clone())
    }));
    if shard.count > 1 {
        let gather = Arc::new(tokio::sync::Mutex::new(Gather::new(pipeline.match_policy)));
        let (c, rx) = (cfg.clone(), rx.clone());
        tasks.spawn(supervised("gather", rx.clone(), move || {
            run_gather_stage(c.clone(), deps.clone(), gather.clone(), rx.clone())
        }));
    }
    Ok(())
}

/// The ledger stage, and the ledger's clock beside it: one process of the group sweeps at a
/// time (a lease). The sweeper's ticks are the ledger's own, answered in the database for
/// idempotency but not published: no device or merchant system sent them (the revocations
/// and expiries are in the log).
fn start_ledger(
    tasks: &mut JoinSet<Result<(), StageStopped>>,
    cfg: &KafkaConfig,
    (store, holder): (&Arc<dyn LedgerStore>, &str),
    pipeline: &PipelineConfig,
    rx: &watch::Receiver<bool>,
    committed: &CommitListeners,
) {
    let ledger = Ledger::new(store.clone(), Policy::default()).uncached();
    if !pipeline.sweep_interval.is_zero() {
        let sweeper = Sweeper::new(ledger.clone(), Delivery::default(), pipeline.clock.clone());
        let (interval, stop) = (pipeline.sweep_interval, stopped(rx.clone()));
        tasks.spawn(async move {
            sweeper.run(interval, stop).await;
            Ok(())
        });
    }
    let (c, rx, committed, holder) = (cfg.clone(), rx.clone(), committed.clone(), holder.to_string());
    tasks.spawn(supervised("ledger", rx.clone(), move || {
        run_ledger_stage(c.clone(), ledger.clone(), holder.clone(), committed.clone(), rx.clone())
    }));
}

/// Resolves once `rx` says stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    while rx.changed().await.is_ok() && !*rx.borrow() {}
}

/// Runs a stage, and runs it again after a pause when it fails on its database or broker
/// (transient: see [`TransportError::is_transient`]); the pause doubles with each failure in
/// a row, up to [`STAGE_RESTART_BACKOFF_MAX_MS`], so a service that is down is retried without
/// a crash loop, and the process exits only on what a restart cannot fix. A restarted stage
/// resumes from the offsets stored in the database: nothing is lost.
async fn supervised<F, Fut>(
    stage: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut run: F,
) -> Result<(), StageStopped>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), TransportError>>,
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
            Err(source) => return Err(StageStopped { stage, source }),
        }
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_millis(STAGE_RESTART_BACKOFF_MAX_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_named_and_nothing_else_is() {
        let only = Roles::parse("matcher, relay").unwrap();
        assert_eq!(only, Roles { matcher: true, ledger: false, relay: true, api: false });
        assert_eq!(Roles::parse("match,ledger,relay,api").unwrap(), Roles::ALL);
        assert!(Roles::parse("matcher,bogus").unwrap_err().contains("bogus"));
        assert!(Roles::parse(" , ").is_err(), "no stage named");
    }
}
