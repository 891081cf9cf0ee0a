//! The Kafka transport of the production profile (rdkafka; any Kafka-API broker).
//!
//! Stage boundaries become topics (see [`crate::topics`]); each stage is a consumer group,
//! so more `facepay` processes share the partitions. Delivery is at-least-once everywhere;
//! the effect is exactly once because the ledger stage stores its consumer offsets in the
//! database in the same transaction as the writes they caused, skips what it has already
//! committed, and answers a redelivered command from its stored outcome. Kafka's own offset
//! commits are only a hint for where to resume.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashMap};

use facepay_domain::{FieldError, FieldErrorKind};
use facepay_ledger::store::ConsumerOffset;
use facepay_ledger::{Command, Delivery, Ledger, OutboxTopics, Rejection, StoreError};

use crate::wire::StageMessage;

use facepay_domain::limits::{
    KAFKA_COMMITTED_TIMEOUT_MS, KAFKA_FETCH_WAIT_MAX_MS, KAFKA_GAP_REWIND_MAX, KAFKA_PARTITIONS_DEFAULT,
    KAFKA_READ_QUIET_MS, KAFKA_RECV_ERRORS_MAX, KAFKA_RECV_ERROR_PAUSE_MS, KAFKA_SEND_TIMEOUT_MS,
    KAFKA_STATS_INTERVAL_MS, LEDGER_BATCH_LINGER_MS, LEDGER_BATCH_MAX, MATCH_BATCH_MAX, OUTBOX_BATCH_MAX,
    OUTBOX_IDLE_MS, OUTBOX_LEASE_MARGIN_MS, OUTBOX_LEASE_MS, OUTBOX_RECOVERY_TIMEOUT_MS, REQUEST_ID_LEN_MAX,
};

/// Topic suffixes; the configured prefix (default `facepay.`) goes in front.
pub const DEVICE_EVENTS: &str = "device-events";
pub const LEDGER_COMMANDS: &str = "ledger-commands";
pub const LEDGER_OUTCOMES: &str = "ledger-outcomes";
pub const DEAD_LETTER: &str = "dead-letter";
/// The matcher shards' partial answers and the lead shard's routed events, for the gather.
pub const MATCH_PARTIALS: &str = "match-partials";
/// The record header that carries the id of the HTTP request that brought a device event in,
/// from the device-events topic onto the ledger command (and into the decision's log line).
pub const REQUEST_ID_HEADER: &str = "facepay-request-id";

/// Where the broker is and how facepay uses it. Every name is configuration, documented in
/// `docs/events.md` and the README.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `FACEPAY_KAFKA_BROKERS`: `host:port[,host:port…]`.
    pub brokers: String,
    /// `FACEPAY_KAFKA_TOPIC_PREFIX`, default `facepay.`; lets several deployments (or test
    /// runs) share one cluster.
    pub topic_prefix: String,
    /// `FACEPAY_KAFKA_MATCH_GROUP`, default `facepay-match`: the validate + match stage. With
    /// the gallery split over shards, shard `i` consumes in `<group>-shard-<i>` (every shard
    /// sees every event) and the gather in `<group>-gather`.
    pub match_group: String,
    /// `FACEPAY_KAFKA_LEDGER_GROUP`, default `facepay-ledger`: the ledger stage. Also the
    /// key of the offsets stored in the database.
    pub ledger_group: String,
    /// `FACEPAY_KAFKA_PARTITIONS`, default 8: partitions of topics facepay creates. The
    /// ceiling on how many processes a stage can spread over.
    pub partitions: i32,
    /// `FACEPAY_LEDGER_BATCH_MAX`: most commands per ledger transaction.
    pub batch_max: usize,
    /// How long the ledger waits for a batch to fill once it has one command.
    pub batch_linger: Duration,
    /// `FACEPAY_KAFKA_FETCH_WAIT_MS`, default [`KAFKA_FETCH_WAIT_MAX_MS`]: longest a
    /// consumer's fetch waits at the broker for data. On a broker that holds a fetch open
    /// until the wait ends, each topic an event crosses can cost up to this much; lower it
    /// for latency there, at the price of more fetch requests on the broker.
    pub fetch_wait: Duration,
    /// `FACEPAY_KAFKA_SEND_TIMEOUT_MS`: how long a produce may take, retries included.
    pub send_timeout: Duration,
    /// `FACEPAY_OUTBOX_LEASE_MS`: the outbox relay's lease; at least twice the send timeout
    /// plus a margin (checked by [`KafkaConfig::check`]).
    pub outbox_lease: Duration,
    /// `FACEPAY_KAFKA_INSTANCE_ID`: a stable name for this process (e.g. a StatefulSet
    /// ordinal), used as the consumer groups' static membership id, so a process restarted
    /// under the same name takes its partitions back at once instead of waiting for the
    /// group to notice its predecessor is gone. Unset: dynamic membership.
    pub instance_id: Option<String>,
}

impl KafkaConfig {
    /// The configuration for `brokers`, other fields at their defaults.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: "facepay.".into(),
            match_group: "facepay-match".into(),
            ledger_group: "facepay-ledger".into(),
            partitions: KAFKA_PARTITIONS_DEFAULT,
            batch_max: LEDGER_BATCH_MAX,
            batch_linger: Duration::from_millis(LEDGER_BATCH_LINGER_MS),
            fetch_wait: Duration::from_millis(KAFKA_FETCH_WAIT_MAX_MS),
            send_timeout: Duration::from_millis(KAFKA_SEND_TIMEOUT_MS),
            outbox_lease: Duration::from_millis(OUTBOX_LEASE_MS),
            instance_id: None,
        }
    }

    /// Refuses settings that break the relay's guarantee: a lease that could lapse while a
    /// send its holder started is still in flight.
    pub fn check(&self) -> Result<(), String> {
        let needed = 2 * self.send_timeout + Duration::from_millis(OUTBOX_LEASE_MARGIN_MS);
        if self.outbox_lease < needed {
            return Err(format!(
                "FACEPAY_OUTBOX_LEASE_MS ({} ms) must be at least twice FACEPAY_KAFKA_SEND_TIMEOUT_MS plus {} ms ({} ms)",
                self.outbox_lease.as_millis(),
                OUTBOX_LEASE_MARGIN_MS,
                needed.as_millis()
            ));
        }
        Ok(())
    }

    /// Reads the documented environment variables over the defaults.
    pub fn from_env(brokers: impl Into<String>) -> Self {
        let mut c = Self::new(brokers);
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("FACEPAY_KAFKA_TOPIC_PREFIX") {
            c.topic_prefix = v;
        }
        if let Some(v) = var("FACEPAY_KAFKA_MATCH_GROUP") {
            c.match_group = v;
        }
        if let Some(v) = var("FACEPAY_KAFKA_LEDGER_GROUP") {
            c.ledger_group = v;
        }
        if let Some(v) = var("FACEPAY_KAFKA_PARTITIONS").and_then(|v| v.parse().ok()) {
            c.partitions = v;
        }
        if let Some(v) = var("FACEPAY_LEDGER_BATCH_MAX").and_then(|v| v.parse().ok()) {
            c.batch_max = v;
        }
        if let Some(v) = var("FACEPAY_KAFKA_FETCH_WAIT_MS").and_then(|v| v.parse().ok()) {
            c.fetch_wait = Duration::from_millis(v);
        }
        if let Some(v) = var("FACEPAY_KAFKA_SEND_TIMEOUT_MS").and_then(|v| v.parse().ok()) {
            c.send_timeout = Duration::from_millis(v);
        }
        if let Some(v) = var("FACEPAY_OUTBOX_LEASE_MS").and_then(|v| v.parse().ok()) {
            c.outbox_lease = Duration::from_millis(v);
        }
        c.instance_id = var("FACEPAY_KAFKA_INSTANCE_ID");
        c
    }

    /// The consumer group of the matcher stage serving `shard`.
    pub fn match_group_of(&self, shard: crate::faces::Shard) -> String {
        match shard.count > 1 {
            true => format!("{}-shard-{}", self.match_group, shard.index),
            false => self.match_group.clone(),
        }
    }

    /// The consumer group of the matcher's gather.
    pub fn gather_group(&self) -> String {
        format!("{}-gather", self.match_group)
    }

    /// The full name of topic `suffix`.
    pub fn topic(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.topic_prefix)
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("socket.timeout.ms", "10000");
        c
    }

    /// The settings of a consumer in `group` that commits nothing by itself.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", self.fetch_wait.as_millis().to_string());
        if let Some(id) = &self.instance_id {
            c.set("group.instance.id", format!("{id}-{group}"));
        }
        c
    }

    /// A consumer in `group` that commits nothing by itself.
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer, KafkaError> {
        self.consumer_config(group).create()
    }

    /// A consumer like [`KafkaConfig::consumer`] that logs every partition assignment (at
    /// info: operators see where each partition went after a rebalance), reports its lag per
    /// partition and counts the errors of its brokers (see [`crate::metrics`]).
    pub fn logged_consumer(&self, group: &str) -> Result<StreamConsumer<LogAssignments>, KafkaError> {
        let mut c = self.consumer_config(group);
        c.set("statistics.interval.ms", KAFKA_STATS_INTERVAL_MS.to_string());
        c.create_with_context(LogAssignments)
    }

    /// An idempotent producer: the broker drops the duplicates its own retries would make,
    /// so a message is written at most once per send.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.client()
            .set("message.timeout.ms", self.send_timeout.as_millis().to_string())
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .create()
    }
}

/// Logs each partition assignment a consumer receives; turns its statistics into the ingest
/// lag per partition and its errors into the broker-error count.
pub struct LogAssignments;

impl rdkafka::ClientContext for LogAssignments {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            // librdkafka lists partition -1 (internal) and reports -1 where it knows no lag.
            let lags = t.partitions.iter().filter(|(p, s)| **p >= 0 && s.consumer_lag >= 0);
            crate::metrics::METRICS.ingest_lag(topic, lags.map(|(p, s)| (*p, s.consumer_lag)).collect());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::metrics::METRICS.broker_error();
        tracing::warn!(%error, reason, "broker error");
    }
}

impl rdkafka::consumer::ConsumerContext for LogAssignments {
    fn post_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?partitions, "assigned partitions");
        }
    }
}

/// Creates facepay's topics if they are missing (production clusters often have topic
/// auto-creation off, and some brokers have none).
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg.client().create()?;
    let names: Vec<String> = [DEVICE_EVENTS, MATCH_PARTIALS, LEDGER_COMMANDS, LEDGER_OUTCOMES, DEAD_LETTER]
        .iter()
        .map(|s| cfg.topic(s))
        .collect();
    let topics: Vec<NewTopic> =
        names.iter().map(|n| NewTopic::new(n, cfg.partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| tracing::error!(%name, "topic"))
            }
        }
    }
    Ok(())
}

/// Sends one message and waits for the broker's acknowledgement.
pub async fn publish(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
    let record = FutureRecord::to(topic).key(key).payload(payload);
    producer.send(record, Duration::from_millis(KAFKA_SEND_TIMEOUT_MS)).await.map(|_| ()).map_err(|(e, _)| e)
}

/// Publishes one device event with its `facepay-signature` record header; waits for the ack.
pub async fn publish_signed(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    signature: Option<&str>,
) -> Result<(), KafkaError> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(sig) = signature {
        let header = rdkafka::message::Header { key: facepay_domain::auth::SIGNATURE_HEADER, value: Some(sig) };
        record = record.headers(rdkafka::message::OwnedHeaders::new_with_capacity(1).insert(header));
    }
    producer.send(record, Duration::from_millis(KAFKA_SEND_TIMEOUT_MS)).await.map(|_| ()).map_err(|(e, _)| e)
}

/// Acknowledgements of sends in flight.
type Acks = Vec<rdkafka::producer::DeliveryFuture>;

/// Enqueues one message without waiting; its acknowledgement goes to `acks`.
fn enqueue(producer: &FutureProducer, record: FutureRecord<'_, str, [u8]>, acks: &mut Acks) -> Result<(), KafkaError> {
    acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
    Ok(())
}

/// Waits for every acknowledgement in `acks`; the first failure fails them all.
async fn acknowledged(acks: Acks) -> Result<(), KafkaError> {
    for ack in acks {
        match ack.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                crate::metrics::METRICS.broker_error();
                return Err(e);
            }
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(())
}

/// Marks everything up to the last message of each partition in `batch` consumed, as a
/// hint for where the group resumes (the ledger's offsets in the database are the truth).
fn commit_hints<C: rdkafka::consumer::ConsumerContext>(consumer: &StreamConsumer<C>, batch: &[OwnedMessage]) {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for m in batch {
        let slot = next.entry((m.topic().to_string(), m.partition())).or_insert(0);
        *slot = (*slot).max(m.offset() + 1);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if tpl.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(offset)).is_err() {
            return;
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "offset commit hint failed");
    }
}

/// Failures that stop a Kafka stage run: a transient one restarts it after a pause (see
/// `facepay serve`), any other ends the process.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("store: {0}")]
    Store(#[from] facepay_ledger::StoreError),
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("face store: {0}")]
    Faces(String),
}

impl From<crate::faces::FaceStoreError> for TransportError {
    fn from(e: crate::faces::FaceStoreError) -> Self {
        match e {
            crate::faces::FaceStoreError::Store(s) => TransportError::Store(s),
            other => TransportError::Faces(other.to_string()),
        }
    }
}

impl TransportError {
    /// True for failures of a service that may come back (the database or the broker down,
    /// a connection lost): the stage is restarted after a pause. False for what a restart
    /// cannot fix (bad configuration, corrupt data, a failed migration).
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Kafka(_) => true,
            TransportError::Store(
                StoreError::Database(_) | StoreError::Conflict(_) | StoreError::Fenced(_) | StoreError::Unavailable(_),
            ) => true,
            TransportError::Store(StoreError::Corrupt(_) | StoreError::Migration(_)) => false,
            TransportError::Encoding(_) | TransportError::Config(_) | TransportError::Faces(_) => false,
        }
    }
}

/// Consumer errors in a row. librdkafka reports passing trouble (a broker restart, a
/// rebalance, a partition end) through `recv`: a stage logs it and goes on, and gives up only
/// after [`KAFKA_RECV_ERRORS_MAX`] in a row, so the process exits and another takes over.
#[derive(Default)]
pub struct RecvErrors(u32);

impl RecvErrors {
    /// `msg` if it is one; `None` after a passing error (logged, counted, paused on); the
    /// error itself once [`KAFKA_RECV_ERRORS_MAX`] came in a row.
    pub async fn check<M>(&mut self, msg: Result<M, KafkaError>) -> Result<Option<M>, TransportError> {
        match msg {
            Ok(m) => {
                self.0 = 0;
                Ok(Some(m))
            }
            Err(e) if self.0 + 1 < KAFKA_RECV_ERRORS_MAX => {
                self.0 += 1;
                crate::metrics::METRICS.broker_error();
                tracing::warn!(error = %e, in_a_row = self.0, "consumer error; going on");
                tokio::time::sleep(Duration::from_millis(KAFKA_RECV_ERROR_PAUSE_MS)).await;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Adds to `batch`, which holds a batch's first message, what arrives within `linger` of
/// now, up to `max` messages. The linger runs from the first message, not from each: a
/// steady stream would otherwise hold a batch open until it is full.
pub async fn fill_batch<C: rdkafka::consumer::ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    errors: &mut RecvErrors,
    batch: &mut Vec<OwnedMessage>,
    linger: Duration,
    max: usize,
) -> Result<(), TransportError> {
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(msg) => match errors.check(msg).await? {
                Some(msg) => batch.push(msg.detach()),
                None => break,
            },
            Err(_) => break,
        }
    }
    Ok(())
}

/// The partition key of a ledger command: its payer, so one payer's decisions have a single
/// writer; commands with no payer go by order or merchant.
pub fn command_key(cmd: &facepay_ledger::Command) -> String {
    use facepay_ledger::{CommandKind as K, Identity};
    match &cmd.kind {
        K::Pay { identity: Identity::Resolved { payer_id, .. }, .. } => format!("payer:{payer_id}"),
        K::Pay { device, out_trade_no, .. } => format!("order:{}:{out_trade_no}", device.merchant_id),
        K::Query { merchant_id, out_trade_no } => format!("order:{merchant_id}:{out_trade_no}"),
        K::Fund { payer_id, .. } | K::Freeze { payer_id } | K::Unfreeze { payer_id } => format!("payer:{payer_id}"),
        K::OpenMemberCard { identity: Identity::Resolved { payer_id, .. }, .. }
        | K::CloseMemberCard { identity: Identity::Resolved { payer_id, .. }, .. } => format!("payer:{payer_id}"),
        K::OpenMemberCard { merchant_id, .. } | K::CloseMemberCard { merchant_id, .. } => {
            format!("merchant:{merchant_id}")
        }
        K::SetMerchantLimit { merchant_id, .. } => format!("merchant:{merchant_id}"),
        K::Lifecycle(l) => l.partition_key(),
        K::ConfirmPaid(c) => format!("order:{}:{}", c.merchant_id, c.out_trade_no),
        K::NotYetSupported { .. } => format!("event:{}", cmd.event_id),
    }
}

/// How often the matcher stage reads the ledger's member cards again (with a face store).
const MATCH_MEMBERS_REFRESH: Duration = Duration::from_millis(facepay_domain::limits::MATCH_MEMBERS_REFRESH_MS);

/// Stage 1 + 2 over Kafka: device events in; everything made of them (commands, the
/// matcher's own answers, rejections) out to the ledger-commands topic, where the ledger
/// stage keeps each exactly once. This stage itself is at-least-once: after a crash it
/// repeats what it had not committed, and the ledger recognises the repeats.
///
/// With the gallery split over shards, this is shard `i`'s stage (in its own group, so every
/// shard sees every event): its output goes to the match-partials topic instead, keyed as the
/// device event was: each capture's partial answer, and from the lead shard (0) everything
/// else, for [`run_gather_stage`] to pass on.
pub async fn run_match_stage(
    cfg: KafkaConfig,
    registry: crate::SharedRegistry,
    stage: std::sync::Arc<tokio::sync::Mutex<crate::matching::MatchStage>>,
    faces: Option<crate::faces::FaceStore>,
    verifier: std::sync::Arc<crate::authenticity::DeviceVerifier>,
    clock: facepay_domain::time::SharedClock,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    // The stage's state (gallery, recent captures) outlives a run: a restarted run keeps it.
    let mut stage = stage.lock_owned().await;
    let consumer = cfg.logged_consumer(&cfg.match_group_of(stage.shard()))?;
    consumer.subscribe(&[&cfg.topic(DEVICE_EVENTS)])?;
    let producer = cfg.producer()?;
    let out = Outputs { commands: cfg.topic(LEDGER_COMMANDS), partials: cfg.topic(MATCH_PARTIALS) };
    let mut errors = RecvErrors::default();
    let mut guard = SkipGuard::default();
    let mut assigned = Assigned::default();
    let mut members_read = tokio::time::Instant::now();
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            msg = consumer.recv() => msg,
        };
        let Some(first) = errors.check(first).await? else { continue };
        let mut batch = vec![first.detach()];
        fill_batch(&consumer, &mut errors, &mut batch, cfg.batch_linger, MATCH_BATCH_MAX).await?;
        guard.check(&consumer, &cfg.topic(DEVICE_EVENTS), &mut batch);
        // The member lists follow the ledger's cards (opened and closed by face, decided
        // wherever the capture was resolved).
        if let (true, Some(faces)) = (members_read.elapsed() >= MATCH_MEMBERS_REFRESH, &faces) {
            stage.set_members(faces.members().await?);
            members_read = tokio::time::Instant::now();
        }
        if let (true, Some(faces)) = (assigned.update(&consumer).grew, &faces) {
            stage.restore_captures(faces.recent_captures(chrono::Utc::now()).await?);
        }
        // Route in order, send all, then wait: one round trip per batch, not per event.
        let mut acks = Acks::with_capacity(batch.len());
        for msg in &batch {
            let accepted_at = accepted_at(msg, &verifier, clock.as_ref());
            let (routed, partial) = stage_message(&registry, &verifier, &mut stage, msg, accepted_at);
            // Only enrolments and deletions touch the face store: parse those again, no other.
            if let (Some(faces), Some(StageMessage::Answer(a))) = (&faces, &routed) {
                if matches!(a.body.kind(), "face_enrolled" | "face_deleted") {
                    keep_face(faces, msg, accepted_at).await?;
                }
            }
            out.send(&producer, stage.shard(), msg, routed, partial, &mut acks)?;
        }
        // The batch's captures are kept before its offsets are committed: a restart after
        // the commit restores them (`FaceStore::recent_captures`), one before it routes them again.
        let identified = stage.take_identified();
        if let (Some(faces), false) = (&faces, identified.is_empty()) {
            faces.remember_captures(identified, chrono::Utc::now()).await?;
        }
        acknowledged(acks).await?;
        guard.processed(&batch);
        commit_hints(&consumer, &batch);
    }
}

/// The partitions a consumer holds, to notice when it is given new ones.
#[derive(Default)]
struct Assigned(std::collections::HashSet<i32>);

/// How a consumer's partitions changed since the last look.
#[derive(Default)]
struct Moved {
    /// It holds a partition it did not (the first assignment, or a rebalance). The captures
    /// decided by the partition's previous holder below the offset this one resumes from
    /// were kept in the store before that offset was committed: restored then, their
    /// payments still find them.
    grew: bool,
    /// It no longer holds a partition it did: what came from there is another's now.
    shrank: bool,
}

impl Assigned {
    /// Takes the consumer's current partitions; how they changed since the last call.
    fn update<C: rdkafka::consumer::ConsumerContext>(&mut self, consumer: &StreamConsumer<C>) -> Moved {
        let Ok(list) = consumer.assignment() else { return Moved::default() };
        let now: std::collections::HashSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
        let moved = Moved { grew: !now.is_subset(&self.0), shrank: !self.0.is_subset(&now) };
        self.0 = now;
        moved
    }
}

/// Where the matcher stage's output goes.
struct Outputs {
    commands: String,
    partials: String,
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

/// The matcher's gather (the gallery split over shards): the match-partials topic in; each
/// capture decided from all its shards' partials ([`crate::gather::Gather`]); payments with
/// their identity and everything else the lead shard routed out to the ledger-commands
/// topic. At-least-once like the shards: offsets are committed (as a hint) only below what
/// it still holds, its decisions are kept in the store before that (with a face store), and
/// the ledger recognises repeats.
pub async fn run_gather_stage(
    cfg: KafkaConfig,
    gather: std::sync::Arc<tokio::sync::Mutex<crate::gather::Gather>>,
    faces: Option<crate::faces::FaceStore>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut gather = gather.lock_owned().await;
    let topic = cfg.topic(MATCH_PARTIALS);
    let consumer = cfg.logged_consumer(&cfg.gather_group())?;
    consumer.subscribe(&[&topic])?;
    let producer = cfg.producer()?;
    let commands = cfg.topic(LEDGER_COMMANDS);
    let mut errors = RecvErrors::default();
    let mut guard = SkipGuard::default();
    let mut assigned = Assigned::default();
    let mut shrank_before = false;
    loop {
        let deadline = gather.next_deadline().map(tokio::time::Instant::from_std);
        let first = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            msg = consumer.recv() => Some(msg),
            _ = sleep_until(deadline) => None,
        };
        let mut batch = Vec::new();
        if let Some(first) = first {
            let Some(first) = errors.check(first).await? else { continue };
            batch.push(first.detach());
            fill_batch(&consumer, &mut errors, &mut batch, cfg.batch_linger, MATCH_BATCH_MAX).await?;
        }
        guard.check(&consumer, &topic, &mut batch);
        let moved = assigned.update(&consumer);
        if let (true, Some(faces)) = (moved.grew, &faces) {
            gather.restore_captures(faces.recent_captures(chrono::Utc::now()).await?);
        }
        // Forgotten at the batch that sees a partition go, and again at the next: that batch
        // may still hold records the partition's fetch had delivered before it went.
        if moved.shrank || shrank_before {
            gather.retain_partitions(&assigned.0);
        }
        shrank_before = moved.shrank;
        let now = std::time::Instant::now();
        let mut out: Vec<StageMessage> =
            batch.iter().flat_map(|m| gather.offer(gather_message(m), position(m), now)).collect();
        out.extend(gather.expire(now));
        let mut acks = Acks::with_capacity(out.len());
        for routed in &out {
            enqueue_command(&producer, &commands, routed, &mut acks)?;
        }
        let identified = gather.take_identified();
        if let (Some(faces), false) = (&faces, identified.is_empty()) {
            faces.remember_captures(identified, chrono::Utc::now()).await?;
        }
        acknowledged(acks).await?;
        guard.processed(&batch);
        let pinned = gather.pinned();
        batch.retain(|m| pinned.get(&m.partition()).is_none_or(|&p| m.offset() < p));
        commit_hints(&consumer, &batch);
    }
}

/// Enqueues `routed` on the ledger-commands topic `topic`, under its own key.
fn enqueue_command(
    producer: &FutureProducer,
    topic: &str,
    routed: &StageMessage,
    acks: &mut Acks,
) -> Result<(), TransportError> {
    let (key, payload) = (routed.key(), serde_json::to_vec(routed)?);
    Ok(enqueue(producer, FutureRecord::to(topic).key(key.as_str()).payload(payload.as_slice()), acks)?)
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Where `m` sits, for the gather.
fn position(m: &OwnedMessage) -> crate::gather::Position {
    crate::gather::Position { partition: m.partition(), offset: m.offset() }
}

/// A match-partials message, decoded; bytes that are not one become a rejection the ledger
/// keeps (with the reason), so nothing on the topic is dropped unseen.
fn gather_message(m: &OwnedMessage) -> crate::gather::GatherMessage {
    serde_json::from_slice(m.payload().unwrap_or_default())
        .unwrap_or_else(|e| crate::gather::GatherMessage::Routed(Box::new(undecodable(m, "kafka-gather", &e))))
}

/// A message of facepay's own on `m`'s topic that did not decode: a rejection, kept by the
/// ledger with its reason and raw bytes (`source` names the stage that read it).
fn undecodable(m: &OwnedMessage, source: &str, e: &serde_json::Error) -> StageMessage {
    kept_rejection(m, source, &FieldError::new(".", FieldErrorKind::Malformed, e.to_string()))
}

/// `m` refused for `err`: a rejection for the ledger to keep, keyed by where `m` sits, with
/// its raw bytes (`source` names the stage that read it).
fn kept_rejection(m: &OwnedMessage, source: &str, err: &FieldError) -> StageMessage {
    let key = crate::wire::source_key(m.topic(), m.partition(), m.offset());
    let event = crate::validate::rejection(m.payload().unwrap_or_default(), source, err);
    StageMessage::Rejected((&Rejection { key, event }).into())
}

/// The matcher stage's guard against records the broker skipped (tansu 0.6 answers a fetch
/// from the middle of a record batch, as a restart after a commit hint asks for, with the
/// next batch): a partition whose first record is neither the next one this stage expects
/// nor the group's committed offset, but past it, is read again from before that offset,
/// and what lies below it (routed already) is passed over. Once per committed offset: a gap
/// still there after that is the log's own.
#[derive(Default)]
struct SkipGuard {
    /// The next offset of each partition, after the records this stage routed.
    next: HashMap<i32, i64>,
    /// The committed offset each partition was last read again from, and below which its
    /// records are passed over.
    floor: HashMap<i32, i64>,
}

impl SkipGuard {
    fn check<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        topic: &str,
        batch: &mut Vec<OwnedMessage>,
    ) {
        batch.retain(|m| self.floor.get(&m.partition()).is_none_or(|&f| m.offset() >= f));
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        for m in batch.iter() {
            let slot = first.entry(m.partition()).or_insert(m.offset());
            *slot = (*slot).min(m.offset());
        }
        for (p, offset) in first {
            if self.next.get(&p) == Some(&offset) {
                continue;
            }
            let Some(committed) = committed_offset(consumer, topic, p) else { continue };
            if offset <= committed || self.floor.get(&p) == Some(&committed) {
                continue;
            }
            tracing::warn!(partition = p, committed, "the broker skipped records; reading the partition again");
            let back = rdkafka::Offset::Offset((committed - KAFKA_GAP_REWIND_MAX).max(0));
            if let Err(e) = consumer.seek(topic, p, back, Duration::from_secs(5)) {
                tracing::info!(partition = p, error = %e, "seek back failed (the partition likely moved away)");
            }
            self.floor.insert(p, committed);
            batch.retain(|m| m.partition() != p);
        }
    }

    fn processed(&mut self, batch: &[OwnedMessage]) {
        for m in batch {
            self.next.insert(m.partition(), m.offset() + 1);
        }
    }
}

/// The group's committed offset of `topic`'s partition `p`, if it has one.
fn committed_offset<C: rdkafka::consumer::ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    p: i32,
) -> Option<i64> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, p);
    let committed = consumer.committed_offsets(tpl, Duration::from_millis(KAFKA_COMMITTED_TIMEOUT_MS));
    match committed.ok()?.find_partition(topic, p)?.offset() {
        rdkafka::Offset::Offset(o) => Some(o),
        _ => None,
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
                Refusal::Invalid { keep: true, error } => (Some(kept_rejection(msg, "kafka", &error)), None),
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

/// The record header `key` as text, if the record has it.
fn header<'m>(msg: &'m OwnedMessage, key: &str) -> Option<&'m str> {
    use rdkafka::message::Headers;
    std::str::from_utf8(msg.headers()?.iter().find(|h| h.key == key)?.value?).ok()
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

/// Stage 3 over Kafka: ledger commands in, batches decided and committed with their
/// consumer offsets, outcomes into the outbox. A message below the offset the database
/// holds for its partition was already committed (by this process or a predecessor) and is
/// skipped. Each committed batch wakes `outbox_written`'s waiter: this process's relay, which
/// then publishes at once instead of at its next poll.
pub async fn run_ledger_stage(
    cfg: KafkaConfig,
    ledger: facepay_ledger::Ledger,
    outbox_written: std::sync::Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let topic = cfg.topic(LEDGER_COMMANDS);
    let consumer = cfg.logged_consumer(&cfg.ledger_group)?;
    consumer.subscribe(&[&topic])?;
    let mut seen = std::collections::BTreeSet::new();
    let mut rewound: HashMap<i32, i64> = HashMap::new();
    let mut errors = RecvErrors::default();
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            msg = consumer.recv() => msg,
        };
        let Some(first) = errors.check(first).await? else { continue };
        let mut batch = vec![first.detach()];
        fill_batch(&consumer, &mut errors, &mut batch, cfg.batch_linger, cfg.batch_max).await?;
        for msg in &batch {
            if seen.insert(msg.partition()) {
                tracing::info!(partition = msg.partition(), "ledger stage consumes a partition");
            }
        }
        // The database, not Kafka, says what was consumed: read it for every batch, so a
        // partition that moved here from another process resumes where that one stopped.
        let done = ledger.store().offsets(&cfg.ledger_group, &topic).await?;
        while let Some((p, at)) = skipped(&batch, &done, &mut rewound) {
            // The broker sent records past what the database holds, skipping some: read the
            // partition again from before that point (what is done is filtered out again),
            // and set its records aside; the other partitions' records go on.
            tracing::warn!(partition = p, stored = at, "the broker skipped records; reading the partition again");
            let back = rdkafka::Offset::Offset((at - KAFKA_GAP_REWIND_MAX).max(0));
            if let Err(e) = consumer.seek(&topic, p, back, Duration::from_secs(5)) {
                tracing::info!(partition = p, error = %e, "seek back failed (the partition likely moved away)");
            }
            batch.retain(|m| m.partition() != p);
        }
        let items = fresh_items(&batch, &done);
        if !items.is_empty() {
            match decide_items(&cfg, &topic, &ledger, &items, &done).await {
                Err(TransportError::Store(StoreError::Fenced(why))) => {
                    tracing::warn!(%why, "fenced off: another consumer committed; resuming from the stored offsets");
                    seek_to_stored(&consumer, &ledger, &cfg, &topic, &items).await?;
                    continue;
                }
                result => result?,
            }
            outbox_written.notify_one();
        }
        commit_hints(&consumer, &batch);
    }
}

/// A partition of `batch` whose first record past the stored offset comes after it: records
/// were skipped (some brokers, tansu 0.6 among them, answer a fetch from the middle of a
/// record batch with the next batch). Each stored offset is read again once; a gap that is
/// still there then is the log's own (compaction, transaction markers) and is accepted.
fn skipped(batch: &[OwnedMessage], done: &HashMap<i32, i64>, rewound: &mut HashMap<i32, i64>) -> Option<(i32, i64)> {
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    for m in batch {
        let stored = done.get(&m.partition()).copied();
        if stored.is_some_and(|d| m.offset() >= d) {
            let slot = first.entry(m.partition()).or_insert(m.offset());
            *slot = (*slot).min(m.offset());
        }
    }
    first.into_iter().find_map(|(p, offset)| {
        let stored = done[&p];
        (offset > stored && rewound.insert(p, stored) != Some(stored)).then_some((p, stored))
    })
}

/// One consumed message the database has not seen yet.
struct Item {
    partition: i32,
    offset: i64,
    /// What it carries; bytes that are not a stage message become a rejection, kept with
    /// the commit that passes them.
    message: StageMessage,
}

/// The messages of `batch` at or past the stored offset of their partition, decoded.
fn fresh_items(batch: &[OwnedMessage], done: &HashMap<i32, i64>) -> Vec<Item> {
    batch
        .iter()
        .filter(|m| m.offset() >= done.get(&m.partition()).copied().unwrap_or(0))
        .map(|m| {
            let bytes = m.payload().unwrap_or_default();
            let message =
                serde_json::from_slice::<StageMessage>(bytes).unwrap_or_else(|e| undecodable(m, "kafka-ledger", &e));
            Item { partition: m.partition(), offset: m.offset(), message }
        })
        .collect()
}

/// The offset each partition reaches with `items`, checked against `done` (the fence).
fn offsets_after(cfg: &KafkaConfig, topic: &str, items: &[&Item], done: &HashMap<i32, i64>) -> Vec<ConsumerOffset> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for item in items {
        let slot = next.entry(item.partition).or_insert(item.offset + 1);
        *slot = (*slot).max(item.offset + 1);
    }
    next.into_iter()
        .map(|(partition, next_offset)| ConsumerOffset {
            group_id: cfg.ledger_group.clone(),
            topic: topic.to_string(),
            partition,
            expected: done.get(&partition).copied(),
            next_offset,
        })
        .collect()
}

/// Decides `items` as one batch; if the store refuses the batch, one message at a time, each
/// moving only its own partition's offset.
async fn decide_items(
    cfg: &KafkaConfig,
    topic: &str,
    ledger: &Ledger,
    items: &[Item],
    done: &HashMap<i32, i64>,
) -> Result<(), TransportError> {
    let all: Vec<&Item> = items.iter().collect();
    let (commands, with) = delivery(cfg, topic, &all, done);
    crate::metrics::METRICS.batch(items.len());
    match ledger.handle_delivery(&commands, &with).await {
        Ok(outcomes) => {
            commands.iter().zip(&outcomes).for_each(|(cmd, o)| crate::pipeline::decided(cmd, o));
            return Ok(());
        }
        // Fenced, or the database failing (not a refusal): nothing landed; the stage retries.
        Err(err) if !err.is_refusal() => {
            crate::metrics::METRICS.store_error();
            return Err(err.into());
        }
        Err(err) => tracing::warn!(error = %err, size = items.len(), "batch refused; deciding one message at a time"),
    }
    let mut at = done.clone();
    for item in items {
        let (commands, with) = delivery(cfg, topic, &[item], &at);
        let outcomes = ledger.handle_delivery(&commands, &with).await?;
        commands.iter().zip(&outcomes).for_each(|(cmd, o)| crate::pipeline::decided(cmd, o));
        at.insert(item.partition, item.offset + 1);
    }
    Ok(())
}

/// The commands of `items`, and what goes with them into the same transaction.
fn delivery(cfg: &KafkaConfig, topic: &str, items: &[&Item], done: &HashMap<i32, i64>) -> (Vec<Command>, Delivery) {
    let mut commands = Vec::with_capacity(items.len());
    let mut delivery = Delivery {
        offsets: offsets_after(cfg, topic, items, done),
        outbox: Some(OutboxTopics { outcomes: cfg.topic(LEDGER_OUTCOMES), dead_letter: cfg.topic(DEAD_LETTER) }),
        ..Delivery::default()
    };
    for item in items {
        match &item.message {
            StageMessage::Command(cmd) => commands.push(cmd.clone()),
            StageMessage::Answer(o) => delivery.answers.push(o.clone()),
            StageMessage::Rejected(r) => delivery.rejected.push(r.clone().into_rejection()),
        }
    }
    (commands, delivery)
}

/// After a fence: move each partition of the batch back to what the database holds, so the
/// messages another consumer did not commit are read again (or skipped, if it did).
async fn seek_to_stored(
    consumer: &StreamConsumer<LogAssignments>,
    ledger: &Ledger,
    cfg: &KafkaConfig,
    topic: &str,
    items: &[Item],
) -> Result<(), TransportError> {
    let stored = ledger.store().offsets(&cfg.ledger_group, topic).await?;
    let partitions: std::collections::BTreeSet<i32> = items.iter().map(|i| i.partition).collect();
    for p in partitions {
        let to = rdkafka::Offset::Offset(stored.get(&p).copied().unwrap_or(0));
        if let Err(e) = consumer.seek(topic, p, to, Duration::from_secs(5)) {
            tracing::info!(partition = p, error = %e, "seek after fence failed (the partition likely moved away)");
        }
    }
    Ok(())
}

/// The lease a relay must hold to publish the outbox.
pub const RELAY_LEASE: &str = "outbox-relay";

/// The header that carries an outbox message's id, so a relay that takes over can tell
/// what its predecessor already published.
pub const OUTBOX_ID_HEADER: &str = "facepay-outbox-id";

/// Publishes the outbox exactly once: one relay at a time (a lease in the database) sends
/// pending messages oldest first, each tagged with its outbox id, waits for the broker's
/// acknowledgements, then marks them published. A relay that dies between the two leaves at
/// most one batch published but unmarked; its successor, once the lease lapses, reads the
/// tail of each outbox partition (the last [`OUTBOX_BATCH_MAX`] messages: nobody else
/// published since) and marks what it finds before publishing anything. With nothing
/// pending it looks again after [`OUTBOX_IDLE_MS`], or as soon as a ledger stage of this
/// process says it committed (`outbox_written`).
pub async fn run_outbox_relay(
    cfg: KafkaConfig,
    store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    outbox_written: std::sync::Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    cfg.check().map_err(TransportError::Config)?;
    let producer = cfg.producer()?;
    let mut lease = Lease::new(&cfg);
    let idle = Duration::from_millis(OUTBOX_IDLE_MS);
    loop {
        // A relay without the lease only tries again later: a commit does not wake it (that
        // would be a lease write per ledger batch, for nothing).
        let (wait, woken_by_commits) = match lease.renew(store.as_ref()).await? {
            Held::No => (cfg.outbox_lease / 10, false),
            Held::Newly => {
                let marked = recover(&cfg, store.as_ref()).await?;
                tracing::info!(marked, "outbox relay took the lease; marked what its predecessor had published");
                continue;
            }
            Held::Yes => match publish_batch(&producer, store.as_ref()).await? {
                0 => (idle, true),
                _ => continue,
            },
        };
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = outbox_written.notified(), if woken_by_commits => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends the oldest pending batch, waits for it, marks it; how many messages it sent.
async fn publish_batch(
    producer: &FutureProducer,
    store: &dyn facepay_ledger::LedgerStore,
) -> Result<usize, TransportError> {
    let pending = store.outbox_pending(OUTBOX_BATCH_MAX).await?;
    let mut acks = Acks::with_capacity(pending.len());
    for (id, m) in &pending {
        let id = id.to_string();
        let header = rdkafka::message::Header { key: OUTBOX_ID_HEADER, value: Some(id.as_str()) };
        let headers = rdkafka::message::OwnedHeaders::new_with_capacity(1).insert(header);
        let record = FutureRecord::to(&m.topic).key(m.key.as_str()).payload(m.payload.as_slice()).headers(headers);
        enqueue(producer, record, &mut acks)?;
    }
    acknowledged(acks).await?;
    let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
    store.outbox_mark_published(&ids).await?;
    Ok(ids.len())
}

/// Whether this relay holds the lease.
enum Held {
    No,
    /// Just taken: recover before publishing.
    Newly,
    Yes,
}

/// This relay's view of the lease: renewed at half-time, so a send it starts always ends
/// before the lease could lapse (the lease is more than twice the send timeout).
struct Lease {
    holder: String,
    length: Duration,
    held_until: Option<tokio::time::Instant>,
}

impl Lease {
    fn new(cfg: &KafkaConfig) -> Self {
        Self { holder: format!("relay-{}", uuid::Uuid::new_v4()), length: cfg.outbox_lease, held_until: None }
    }

    async fn renew(&mut self, store: &dyn facepay_ledger::LedgerStore) -> Result<Held, TransportError> {
        let now = tokio::time::Instant::now();
        if self.held_until.is_some_and(|until| until > now + self.length / 2) {
            return Ok(Held::Yes);
        }
        let length_ms = u64::try_from(self.length.as_millis()).unwrap_or(u64::MAX);
        let held = store.lease(RELAY_LEASE, &self.holder, length_ms).await?;
        let before = self.held_until.replace(now + self.length);
        match (held, before.is_some_and(|until| until > now)) {
            (false, was) => {
                if was {
                    tracing::warn!("outbox relay lost its lease");
                }
                self.held_until = None;
                Ok(Held::No)
            }
            (true, true) => Ok(Held::Yes),
            (true, false) => Ok(Held::Newly),
        }
    }
}

/// Marks published every outbox message found in the tail of the outbox topics; how many.
async fn recover(cfg: &KafkaConfig, store: &dyn facepay_ledger::LedgerStore) -> Result<usize, TransportError> {
    use rdkafka::message::Headers;
    let (cfg2, window) = (cfg.clone(), Some(i64::from(OUTBOX_BATCH_MAX)));
    let topics = [cfg.topic(LEDGER_OUTCOMES), cfg.topic(DEAD_LETTER)];
    let tails = tokio::task::spawn_blocking(move || read_partitions(&cfg2, &topics, window))
        .await
        .map_err(|_| KafkaError::Canceled)??;
    let ids: Vec<i64> = tails
        .iter()
        .filter_map(|m| {
            let h = m.headers()?.iter().find(|h| h.key == OUTBOX_ID_HEADER)?;
            std::str::from_utf8(h.value?).ok()?.parse().ok()
        })
        .collect();
    store.outbox_mark_published(&ids).await?;
    Ok(ids.len())
}

/// Every message now in `topics`, read partition by partition up to the current end: from the
/// start, or only the last `window` messages of each partition. Blocking (a plain consumer
/// with its partitions assigned, no group); gives up after [`OUTBOX_RECOVERY_TIMEOUT_MS`].
pub fn read_partitions(
    cfg: &KafkaConfig,
    topics: &[String],
    window: Option<i64>,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = cfg.consumer_config("facepay-reader").create()?;
    let timeout = Duration::from_millis(OUTBOX_RECOVERY_TIMEOUT_MS);
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            let from = window.map_or(low, |w| low.max(high - w));
            if from < high {
                tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Offset(from))?;
                ends.insert((topic.clone(), p.id()), high);
            }
        }
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    let quiet = Duration::from_millis(KAFKA_READ_QUIET_MS);
    let mut out = Vec::new();
    let mut last_message = std::time::Instant::now();
    // To the reported ends, then on until the broker has had nothing more for a while: some
    // brokers report a high watermark short of a batch's last records (tansu 0.6 does).
    while !ends.is_empty() || last_message.elapsed() < quiet {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(50)) else { continue };
        let msg = msg?.detach();
        last_message = std::time::Instant::now();
        let end = (msg.topic().to_string(), msg.partition());
        if ends.get(&end).is_some_and(|last| msg.offset() + 1 >= *last) {
            ends.remove(&end);
        }
        out.push(msg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every consumer takes its fetch wait from the configuration (`FACEPAY_KAFKA_FETCH_WAIT_MS`),
    /// not librdkafka's 500 ms default.
    #[test]
    fn consumers_wait_for_a_fetch_as_configured() {
        let mut cfg = KafkaConfig::new("127.0.0.1:9092");
        let wait = |cfg: &KafkaConfig| cfg.consumer_config("g").get("fetch.wait.max.ms").map(str::to_string);
        assert_eq!(wait(&cfg), Some(KAFKA_FETCH_WAIT_MAX_MS.to_string()));
        cfg.fetch_wait = Duration::from_millis(3);
        assert_eq!(wait(&cfg), Some("3".to_string()));
    }

    /// Bytes on the match-partials topic that are not a gather message are not dropped: they
    /// go on to the ledger as a rejection with their reason, place and raw bytes.
    #[test]
    fn an_undecodable_gather_message_becomes_a_kept_rejection() {
        let bytes = b"{\"type\": \"partial\", \"payload\": 7}".to_vec();
        let m = OwnedMessage::new(
            Some(bytes.clone()),
            Some(b"DEV-1".to_vec()),
            "facepay.match-partials".into(),
            rdkafka::Timestamp::NotAvailable,
            3,
            41,
            None,
        );
        let crate::gather::GatherMessage::Routed(routed) = gather_message(&m) else { panic!("not a rejection") };
        let StageMessage::Rejected(r) = *routed else { panic!("not a rejection: {routed:?}") };
        let kept = r.into_rejection();
        assert_eq!(kept.key, crate::wire::source_key("facepay.match-partials", 3, 41));
        assert_eq!((kept.event.source.as_str(), kept.event.reason_code.as_str()), ("kafka-gather", "malformed"));
        assert_eq!(kept.event.raw, bytes);
    }
}
