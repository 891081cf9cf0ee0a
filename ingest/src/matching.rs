//! Stage 2: the matcher. Face captures are identified against the gallery and remembered;
//! whatever a capture authorises (a payment, a member card, a Pay Score authorisation or
//! order) picks up its identity. The ledger spends a capture on its first use and refuses
//! any other (`CAPTURE_USED`); the gallery's member lists follow a card only on its
//! capture's first use here, so a spent face code never makes anyone a member. Everything
//! else becomes a ledger command.

use facepay_domain::limits::MATCH_MEMORY_CAPTURES_MAX;
use facepay_domain::{Envelope, EventBody, FaceCode, OutcomeBody};
use facepay_ledger::{Command, CommandKind, Identity, Lifecycle};
use facepay_matcher::{Gallery, MatchPolicy};

use crate::captures::CaptureMemory;
use crate::faces::{FaceStore, FaceStoreError, FeedRead, Shard};

/// The identity a payment carries from a shard to the gather, which replaces it.
pub const AWAITING_SHARDS: &str = "awaiting_shards";

/// The matcher stage's state: the gallery and the recent captures awaiting their payment.
pub struct MatchStage {
    gallery: Gallery,
    policy: MatchPolicy,
    /// What each recent capture resolved to, for its payment.
    captures: CaptureMemory,
    /// Captures identified since [`MatchStage::take_identified`] last ran, for the caller to
    /// keep in the store so that a restart does not forget them; `None` unless asked for
    /// ([`MatchStage::keeping_identified`]). Bounded like `captures`.
    identified: Option<Vec<(FaceCode, Identity)>>,
    /// The payers whose faces this process holds; enrolments of others are left to their
    /// shard's process.
    shard: Shard,
    /// The last change of the gallery feed applied to `gallery`, for a stage that follows it
    /// ([`Self::following`]).
    feed_position: Option<i64>,
}

/// What the stage made of one event.
#[derive(Debug)]
pub enum Routed {
    /// A command for the ledger.
    Command(Command),
    /// Handled here (captures, enrolment): the answer goes straight out.
    Done(OutcomeBody),
}

impl MatchStage {
    pub fn new(gallery: Gallery, policy: MatchPolicy) -> Self {
        Self {
            gallery,
            policy,
            captures: CaptureMemory::default(),
            identified: None,
            shard: Shard::ALL,
            feed_position: None,
        }
    }

    /// Follows the gallery feed from `position` (where the gallery it was made with is current
    /// to): see [`crate::faces::follow`].
    pub fn following(mut self, position: i64) -> Self {
        self.feed_position = Some(position);
        self
    }

    /// The gallery this stage identifies captures against.
    pub fn gallery(&self) -> &Gallery {
        &self.gallery
    }

    /// The last gallery change applied, if this stage follows the feed.
    pub fn feed_position(&self) -> Option<i64> {
        self.feed_position
    }

    /// Applies changed faces from the gallery feed (`None`: deleted), up to `position`.
    fn apply_faces(&mut self, faces: Vec<crate::faces::FaceChange>, position: i64) {
        for (payer, face) in faces {
            match face {
                Some((embedding, phone_last4)) => self.gallery.enroll(payer, &embedding, phone_last4),
                None => {
                    self.gallery.remove(&payer);
                }
            }
        }
        self.feed_position = Some(position);
    }

    /// Replaces the gallery with one reloaded from the store, current to `position`; the
    /// member lists go with it.
    fn replace_gallery(&mut self, gallery: Gallery, position: i64) {
        self.gallery = gallery;
        self.feed_position = Some(position);
    }

    /// Brings the gallery up to date with `faces`' gallery feed: every enrolment and deletion
    /// another process stored since this stage last looked (after a gap, the whole gallery
    /// reloaded). The matcher stage calls it before each batch, so a face enrolled through any
    /// process is known to every matcher once the enrolment's answer is out.
    pub async fn follow(&mut self, faces: &FaceStore) -> Result<(), FaceStoreError> {
        let Some(after) = self.feed_position else { return Ok(()) };
        match faces.changes_after(after).await? {
            FeedRead::Changes { to, faces: changed } => self.apply_faces(changed, to),
            FeedRead::Gap => {
                tracing::warn!(
                    after,
                    "the gallery feed was pruned past this matcher's position; reloading the gallery"
                );
                let (gallery, head) = faces.load_following().await?;
                self.replace_gallery(gallery, head);
            }
        }
        Ok(())
    }

    /// Collects the captures it identifies for [`Self::take_identified`] (a stage whose
    /// caller keeps them in the store).
    pub fn keeping_identified(mut self) -> Self {
        self.identified = Some(Vec::new());
        self
    }

    /// Serves only `shard` of the gallery.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// The part of the gallery this stage serves.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Whether the gallery is split over shards, so that the gather decides captures.
    fn sharded(&self) -> bool {
        self.shard.count > 1
    }

    /// This shard's partial answer for a capture taken at a device (for the gather); `None`
    /// for any other event, and unsharded (the stage decides captures itself).
    pub fn partial(&self, env: &Envelope) -> Option<crate::gather::GatherMessage> {
        let (EventBody::FaceCaptured(c), Some(d), true) = (&env.body, env.origin.device(), self.sharded()) else {
            return None;
        };
        let started = std::time::Instant::now();
        let partial = self.gallery.partial(&d.merchant_id, c, &self.policy);
        crate::metrics::METRICS.matched(started.elapsed());
        Some(crate::gather::partial_of(self.shard, c.face_code.clone(), partial))
    }

    /// Routes one event. Split over shards ([`Self::with_shard`] of more than one), a capture
    /// is only answered (its [`Self::partial`] goes to the gather) and a payment's identity is
    /// left to the gather.
    pub fn route(&mut self, env: Envelope) -> Routed {
        let applied = |kind: &str| Routed::Done(OutcomeBody::Applied { kind: kind.to_string() });
        let kind = env.body.kind();
        let device = env.origin.device().cloned();
        let command = |k: CommandKind| {
            Routed::Command(Command {
                event_id: env.event_id,
                accepted_at: env.accepted_at,
                claimed_at: Some(env.occurred_at),
                device: device.clone(),
                kind: k,
                request_id: None,
            })
        };
        match env.body {
            // Split over shards, a capture is decided by the gather, from every shard's partial.
            EventBody::FaceCaptured(_) if self.sharded() => applied(kind),
            EventBody::FaceCaptured(c) => {
                let Some(d) = env.origin.device() else { return applied(kind) };
                let started = std::time::Instant::now();
                let identified = self.gallery.identify(&d.merchant_id, &c, &self.policy);
                crate::metrics::METRICS.matched(started.elapsed());
                let identity = match identified {
                    Ok(id) => match id.payer_id {
                        Some(payer_id) => Identity::Resolved { payer_id, rule: id.rule.as_str().to_string() },
                        None => Identity::Unresolved { rule: id.rule.as_str().to_string() },
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "matcher failed; the capture stays unresolved");
                        Identity::Unresolved { rule: "matcher_error".to_string() }
                    }
                };
                if let Some(kept) = self.identified.as_mut().filter(|k| k.len() < MATCH_MEMORY_CAPTURES_MAX) {
                    kept.push((c.face_code.clone(), identity.clone()));
                }
                self.captures.remember(c.face_code, identity, Some(d.device_id.clone()));
                applied(kind)
            }
            EventBody::FaceEnrolled(e) => {
                if self.shard.owns(&e.payer_id) {
                    self.gallery.enroll(e.payer_id, &e.embedding, e.phone_last4);
                }
                applied(kind)
            }
            EventBody::FaceDeleted(e) => {
                self.gallery.remove(&e.payer_id);
                applied(kind)
            }
            EventBody::PaymentRequested(p) => {
                let (identity, _) = self.spend(&p.face_code, device.as_ref());
                match device.clone() {
                    Some(d) => command(CommandKind::Pay {
                        device: d,
                        out_trade_no: p.out_trade_no,
                        amount: p.amount,
                        face_code: p.face_code,
                        identity,
                    }),
                    None => applied(kind),
                }
            }
            body => self.command_for(&env.origin, body, command),
        }
    }

    /// What the capture `face_code` resolved to, for a use by `device`, and whether this is
    /// its first use here. Split over shards, the gather decides it instead (and nothing is a
    /// first use here).
    fn spend(&mut self, face_code: &FaceCode, device: Option<&facepay_domain::DeviceRef>) -> (Identity, bool) {
        match self.sharded() {
            true => (Identity::Unresolved { rule: AWAITING_SHARDS.to_string() }, false),
            false => self.captures.spend(face_code, device.map(|d| &d.device_id)),
        }
    }

    fn command_for(
        &mut self,
        origin: &facepay_domain::Origin,
        body: EventBody,
        command: impl Fn(CommandKind) -> Routed,
    ) -> Routed {
        let merchant = origin.merchant_id().cloned();
        if let (Some(merchant_id), Some((k, first_use))) = (&merchant, self.face_authorised(origin, &body)) {
            if first_use {
                self.follow_members(merchant_id, &k);
            }
            return command(k);
        }
        let k = match (body, merchant) {
            (EventBody::PaymentQuery(q), Some(merchant_id)) => {
                CommandKind::Query { merchant_id, out_trade_no: q.out_trade_no }
            }
            (EventBody::MerchantLimitChanged(l), Some(merchant_id)) => {
                CommandKind::SetMerchantLimit { merchant_id, single_limit: l.single_limit }
            }
            (EventBody::MerchantFeeRateChanged(f), Some(merchant_id)) => {
                CommandKind::Lifecycle(Lifecycle::SetFeeRate { merchant_id, fee_rate_ppm: f.fee_rate_ppm })
            }
            (EventBody::ReverseRequested(r), Some(merchant_id)) => {
                CommandKind::Lifecycle(Lifecycle::Reverse { merchant_id, out_trade_no: r.out_trade_no })
            }
            (EventBody::RefundRequested(r), Some(merchant_id)) => CommandKind::Lifecycle(Lifecycle::Refund {
                merchant_id,
                out_trade_no: r.out_trade_no,
                out_refund_no: r.out_refund_no,
                amount: r.amount,
            }),
            (EventBody::PayScoreOrderCompleted(h), Some(merchant_id)) => {
                CommandKind::Lifecycle(Lifecycle::HoldComplete {
                    merchant_id,
                    out_order_no: h.out_order_no,
                    total: h.total_amount,
                })
            }
            (EventBody::PayScoreOrderCancelled(h), Some(merchant_id)) => {
                CommandKind::Lifecycle(Lifecycle::HoldCancel { merchant_id, out_order_no: h.out_order_no })
            }
            (EventBody::AccountFunded(f), _) => CommandKind::Fund { payer_id: f.payer_id, amount: f.amount },
            (EventBody::AccountFrozen(f), _) => CommandKind::Freeze { payer_id: f.payer_id },
            (EventBody::AccountUnfrozen(f), _) => CommandKind::Unfreeze { payer_id: f.payer_id },
            (body, _) => CommandKind::NotYetSupported { kind: body.kind().to_string() },
        };
        command(k)
    }

    /// The command of an event a capture authorises (member cards, Pay Score), with the
    /// capture's identity, and whether this is the capture's first use; `None` for any
    /// other event.
    fn face_authorised(&mut self, origin: &facepay_domain::Origin, body: &EventBody) -> Option<(CommandKind, bool)> {
        let merchant_id = origin.merchant_id()?.clone();
        let face_code = match body {
            EventBody::MemberCardOpened(m) => &m.face_code,
            EventBody::MemberCardClosed(m) => &m.face_code,
            EventBody::PayScoreAuthorised(a) => &a.face_code,
            EventBody::PayScoreOrderCreated(h) => &h.face_code,
            _ => return None,
        };
        let (face_code, (identity, first_use)) = (face_code.clone(), self.spend(face_code, origin.device()));
        let k = match body {
            EventBody::MemberCardOpened(m) => CommandKind::OpenMemberCard {
                merchant_id,
                face_code,
                identity,
                card_code: m.card_code.clone(),
                channel: m.channel,
            },
            EventBody::MemberCardClosed(m) => {
                CommandKind::CloseMemberCard { merchant_id, face_code, identity, card_code: m.card_code.clone() }
            }
            EventBody::PayScoreAuthorised(_) => {
                CommandKind::Lifecycle(Lifecycle::PayScoreAuthorise { merchant_id, face_code, identity })
            }
            EventBody::PayScoreOrderCreated(h) => CommandKind::Lifecycle(Lifecycle::HoldCreate {
                merchant_id,
                out_order_no: h.out_order_no.clone(),
                face_code,
                identity,
                amount: h.hold_amount,
            }),
            _ => return None,
        };
        Some((k, first_use))
    }

    /// Keeps the gallery's member lists with the cards opened and closed by a resolved face
    /// (split over shards the identity is the gather's: the owning shard learns the card from
    /// the store at its next start).
    fn follow_members(&mut self, merchant_id: &facepay_domain::MerchantId, k: &CommandKind) {
        match k {
            CommandKind::OpenMemberCard { identity: Identity::Resolved { payer_id, .. }, .. } => {
                self.gallery.add_member(merchant_id, payer_id)
            }
            CommandKind::CloseMemberCard { identity: Identity::Resolved { payer_id, .. }, .. } => {
                self.gallery.remove_member(merchant_id, payer_id)
            }
            _ => {}
        }
    }

    /// The captures identified since the last call, in order (to be kept in the store);
    /// always empty unless [`Self::keeping_identified`].
    pub fn take_identified(&mut self) -> Vec<(FaceCode, Identity)> {
        self.identified.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Sets the gallery's member lists to `members` (the ledger's open cards of this shard's
    /// payers, read from the store).
    pub fn set_members(&mut self, members: Vec<(facepay_domain::MerchantId, facepay_domain::PayerId)>) {
        self.gallery.set_members(members);
    }

    /// Remembers captures identified before a restart (oldest first): their payments still
    /// find them; they open no card in the gallery (their first use may be behind us).
    pub fn restore_captures(&mut self, captures: impl IntoIterator<Item = (FaceCode, Identity)>) {
        captures.into_iter().for_each(|(face_code, identity)| self.captures.restore(face_code, identity));
    }
}
