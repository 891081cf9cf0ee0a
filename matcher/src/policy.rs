//! The match policy: the thresholds, the rules they decide, and the answer of a search.
//!
//! The thresholds are configuration. They depend on the device's face model and must be
//! calibrated on its real data; the defaults suit the synthetic model of [`crate::synthetic`]
//! and the ArcFace-family operating points quoted in the face-matching reference.

use facepay_domain::PayerId;
use serde::{Deserialize, Serialize};

/// The thresholds [`crate::Gallery::identify`] applies, in order: liveness, member search,
/// global search (narrowed by phone digits when the payer typed them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchPolicy {
    /// Captures scoring below this liveness are refused before any search: a photo or a
    /// mask must not even be compared, let alone pay.
    pub liveness_min: f32,
    /// Cosine a merchant-member candidate needs. Lower than the global threshold because
    /// the member gallery is small, and a false match's chance grows with gallery size.
    pub member_threshold: f32,
    /// Lead the best member needs over the second-best member, so that two look-alike
    /// members are never guessed between.
    pub member_margin_min: f32,
    /// Cosine a candidate of the global (or phone-narrowed) gallery needs.
    pub global_threshold: f32,
    /// Lead the best global candidate needs over the runner-up; a smaller lead asks for the
    /// phone digits ([`MatchRule::NeedsPhoneConfirmation`]), or, when they were given,
    /// refuses ([`MatchRule::Ambiguous`]).
    pub global_margin_min: f32,
    /// From this many enrolled payers on, a global search without phone digits is not run
    /// at all: the false-match chance grows as P_N ≈ N·P_1, so at this size the payer must
    /// narrow the gallery with their phone digits ([`MatchRule::NeedsPhoneConfirmation`]).
    pub phone_required_gallery_min: usize,
    /// From this many enrolled payers on, the batched global search takes its candidates from
    /// the binary-code index ([`crate::codes::CodeIndex`]: Hamming scan, exact rerank) instead
    /// of exact search, which no longer answers a till in time at that size. Every score is
    /// still exact; a genuine template the codes miss yields `no_match`, never another payer.
    /// The margin is against the best other candidate: a look-alike close enough to matter
    /// is close in the codes too, while a distant runner-up may be left out (the margin then
    /// reads larger than exact search's, and the decision is the same).
    /// With the defaults it is never reached (the phone digits are required first); it
    /// matters where the risk policy raises `phone_required_gallery_min`.
    pub approx_gallery_min: usize,
}

impl Default for MatchPolicy {
    fn default() -> Self {
        Self {
            liveness_min: 0.80,
            member_threshold: 0.50,
            member_margin_min: 0.08,
            global_threshold: 0.55,
            global_margin_min: 0.10,
            phone_required_gallery_min: 1_000_000,
            approx_gallery_min: 1_000_000,
        }
    }
}

/// A policy setting from the environment was malformed or out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct PolicyError {
    /// The environment variable.
    pub var: &'static str,
    pub reason: String,
}

impl MatchPolicy {
    /// The environment variables [`MatchPolicy::from_env`] reads, each overriding one
    /// default: liveness_min, member_threshold, member_margin_min, global_threshold,
    /// global_margin_min, phone_required_gallery_min, approx_gallery_min.
    pub const ENV_VARS: [&'static str; 7] = [
        "FACEPAY_MATCH_LIVENESS_MIN",
        "FACEPAY_MATCH_MEMBER_THRESHOLD",
        "FACEPAY_MATCH_MEMBER_MARGIN_MIN",
        "FACEPAY_MATCH_GLOBAL_THRESHOLD",
        "FACEPAY_MATCH_GLOBAL_MARGIN_MIN",
        "FACEPAY_MATCH_PHONE_REQUIRED_GALLERY_MIN",
        "FACEPAY_MATCH_APPROX_GALLERY_MIN",
    ];

    /// The defaults, overridden by whichever of [`Self::ENV_VARS`] are set (and non-empty).
    pub fn from_env() -> Result<Self, PolicyError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`Self::from_env`] over any lookup (for tests and config files).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, PolicyError> {
        let mut p = Self::default();
        let [liveness, member, member_margin, global, global_margin, phone_min, approx_min] = Self::ENV_VARS;
        let cosine = |var: &'static str, lo: f32, default: f32| -> Result<f32, PolicyError> {
            let Some(v) = get(var) else { return Ok(default) };
            let x: f32 = v.trim().parse().map_err(|_| PolicyError { var, reason: format!("not a number: {v:?}") })?;
            if !(lo..=1.0).contains(&x) {
                return Err(PolicyError { var, reason: format!("{x} is outside {lo}..=1") });
            }
            Ok(x)
        };
        p.liveness_min = cosine(liveness, 0.0, p.liveness_min)?;
        p.member_threshold = cosine(member, -1.0, p.member_threshold)?;
        p.member_margin_min = cosine(member_margin, 0.0, p.member_margin_min)?;
        p.global_threshold = cosine(global, -1.0, p.global_threshold)?;
        p.global_margin_min = cosine(global_margin, 0.0, p.global_margin_min)?;
        let count = |var: &'static str, default: usize| -> Result<usize, PolicyError> {
            let Some(v) = get(var) else { return Ok(default) };
            v.trim().parse().map_err(|_| PolicyError { var, reason: format!("not a whole number: {v:?}") })
        };
        p.phone_required_gallery_min = count(phone_min, p.phone_required_gallery_min)?;
        p.approx_gallery_min = count(approx_min, p.approx_gallery_min)?;
        Ok(p)
    }
}

/// The rule that decided an [`Identification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchRule {
    /// A member of the merchant matched, clear of the other members.
    MemberHit,
    /// The global gallery matched, clear of the runner-up, without phone digits.
    GlobalHit,
    /// The payers enrolled with the typed phone digits matched, clear of the runner-up.
    PhoneNarrowedHit,
    /// Ask the payer for the last 4 phone digits and capture again: the gallery is too large
    /// to search without them, or the global search found a candidate above the threshold
    /// but not clear of the runner-up.
    NeedsPhoneConfirmation,
    /// The phone-narrowed search found a candidate above the threshold but not clear of the
    /// runner-up with the same digits: refused (the payer pays another way).
    Ambiguous,
    /// No candidate passed the threshold: an unknown face.
    NoMatch,
    /// The capture failed the liveness check; nothing was searched.
    LivenessFailed,
}

impl MatchRule {
    /// Every rule.
    pub const ALL: [MatchRule; 7] = [
        MatchRule::MemberHit,
        MatchRule::GlobalHit,
        MatchRule::PhoneNarrowedHit,
        MatchRule::NeedsPhoneConfirmation,
        MatchRule::Ambiguous,
        MatchRule::NoMatch,
        MatchRule::LivenessFailed,
    ];

    /// The snake_case name used in logs, metrics and API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchRule::MemberHit => "member_hit",
            MatchRule::GlobalHit => "global_hit",
            MatchRule::PhoneNarrowedHit => "phone_narrowed_hit",
            MatchRule::NeedsPhoneConfirmation => "needs_phone_confirmation",
            MatchRule::Ambiguous => "ambiguous",
            MatchRule::NoMatch => "no_match",
            MatchRule::LivenessFailed => "liveness_failed",
        }
    }

    /// Whether this rule names a payer.
    pub fn is_hit(self) -> bool {
        matches!(self, MatchRule::MemberHit | MatchRule::GlobalHit | MatchRule::PhoneNarrowedHit)
    }
}

/// The answer of one search. Scores are cosines, never embedding values.
#[derive(Debug, Clone, PartialEq)]
pub struct Identification {
    /// The payer the face resolved to: `Some` only for the three hit rules, so a caller
    /// cannot charge anyone on an ambiguous or failed match.
    pub payer_id: Option<PayerId>,
    /// Which rule decided, for the device's next step and for audit.
    pub rule: MatchRule,
    /// Best cosine of the last search run (0.0 if none ran or it had no candidate), kept
    /// so thresholds can be calibrated from production decisions.
    pub score: f32,
    /// Best minus second-best cosine of that search (the best itself with one candidate,
    /// 0.0 with none): how clear the decision was.
    pub margin: f32,
}

impl Identification {
    /// An answer naming no payer.
    pub(crate) fn miss(rule: MatchRule, score: f32, margin: f32) -> Self {
        Self { payer_id: None, rule, score, margin }
    }
}

/// One candidate of a search: a payer and the cosine of their template with the capture.
/// Never the template itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub payer_id: PayerId,
    pub score: f32,
}

/// How many candidates of each tier a search keeps: the policy reads the best and the
/// runner-up, nothing further down.
pub const TIER_CANDIDATES_MAX: usize = 2;

/// The facts of a capture the policy reads besides its searches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CaptureFacts {
    /// The camera's liveness score.
    pub liveness: f32,
    /// Whether the payer typed the last 4 phone digits (the second tier is then their bucket).
    pub phone_given: bool,
}

/// What one part of the gallery (a shard) found for one capture: the best candidates of each
/// tier and how many payers it holds. Partials of every shard, [merged](Partial::merge), hold
/// exactly what one search of the whole gallery would have found, so
/// [`MatchPolicy::decide_merged`] decides as an unsharded matcher does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub facts: CaptureFacts,
    /// Payers enrolled in this part: the policy's size rule
    /// ([`MatchPolicy::phone_required_gallery_min`]) is about the whole gallery.
    pub gallery_len: u64,
    /// Best [`TIER_CANDIDATES_MAX`] of the merchant's members here, best first.
    pub members: Vec<Candidate>,
    /// Best [`TIER_CANDIDATES_MAX`] of the phone bucket (digits given) or of everyone here
    /// (not given), best first; empty where the policy runs no such search.
    pub others: Vec<Candidate>,
}

impl Partial {
    /// The union of several parts' answers for one capture: the best candidates of each tier
    /// across them all (ties broken by payer id, so the order of arrival does not matter),
    /// and the sum of their sizes. `None` for no parts, or parts that disagree on the capture.
    pub fn merge(parts: impl IntoIterator<Item = Partial>) -> Option<Partial> {
        let mut parts = parts.into_iter();
        let mut merged = parts.next()?;
        for part in parts {
            if part.facts != merged.facts {
                return None;
            }
            merged.gallery_len += part.gallery_len;
            merged.members.extend(part.members);
            merged.others.extend(part.others);
        }
        best_first(&mut merged.members);
        best_first(&mut merged.others);
        Some(merged)
    }
}

/// Sorts `candidates` best first (ties by payer id) and keeps the best [`TIER_CANDIDATES_MAX`].
fn best_first(candidates: &mut Vec<Candidate>) {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.payer_id.cmp(&b.payer_id)));
    candidates.truncate(TIER_CANDIDATES_MAX);
}

/// Best score of a tier (0.0 with no candidate).
fn score(found: &[Candidate]) -> f32 {
    found.first().map_or(0.0, |c| c.score)
}

/// Best minus runner-up; the best itself with one candidate, 0.0 with none.
fn margin(found: &[Candidate]) -> f32 {
    match found {
        [] => 0.0,
        [only] => only.score,
        [best, second, ..] => best.score - second.score,
    }
}

impl MatchPolicy {
    /// The policy over one capture, in order: liveness; the merchant's members (member
    /// threshold and margin, no phone needed); then the phone bucket when the digits were
    /// given, else everyone if the gallery of `gallery_len` payers is small enough for the
    /// risk policy; a global search that passes the threshold without its margin asks for
    /// the phone digits. Each tier's search runs only when the policy reaches it; each gives
    /// its best candidates, best first.
    pub fn decide(
        &self,
        facts: CaptureFacts,
        gallery_len: usize,
        members: impl FnOnce() -> Vec<Candidate>,
        others: impl FnOnce() -> Vec<Candidate>,
    ) -> Identification {
        if facts.liveness < self.liveness_min {
            return Identification::miss(MatchRule::LivenessFailed, 0.0, 0.0);
        }
        let members = members();
        let (member_best, member_lead) = (score(&members), margin(&members));
        if let Some(hit) = accept(members, self.member_threshold, self.member_margin_min, MatchRule::MemberHit) {
            return hit;
        }
        let rule = match facts.phone_given {
            true => MatchRule::PhoneNarrowedHit,
            false if gallery_len >= self.phone_required_gallery_min => {
                return Identification::miss(MatchRule::NeedsPhoneConfirmation, member_best, member_lead);
            }
            false => MatchRule::GlobalHit,
        };
        let found = others();
        let (best, lead) = (score(&found), margin(&found));
        if let Some(hit) = accept(found, self.global_threshold, self.global_margin_min, rule) {
            return hit;
        }
        let rule = match (best >= self.global_threshold, rule) {
            (false, _) => MatchRule::NoMatch,
            (true, MatchRule::GlobalHit) => MatchRule::NeedsPhoneConfirmation,
            (true, _) => MatchRule::Ambiguous,
        };
        Identification::miss(rule, best, lead)
    }

    /// [`Self::decide`] over the [merged](Partial::merge) partials of every shard.
    pub fn decide_merged(&self, merged: Partial) -> Identification {
        let len = usize::try_from(merged.gallery_len).unwrap_or(usize::MAX);
        self.decide(merged.facts, len, || merged.members, || merged.others)
    }
}

/// A hit under `rule` if the best of `found` passes `threshold` with at least `margin_min` lead.
fn accept(found: Vec<Candidate>, threshold: f32, margin_min: f32, rule: MatchRule) -> Option<Identification> {
    let (score, margin) = (score(&found), margin(&found));
    let best = found.into_iter().next()?;
    (score >= threshold && margin >= margin_min).then_some(Identification {
        payer_id: Some(best.payer_id),
        rule,
        score,
        margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_every_rule_when_named_then_names_are_distinct_snake_case() {
        let rules = MatchRule::ALL;
        let names: std::collections::HashSet<_> = rules.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), rules.len());
        assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        assert_eq!(rules.iter().filter(|r| r.is_hit()).count(), 3);
    }

    #[test]
    fn given_environment_settings_then_they_override_the_defaults_and_bad_ones_are_named() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(MatchPolicy::from_lookup(env(&[])), Ok(MatchPolicy::default()));
        let p = MatchPolicy::from_lookup(env(&[
            ("FACEPAY_MATCH_GLOBAL_THRESHOLD", "0.6"),
            ("FACEPAY_MATCH_PHONE_REQUIRED_GALLERY_MIN", "5000"),
        ]))
        .unwrap();
        assert_eq!((p.global_threshold, p.phone_required_gallery_min), (0.6, 5000));
        assert_eq!(p.member_threshold, MatchPolicy::default().member_threshold);
        let err = MatchPolicy::from_lookup(env(&[("FACEPAY_MATCH_MEMBER_MARGIN_MIN", "-0.1")])).unwrap_err();
        assert_eq!(err.var, "FACEPAY_MATCH_MEMBER_MARGIN_MIN");
        let err = MatchPolicy::from_lookup(env(&[("FACEPAY_MATCH_LIVENESS_MIN", "high")])).unwrap_err();
        assert!(err.to_string().starts_with("FACEPAY_MATCH_LIVENESS_MIN: not a number"), "{err}");
    }

    fn candidates(scores: &[(&str, f32)]) -> Vec<Candidate> {
        let payer = |p: &str| PayerId::parse(p).unwrap();
        scores.iter().map(|&(p, score)| Candidate { payer_id: payer(p), score }).collect()
    }

    #[test]
    fn given_candidates_then_score_and_margin_read_the_best_two() {
        assert_eq!((score(&[]), margin(&[])), (0.0, 0.0));
        assert_eq!((score(&candidates(&[("a", 0.3)])), margin(&candidates(&[("a", 0.3)]))), (0.3, 0.3));
        let two = candidates(&[("a", 0.7), ("b", 0.5)]);
        assert_eq!(score(&two), 0.7);
        assert!((margin(&two) - 0.2).abs() < 1e-6);
    }

    #[test]
    fn given_partials_when_merged_then_best_two_per_tier_in_any_order_ties_by_payer_and_sizes_add() {
        let facts = CaptureFacts { liveness: 0.99, phone_given: false };
        let part = |len, members: &[(&str, f32)], others: &[(&str, f32)]| Partial {
            facts,
            gallery_len: len,
            members: candidates(members),
            others: candidates(others),
        };
        let a = part(10, &[("m1", 0.6)], &[("g1", 0.9), ("g2", 0.4)]);
        let b = part(7, &[("m2", 0.6), ("m3", 0.1)], &[("g3", 0.5)]);
        for parts in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let merged = Partial::merge(parts).unwrap();
            assert_eq!(merged.gallery_len, 17);
            assert_eq!(merged.members, candidates(&[("m1", 0.6), ("m2", 0.6)]));
            assert_eq!(merged.others, candidates(&[("g1", 0.9), ("g3", 0.5)]));
        }
        let other_capture = Partial { facts: CaptureFacts { liveness: 0.5, phone_given: false }, ..b };
        assert_eq!(Partial::merge([a, other_capture]), None, "parts of different captures never merge");
        assert_eq!(Partial::merge(Vec::new()), None);
    }

    #[test]
    fn given_default_policy_then_global_is_stricter_than_member() {
        let p = MatchPolicy::default();
        assert!(p.global_threshold > p.member_threshold);
        assert!(p.global_margin_min > p.member_margin_min);
        assert_eq!(p.phone_required_gallery_min, 1_000_000);
    }
}
