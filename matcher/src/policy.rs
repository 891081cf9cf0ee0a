//! The match policy: the thresholds, the rules they decide, and the answer of a search.
//!
//! The thresholds are configuration. They depend on the device's face model and must be
//! calibrated on its real data (`facepay-bench matcher --calibrate` shows how on a synthetic
//! population, [`crate::synthetic::Quality::LogNormal`] with look-alikes); the defaults are
//! that calibration's, kept in `facepay_domain::limits`.
//!
//! One search decides: the phone bucket when the payer typed the digits, else the whole
//! gallery, its best candidates marked if members of the merchant. A member pays only when
//! the whole gallery's best is that member, clear of the runner-up, so a twin who is not a
//! member blocks them; typed digits that are not the member's never pay the member, since
//! the member is then not in the searched bucket. An unsure face (between the ask floor and
//! the accept threshold, or not clear of the runner-up) is asked for the digits.

use facepay_domain::{limits, PayerId};
use serde::{Deserialize, Serialize};

/// The thresholds [`crate::Gallery::identify`] applies, in order: liveness; then one search,
/// of the payers enrolled with the typed phone digits, or of the whole gallery without them.
/// Defaults: the calibrated constants of `facepay_domain::limits` (`MATCH_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchPolicy {
    /// Captures scoring below this liveness are refused before any search: a photo or a
    /// mask must not even be compared, let alone pay.
    pub liveness_min: f32,
    /// Cosine the whole gallery's best candidate needs to pay as the merchant's member
    /// ([`MatchRule::MemberHit`]), clear of the whole gallery's runner-up by
    /// `margin_min`: a twin who is not a member still blocks it.
    pub member_threshold: f32,
    /// Cosine the whole gallery's best candidate needs to pay without phone digits.
    pub global_threshold: f32,
    /// Cosine the best payer enrolled with the typed phone digits needs to pay.
    pub phone_threshold: f32,
    /// Lead the best candidate needs over the runner-up of the search (whole gallery or phone
    /// bucket) to pay. Without digits a smaller lead asks for them
    /// ([`MatchRule::NeedsPhoneConfirmation`]); with them it refuses ([`MatchRule::Ambiguous`]).
    pub margin_min: f32,
    /// A best candidate at or above this cosine that may not pay asks for the phone digits
    /// ([`MatchRule::NeedsPhoneConfirmation`]) instead of [`MatchRule::NoMatch`].
    pub ask_floor: f32,
    /// From this many enrolled payers on, a capture without phone digits pays only as the
    /// merchant's member: the false-match chance grows as P_N ≈ N·P_1, so everyone else is
    /// asked for the digits ([`MatchRule::NeedsPhoneConfirmation`]); the whole gallery is
    /// then searched only at a merchant with members.
    pub phone_required_gallery_min: usize,
    /// From this many enrolled payers on, the batched global search takes its candidates from
    /// the binary-code index ([`crate::codes::CodeIndex`]: Hamming scan, exact rerank) instead
    /// of exact search, which no longer answers a till in time at that size. Every score is
    /// still exact; a genuine template the codes miss yields no hit, never another payer.
    /// The margin is against the best other candidate: a look-alike close enough to matter
    /// is close in the codes too, while a distant runner-up may be left out (the margin then
    /// reads larger than exact search's, and the decision is the same).
    pub approx_gallery_min: usize,
}

impl Default for MatchPolicy {
    fn default() -> Self {
        Self {
            liveness_min: limits::MATCH_LIVENESS_MIN,
            member_threshold: limits::MATCH_ACCEPT_COSINE_MIN,
            global_threshold: limits::MATCH_ACCEPT_COSINE_MIN,
            phone_threshold: limits::MATCH_PHONE_ACCEPT_COSINE_MIN,
            margin_min: limits::MATCH_MARGIN_MIN,
            ask_floor: limits::MATCH_ASK_COSINE_MIN,
            phone_required_gallery_min: limits::MATCH_PHONE_REQUIRED_GALLERY_MIN,
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
    /// default: liveness_min, member_threshold, global_threshold, phone_threshold,
    /// margin_min, ask_floor, phone_required_gallery_min, approx_gallery_min.
    pub const ENV_VARS: [&'static str; 8] = [
        "FACEPAY_MATCH_LIVENESS_MIN",
        "FACEPAY_MATCH_MEMBER_THRESHOLD",
        "FACEPAY_MATCH_GLOBAL_THRESHOLD",
        "FACEPAY_MATCH_PHONE_THRESHOLD",
        "FACEPAY_MATCH_MARGIN_MIN",
        "FACEPAY_MATCH_ASK_FLOOR",
        "FACEPAY_MATCH_PHONE_REQUIRED_GALLERY_MIN",
        "FACEPAY_MATCH_APPROX_GALLERY_MIN",
    ];

    /// Settings an earlier version read, refused by name so that a deployment relying on one
    /// learns at start-up that it no longer applies.
    pub const RETIRED_ENV_VARS: [(&'static str, &'static str); 2] = [
        ("FACEPAY_MATCH_MEMBER_MARGIN_MIN", "retired: members need FACEPAY_MATCH_MARGIN_MIN over the whole gallery"),
        ("FACEPAY_MATCH_GLOBAL_MARGIN_MIN", "renamed FACEPAY_MATCH_MARGIN_MIN"),
    ];

    /// The defaults, overridden by whichever of [`Self::ENV_VARS`] are set (and non-empty).
    pub fn from_env() -> Result<Self, PolicyError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`Self::from_env`] over any lookup (for tests and config files). The ask floor may not
    /// exceed an accept threshold (a score that may not pay would then be turned away).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, PolicyError> {
        if let Some((var, reason)) = Self::RETIRED_ENV_VARS.iter().find(|(var, _)| get(var).is_some()) {
            return Err(PolicyError { var, reason: reason.to_string() });
        }
        let mut p = Self::default();
        let [liveness, member, global, phone, margin, floor, phone_min, approx_min] = Self::ENV_VARS;
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
        p.global_threshold = cosine(global, -1.0, p.global_threshold)?;
        p.phone_threshold = cosine(phone, -1.0, p.phone_threshold)?;
        p.margin_min = cosine(margin, 0.0, p.margin_min)?;
        p.ask_floor = cosine(floor, -1.0, p.ask_floor)?;
        let lowest = p.member_threshold.min(p.global_threshold);
        if p.ask_floor > lowest {
            return Err(PolicyError {
                var: floor,
                reason: format!("{} is above an accept threshold ({lowest})", p.ask_floor),
            });
        }
        let count = |var: &'static str, default: usize| -> Result<usize, PolicyError> {
            let Some(v) = get(var) else { return Ok(default) };
            v.trim().parse().map_err(|_| PolicyError { var, reason: format!("not a whole number: {v:?}") })
        };
        p.phone_required_gallery_min = count(phone_min, p.phone_required_gallery_min)?;
        p.approx_gallery_min = count(approx_min, p.approx_gallery_min)?;
        Ok(p)
    }

    /// Whether a capture without phone digits at a merchant with (`true`) or without members
    /// needs the whole gallery searched: below [`Self::phone_required_gallery_min`] always,
    /// from it on only for the members' sake.
    pub fn searches_whole_gallery(&self, gallery_len: usize, merchant_has_members: bool) -> bool {
        gallery_len < self.phone_required_gallery_min || merchant_has_members
    }
}

/// The rule that decided an [`Identification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchRule {
    /// The whole gallery's best candidate is a member of the merchant, clear of the runner-up.
    MemberHit,
    /// The whole gallery matched, clear of the runner-up, without phone digits.
    GlobalHit,
    /// The payers enrolled with the typed phone digits matched, clear of the runner-up.
    PhoneNarrowedHit,
    /// Ask the payer for the last 4 phone digits and capture again: the best candidate is
    /// above the ask floor but may not pay (under the threshold, or not clear of the
    /// runner-up), or the gallery is too large to pay a non-member without them.
    NeedsPhoneConfirmation,
    /// The phone-narrowed search found a candidate above the threshold but not clear of the
    /// runner-up with the same digits: refused (the payer pays another way).
    Ambiguous,
    /// No candidate passed: an unknown face, or wrong or missing digits.
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
            MatchRule::NeedsPhoneConfirmation => facepay_domain::outcome::NEEDS_PHONE_CONFIRMATION,
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
    /// Best cosine of the search (0.0 if none ran or it had no candidate), kept so
    /// thresholds can be calibrated from production decisions.
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

/// One candidate of a search: a payer, the cosine of their template with the capture, and
/// whether they are a member of the merchant where the capture was taken. Never the template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub payer_id: PayerId,
    pub score: f32,
    #[serde(default)]
    pub member: bool,
}

/// How many candidates a search keeps: the policy reads the best and the runner-up, nothing
/// further down.
pub const TIER_CANDIDATES_MAX: usize = 2;

/// The facts of a capture the policy reads besides its search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CaptureFacts {
    /// The camera's liveness score.
    pub liveness: f32,
    /// Whether the payer typed the last 4 phone digits (the search is then their bucket).
    pub phone_given: bool,
}

/// What one part of the gallery (a shard) found for one capture: its best candidates and how
/// many payers it holds. Partials of every shard, [merged](Partial::merge), hold exactly what
/// one search of the whole gallery would have found, so [`MatchPolicy::decide_merged`]
/// decides as an unsharded matcher does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub facts: CaptureFacts,
    /// Payers enrolled in this part: the policy's size rule
    /// ([`MatchPolicy::phone_required_gallery_min`]) is about the whole gallery.
    pub gallery_len: u64,
    /// Best [`TIER_CANDIDATES_MAX`] of the phone bucket (digits given) or of everyone here
    /// (not given), best first, each marked if a member of the merchant; empty where the
    /// policy runs no search.
    pub candidates: Vec<Candidate>,
}

impl Partial {
    /// The union of several parts' answers for one capture: the best candidates across them
    /// all (ties broken by payer id, so the order of arrival does not matter), and the sum of
    /// their sizes. `None` for no parts, or parts that disagree on the capture.
    pub fn merge(parts: impl IntoIterator<Item = Partial>) -> Option<Partial> {
        let mut parts = parts.into_iter();
        let mut merged = parts.next()?;
        for part in parts {
            if part.facts != merged.facts {
                return None;
            }
            merged.gallery_len += part.gallery_len;
            merged.candidates.extend(part.candidates);
        }
        best_first(&mut merged.candidates);
        Some(merged)
    }
}

/// Sorts `candidates` best first (ties by payer id) and keeps the best [`TIER_CANDIDATES_MAX`].
fn best_first(candidates: &mut Vec<Candidate>) {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.payer_id.cmp(&b.payer_id)));
    candidates.truncate(TIER_CANDIDATES_MAX);
}

/// Best score of a search (0.0 with no candidate).
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
    /// The policy over one capture: liveness; then the best candidates `found` of the phone
    /// bucket (digits given) or of the whole gallery of `gallery_len` payers (not given),
    /// each marked if a member of the merchant. With digits, the best pays over the phone
    /// threshold and margin, else is refused. Without them, the best pays as a member over the
    /// member threshold, or as anyone over the global threshold while the gallery is small
    /// enough, each clear of the whole gallery's runner-up; a best candidate above the ask
    /// floor that may not pay asks for the digits. `found` runs only past liveness.
    pub fn decide(
        &self,
        facts: CaptureFacts,
        gallery_len: usize,
        found: impl FnOnce() -> Vec<Candidate>,
    ) -> Identification {
        if facts.liveness < self.liveness_min {
            return Identification::miss(MatchRule::LivenessFailed, 0.0, 0.0);
        }
        let found = found();
        let (best, lead) = (score(&found), margin(&found));
        let clear = lead >= self.margin_min;
        let top = found.into_iter().next();
        let hit = |rule, c: Candidate| Identification { payer_id: Some(c.payer_id), rule, score: best, margin: lead };
        if facts.phone_given {
            return match top {
                Some(c) if best >= self.phone_threshold && clear => hit(MatchRule::PhoneNarrowedHit, c),
                Some(_) if best >= self.phone_threshold => Identification::miss(MatchRule::Ambiguous, best, lead),
                _ => Identification::miss(MatchRule::NoMatch, best, lead),
            };
        }
        let too_large = gallery_len >= self.phone_required_gallery_min;
        match top {
            Some(c) if c.member && best >= self.member_threshold && clear => hit(MatchRule::MemberHit, c),
            Some(c) if !too_large && best >= self.global_threshold && clear => hit(MatchRule::GlobalHit, c),
            _ if too_large || best >= self.ask_floor => {
                Identification::miss(MatchRule::NeedsPhoneConfirmation, best, lead)
            }
            _ => Identification::miss(MatchRule::NoMatch, best, lead),
        }
    }

    /// [`Self::decide`] over the [merged](Partial::merge) partials of every shard.
    pub fn decide_merged(&self, merged: Partial) -> Identification {
        let len = usize::try_from(merged.gallery_len).unwrap_or(usize::MAX);
        self.decide(merged.facts, len, || merged.candidates)
    }
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
        let err = MatchPolicy::from_lookup(env(&[("FACEPAY_MATCH_MARGIN_MIN", "-0.1")])).unwrap_err();
        assert_eq!(err.var, "FACEPAY_MATCH_MARGIN_MIN");
        let err = MatchPolicy::from_lookup(env(&[("FACEPAY_MATCH_LIVENESS_MIN", "high")])).unwrap_err();
        assert!(err.to_string().starts_with("FACEPAY_MATCH_LIVENESS_MIN: not a number"), "{err}");
        let err = MatchPolicy::from_lookup(env(&[("FACEPAY_MATCH_ASK_FLOOR", "0.9")])).unwrap_err();
        assert!(err.to_string().contains("above an accept threshold"), "{err}");
        let err = MatchPolicy::from_lookup(env(&[("FACEPAY_MATCH_MEMBER_MARGIN_MIN", "0.08")])).unwrap_err();
        assert!(err.reason.contains("retired"), "a setting that no longer applies is named: {err}");
    }

    fn candidates(scores: &[(&str, f32)]) -> Vec<Candidate> {
        let payer = |p: &str| PayerId::parse(p).unwrap();
        scores.iter().map(|&(p, score)| Candidate { payer_id: payer(p), score, member: p.starts_with('m') }).collect()
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
    fn given_partials_when_merged_then_best_two_in_any_order_ties_by_payer_and_sizes_add() {
        let facts = CaptureFacts { liveness: 0.99, phone_given: false };
        let part = |len, found: &[(&str, f32)]| Partial { facts, gallery_len: len, candidates: candidates(found) };
        let a = part(10, &[("g1", 0.9), ("m1", 0.6)]);
        let b = part(7, &[("m2", 0.6), ("g3", 0.5)]);
        for parts in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let merged = Partial::merge(parts).unwrap();
            assert_eq!(merged.gallery_len, 17);
            assert_eq!(merged.candidates, candidates(&[("g1", 0.9), ("m1", 0.6)]));
        }
        let other_capture = Partial { facts: CaptureFacts { liveness: 0.5, phone_given: false }, ..b };
        assert_eq!(Partial::merge([a, other_capture]), None, "parts of different captures never merge");
        assert_eq!(Partial::merge(Vec::new()), None);
    }

    /// Given a policy with round thresholds, when the best candidates are these, then this rule.
    fn rule(phone_given: bool, gallery_len: usize, found: &[(&str, f32)]) -> (MatchRule, Option<String>) {
        let p = MatchPolicy {
            member_threshold: 0.5,
            global_threshold: 0.55,
            phone_threshold: 0.5,
            margin_min: 0.1,
            ask_floor: 0.3,
            phone_required_gallery_min: 1000,
            ..MatchPolicy::default()
        };
        let id = p.decide(CaptureFacts { liveness: 0.99, phone_given }, gallery_len, || candidates(found));
        (id.rule, id.payer_id.map(|p| p.to_string()))
    }

    #[test]
    fn given_each_band_then_the_policy_pays_asks_or_turns_away() {
        use MatchRule::*;
        let paid = |r, p: &str| (r, Some(p.to_string()));
        assert_eq!(rule(false, 10, &[("m1", 0.52), ("g2", 0.2)]), paid(MemberHit, "m1"));
        assert_eq!(rule(false, 10, &[("g1", 0.52), ("m2", 0.2)]), (NeedsPhoneConfirmation, None), "in the band");
        assert_eq!(rule(false, 10, &[("g1", 0.56), ("g2", 0.2)]), paid(GlobalHit, "g1"));
        assert_eq!(rule(false, 10, &[("m1", 0.7), ("g2", 0.65)]), (NeedsPhoneConfirmation, None), "a twin blocks");
        assert_eq!(
            rule(false, 10, &[("g2", 0.7), ("m1", 0.65)]),
            (NeedsPhoneConfirmation, None),
            "a closer non-member"
        );
        assert_eq!(rule(false, 10, &[("g1", 0.29), ("g2", 0.1)]), (NoMatch, None), "under the ask floor");
        assert_eq!(rule(false, 10, &[]), (NoMatch, None));
        assert_eq!(rule(false, 1000, &[("g1", 0.9), ("g2", 0.1)]), (NeedsPhoneConfirmation, None), "too large");
        assert_eq!(rule(false, 1000, &[("m1", 0.9), ("g2", 0.1)]), paid(MemberHit, "m1"), "members need no digits");
        assert_eq!(rule(false, 1000, &[]), (NeedsPhoneConfirmation, None));
        assert_eq!(rule(true, 10, &[("g1", 0.51), ("g2", 0.1)]), paid(PhoneNarrowedHit, "g1"));
        assert_eq!(rule(true, 10, &[("g1", 0.6), ("g2", 0.55)]), (Ambiguous, None));
        assert_eq!(rule(true, 10, &[("g1", 0.45)]), (NoMatch, None), "digits given: never asked twice");
    }

    #[test]
    fn given_the_default_policy_then_the_calibrated_constants_hold_their_order() {
        let p = MatchPolicy::default();
        assert!(p.ask_floor < p.member_threshold.min(p.global_threshold));
        assert!(p.phone_threshold >= p.member_threshold, "the digits do not lower the bar a look-alike must clear");
        assert_eq!(p.phone_required_gallery_min, 1_000_000);
        assert_eq!(MatchRule::NeedsPhoneConfirmation.as_str(), "needs_phone_confirmation");
    }
}
