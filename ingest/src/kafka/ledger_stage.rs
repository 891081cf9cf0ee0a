//! Stage 3 over Kafka: ledger commands in, decided and committed in batches with their
//! consumer offsets, outcomes into the outbox.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::message::OwnedMessage;
use std::collections::{BTreeMap, HashMap};

use facepay_domain::Outcome;
use facepay_ledger::store::ConsumerOffset;
use facepay_ledger::{Command, Delivery, Ledger, OutboxTopics, StoreError};

use crate::metrics::Step;
use crate::wire::StageMessage;

use super::*;

/// Stage 3 over Kafka: ledger commands in, batches decided and committed with their
/// consumer offsets, outcomes into the outbox. Its partitions are owned through the
/// database ([`OwnedPartitions`]), each resumed from the offset stored with its last commit.
/// A message below the offset the database holds for its partition was already committed (by
/// this process or a predecessor) and is skipped. Each committed batch wakes this process's
/// relay, which then publishes at once instead of at its next poll, and hands what it
/// answered to this process's requests that wait for it ([`CommitListeners`]).
pub async fn run_ledger_stage(
    cfg: KafkaConfig,
    ledger: facepay_ledger::Ledger,
    holder: String,
    committed: CommitListeners,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let topic = cfg.topic(LEDGER_COMMANDS);
    let consumer = cfg.logged_consumer(&cfg.ledger_group)?;
    let mut owned = OwnedPartitions::new(&cfg, &cfg.ledger_group, &topic, &holder, Resume::Committed);
    let mut seen = std::collections::BTreeSet::new();
    let mut rewound: HashMap<i32, i64> = HashMap::new();
    let mut errors = RecvErrors::default();
    loop {
        let first = tokio::select! {
            _ = shutdown.changed() => return owned.leave(ledger.store().as_ref()).await,
            msg = consumer.recv() => Some(msg),
            _ = owned.tick_due() => None,
        };
        let moved = owned.maintain(&consumer, ledger.store().as_ref()).await?;
        if moved.changed() {
            rewound.clear();
        }
        let Some(first) = received_under(first, moved) else { continue };
        let Some(first) = errors.check(first).await? else { continue };
        let mut batch = vec![first.detach()];
        fill_batch(&consumer, &mut errors, &mut batch, cfg.batch_linger, cfg.batch_max).await?;
        // Records fetched before a partition moved away are its new holder's (the fence would
        // refuse their commit anyway).
        batch.retain(|m| owned.held().contains(&m.partition()));
        for msg in &batch {
            if seen.insert(msg.partition()) {
                tracing::info!(partition = msg.partition(), "ledger stage consumes a partition");
            }
        }
        // The database, not Kafka, says what was consumed: read it for every batch, so a
        // partition that moved here from another process resumes where that one stopped.
        let read = std::time::Instant::now();
        let done = ledger.store().offsets(&cfg.ledger_group, &topic).await?;
        crate::metrics::METRICS.step(Step::LedgerOffsets, read.elapsed());
        while let Some((p, at)) = skipped(&batch, &done, &mut rewound) {
            // The broker sent records past what the database holds, skipping some: read the
            // partition again from before that point (what is done is filtered out again),
            // and set its records aside; the other partitions' records go on.
            tracing::warn!(partition = p, stored = at, "the broker skipped records; reading the partition again");
            if let Err(e) = consumer.seek(&topic, p, read_back_to(at), Duration::from_secs(5)) {
                tracing::info!(partition = p, error = %e, "seek back failed (the partition likely moved away)");
            }
            batch.retain(|m| m.partition() != p);
        }
        let items = fresh_items(&batch, &done);
        if !items.is_empty() {
            match decide_items(&cfg, &topic, &ledger, &items, &done, &committed.waiters).await {
                Err(TransportError::Store(StoreError::Fenced(why))) => {
                    tracing::warn!(%why, "fenced off: another consumer committed; resuming from the stored offsets");
                    seek_to_stored(&consumer, &ledger, &cfg, &topic, &items).await?;
                    continue;
                }
                result => result?,
            }
            committed.outbox_written.notify_one();
        }
    }
}

/// Who in this process hears of a ledger stage's commits: the relay, woken to publish the
/// outbox, and the requests waiting for what was answered.
#[derive(Clone, Default)]
pub struct CommitListeners {
    pub outbox_written: std::sync::Arc<tokio::sync::Notify>,
    pub waiters: std::sync::Arc<crate::waiters::Waiters>,
}

/// A partition of `batch` whose first record past the stored offset comes after it: records
/// were skipped (some brokers, tansu 0.6 among them, answer a fetch from the middle of a
/// record batch with the next batch). Each stored offset is read again once per assignment; a
/// gap that is still there then is the log's own (compaction, transaction markers) and is
/// accepted.
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

/// What the ledger stage commits for `batch` of `topic`, read past the offsets `done`: its
/// commands, and the answers, rejections, outbox and offsets that go with them into the same
/// transaction (`facepay-bench pipeline` commits the pipeline's own commands this way, with
/// no consumer, for the ledger's ceiling).
pub fn ledger_batch(
    cfg: &KafkaConfig,
    topic: &str,
    batch: &[OwnedMessage],
    done: &HashMap<i32, i64>,
) -> (Vec<Command>, Delivery) {
    let items = fresh_items(batch, done);
    let all: Vec<&Item> = items.iter().collect();
    delivery(cfg, topic, &all, done)
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
    waiters: &crate::waiters::Waiters,
) -> Result<(), TransportError> {
    let all: Vec<&Item> = items.iter().collect();
    let (commands, with) = delivery(cfg, topic, &all, done);
    crate::metrics::METRICS.batch(items.len());
    let began = std::time::Instant::now();
    let result = ledger.handle_delivery(&commands, &with).await;
    crate::metrics::METRICS.step(Step::LedgerCommit, began.elapsed());
    match result {
        Ok(outcomes) => {
            committed(&commands, &outcomes, &with, waiters);
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
        committed(&commands, &outcomes, &with, waiters);
        at.insert(item.partition, item.offset + 1);
    }
    Ok(())
}

/// After a commit: each decision counted and logged, and every answer of the commit (the
/// ledger's and the matcher's) handed to the requests waiting for it.
fn committed(commands: &[Command], outcomes: &[Outcome], with: &Delivery, waiters: &crate::waiters::Waiters) {
    commands.iter().zip(outcomes).for_each(|(cmd, o)| crate::pipeline::decided(cmd, o));
    outcomes.iter().chain(&with.answers).for_each(|o| waiters.deliver(o));
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

/// After a fence: move each partition of the batch back to what the database holds (read from
/// a little before it, as at an assignment), so the messages another consumer did not commit
/// are read again (or skipped, if it did).
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
        let to = read_back_to(stored.get(&p).copied().unwrap_or(0));
        if let Err(e) = consumer.seek(topic, p, to, Duration::from_secs(5)) {
            tracing::info!(partition = p, error = %e, "seek after fence failed (the partition likely moved away)");
        }
    }
    Ok(())
}
