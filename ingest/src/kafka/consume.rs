//! Consuming: batches under a linger, errors in a row, the guard against records
//! a broker skipped, reading partitions to their end, and messages kept as rejections.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::message::OwnedMessage;
use std::collections::{BTreeMap, HashMap};

use facepay_domain::{FieldError, FieldErrorKind};
use facepay_ledger::Rejection;

use crate::wire::StageMessage;

use super::*;
use facepay_domain::limits::{
    KAFKA_GAP_REWIND_MAX, KAFKA_READ_QUIET_MS, KAFKA_RECV_ERRORS_MAX, KAFKA_RECV_ERROR_PAUSE_MS,
    OUTBOX_RECOVERY_TIMEOUT_MS,
};

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

/// The matcher's and the gather's guard against records the broker skipped. A partition is
/// assigned to be read from [`KAFKA_GAP_REWIND_MAX`] records before where it resumes
/// ([`OwnedPartitions`]): what lies below that offset (processed already) is passed over here.
/// Where a partition's first record in a batch comes after the record this stage expects next
/// (some brokers, tansu 0.6 among them, answer a read from the middle of a record batch with
/// the next batch), the partition is read again from before the expected record and what lies
/// below it is passed over. Once per expected offset: a gap still there after that is the
/// log's own.
#[derive(Default)]
pub(super) struct SkipGuard {
    /// The next offset of each partition, after the records this stage routed.
    next: HashMap<i32, i64>,
    /// Per partition, the offset below which its records are passed over: where it resumed,
    /// raised to the expected record when it was read again.
    floor: HashMap<i32, i64>,
    /// Per partition, the expected offset it was last read again from.
    rewound: HashMap<i32, i64>,
}

impl SkipGuard {
    pub(super) fn check<C: rdkafka::consumer::ConsumerContext>(
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
            let Some(expected) = self.next.get(&p).or(self.floor.get(&p)).copied() else { continue };
            if offset <= expected || self.rewound.get(&p) == Some(&expected) {
                continue;
            }
            tracing::warn!(partition = p, expected, offset, "the broker skipped records; reading the partition again");
            if let Err(e) = consumer.seek(topic, p, read_back_to(expected), Duration::from_secs(5)) {
                tracing::info!(partition = p, error = %e, "seek back failed (the partition likely moved away)");
            }
            self.rewound.insert(p, expected);
            self.floor.insert(p, expected);
            batch.retain(|m| m.partition() != p);
        }
    }

    /// The stage's partitions were assigned by hand, each to resume from the offset in `from`
    /// (and read from a little before it): what was expected, passed over or read again under
    /// the last assignment no longer holds.
    pub(super) fn assigned(&mut self, from: HashMap<i32, i64>) {
        self.next.clear();
        self.rewound.clear();
        self.floor = from;
    }

    pub(super) fn processed(&mut self, batch: &[OwnedMessage]) {
        for m in batch {
            self.next.insert(m.partition(), m.offset() + 1);
        }
    }
}

/// Where a stage reads a partition from to get the record at `offset` and all after it:
/// [`KAFKA_GAP_REWIND_MAX`] records before it (a broker may answer a read from the middle of a
/// record batch with the next batch, or with nothing where that batch is the partition's last;
/// tansu 0.6 does both). The stage passes over what lies below `offset`.
pub(super) fn read_back_to(offset: i64) -> rdkafka::Offset {
    rdkafka::Offset::Offset((offset - KAFKA_GAP_REWIND_MAX).max(0))
}

/// The record a stage received before its ownership tick, if the tick left its assignment as
/// it was. A new assignment reads every partition again from where it resumes (never past a
/// record not yet processed), so a record received before it is read again, and must be: kept,
/// it would stand first in its batch where the skip guards look for the assignment's first
/// record, and hide the records a broker skips when the partition is read again from the
/// middle of a record batch (tansu 0.6 answers such a read with the next batch).
pub(super) fn received_under<M>(first: Option<M>, moved: Moved) -> Option<M> {
    first.filter(|_| !moved.changed())
}

/// The record header `key` as text, if the record has it.
pub(super) fn header<'m>(msg: &'m OwnedMessage, key: &str) -> Option<&'m str> {
    use rdkafka::message::Headers;
    std::str::from_utf8(msg.headers()?.iter().find(|h| h.key == key)?.value?).ok()
}

/// Every message now in `topics`, read partition by partition up to the current end: from the
/// start, or only the last `window` messages of each partition. Blocking (a plain consumer
/// with its partitions assigned, no group); gives up after [`OUTBOX_RECOVERY_TIMEOUT_MS`].
pub fn read_partitions(
    cfg: &KafkaConfig,
    topics: &[String],
    window: Option<i64>,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    read_partitions_within(cfg, topics, window, Duration::from_millis(OUTBOX_RECOVERY_TIMEOUT_MS))
}

/// [`read_partitions`], giving up after `timeout`.
pub fn read_partitions_within(
    cfg: &KafkaConfig,
    topics: &[String],
    window: Option<i64>,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = cfg.consumer_config("facepay-reader").create()?;
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

/// A message of facepay's own on `m`'s topic that did not decode: a rejection, kept by the
/// ledger with its reason and raw bytes (`source` names the stage that read it).
pub(super) fn undecodable(m: &OwnedMessage, source: &str, e: &serde_json::Error) -> StageMessage {
    kept_rejection(m, source, &FieldError::new(".", FieldErrorKind::Malformed, e.to_string()), None)
}

/// `m` refused for `err`: a rejection for the ledger to keep, keyed by where `m` sits, with
/// its raw bytes redacted (`source` names the stage that read it), and answered to `sender`,
/// the device that signed it.
pub(super) fn kept_rejection(
    m: &OwnedMessage,
    source: &str,
    err: &FieldError,
    sender: Option<facepay_domain::DeviceRef>,
) -> StageMessage {
    let key = crate::wire::source_key(m.topic(), m.partition(), m.offset());
    let event = crate::validate::rejection(m.payload().unwrap_or_default(), source, err);
    StageMessage::Rejected((&Rejection { key, event, answer_to: sender }).into())
}
