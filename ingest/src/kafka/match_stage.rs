//! Stages 1 + 2 over Kafka: device events in, validated (accepted at the platform's time),
//! matched, and out to the ledger-commands topic (or, split over shards, the match-partials).

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};

use facepay_ledger::Command;

use crate::metrics::{Step, METRICS};
use crate::wire::StageMessage;

use super::*;
use facepay_domain::limits::{MATCH_BATCHES_UNACKED_MAX, MATCH_BATCH_MAX, REQUEST_ID_LEN_MAX};

/// How often the matcher stage reads the ledger's member cards again (with a face store).
const MATCH_MEMBERS_REFRESH: Duration = Duration::from_millis(facepay_domain::limits::MATCH_MEMBERS_REFRESH_MS);

/// What the matcher stage works with besides its state: the fleet registry and the device
/// verifier it checks events with, the platform's clock, the face store (with a master key),
/// and the store where its partitions are owned, under this process's `holder` name.
pub struct MatchDeps {
    pub registry: crate::SharedRegistry,
    pub verifier: std::sync::Arc<crate::authenticity::DeviceVerifier>,
    pub clock: facepay_domain::time::SharedClock,
    pub faces: Option<crate::faces::FaceStore>,
    pub store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    pub holder: String,
}

/// Stage 1 + 2 over Kafka: device events in; everything made of them (commands, the
/// matcher's own answers, rejections) out to the ledger-commands topic, where the ledger
/// stage keeps each exactly once. Its partitions are owned through the database
/// ([`OwnedPartitions`]). This stage itself is at-least-once: its position is kept at each
/// ownership tick, and after a crash its successor repeats what came after it; the ledger
/// recognises the repeats.
///
/// With the gallery split over shards, this is shard `i`'s stage (in its own group, so every
/// shard sees every event): its output goes to the match-partials topic instead, keyed as the
/// device event was: each capture's partial answer, and from the lead shard (0) everything
/// else, for [`run_gather_stage`] to pass on.
pub async fn run_match_stage(
    cfg: KafkaConfig,
    deps: std::sync::Arc<MatchDeps>,
    stage: std::sync::Arc<tokio::sync::Mutex<crate::matching::MatchStage>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    // The stage's state (gallery, recent captures) outlives a run: a restarted run keeps it.
    let mut stage = stage.lock_owned().await;
    let (group, topic) = (cfg.match_group_of(stage.shard()), cfg.topic(DEVICE_EVENTS));
    let consumer = cfg.logged_consumer(&group)?;
    let mut owned = OwnedPartitions::new(&cfg, &group, &topic, &deps.holder, Resume::Processed);
    let producer = cfg.producer()?;
    let out = Outputs {
        commands: cfg.topic(LEDGER_COMMANDS),
        partials: cfg.topic(MATCH_PARTIALS),
        send_timeout: cfg.send_timeout,
    };
    let (mut errors, mut guard) = (RecvErrors::default(), SkipGuard::default());
    let mut members_read = tokio::time::Instant::now();
    let mut unacked = Unacked::default();
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => {
                unacked.settle(&mut owned).await?;
                return owned.leave(deps.store.as_ref()).await;
            }
            msg = consumer.recv() => Some(msg),
            _ = owned.tick_due() => None,
            acked = unacked.next_acked() => {
                unacked.landed(acked, &mut owned)?;
                continue;
            }
        };
        // The tick keeps the position of what was routed: every batch's sends acknowledged
        // first, as when the stage waited for each.
        if owned.tick_is_due() {
            unacked.settle(&mut owned).await?;
        }
        let moved = owned.maintain(&consumer, deps.store.as_ref()).await?;
        if moved.changed() {
            guard.assigned(owned.assigned_from().clone());
            // The captures decided by a partition's previous holder below the offset this one
            // resumes from were kept in the store before that offset was: restored, their
            // payments still find them (at every change: a partition may go and come back).
            if let Some(faces) = &deps.faces {
                stage.restore_captures(faces.recent_captures(chrono::Utc::now()).await?);
            }
        }
        let Some(first) = received_under(first, moved) else { continue };
        let Some(first) = errors.check(first).await? else { continue };
        let mut batch = vec![first.detach()];
        fill_batch(&consumer, &mut errors, &mut batch, cfg.batch_linger, MATCH_BATCH_MAX).await?;
        // Records fetched before a partition moved away are its new holder's to route.
        batch.retain(|m| owned.held().contains(&m.partition()));
        guard.check(&consumer, &topic, &mut batch);
        if batch.is_empty() {
            continue;
        }
        if let Some(faces) = &deps.faces {
            follow_faces(faces, &mut stage, &mut members_read).await?;
        }
        let acks = route_batch(&deps, &producer, &out, &mut stage, &batch).await?;
        guard.processed(&batch);
        // Sent; the batches before are awaited only now, so a batch is read and routed while
        // the one before it is on its way to the broker.
        unacked.make_room(&mut owned).await?;
        unacked.wait_for(acks, out.send_timeout, batch);
    }
}

/// Before a batch: the member lists read again when they are due (they follow the ledger's
/// cards, opened and closed by face, decided wherever the capture was resolved), and the faces
/// enrolled or deleted through other processes since the last batch applied.
async fn follow_faces(
    faces: &crate::faces::FaceStore,
    stage: &mut crate::matching::MatchStage,
    members_read: &mut tokio::time::Instant,
) -> Result<(), TransportError> {
    if members_read.elapsed() >= MATCH_MEMBERS_REFRESH {
        stage.set_members(faces.members().await?);
        *members_read = tokio::time::Instant::now();
    }
    Ok(stage.follow(faces).await?)
}

/// The batches the matcher stage sent and has not heard acknowledged, oldest first: with
/// the batch being sent, at most [`MATCH_BATCHES_UNACKED_MAX`]. A batch's position is kept
/// only once the broker has every one of its messages (and every earlier batch's); the
/// producer is idempotent, so a partition's messages land in the order they were sent across
/// batches too.
#[derive(Default)]
struct Unacked {
    pending: std::collections::VecDeque<(AcksDue, Vec<OwnedMessage>)>,
}

impl Unacked {
    /// Waits for the oldest batches until one more may be sent.
    async fn make_room(&mut self, owned: &mut OwnedPartitions) -> Result<(), TransportError> {
        while self.pending.len() + 1 >= MATCH_BATCHES_UNACKED_MAX {
            self.settle_oldest(owned).await?;
        }
        Ok(())
    }

    /// Starts waiting for `acks`, all within `within`, for `batch`.
    fn wait_for(&mut self, acks: Acks, within: Duration, batch: Vec<OwnedMessage>) {
        assert!(self.pending.len() + 1 < MATCH_BATCHES_UNACKED_MAX, "room made before a send");
        self.pending.push_back((acks_due(acks, within), batch));
    }

    /// Resolves when the oldest batch is acknowledged (or failed); never while none waits.
    async fn next_acked(&mut self) -> Result<(), KafkaError> {
        match self.pending.front_mut() {
            Some((acks, _)) => acks.await,
            None => std::future::pending().await,
        }
    }

    /// The oldest batch's acknowledgements came (`acked`): its position is the stage's.
    fn landed(&mut self, acked: Result<(), KafkaError>, owned: &mut OwnedPartitions) -> Result<(), TransportError> {
        let (_, batch) = self.pending.pop_front().expect("a batch was waiting");
        acked?;
        owned.processed(&batch);
        Ok(())
    }

    /// Waits for every batch sent (the time the stage is held up is `match_acks`).
    async fn settle(&mut self, owned: &mut OwnedPartitions) -> Result<(), TransportError> {
        while !self.pending.is_empty() {
            self.settle_oldest(owned).await?;
        }
        Ok(())
    }

    async fn settle_oldest(&mut self, owned: &mut OwnedPartitions) -> Result<(), TransportError> {
        let waiting = std::time::Instant::now();
        let acked = self.next_acked().await;
        METRICS.step(Step::MatchAcks, waiting.elapsed());
        self.landed(acked, owned)
    }
}

/// Routes `batch` in order and sends all: what was sent, to be acknowledged (one round trip
/// per batch, not per event). The batch's captures are kept before the stage moves past it: a
/// successor resumes after what was kept and restores them (`FaceStore::recent_captures`).
async fn route_batch(
    deps: &MatchDeps,
    producer: &FutureProducer,
    out: &Outputs,
    stage: &mut crate::matching::MatchStage,
    batch: &[OwnedMessage],
) -> Result<Acks, TransportError> {
    let routing = std::time::Instant::now();
    let mut acks = Acks::with_capacity(batch.len());
    for msg in batch {
        let accepted_at = accepted_at(msg, &deps.verifier, deps.clock.as_ref());
        let (routed, partial) = stage_message(&deps.registry, &deps.verifier, stage, msg, accepted_at);
        // Only enrolments and deletions touch the face store: parse those again, no other.
        if let (Some(faces), Some(StageMessage::Answer(a))) = (&deps.faces, &routed) {
            if matches!(a.body.kind(), "face_enrolled" | "face_deleted") {
                keep_face(faces, msg, accepted_at).await?;
            }
        }
        out.send(producer, stage.shard(), msg, routed, partial, &mut acks)?;
    }
    let identified = stage.take_identified();
    if let (Some(faces), false) = (&deps.faces, identified.is_empty()) {
        let keeping = std::time::Instant::now();
        faces.remember_captures(identified, chrono::Utc::now()).await?;
        METRICS.step(Step::MatchMemo, keeping.elapsed());
    }
    METRICS.step(Step::MatchRoute, routing.elapsed());
    Ok(acks)
}

/// Where the matcher stage's output goes.
struct Outputs {
    commands: String,
    partials: String,
    /// How long a batch's sends may take in all.
    send_timeout: std::time::Duration,
}

impl Outputs {
    /// Enqueues what the stage made of `msg`: unsharded, `routed` to the ledger; sharded,
    /// the capture's `partial` and (lead shard only) `routed` to the gather, keyed as `msg`.
    fn send(
        &self,
        producer: &FutureProducer,
        shard: crate::faces::Shard,
        msg: &OwnedMessage,
        routed: Option<StageMessage>,
        partial: Option<crate::gather::GatherMessage>,
        acks: &mut Acks,
    ) -> Result<(), TransportError> {
        if shard.count <= 1 {
            return match routed {
                Some(routed) => enqueue_command(producer, &self.commands, &routed, acks),
                None => Ok(()),
            };
        }
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        let lead = routed.filter(|_| shard.index == 0).map(|r| crate::gather::GatherMessage::Routed(Box::new(r)));
        for out in partial.into_iter().chain(lead) {
            let payload = serde_json::to_vec(&out)?;
            enqueue(producer, FutureRecord::to(&self.partials).key(key.as_str()).payload(payload.as_slice()), acks)?;
        }
        Ok(())
    }
}

/// Stores an enrolment (sealed) or a deletion (key shredded) carried by `msg`, so a restarted
/// matcher loads what it answered. At-least-once: a repeat stores the face again, harmlessly.
async fn keep_face(
    faces: &crate::faces::FaceStore,
    msg: &OwnedMessage,
    accepted_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), TransportError> {
    let Ok(env) = facepay_domain::parse_event(msg.payload().unwrap_or_default(), accepted_at) else { return Ok(()) };
    crate::pipeline::keep_face(faces, &env).await.map_err(|e| match e {
        crate::PipelineError::Store(s) => TransportError::Store(s),
        other => TransportError::Faces(other.to_string()),
    })
}

/// When the platform accepted a device-events record: the HTTP ingest's stamp when the record
/// carries one under the platform's MAC, else the broker's log-append time when the topic
/// keeps one, else now (this stage's read). Never a time a device chose (a record's create
/// time is its producer's), and never ahead of this stage's clock.
fn accepted_at(
    msg: &OwnedMessage,
    verifier: &crate::authenticity::DeviceVerifier,
    clock: &dyn facepay_domain::time::Clock,
) -> chrono::DateTime<chrono::Utc> {
    let now = clock.now();
    let stamped = header(msg, facepay_domain::auth::ACCEPTED_HEADER).and_then(|h| {
        facepay_domain::auth::AcceptStamp::verify(h, verifier.platform_secret(), msg.payload().unwrap_or_default())
    });
    let appended = match msg.timestamp() {
        rdkafka::Timestamp::LogAppendTime(ms) => Some(ms),
        _ => None,
    };
    stamped.or(appended).and_then(chrono::DateTime::from_timestamp_millis).map_or(now, |at| at.min(now))
}

/// What the matcher stage makes of one device-events message accepted at `accepted_at`, and,
/// split over shards, its partial answer to a capture. Nothing for a message that fails
/// authentication (only counted) or an authenticated sender's rejection past its budget.
fn stage_message(
    registry: &crate::SharedRegistry,
    verifier: &crate::authenticity::DeviceVerifier,
    stage: &mut crate::matching::MatchStage,
    msg: &OwnedMessage,
    accepted_at: chrono::DateTime<chrono::Utc>,
) -> (Option<StageMessage>, Option<crate::gather::GatherMessage>) {
    use crate::authenticity::Refusal;
    let bytes = msg.payload().unwrap_or_default();
    let position = crate::authenticity::Position::Record { partition: msg.partition(), offset: msg.offset() };
    let signature = header(msg, facepay_domain::auth::SIGNATURE_HEADER);
    match crate::validate::validate_signed(bytes, signature, registry, verifier, accepted_at, position) {
        Err(refusal) => {
            let err = refusal.error();
            crate::metrics::METRICS.refused_input(err.kind.as_str());
            tracing::info!(field = %err.field, reason = %err.kind, "device event refused");
            match refusal {
                Refusal::Invalid { keep: true, error, sender } => {
                    (Some(kept_rejection(msg, "kafka", &error, sender.map(|d| *d))), None)
                }
                Refusal::Invalid { keep: false, .. } => {
                    crate::metrics::METRICS.rejection_unkept();
                    (None, None)
                }
                Refusal::Unauthenticated(_) => {
                    crate::metrics::METRICS.unauthenticated("kafka");
                    (None, None)
                }
            }
        }
        Ok(env) => {
            let partial = stage.partial(&env);
            let routed = match routed(stage, env) {
                StageMessage::Command(cmd) => {
                    // Bounded: a request id is short.
                    let request_id = header(msg, REQUEST_ID_HEADER).filter(|v| v.len() <= REQUEST_ID_LEN_MAX);
                    StageMessage::Command(Command { request_id: request_id.map(str::to_string), ..cmd })
                }
                other => other,
            };
            (Some(routed), partial)
        }
    }
}

/// What the matcher makes of one valid event, as a message for the ledger stage.
fn routed(stage: &mut crate::matching::MatchStage, env: facepay_domain::Envelope) -> StageMessage {
    let (event_id, device) = (env.event_id, env.origin.device().cloned());
    match stage.route(env) {
        crate::matching::Routed::Command(cmd) => StageMessage::Command(cmd),
        crate::matching::Routed::Done(body) => StageMessage::Answer(facepay_domain::Outcome {
            in_reply_to: event_id,
            decided_at: chrono::Utc::now(),
            device,
            body,
        }),
    }
}
