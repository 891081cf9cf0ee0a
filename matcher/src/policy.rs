//! The match policy: the thresholds, the rules they decide, and the answer of a search.
//!
//! The thresholds are configuration. They depend on the device's face model and must be
//! calibrated on its real data; the defaults suit the synthetic model of [`crate::synthetic`]
//! and the ArcFace-family operating points quoted in the face-matching reference.

use facepay_domain::PayerId;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_every_rule_when_named_then_names_are_distinct_snake_case() {
        let rules = [
            MatchRule::MemberHit,
            MatchRule::GlobalHit,
            MatchRule::PhoneNarrowedHit,
            MatchRule::NeedsPhoneConfirmation,
            MatchRule::Ambiguous,
            MatchRule::NoMatch,
            MatchRule::LivenessFailed,
        ];
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

    #[test]
    fn given_default_policy_then_global_is_stricter_than_member() {
        let p = MatchPolicy::default();
        assert!(p.global_threshold > p.member_threshold);
        assert!(p.global_margin_min > p.member_margin_min);
        assert_eq!(p.phone_required_gallery_min, 1_000_000);
    }
}
