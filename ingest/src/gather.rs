//! Matcher scale-out: the gather. A gallery too large for one process is split by payer over
//! N shards (`FACEPAY_MATCHER_SHARD=i/N`); each shard searches its part of the gallery for
//! every capture and publishes a [`Partial`] answer, and the gather merges the N partials of a
//! capture and applies the [`MatchPolicy`] to the union, which decides exactly as one search of
//! the whole gallery would (`matcher/tests/matcher/shards.rs`).
//!
//! Everything else the matcher makes of a device's events (its commands, answers and
//! rejections) comes from shard 0, the lead, on the same topic and partition as the partials
//! (keyed by device), and passes through here. A payment gets the identity its capture's
//! partials decide. Where they are not all in yet, the payment waits, and so does every later
//! message of its device, so that a device's reversal never overtakes its payment. Past
//! [`MATCH_GATHER_WAIT_MS`] the capture is given up as `shards_incomplete`: its payment is
//! declined as unresolved (the device captures again), never paid on a partial view.
//!
//! This module is the gather's state, pure and synchronous; `kafka::run_gather_stage` feeds it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use facepay_domain::limits::{MATCH_GATHER_HELD_MAX, MATCH_GATHER_PENDING_MAX, MATCH_GATHER_WAIT_MS};
use facepay_domain::{DeviceRef, FaceCode};
use facepay_ledger::Identity;
use facepay_matcher::policy::Partial;
use facepay_matcher::MatchPolicy;
use serde::{Deserialize, Serialize};

use crate::captures::CaptureMemory;
use crate::faces::Shard;
use crate::wire::StageMessage;

/// One message on the match-partials topic, keyed like the device event it came of.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum GatherMessage {
    /// One shard's answer for one capture. Scores and payer ids; never an embedding.
    Partial(ShardPartial),
    /// What the lead shard made of a device event, to pass on to the ledger.
    Routed(Box<StageMessage>),
}

/// A shard's partial answer for the capture `face_code`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardPartial {
    pub face_code: FaceCode,
    /// This shard's index, `0..shards`.
    pub shard: u32,
    /// How many shards split the gallery: the gather waits for this many partials.
    pub shards: u32,
    pub partial: Partial,
}

/// Where a message sits on the topic, so that offsets are not committed past what the gather
/// still holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// The rule of a capture whose shards did not all answer in time.
pub const SHARDS_INCOMPLETE: &str = "shards_incomplete";

/// A capture whose partials are still coming in.
struct Pending {
    shards: u32,
    parts: BTreeMap<u32, Partial>,
    since: Instant,
    at: Position,
}

/// A message held behind a payment that waits for its capture's partials.
struct Held {
    msg: StageMessage,
    at: Position,
}

/// The gather's state: captures awaiting partials, identities decided, messages held.
pub struct Gather {
    policy: MatchPolicy,
    wait: Duration,
    pending: HashMap<FaceCode, Pending>,
    /// Pending captures, oldest first (some may be decided already: skipped when met).
    pending_order: VecDeque<FaceCode>,
    /// What each decided capture resolved to, for its payment.
    identities: CaptureMemory,
    /// Decided since [`Gather::take_identified`], for the caller to keep in the store.
    identified: Vec<(FaceCode, Identity)>,
    /// Per device, its messages held in arrival order; the first is a payment that waits.
    held: HashMap<DeviceRef, VecDeque<Held>>,
    held_count: usize,
}

impl Gather {
    pub fn new(policy: MatchPolicy) -> Self {
        Self {
            policy,
            wait: Duration::from_millis(MATCH_GATHER_WAIT_MS),
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            identities: CaptureMemory::default(),
            identified: Vec::new(),
            held: HashMap::new(),
            held_count: 0,
        }
    }

    /// Waits `wait` for partials instead of [`MATCH_GATHER_WAIT_MS`] (tests).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Remembers captures decided before a restart (oldest first).
    pub fn restore_captures(&mut self, captures: impl IntoIterator<Item = (FaceCode, Identity)>) {
        captures.into_iter().for_each(|(face_code, identity)| self.identities.restore(face_code, identity));
    }

    /// Takes one message that arrived `now` from `at`; returns what may go to the ledger now,
    /// in order.
    pub fn offer(&mut self, msg: GatherMessage, at: Position, now: Instant) -> Vec<StageMessage> {
        match msg {
            GatherMessage::Partial(p) => self.partial(p, at, now),
            GatherMessage::Routed(msg) => self.routed(*msg, at),
        }
    }

    /// Gives up the captures that waited past the wait; returns what that releases.
    pub fn expire(&mut self, now: Instant) -> Vec<StageMessage> {
        let mut out = Vec::new();
        while let Some(face_code) = self.pending_order.front().cloned() {
            match self.pending.get(&face_code) {
                Some(p) if now.duration_since(p.since) < self.wait => break,
                Some(_) => out.extend(self.give_up(&face_code)),
                None => {}
            }
            self.pending_order.pop_front();
        }
        out
    }

    /// When [`Self::expire`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = self.pending_order.iter().find_map(|f| self.pending.get(f))?;
        Some(oldest.since + self.wait)
    }

    /// Per partition, the first offset the gather still needs (a pending capture's first
    /// partial, a held message): offsets are committed only below it, so a restart reads
    /// them again.
    pub fn pinned(&self) -> HashMap<i32, i64> {
        let mut pinned: HashMap<i32, i64> = HashMap::new();
        let positions = self.pending.values().map(|p| p.at).chain(self.held.values().flatten().map(|h| h.at));
        for at in positions {
            let slot = pinned.entry(at.partition).or_insert(at.offset);
            *slot = (*slot).min(at.offset);
        }
        pinned
    }

    /// Forgets what came from partitions other than `assigned` (they moved to another
    /// process, which reads them again from below what this one held): no
    /// payment is decided twice, nor given up here while another gather waits for it.
    pub fn retain_partitions(&mut self, assigned: &std::collections::BTreeSet<i32>) {
        self.pending.retain(|_, p| assigned.contains(&p.at.partition));
        for queue in self.held.values_mut() {
            queue.retain(|h| assigned.contains(&h.at.partition));
        }
        self.held.retain(|_, q| !q.is_empty());
        self.held_count = self.held.values().map(VecDeque::len).sum();
    }

    /// The captures decided since the last call, in order (to be kept in the store).
    pub fn take_identified(&mut self) -> Vec<(FaceCode, Identity)> {
        std::mem::take(&mut self.identified)
    }

    /// How many messages are held.
    pub fn held(&self) -> usize {
        self.held_count
    }

    fn partial(&mut self, p: ShardPartial, at: Position, now: Instant) -> Vec<StageMessage> {
        if self.identities.contains(&p.face_code) || p.shard >= p.shards {
            return Vec::new(); // A repeat after the decision, or a shard out of range.
        }
        if !self.pending.contains_key(&p.face_code) {
            if self.pending.len() >= MATCH_GATHER_PENDING_MAX {
                return [self.give_up_oldest(), self.partial(p, at, now)].concat();
            }
            self.pending_order.push_back(p.face_code.clone());
        }
        let pending = self.pending.entry(p.face_code.clone()).or_insert_with(|| Pending {
            shards: p.shards,
            parts: BTreeMap::new(),
            since: now,
            at,
        });
        if pending.shards != p.shards {
            tracing::warn!(face_code = %p.face_code, "partials disagree on the shard count; the capture waits");
            return Vec::new();
        }
        pending.parts.insert(p.shard, p.partial);
        if pending.parts.len() < pending.shards as usize {
            return Vec::new();
        }
        let Some(done) = self.pending.remove(&p.face_code) else { return Vec::new() };
        let identity = match Partial::merge(done.parts.into_values()) {
            Some(merged) => identity(self.policy.decide_merged(merged)),
            None => Identity::Unresolved { rule: SHARDS_INCOMPLETE.to_string() },
        };
        self.decided(p.face_code, identity)
    }

    fn routed(&mut self, msg: StageMessage, at: Position) -> Vec<StageMessage> {
        let device = match &msg {
            StageMessage::Command(c) => c.device.clone(),
            StageMessage::Answer(o) => o.device.clone(),
            StageMessage::Rejected(_) => None,
        };
        let Some(device) = device else { return vec![msg] };
        let queued = self.held.get(&device).is_some_and(|q| !q.is_empty());
        if !queued && !self.waits(&msg) {
            return vec![self.resolved(msg)];
        }
        if self.held_count >= MATCH_GATHER_HELD_MAX {
            let mut out = self.give_up_oldest();
            out.extend(self.routed(msg, at));
            return out;
        }
        self.held.entry(device).or_default().push_back(Held { msg, at });
        self.held_count += 1;
        Vec::new()
    }

    /// Whether `msg` is authorised by a capture (a payment, a member card, Pay Score) whose
    /// partials are not all in.
    fn waits(&self, msg: &StageMessage) -> bool {
        match msg {
            StageMessage::Command(c) => {
                c.kind.capture().is_some_and(|(face_code, _)| self.pending.contains_key(face_code))
            }
            _ => false,
        }
    }

    /// `msg` with the identity of the capture that authorises it filled in from the capture's
    /// decision (the ledger spends the capture: a second use is refused there).
    fn resolved(&self, mut msg: StageMessage) -> StageMessage {
        if let StageMessage::Command(c) = &mut msg {
            if let Some((face_code, identity)) = c.kind.capture_mut() {
                *identity = self.identities.identity_of(face_code);
            }
        }
        msg
    }

    fn decided(&mut self, face_code: FaceCode, identity: Identity) -> Vec<StageMessage> {
        self.identified.push((face_code.clone(), identity.clone()));
        self.identities.remember(face_code, identity, None);
        self.release()
    }

    /// Sends every held queue's messages up to its next payment that still waits.
    fn release(&mut self) -> Vec<StageMessage> {
        let mut out = Vec::new();
        let devices: Vec<DeviceRef> = self.held.keys().cloned().collect();
        for device in devices {
            let Some(mut queue) = self.held.remove(&device) else { continue };
            while queue.front().is_some_and(|h| !self.waits(&h.msg)) {
                let Some(h) = queue.pop_front() else { break };
                self.held_count -= 1;
                out.push(self.resolved(h.msg));
            }
            if !queue.is_empty() {
                self.held.insert(device, queue);
            }
        }
        out
    }

    fn give_up(&mut self, face_code: &FaceCode) -> Vec<StageMessage> {
        let Some(p) = self.pending.remove(face_code) else { return Vec::new() };
        tracing::warn!(%face_code, got = p.parts.len(), shards = p.shards, "not every shard answered in time");
        self.decided(face_code.clone(), Identity::Unresolved { rule: SHARDS_INCOMPLETE.to_string() })
    }

    fn give_up_oldest(&mut self) -> Vec<StageMessage> {
        while let Some(face_code) = self.pending_order.pop_front() {
            if self.pending.contains_key(&face_code) {
                return self.give_up(&face_code);
            }
        }
        Vec::new()
    }
}

/// The ledger's identity of a match decision.
fn identity(id: facepay_matcher::Identification) -> Identity {
    let rule = id.rule.as_str().to_string();
    match id.payer_id {
        Some(payer_id) => Identity::Resolved { payer_id, rule },
        None => Identity::Unresolved { rule },
    }
}

/// Which shard of how many this process is, for a shard's partial.
pub fn partial_of(shard: Shard, face_code: FaceCode, partial: Partial) -> GatherMessage {
    GatherMessage::Partial(ShardPartial { face_code, shard: shard.index, shards: shard.count, partial })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captures::UNKNOWN_CAPTURE;
    use facepay_domain::{DeviceId, MerchantId, Money, OutTradeNo, PayerId, StoreId};
    use facepay_ledger::{Command, CommandKind, Lifecycle};
    use facepay_matcher::policy::{Candidate, CaptureFacts};

    const CODE: &str = "134567890123456789";

    fn device(id: &str) -> DeviceRef {
        DeviceRef {
            merchant_id: MerchantId::parse("1900000109").unwrap(),
            store_id: StoreId::parse("S1").unwrap(),
            device_id: DeviceId::parse(id).unwrap(),
        }
    }

    fn partial(shard: u32, best: &[(&str, f32)]) -> GatherMessage {
        let found =
            best.iter().map(|&(p, score)| Candidate { payer_id: PayerId::parse(p).unwrap(), score, member: false });
        GatherMessage::Partial(ShardPartial {
            face_code: FaceCode::parse(CODE).unwrap(),
            shard,
            shards: 2,
            partial: Partial {
                facts: CaptureFacts { liveness: 0.99, phone_given: false },
                gallery_len: 100,
                candidates: found.collect(),
            },
        })
    }

    fn command(n: u128, dev: &str, kind: CommandKind) -> GatherMessage {
        GatherMessage::Routed(Box::new(StageMessage::Command(Command::new(
            uuid::Uuid::from_u128(n),
            chrono::Utc::now(),
            Some(device(dev)),
            kind,
        ))))
    }

    fn pay(n: u128, dev: &str) -> GatherMessage {
        command(
            n,
            dev,
            CommandKind::Pay {
                device: device(dev),
                out_trade_no: OutTradeNo::parse(format!("T{n}")).unwrap(),
                amount: Money::from_fen(100).unwrap(),
                face_code: FaceCode::parse(CODE).unwrap(),
                identity: Identity::Unresolved { rule: "awaiting_shards".into() },
            },
        )
    }

    fn reverse(n: u128, dev: &str) -> GatherMessage {
        let out_trade_no = OutTradeNo::parse(format!("T{}", n - 1)).unwrap();
        let merchant_id = device(dev).merchant_id;
        command(n, dev, CommandKind::Lifecycle(Lifecycle::Reverse { merchant_id, out_trade_no }))
    }

    fn at(offset: i64) -> Position {
        Position { partition: 0, offset }
    }

    /// The event ids of `out`, and the identity of each payment among them.
    fn sent(out: &[StageMessage]) -> Vec<(u128, Option<Identity>)> {
        out.iter()
            .map(|m| match m {
                StageMessage::Command(c) => {
                    let identity = match &c.kind {
                        CommandKind::Pay { identity, .. } => Some(identity.clone()),
                        _ => None,
                    };
                    (c.event_id.as_u128(), identity)
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn resolved(payer: &str, rule: &str) -> Option<Identity> {
        Some(Identity::Resolved { payer_id: PayerId::parse(payer).unwrap(), rule: rule.into() })
    }

    fn unresolved(rule: &str) -> Option<Identity> {
        Some(Identity::Unresolved { rule: rule.into() })
    }

    #[test]
    fn given_one_partial_when_the_payment_comes_then_it_and_its_devices_later_messages_wait_for_the_other() {
        let mut g = Gather::new(MatchPolicy::default());
        let now = Instant::now();
        assert!(g.offer(partial(0, &[("alice", 0.9)]), at(0), now).is_empty());
        assert!(g.offer(pay(1, "D1"), at(1), now).is_empty(), "the payment waits for shard 1");
        assert!(g.offer(reverse(2, "D1"), at(2), now).is_empty(), "its device's reversal waits behind it");
        assert_eq!(sent(&g.offer(reverse(3, "D2"), at(3), now)), vec![(3, None)], "other devices go on");
        assert_eq!((g.held(), g.pinned().get(&0)), (2, Some(&0)), "offsets stay below the capture");
        let out = g.offer(partial(1, &[("bob", 0.3)]), at(4), now);
        assert_eq!(sent(&out), vec![(1, resolved("alice", "global_hit")), (2, None)]);
        assert_eq!((g.held(), g.pinned().len()), (0, 0));
        assert_eq!(g.take_identified().len(), 1);
    }

    #[test]
    fn given_a_look_alike_on_another_shard_when_merged_then_the_payer_must_confirm_the_phone() {
        let mut g = Gather::new(MatchPolicy::default());
        let now = Instant::now();
        g.offer(partial(1, &[("bob", 0.86)]), at(0), now);
        g.offer(partial(0, &[("alice", 0.9)]), at(1), now);
        let out = g.offer(pay(2, "D1"), at(2), now);
        assert_eq!(sent(&out), vec![(2, unresolved("needs_phone_confirmation"))]);
    }

    #[test]
    fn given_a_shard_that_never_answers_when_the_wait_passes_then_the_payment_is_declined_unresolved() {
        let wait = Duration::from_millis(50);
        let mut g = Gather::new(MatchPolicy::default()).with_wait(wait);
        let now = Instant::now();
        g.offer(partial(0, &[("alice", 0.9)]), at(0), now);
        g.offer(partial(0, &[("alice", 0.9)]), at(1), now);
        assert!(g.offer(pay(2, "D1"), at(2), now).is_empty(), "a repeated partial of one shard is not two");
        assert!(g.expire(now + wait / 2).is_empty());
        assert_eq!(g.next_deadline(), Some(now + wait));
        let out = g.expire(now + wait);
        assert_eq!(sent(&out), vec![(2, unresolved(SHARDS_INCOMPLETE))]);
        assert!(g.offer(partial(1, &[("alice", 0.9)]), at(3), now + wait).is_empty(), "too late: ignored");
        assert_eq!(g.next_deadline(), None);
    }

    #[test]
    fn given_a_partition_moved_away_when_retained_then_its_captures_and_held_messages_are_forgotten() {
        let mut g = Gather::new(MatchPolicy::default());
        let now = Instant::now();
        g.offer(partial(0, &[("alice", 0.9)]), at(0), now);
        g.offer(pay(1, "D1"), at(1), now);
        g.retain_partitions(&[0].into());
        assert_eq!(g.held(), 1);
        g.retain_partitions(&[1].into());
        assert_eq!((g.held(), g.pinned().len(), g.next_deadline()), (0, 0, None));
        assert!(g.expire(now + Duration::from_secs(60)).is_empty(), "nothing given up for another process");
    }

    #[test]
    fn given_no_partial_when_a_payment_comes_then_its_capture_is_unknown_at_once() {
        let mut g = Gather::new(MatchPolicy::default());
        let out = g.offer(pay(1, "D1"), at(0), Instant::now());
        assert_eq!(sent(&out), vec![(1, unresolved(UNKNOWN_CAPTURE))]);
    }

    #[test]
    fn given_captures_decided_before_a_restart_when_restored_then_their_payments_pay() {
        let mut g = Gather::new(MatchPolicy::default());
        let code = FaceCode::parse(CODE).unwrap();
        let alice = Identity::Resolved { payer_id: PayerId::parse("alice").unwrap(), rule: "member_hit".into() };
        g.restore_captures([(code, alice)]);
        assert!(g.offer(partial(0, &[("bob", 0.9)]), at(0), Instant::now()).is_empty(), "a repeat is ignored");
        let out = g.offer(pay(1, "D1"), at(1), Instant::now());
        assert_eq!(sent(&out), vec![(1, resolved("alice", "member_hit"))]);
    }
}
