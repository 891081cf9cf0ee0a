//! Stage 2: the matcher. Face captures are identified against the gallery and remembered;
//! a payment picks up its capture's identity; everything else becomes a ledger command.

use std::collections::{HashMap, VecDeque};

use facepay_domain::limits::MATCH_MEMORY_CAPTURES_MAX;
use facepay_domain::{Envelope, EventBody, FaceCode, OutcomeBody};
use facepay_ledger::{Command, CommandKind, Identity, Lifecycle};
use facepay_matcher::{Gallery, MatchPolicy};

use crate::faces::Shard;

/// The identity a payment carries from a shard to the gather, which replaces it.
pub const AWAITING_SHARDS: &str = "awaiting_shards";
/// The rule of a payment whose capture the matcher never saw (or has forgotten).
pub const UNKNOWN_CAPTURE: &str = "unknown_capture";

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
        Self { gallery, policy, captures: CaptureMemory::default(), identified: None, shard: Shard::ALL }
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
                occurred_at: env.occurred_at,
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
                self.captures.remember(c.face_code, identity);
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
                let identity = match self.sharded() {
                    true => Identity::Unresolved { rule: AWAITING_SHARDS.to_string() },
                    false => self.captures.identity_of(&p.face_code),
                };
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

    fn command_for(
        &mut self,
        origin: &facepay_domain::Origin,
        body: EventBody,
        command: impl Fn(CommandKind) -> Routed,
    ) -> Routed {
        let merchant = origin.merchant_id().cloned();
        let k = match (body, merchant) {
            (EventBody::PaymentQuery(q), Some(merchant_id)) => {
                CommandKind::Query { merchant_id, out_trade_no: q.out_trade_no }
            }
            (EventBody::MemberCardOpened(m), Some(merchant_id)) => {
                self.gallery.add_member(&merchant_id, &m.payer_id);
                CommandKind::OpenMemberCard {
                    merchant_id,
                    payer_id: m.payer_id,
                    card_code: m.card_code,
                    channel: m.channel,
                }
            }
            (EventBody::MemberCardClosed(m), Some(merchant_id)) => {
                self.gallery.remove_member(&merchant_id, &m.payer_id);
                CommandKind::CloseMemberCard { merchant_id, payer_id: m.payer_id, card_code: m.card_code }
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
            (EventBody::PayScoreOrderCreated(h), Some(merchant_id)) => CommandKind::Lifecycle(Lifecycle::HoldCreate {
                merchant_id,
                out_order_no: h.out_order_no,
                payer_id: h.payer_id,
                amount: h.hold_amount,
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

    /// The captures identified since the last call, in order (to be kept in the store);
    /// always empty unless [`Self::keeping_identified`].
    pub fn take_identified(&mut self) -> Vec<(FaceCode, Identity)> {
        self.identified.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Remembers captures identified before a restart (oldest first), as if just routed.
    pub fn restore_captures(&mut self, captures: impl IntoIterator<Item = (FaceCode, Identity)>) {
        captures.into_iter().for_each(|(face_code, identity)| self.captures.remember(face_code, identity));
    }
}

/// Face code → what its capture resolved to. Bounded by [`MATCH_MEMORY_CAPTURES_MAX`]:
/// oldest forgotten first, since a payment follows its capture within seconds on the same
/// device.
#[derive(Default)]
pub(crate) struct CaptureMemory {
    identities: HashMap<FaceCode, Identity>,
    order: VecDeque<FaceCode>,
}

impl CaptureMemory {
    /// What the capture `face_code` resolved to; [`UNKNOWN_CAPTURE`] if it is not (or no
    /// longer) remembered.
    pub(crate) fn identity_of(&self, face_code: &FaceCode) -> Identity {
        self.identities.get(face_code).cloned().unwrap_or(Identity::Unresolved { rule: UNKNOWN_CAPTURE.to_string() })
    }

    pub(crate) fn contains(&self, face_code: &FaceCode) -> bool {
        self.identities.contains_key(face_code)
    }

    pub(crate) fn remember(&mut self, face_code: FaceCode, identity: Identity) {
        if self.identities.insert(face_code.clone(), identity).is_none() {
            self.order.push_back(face_code);
        }
        while self.order.len() > MATCH_MEMORY_CAPTURES_MAX {
            if let Some(old) = self.order.pop_front() {
                self.identities.remove(&old);
            }
        }
    }
}
