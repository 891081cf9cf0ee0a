//! Partitions owned through the database, not the broker's group coordinator.
//!
//! A stage's processes divide a topic's partitions among themselves with leases in the store
//! (the `leases` table, on the database's clock), and each consumer is given its partitions by
//! hand (`assign`): failover does not depend on the broker getting group membership right
//! (tansu 0.6 never gives a killed member's partitions to the survivors, and wedges when a
//! static member comes back). Every [`OWNERSHIP_TICK_MS`] each process renews its membership
//! (`member:<group>:<holder>`), reads who else is alive, and holds the partitions that fall to
//! it: partition `p` belongs to the `p mod n`-th of the `n` live members in order of their
//! names. It gives up those that fall to another (so a process that starts takes its share at
//! once) and takes those that fall to it once their lease is free: a killed process's
//! partitions move when its leases lapse, within [`FAILOVER_MS_MAX`].
//!
//! A stale holder cannot do harm: the ledger stage's commits are fenced by the offsets stored
//! with them, and the matcher is at-least-once (the ledger recognises what it sends twice).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};

#[cfg(doc)]
use facepay_domain::limits::{FAILOVER_MS_MAX, KAFKA_GAP_REWIND_MAX};
use facepay_domain::limits::{OWNERSHIP_TICK_MS, PARTITION_LEASE_MS};
use facepay_ledger::LedgerStore;

use super::*;

/// Where a stage's partitions resume when it takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The ledger stage: its offsets are stored by its own commits, fenced; read them.
    Committed,
    /// An at-least-once stage (the matcher): this process keeps the next offset of what it
    /// processed in the same table, moved forward at each tick and when it lets a partition go.
    Processed,
}

/// How the partitions a process holds moved at a tick.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// It holds a partition it did not (its first share, or one taken over).
    pub grew: bool,
    /// It no longer holds a partition it did: what comes from there is another's now.
    pub shrank: bool,
}

impl Moved {
    /// Whether the assignment changed.
    pub fn changed(self) -> bool {
        self.grew || self.shrank
    }
}

/// This process's share of a stage's partitions of one topic.
pub struct OwnedPartitions {
    group: String,
    topic: String,
    holder: String,
    partitions: i32,
    resume: Resume,
    held: BTreeSet<i32>,
    /// The next offset after what this stage processed, per held partition ([`Resume::Processed`]).
    processed: HashMap<i32, i64>,
    /// The offset each held partition was assigned from: where the broker must resume it.
    assigned_from: HashMap<i32, i64>,
    next_tick: tokio::time::Instant,
}

impl OwnedPartitions {
    /// This process (`holder`, one name per process run) in `group`'s share of `topic`.
    pub fn new(cfg: &KafkaConfig, group: &str, topic: &str, holder: &str, resume: Resume) -> Self {
        Self {
            group: group.to_string(),
            topic: topic.to_string(),
            holder: holder.to_string(),
            partitions: cfg.partitions,
            resume,
            held: BTreeSet::new(),
            processed: HashMap::new(),
            assigned_from: HashMap::new(),
            next_tick: tokio::time::Instant::now(),
        }
    }

    /// The partitions this process holds.
    pub fn held(&self) -> &BTreeSet<i32> {
        &self.held
    }

    /// The offset each held partition was last assigned from.
    pub fn assigned_from(&self) -> &HashMap<i32, i64> {
        &self.assigned_from
    }

    /// Resolves when the next tick is due (a stage waits on it beside its consumer, so its
    /// leases are renewed while no record arrives).
    pub async fn tick_due(&self) {
        tokio::time::sleep_until(self.next_tick).await
    }

    /// Whether a tick is due (the next [`OwnedPartitions::maintain`] does its work).
    pub fn tick_is_due(&self) -> bool {
        tokio::time::Instant::now() >= self.next_tick
    }

    /// Notes that the stage processed `batch` (for [`Resume::Processed`]).
    pub fn processed(&mut self, batch: &[OwnedMessage]) {
        for m in batch {
            let next = self.processed.entry(m.partition()).or_insert(0);
            *next = (*next).max(m.offset() + 1);
        }
    }

    /// When a tick is due: keeps the processed offsets, renews this process's membership and
    /// partitions, gives up and takes what moved, and assigns `consumer` what it holds now
    /// (each partition from where it resumes). How what it holds moved. It runs on the
    /// stage's own loop, between two batches: in a steady state two writes (the offsets, in
    /// one statement; the membership and the partitions, renewed in one) and one read.
    pub async fn maintain<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        store: &dyn LedgerStore,
    ) -> Result<Moved, TransportError> {
        if !self.tick_is_due() {
            return Ok(Moved::default());
        }
        let began = std::time::Instant::now();
        self.next_tick = tokio::time::Instant::now() + Duration::from_millis(OWNERSHIP_TICK_MS);
        self.save_processed(store).await?;
        let before = self.held.clone();
        let mut renew = vec![self.member_lease()];
        renew.extend(before.iter().map(|p| self.partition_lease(*p)));
        let renewed = store.leases(&renew, &self.holder, PARTITION_LEASE_MS).await?;
        let lost: Vec<i32> =
            before.iter().copied().filter(|p| renewed.binary_search(&self.partition_lease(*p)).is_err()).collect();
        lost.iter().for_each(|p| _ = self.held.remove(p));
        let wanted = self.share(store).await?;
        for p in before.difference(&wanted) {
            store.lease_release(&self.partition_lease(*p), &self.holder).await?;
            self.held.remove(p);
            self.processed.remove(p);
        }
        let take: Vec<i32> = wanted.difference(&self.held).copied().collect();
        if !take.is_empty() {
            let names: Vec<String> = take.iter().map(|p| self.partition_lease(*p)).collect();
            let taken = store.leases(&names, &self.holder, PARTITION_LEASE_MS).await?;
            let got: Vec<i32> =
                take.into_iter().filter(|p| taken.binary_search(&self.partition_lease(*p)).is_ok()).collect();
            self.held.extend(got);
        }
        let moved = Moved { grew: !self.held.is_subset(&before), shrank: !before.is_subset(&self.held) };
        if moved.changed() {
            self.assign(consumer, store).await?;
        }
        crate::metrics::METRICS.step(crate::metrics::Step::OwnershipTick, began.elapsed());
        Ok(moved)
    }

    /// Gives up every partition and the membership (a clean shutdown: the others take over at
    /// their next tick instead of waiting for the leases to lapse).
    pub async fn leave(&mut self, store: &dyn LedgerStore) -> Result<(), TransportError> {
        self.save_processed(store).await?;
        for p in std::mem::take(&mut self.held) {
            store.lease_release(&self.partition_lease(p), &self.holder).await?;
        }
        store.lease_release(&self.member_lease(), &self.holder).await?;
        Ok(())
    }

    /// The partitions that fall to this process among the live members (itself included,
    /// its membership renewed just before).
    async fn share(&self, store: &dyn LedgerStore) -> Result<BTreeSet<i32>, TransportError> {
        let mut members: Vec<String> =
            store.leases_live(&self.member_prefix()).await?.into_iter().map(|(_, holder)| holder).collect();
        members.sort();
        members.dedup();
        let Some(me) = members.iter().position(|m| *m == self.holder) else { return Ok(BTreeSet::new()) };
        let n = members.len() as i32;
        Ok((0..self.partitions).filter(|p| p % n == me as i32).collect())
    }

    /// Assigns `consumer` the held partitions, each to resume from where its last holder got
    /// to, usually in the middle of a record batch: read from [`KAFKA_GAP_REWIND_MAX`] records
    /// before it ([`read_back_to`]). The stages pass over what lies below the resume offset
    /// ([`OwnedPartitions::assigned_from`]).
    async fn assign<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        store: &dyn LedgerStore,
    ) -> Result<(), TransportError> {
        let stored = store.offsets(&self.group, &self.topic).await?;
        self.processed.retain(|p, _| self.held.contains(p));
        // A partition this process processed is resumed where it got to; one it takes is
        // resumed where its last holder got to (whichever is further, if both).
        let mut tpl = rdkafka::TopicPartitionList::new();
        self.assigned_from.clear();
        for p in &self.held {
            let from = self.processed.get(p).copied().max(stored.get(p).copied()).unwrap_or(0);
            self.assigned_from.insert(*p, from);
            tpl.add_partition_offset(&self.topic, *p, read_back_to(from))?;
        }
        consumer.assign(&tpl)?;
        let partitions: Vec<i32> = self.held.iter().copied().collect();
        tracing::info!(group = %self.group, ?partitions, "assigned partitions");
        Ok(())
    }

    /// Moves the stored next offsets of the processed partitions forward.
    async fn save_processed(&self, store: &dyn LedgerStore) -> Result<(), TransportError> {
        if self.resume == Resume::Committed || self.processed.is_empty() {
            return Ok(());
        }
        let next: Vec<(i32, i64)> = self.processed.iter().map(|(p, o)| (*p, *o)).collect();
        store.offsets_advance(&self.group, &self.topic, &next).await?;
        Ok(())
    }

    fn member_prefix(&self) -> String {
        format!("member:{}:", self.group)
    }

    fn member_lease(&self) -> String {
        format!("{}{}", self.member_prefix(), self.holder)
    }

    fn partition_lease(&self, p: i32) -> String {
        format!("part:{}:{}:{p}", self.group, self.topic)
    }
}
