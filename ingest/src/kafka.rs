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
use facepay_ledger::store::{ConsumerOffset, RejectedEvent};
use facepay_ledger::{Command, Delivery, Ledger, StoreError};

use facepay_domain::limits::{
    KAFKA_PARTITIONS_DEFAULT, KAFKA_RECV_ERRORS_MAX, KAFKA_RECV_ERROR_PAUSE_MS, KAFKA_SEND_TIMEOUT_MS,
    LEDGER_BATCH_LINGER_MS, LEDGER_BATCH_MAX,
};

/// Topic suffixes; the configured prefix (default `facepay.`) goes in front.
pub const DEVICE_EVENTS: &str = "device-events";
pub const LEDGER_COMMANDS: &str = "ledger-commands";
pub const LEDGER_OUTCOMES: &str = "ledger-outcomes";
pub const DEAD_LETTER: &str = "dead-letter";

/// Where the broker is and how facepay uses it. Every name is configuration, documented in
/// `docs/events.md` and the README.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `FACEPAY_KAFKA_BROKERS`: `host:port[,host:port…]`.
    pub brokers: String,
    /// `FACEPAY_KAFKA_TOPIC_PREFIX`, default `facepay.`; lets several deployments (or test
    /// runs) share one cluster.
    pub topic_prefix: String,
    /// `FACEPAY_KAFKA_MATCH_GROUP`, default `facepay-match`: the validate + match stage.
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
        }
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
        c
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

    /// A consumer in `group` that commits nothing by itself.
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer, KafkaError> {
        self.client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .create()
    }

    /// A consumer like [`KafkaConfig::consumer`] that logs every partition assignment (at
    /// info: operators see where each partition went after a rebalance).
    pub fn logged_consumer(&self, group: &str) -> Result<StreamConsumer<LogAssignments>, KafkaError> {
        self.client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .create_with_context(LogAssignments)
    }

    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.client().set("message.timeout.ms", KAFKA_SEND_TIMEOUT_MS.to_string()).set("linger.ms", "2").create()
    }
}

/// Logs each partition assignment a consumer receives.
pub struct LogAssignments;

impl rdkafka::ClientContext for LogAssignments {}

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
    let names: Vec<String> =
        [DEVICE_EVENTS, LEDGER_COMMANDS, LEDGER_OUTCOMES, DEAD_LETTER].iter().map(|s| cfg.topic(s)).collect();
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

/// Marks everything up to `msg` consumed, as a hint for where the group resumes.
pub fn commit_hint(consumer: &StreamConsumer, msg: &rdkafka::message::BorrowedMessage<'_>) {
    if let Err(e) = consumer.commit_message(msg, CommitMode::Async) {
        tracing::debug!(error = %e, "offset commit hint failed; the database holds the truth");
    }
}

/// Failures that stop a Kafka stage (the process exits and its partitions move on).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("store: {0}")]
    Store(#[from] facepay_ledger::StoreError),
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// Consumer errors in a row. librdkafka reports passing trouble (a broker restart, a
/// rebalance, a partition end) through `recv`: a stage logs it and goes on, and gives up only
/// after [`KAFKA_RECV_ERRORS_MAX`] in a row, so the process exits and another takes over.
#[derive(Default)]
struct RecvErrors(u32);

impl RecvErrors {
    async fn check<M>(&mut self, msg: Result<M, KafkaError>) -> Result<Option<M>, TransportError> {
        match msg {
            Ok(m) => {
                self.0 = 0;
                Ok(Some(m))
            }
            Err(e) if self.0 + 1 < KAFKA_RECV_ERRORS_MAX => {
                self.0 += 1;
                tracing::warn!(error = %e, in_a_row = self.0, "consumer error; going on");
                tokio::time::sleep(Duration::from_millis(KAFKA_RECV_ERROR_PAUSE_MS)).await;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The partition key of a ledger command: its payer, so one payer's decisions have a single
/// writer; commands with no payer go by order or merchant.
pub fn command_key(cmd: &facepay_ledger::Command) -> String {
    use facepay_ledger::{CommandKind as K, Identity};
    match &cmd.kind {
        K::Pay { identity: Identity::Resolved { payer_id, .. }, .. } => format!("payer:{payer_id}"),
        K::Pay { device, out_trade_no, .. } => format!("order:{}:{out_trade_no}", device.merchant_id),
        K::Query { merchant_id, out_trade_no } => format!("order:{merchant_id}:{out_trade_no}"),
        K::Fund { payer_id, .. }
        | K::Freeze { payer_id }
        | K::Unfreeze { payer_id }
        | K::OpenMemberCard { payer_id, .. }
        | K::CloseMemberCard { payer_id, .. } => format!("payer:{payer_id}"),
        K::SetMerchantLimit { merchant_id, .. } => format!("merchant:{merchant_id}"),
        K::Lifecycle(l) => l.partition_key(),
        K::NotYetSupported { .. } => format!("event:{}", cmd.event_id),
    }
}

/// Stage 1 + 2 over Kafka: device events in, ledger commands out (rejections to the
/// dead-letter topic and the rejected-events table; captures' answers straight out).
pub async fn run_match_stage(
    cfg: KafkaConfig,
    registry: crate::SharedRegistry,
    mut stage: crate::matching::MatchStage,
    store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let consumer = cfg.consumer(&cfg.match_group)?;
    consumer.subscribe(&[&cfg.topic(DEVICE_EVENTS)])?;
    let producer = cfg.producer()?;
    let mut errors = RecvErrors::default();
    loop {
        let msg = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            msg = consumer.recv() => msg,
        };
        let Some(msg) = errors.check(msg).await? else { continue };
        let bytes = msg.payload().unwrap_or_default();
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        match crate::validate::validate(bytes, &registry) {
            Err(err) => {
                let rejected = crate::validate::rejection(bytes, "kafka", &err);
                store.reject(&rejected).await?;
                let letter = serde_json::json!({
                    "reason_code": rejected.reason_code, "field": rejected.field, "message": rejected.message,
                    "event_id": rejected.event_id, "raw": String::from_utf8_lossy(&rejected.raw),
                });
                publish(&producer, &cfg.topic(DEAD_LETTER), &key, &serde_json::to_vec(&letter)?).await?;
            }
            Ok(env) => route(&cfg, &producer, &mut stage, env).await?,
        }
        commit_hint(&consumer, &msg);
    }
}

async fn route(
    cfg: &KafkaConfig,
    producer: &FutureProducer,
    stage: &mut crate::matching::MatchStage,
    env: facepay_domain::Envelope,
) -> Result<(), TransportError> {
    let (event_id, device) = (env.event_id, env.origin.device().cloned());
    match stage.route(env) {
        crate::matching::Routed::Command(cmd) => {
            publish(producer, &cfg.topic(LEDGER_COMMANDS), &command_key(&cmd), &serde_json::to_vec(&cmd)?).await?;
        }
        crate::matching::Routed::Done(body) => {
            let key = device.as_ref().map_or_else(|| event_id.to_string(), |d| d.device_id.to_string());
            let outcome =
                facepay_domain::Outcome { in_reply_to: event_id, decided_at: chrono::Utc::now(), device, body };
            publish(producer, &cfg.topic(LEDGER_OUTCOMES), &key, &serde_json::to_vec(&outcome)?).await?;
        }
    }
    Ok(())
}

/// Stage 3 over Kafka: ledger commands in, batches decided and committed with their
/// consumer offsets, outcomes into the outbox. A message below the offset the database
/// holds for its partition was already committed (by this process or a predecessor) and is
/// skipped.
pub async fn run_ledger_stage(
    cfg: KafkaConfig,
    ledger: facepay_ledger::Ledger,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let topic = cfg.topic(LEDGER_COMMANDS);
    let consumer = cfg.logged_consumer(&cfg.ledger_group)?;
    consumer.subscribe(&[&topic])?;
    let mut seen = std::collections::BTreeSet::new();
    let mut errors = RecvErrors::default();
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            msg = consumer.recv() => msg,
        };
        let Some(first) = errors.check(first).await? else { continue };
        let mut batch = vec![first.detach()];
        let deadline = tokio::time::Instant::now() + cfg.batch_linger;
        while batch.len() < cfg.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(msg) => match errors.check(msg).await? {
                    Some(msg) => batch.push(msg.detach()),
                    None => break,
                },
                Err(_) => break,
            }
        }
        for msg in &batch {
            if seen.insert(msg.partition()) {
                tracing::info!(partition = msg.partition(), "ledger stage consumes a partition");
            }
        }
        // The database, not Kafka, says what was consumed: read it for every batch, so a
        // partition that moved here from another process resumes where that one stopped.
        let done = ledger.store().offsets(&cfg.ledger_group, &topic).await?;
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
        }
        if let Some(last) = batch.last() {
            commit_hint_owned(&consumer, last);
        }
    }
}

/// One consumed message the database has not seen yet.
struct Item {
    partition: i32,
    offset: i64,
    command: Result<Command, RejectedEvent>,
}

/// The messages of `batch` at or past the stored offset of their partition, decoded; a
/// message that is not a command becomes a rejection, kept with the commit that passes it.
fn fresh_items(batch: &[OwnedMessage], done: &HashMap<i32, i64>) -> Vec<Item> {
    batch
        .iter()
        .filter(|m| m.offset() >= done.get(&m.partition()).copied().unwrap_or(0))
        .map(|m| {
            let bytes = m.payload().unwrap_or_default();
            let command = serde_json::from_slice::<Command>(bytes).map_err(|e| {
                let err = FieldError::new(".", FieldErrorKind::Malformed, e.to_string());
                crate::validate::rejection(bytes, "kafka-ledger", &err)
            });
            Item { partition: m.partition(), offset: m.offset(), command }
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
    match ledger.handle_delivery(&commands_of(&all), &delivery(cfg, topic, &all, done)).await {
        Ok(_) => return Ok(()),
        Err(err @ StoreError::Fenced(_)) => return Err(err.into()),
        Err(err) => tracing::warn!(error = %err, size = items.len(), "batch refused; deciding one message at a time"),
    }
    let mut at = done.clone();
    for item in items {
        let one = [item];
        ledger.handle_delivery(&commands_of(&one), &delivery(cfg, topic, &one, &at)).await?;
        at.insert(item.partition, item.offset + 1);
    }
    Ok(())
}

fn commands_of(items: &[&Item]) -> Vec<Command> {
    items.iter().filter_map(|i| i.command.as_ref().ok().cloned()).collect()
}

fn delivery(cfg: &KafkaConfig, topic: &str, items: &[&Item], done: &HashMap<i32, i64>) -> Delivery {
    Delivery {
        offsets: offsets_after(cfg, topic, items, done),
        outbox_topic: Some(cfg.topic(LEDGER_OUTCOMES)),
        rejected: items.iter().filter_map(|i| i.command.as_ref().err().cloned()).collect(),
    }
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

fn commit_hint_owned(consumer: &StreamConsumer<LogAssignments>, msg: &rdkafka::message::OwnedMessage) {
    let mut tpl = rdkafka::TopicPartitionList::new();
    let next = rdkafka::Offset::Offset(msg.offset() + 1);
    if tpl.add_partition_offset(msg.topic(), msg.partition(), next).is_ok() {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit hint failed; the database holds the truth");
        }
    }
}

/// Publishes the outbox: claims a batch (so relays in other processes publish other
/// messages), publishes it, and marks it published once the broker has acknowledged it. A
/// relay that dies between the two leaves its claim to lapse, and the batch is published
/// again (at-least-once); consumers recognise an outcome by `in_reply_to`.
pub async fn run_outbox_relay(
    cfg: KafkaConfig,
    store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    use facepay_domain::limits::{OUTBOX_BATCH_MAX, OUTBOX_IDLE_MS, OUTBOX_LEASE_MS};
    let producer = cfg.producer()?;
    loop {
        let pending = store.outbox_claim(OUTBOX_BATCH_MAX, OUTBOX_LEASE_MS).await?;
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(OUTBOX_IDLE_MS)) => continue,
            }
        }
        // Enqueue the whole batch at once, then wait for every acknowledgement.
        let mut acks = Vec::with_capacity(pending.len());
        for (_, m) in &pending {
            let record = FutureRecord::to(&m.topic).key(&m.key).payload(&m.payload);
            acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for ack in acks {
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(KafkaError::Canceled.into()),
            }
        }
        let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
        store.outbox_mark_published(&ids).await?;
    }
}
