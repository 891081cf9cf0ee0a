//! The outbox relay: publishes what the ledger stage committed to the outbox, once, under a
//! lease (one relay at a time), and recovers what a dead predecessor left unmarked.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::*;
use crate::metrics::{Step, METRICS};
use facepay_domain::limits::{OUTBOX_BATCH_MAX, OUTBOX_IDLE_MS, OUTBOX_UNMARKED_BATCHES_MAX};

/// The lease a relay must hold to publish the outbox.
pub const RELAY_LEASE: &str = "outbox-relay";

/// The header that carries an outbox message's id, so a relay that takes over can tell
/// what its predecessor already published.
pub const OUTBOX_ID_HEADER: &str = "facepay-outbox-id";

/// Publishes the outbox exactly once: one relay at a time (a lease in the database, held by
/// `holder`, this process's name for its relay) sends pending messages oldest first, each tagged
/// with its outbox id, waits for the broker's acknowledgements, then marks them published (the mark
/// deletes them from the outbox); the mark of one batch is written while the next is read and sent,
/// so at most [`OUTBOX_UNMARKED_BATCHES_MAX`] batches are published but unmarked at any moment.
/// Whoever runs next under the lease (this process's relay restarted after a broker error, still
/// holding the lease, or, once a dead process's lease lapses, another's) first reads that many
/// batches back from the end of each outbox partition (nobody else published since) and marks what
/// it finds. With nothing pending it looks again after [`OUTBOX_IDLE_MS`], or as soon as a ledger
/// stage of this process says it committed (`outbox_written`). A standby tries for the lease ten
/// times per lease length, so a dead relay's outcomes wait at most
/// [`facepay_domain::limits::OUTBOX_TAKEOVER_MS_MAX`].
pub async fn run_outbox_relay(
    cfg: KafkaConfig,
    store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    holder: String,
    outbox_written: std::sync::Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    cfg.check().map_err(TransportError::Config)?;
    let producer = cfg.producer()?;
    let mut lease = Lease::new(&cfg, holder);
    let idle = Duration::from_millis(OUTBOX_IDLE_MS);
    let mut sent = Sent::default();
    loop {
        // A relay without the lease only tries again later: a commit does not wake it (that
        // would be a lease write per ledger batch, for nothing).
        let (wait, woken_by_commits) = match lease.renew(store.as_ref()).await? {
            Held::No => {
                sent.settle().await?;
                (cfg.outbox_lease / 10, false)
            }
            Held::Newly => {
                sent.settle().await?;
                sent = Sent::default();
                let marked = recover(&cfg, store.as_ref()).await?;
                tracing::info!(marked, "outbox relay took the lease; marked what was published before");
                continue;
            }
            Held::Yes => match publish_batch(&producer, &store, &mut sent, cfg.outbox_send_timeout).await? {
                0 => {
                    sent.settle().await?;
                    (idle, true)
                }
                _ => continue,
            },
        };
        tokio::select! {
            // Stopping, it gives the lease up: a standby takes over at its next try.
            _ = shutdown.changed() => {
                sent.settle().await?;
                return Ok(store.lease_release(RELAY_LEASE, &lease.holder).await?);
            }
            _ = outbox_written.notified(), if woken_by_commits => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The batch the relay sent whose mark is still being written: its ids (not pending any more,
/// though the database does not say so yet) and the mark.
#[derive(Default)]
struct Sent {
    ids: std::collections::HashSet<i64>,
    marking: Option<tokio::task::JoinHandle<Result<(), facepay_ledger::StoreError>>>,
}

impl Sent {
    /// Waits for the mark in flight.
    async fn settle(&mut self) -> Result<(), TransportError> {
        if let Some(mark) = self.marking.take() {
            mark.await.map_err(|_| KafkaError::Canceled)??;
        }
        self.ids.clear();
        Ok(())
    }
}

/// Sends the oldest pending batch but the one being marked, waits for it, and starts its mark
/// once the previous batch's has landed; how many messages it sent. (Pending is read by
/// state, not past the last id sent: two ledger processes' commits may land out of id order.)
async fn publish_batch(
    producer: &FutureProducer,
    store: &std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    sent: &mut Sent,
    within: Duration,
) -> Result<usize, TransportError> {
    let limit = OUTBOX_BATCH_MAX + u32::try_from(sent.ids.len()).unwrap_or(u32::MAX);
    let read = std::time::Instant::now();
    let mut pending = store.outbox_pending(limit).await?;
    METRICS.step(Step::RelayRead, read.elapsed());
    pending.retain(|(id, _)| !sent.ids.contains(id));
    pending.truncate(OUTBOX_BATCH_MAX as usize);
    if pending.is_empty() {
        return Ok(0);
    }
    let sending = std::time::Instant::now();
    let mut acks = Acks::with_capacity(pending.len());
    for (id, m) in &pending {
        let id = id.to_string();
        let header = rdkafka::message::Header { key: OUTBOX_ID_HEADER, value: Some(id.as_str()) };
        let headers = rdkafka::message::OwnedHeaders::new_with_capacity(1).insert(header);
        let record = FutureRecord::to(&m.topic).key(m.key.as_str()).payload(m.payload.as_slice()).headers(headers);
        enqueue(producer, record, &mut acks)?;
    }
    acknowledged(acks, within).await?;
    METRICS.step(Step::RelayAcks, sending.elapsed());
    // One mark in flight at a time: at most two batches published and not marked.
    let settling = std::time::Instant::now();
    sent.settle().await?;
    METRICS.step(Step::RelayMarkWait, settling.elapsed());
    let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
    sent.ids.extend(&ids);
    let store = store.clone();
    sent.marking = Some(tokio::spawn(async move { store.outbox_published(&ids).await }));
    Ok(pending.len())
}

/// Whether this relay holds the lease.
enum Held {
    No,
    /// Just taken: recover before publishing.
    Newly,
    Yes,
}

/// This relay's view of the lease: renewed whenever less than a send and a margin are left,
/// so a send it starts always ends before the lease could lapse. A new view (a relay run that
/// starts again) answers [`Held::Newly`] even when the lease is still this holder's: its
/// predecessor run may have stopped between a send and the mark.
struct Lease {
    holder: String,
    length: Duration,
    needed: Duration,
    held_until: Option<tokio::time::Instant>,
}

impl Lease {
    fn new(cfg: &KafkaConfig, holder: String) -> Self {
        Self { holder, length: cfg.outbox_lease, needed: cfg.outbox_lease_needed(), held_until: None }
    }

    async fn renew(&mut self, store: &dyn facepay_ledger::LedgerStore) -> Result<Held, TransportError> {
        let now = tokio::time::Instant::now();
        if self.held_until.is_some_and(|until| until > now + self.needed) {
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
    let (cfg2, window) = (cfg.clone(), Some(i64::from(OUTBOX_BATCH_MAX * OUTBOX_UNMARKED_BATCHES_MAX)));
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
    store.outbox_published(&ids).await?;
    Ok(ids.len())
}
