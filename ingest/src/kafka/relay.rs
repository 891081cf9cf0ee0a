//! The outbox relay: publishes what the ledger stage committed to the outbox, once, under a
//! lease (one relay at a time), and recovers what a dead predecessor left unmarked.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::*;
use facepay_domain::limits::{OUTBOX_BATCH_MAX, OUTBOX_IDLE_MS};

/// The lease a relay must hold to publish the outbox.
pub const RELAY_LEASE: &str = "outbox-relay";

/// The header that carries an outbox message's id, so a relay that takes over can tell
/// what its predecessor already published.
pub const OUTBOX_ID_HEADER: &str = "facepay-outbox-id";

/// Publishes the outbox exactly once: one relay at a time (a lease in the database, held by
/// `holder`, this process's name for its relay) sends pending messages oldest first, each
/// tagged with its outbox id, waits for the broker's acknowledgements, then marks them
/// published. A relay that dies between the two leaves at most one batch published but
/// unmarked; whoever runs next under the lease (this process's relay restarted after a broker
/// error, still holding the lease, or, once a dead process's lease lapses, another's) first
/// reads the tail of each outbox partition (the last [`OUTBOX_BATCH_MAX`] messages: nobody
/// else published since) and marks what it finds. With nothing pending it looks again after
/// [`OUTBOX_IDLE_MS`], or as soon as a ledger stage of this process says it committed
/// (`outbox_written`). A standby tries for the lease ten times per lease length, so a dead
/// relay's outcomes wait at most [`facepay_domain::limits::OUTBOX_TAKEOVER_MS_MAX`].
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
    loop {
        // A relay without the lease only tries again later: a commit does not wake it (that
        // would be a lease write per ledger batch, for nothing).
        let (wait, woken_by_commits) = match lease.renew(store.as_ref()).await? {
            Held::No => (cfg.outbox_lease / 10, false),
            Held::Newly => {
                let marked = recover(&cfg, store.as_ref()).await?;
                tracing::info!(marked, "outbox relay took the lease; marked what was published before");
                continue;
            }
            Held::Yes => match publish_batch(&producer, store.as_ref(), cfg.outbox_send_timeout).await? {
                0 => (idle, true),
                _ => continue,
            },
        };
        tokio::select! {
            // Stopping, it gives the lease up: a standby takes over at its next try.
            _ = shutdown.changed() => return Ok(store.lease_release(RELAY_LEASE, &lease.holder).await?),
            _ = outbox_written.notified(), if woken_by_commits => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends the oldest pending batch, waits for it, marks it; how many messages it sent.
async fn publish_batch(
    producer: &FutureProducer,
    store: &dyn facepay_ledger::LedgerStore,
    within: Duration,
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
    acknowledged(acks, within).await?;
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
