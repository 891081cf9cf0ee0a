//! The stages, joined by bounded channels: validate → match → ledger → outcomes (past the
//! requests waiting for them, [`crate::waiters`]).
//!
//! Each arrow is one channel of [`STAGE_CHANNEL_CAPACITY`]; in the production profile each
//! becomes a Kafka topic (see [`crate::topics`]). A stage ends when its input closes, so
//! dropping every input sender drains the whole pipeline in order.

use std::time::Duration;

use chrono::Utc;
use facepay_domain::limits::{
    LEDGER_BATCH_LINGER_MS, LEDGER_BATCH_MAX, LEDGER_BATCH_TRIES_MAX, STAGE_CHANNEL_CAPACITY,
    STAGE_RESTART_BACKOFF_MAX_MS, STAGE_RESTART_BACKOFF_MIN_MS, SWEEP_INTERVAL_MS,
};
use facepay_domain::time::SharedClock;
use facepay_domain::{Envelope, EventBody, Outcome, OutcomeBody};
use facepay_ledger::store::StoreError;
use facepay_ledger::{Command, Ledger};
use facepay_matcher::{Gallery, MatchPolicy};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::authenticity::{DeviceVerifier, Position, Refusal};
use crate::faces::{FaceStore, FaceStoreError, Shard};
use crate::matching::{MatchStage, Routed};
use crate::validate::{learn_key, rejection, validate_signed, SharedRegistry};

/// What enters the pipeline.
#[derive(Debug)]
pub enum Inbound {
    /// Bytes from a device or the bus, not yet parsed.
    Raw {
        bytes: Vec<u8>,
        source: &'static str,
        /// The `facepay-signature` the bytes came with.
        signature: Option<String>,
        /// When the platform took them in (its clock, at the edge that put them here).
        accepted_at: chrono::DateTime<Utc>,
    },
    /// An event the HTTP path already parsed and checked (it answers 4xx itself), with the
    /// id of the request that brought it, logged with its decision.
    Checked { envelope: Envelope, request_id: Option<String> },
}

/// Tunables of a pipeline; the defaults are the named limits.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub match_policy: MatchPolicy,
    /// Where enrolments and deletions are kept, sealed (the gallery at rest), and which
    /// shard of the gallery this process serves; `None`: the gallery lives in memory only.
    pub faces: Option<FaceStore>,
    /// Most commands per ledger transaction.
    pub batch_max: usize,
    /// How long the ledger waits for more commands once it has one.
    pub batch_linger: Duration,
    pub channel_capacity: usize,
    /// Checks every raw event's signature (the pepper's device keys and the platform key).
    pub verifier: std::sync::Arc<DeviceVerifier>,
    /// How often the ledger's clock revokes orders unpaid after 45 s and expires 30-day holds
    /// (`FACEPAY_SWEEP_INTERVAL_MS`; zero: never, for runs that sweep by hand). See
    /// [`facepay_ledger::sweep`].
    pub sweep_interval: Duration,
    /// The platform's clock: accept times, signature windows, the ledger's sweeps. The
    /// system clock, but for a simulation that drives its own (the demo's past day).
    pub clock: SharedClock,
    /// This process's requests waiting for their event's outcome: every outcome the
    /// pipeline (or, over Kafka, this process's ledger stage) makes is handed to them.
    pub waiters: std::sync::Arc<crate::waiters::Waiters>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            match_policy: MatchPolicy::default(),
            faces: None,
            batch_max: LEDGER_BATCH_MAX,
            batch_linger: Duration::from_millis(LEDGER_BATCH_LINGER_MS),
            channel_capacity: STAGE_CHANNEL_CAPACITY,
            verifier: std::sync::Arc::new(DeviceVerifier::ephemeral()),
            sweep_interval: Duration::from_millis(SWEEP_INTERVAL_MS),
            clock: facepay_domain::time::system_clock(),
            waiters: std::sync::Arc::default(),
        }
    }
}

/// Failures that stop the pipeline (infrastructure, never bad input).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("a stage panicked: {0}")]
    Panicked(String),
    /// The gallery at rest failed (a template that does not open): names the payer only.
    #[error("face gallery: {0}")]
    Faces(String),
}

/// A running pipeline.
pub struct Pipeline {
    /// Where events go in. Cloned by every producer; the pipeline drains once all are dropped.
    pub input: mpsc::Sender<Inbound>,
    /// Every answer: one per inbound event (rejections included). Must be drained.
    pub outcomes: mpsc::Receiver<Outcome>,
    /// The running stages.
    pub stages: Stages,
}

/// The stage tasks of a pipeline.
pub struct Stages(Vec<JoinHandle<Result<(), PipelineError>>>);

impl Stages {
    /// Waits for every stage to finish (after the inputs closed), first failure first.
    pub async fn join(self) -> Result<(), PipelineError> {
        for handle in self.0 {
            handle.await.map_err(|e| PipelineError::Panicked(e.to_string()))??;
        }
        Ok(())
    }
}

impl Pipeline {
    /// Starts the three stages on the current tokio runtime.
    pub fn start(ledger: Ledger, registry: SharedRegistry, gallery: Gallery, config: PipelineConfig) -> Self {
        let (input, inbound_rx) = mpsc::channel(config.channel_capacity);
        let (valid_tx, valid_rx) = mpsc::channel(config.channel_capacity);
        let (command_tx, command_rx) = mpsc::channel(config.channel_capacity);
        let (outcome_tx, answered) = mpsc::channel(config.channel_capacity);
        let (out_tx, outcomes) = mpsc::channel(config.channel_capacity);
        let store = ledger.store().clone();
        let shard = config.faces.as_ref().map_or(Shard::ALL, FaceStore::shard);
        let stage = MatchStage::new(gallery, config.match_policy).with_shard(shard);
        let stages = vec![
            tokio::spawn(run_validate(
                inbound_rx,
                valid_tx,
                outcome_tx.clone(),
                registry,
                store,
                config.verifier.clone(),
            )),
            tokio::spawn(run_match(stage, config.faces, valid_rx, command_tx, outcome_tx.clone())),
            tokio::spawn(run_ledger(ledger, command_rx, outcome_tx, config.batch_max, config.batch_linger)),
            tokio::spawn(run_answer(answered, config.waiters, out_tx)),
        ];
        Self { input, outcomes, stages: Stages(stages) }
    }
}

fn answer(event_id: uuid::Uuid, device: Option<facepay_domain::DeviceRef>, body: OutcomeBody) -> Outcome {
    Outcome { in_reply_to: event_id, decided_at: Utc::now(), device, body }
}

async fn run_validate(
    mut rx: mpsc::Receiver<Inbound>,
    tx: mpsc::Sender<(Envelope, Option<String>)>,
    outcomes: mpsc::Sender<Outcome>,
    registry: SharedRegistry,
    store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    verifier: std::sync::Arc<DeviceVerifier>,
) -> Result<(), PipelineError> {
    while let Some(inbound) = rx.recv().await {
        let envelope = match inbound {
            Inbound::Checked { envelope, request_id } => (envelope, request_id),
            Inbound::Raw { bytes, source, signature, accepted_at } => {
                match checked(&bytes, signature, &registry, &store, &verifier, accepted_at).await? {
                    Ok(env) => (env, None),
                    Err(refusal) => {
                        if let Refusal::Unauthenticated(_) = refusal {
                            crate::metrics::METRICS.unauthenticated(source);
                        }
                        let (body, event_id) = refused(&bytes, source, &refusal, store.as_ref()).await?;
                        let _ = outcomes.send(answer(event_id.unwrap_or_default(), None, body)).await;
                        continue;
                    }
                }
            }
        };
        if tx.send(envelope).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Validates and checks the signature of raw input, first learning a device key created
/// since the registry was read.
async fn checked(
    bytes: &[u8],
    signature: Option<String>,
    registry: &SharedRegistry,
    store: &std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    verifier: &DeviceVerifier,
    accepted_at: chrono::DateTime<Utc>,
) -> Result<Result<Envelope, Refusal>, PipelineError> {
    learn_key(signature.as_deref(), registry, store.as_ref()).await?;
    Ok(validate_signed(bytes, signature.as_deref(), registry, verifier, accepted_at, Position::Fresh))
}

/// Counts a refusal by its reason and keeps it if its sender is authenticated (and within
/// its budget); the answer for the bus, and the refused event's id if it could be read. An
/// unauthenticated one is kept nowhere, and its answer names nothing of it (the caller counts
/// it where it came from: the HTTP layer counts every 401 it answers).
pub async fn refused(
    bytes: &[u8],
    source: &str,
    refusal: &Refusal,
    store: &dyn facepay_ledger::LedgerStore,
) -> Result<(OutcomeBody, Option<uuid::Uuid>), StoreError> {
    let err = refusal.error();
    crate::metrics::METRICS.refused_input(err.kind.as_str());
    tracing::info!(field = %err.field, reason = %err.kind, source, "event refused");
    let Refusal::Invalid { keep, sender, .. } = refusal else {
        let body = OutcomeBody::Refused { kind: String::new(), code: "unauthenticated".into(), message: String::new() };
        return Ok((body, None));
    };
    let rejected = rejection(bytes, source, err);
    match keep {
        true => store.reject(&rejected).await?,
        false => crate::metrics::METRICS.rejection_unkept(),
    }
    // A device's copy of its own answered event: counted on the event (its order shows it).
    if let (true, Some(event_id), Some(device)) = (*keep, rejected.event_id, sender) {
        if facepay_ledger::service::is_replay(&rejected) {
            store.note_repeat(event_id, &facepay_ledger::store::device_key(device), rejected.received_at).await?;
        }
    }
    let body = OutcomeBody::Refused {
        kind: rejected.kind.clone().unwrap_or_default(),
        code: err.kind.as_str().to_string(),
        message: err.to_string(),
    };
    Ok((body, rejected.event_id))
}

async fn run_match(
    mut stage: MatchStage,
    faces: Option<FaceStore>,
    mut rx: mpsc::Receiver<(Envelope, Option<String>)>,
    tx: mpsc::Sender<Command>,
    outcomes: mpsc::Sender<Outcome>,
) -> Result<(), PipelineError> {
    while let Some((env, request_id)) = rx.recv().await {
        if let Some(faces) = &faces {
            keep_face(faces, &env).await?;
        }
        let (event_id, device) = (env.event_id, env.origin.device().cloned());
        match stage.route(env) {
            Routed::Command(cmd) => {
                if tx.send(Command { request_id, ..cmd }).await.is_err() {
                    break;
                }
            }
            Routed::Done(body) => {
                let _ = outcomes.send(answer(event_id, device, body)).await;
            }
        }
    }
    Ok(())
}

/// Every outcome past the requests waiting for it, then out. Ends when every stage has.
async fn run_answer(
    mut rx: mpsc::Receiver<Outcome>,
    waiters: std::sync::Arc<crate::waiters::Waiters>,
    out: mpsc::Sender<Outcome>,
) -> Result<(), PipelineError> {
    while let Some(outcome) = rx.recv().await {
        waiters.deliver(&outcome);
        // A caller that dropped the outcomes still has waiters served.
        let _ = out.send(outcome).await;
    }
    Ok(())
}

/// Stores an enrolment (sealed) or a deletion (key shredded) of this shard's payers before
/// the in-memory gallery changes, so a restart restores what was answered.
pub(crate) async fn keep_face(faces: &FaceStore, env: &Envelope) -> Result<(), PipelineError> {
    let done = match &env.body {
        EventBody::FaceEnrolled(e) if faces.shard().owns(&e.payer_id) => {
            faces.enrol(&e.payer_id, &e.embedding, e.phone_last4, env.accepted_at).await.map(|_| ())
        }
        EventBody::FaceDeleted(e) => faces.delete(&e.payer_id).await.map(|_| ()),
        _ => Ok(()),
    };
    done.map_err(|e| match e {
        FaceStoreError::Store(s) => PipelineError::Store(s),
        other => PipelineError::Faces(other.to_string()),
    })
}

async fn run_ledger(
    ledger: Ledger,
    mut rx: mpsc::Receiver<Command>,
    outcomes: mpsc::Sender<Outcome>,
    batch_max: usize,
    linger: Duration,
) -> Result<(), PipelineError> {
    let mut batch = Vec::with_capacity(batch_max);
    loop {
        if rx.recv_many(&mut batch, batch_max).await == 0 {
            return Ok(());
        }
        if batch.len() < batch_max && !linger.is_zero() {
            tokio::time::sleep(linger).await;
            while batch.len() < batch_max {
                let Ok(cmd) = rx.try_recv() else { break };
                batch.push(cmd);
            }
        }
        crate::metrics::METRICS.batch(batch.len());
        for (outcome, cmd) in decide_batch(&ledger, &batch).await?.into_iter().zip(&batch) {
            decided(cmd, &outcome);
            let _ = outcomes.send(outcome).await;
        }
        batch.clear();
    }
}

/// Counts and logs one decision: with its event id and, when an HTTP request brought the
/// event in, that request's id (the id a device or merchant was answered with at ingest).
pub fn decided(cmd: &Command, outcome: &Outcome) {
    crate::metrics::METRICS.decision(&outcome.body);
    tracing::debug!(
        event_id = %cmd.event_id,
        request_id = cmd.request_id.as_deref().unwrap_or("-"),
        kind = outcome.body.kind(),
        "decided"
    );
}

/// Decides `batch`, trying it again while the store fails for a reason of its own (it refuses
/// nothing then: nothing was decided), up to [`LEDGER_BATCH_TRIES_MAX`] tries with a doubling
/// pause. A try whose commit landed unseen is answered from the stored outcomes by the next.
async fn decide_batch(ledger: &Ledger, batch: &[Command]) -> Result<Vec<Outcome>, PipelineError> {
    let mut pause = Duration::from_millis(STAGE_RESTART_BACKOFF_MIN_MS);
    let mut tries = 0;
    loop {
        tries += 1;
        match ledger.handle_batch(batch).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(e) if tries < LEDGER_BATCH_TRIES_MAX => {
                crate::metrics::METRICS.store_error();
                tracing::warn!(error = %e, tries, pause_ms = pause.as_millis() as u64, "ledger batch failed; trying again");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(STAGE_RESTART_BACKOFF_MAX_MS));
    }
}
