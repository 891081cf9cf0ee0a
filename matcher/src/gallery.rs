//! The gallery: enrolled face templates, merchant member lists and phone-digit buckets,
//! and the search that applies a [`MatchPolicy`] to a capture.
//!
//! Templates live in one contiguous row-major `Vec<f32>` (N × [`EMBEDDING_DIM`]); removal
//! moves the last row into the hole. A full search is one candle `matmul` of a cached
//! N × d tensor with the query as a d × 1 column, rebuilt on the first search after a
//! change (enrolment comes in bursts). Subset searches (members, one phone bucket) take
//! plain dot products over the rows they name. The best two scores are taken in one
//! linear pass; nothing is sorted.

use std::collections::{HashMap, HashSet};
use std::fmt;

use candle_core::{Device, Tensor};
use facepay_domain::event::FaceCaptured;
use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::{Embedding, MerchantId, PayerId, PhoneLast4};

use crate::policy::{Identification, MatchPolicy, MatchRule};

/// A search could not be computed. Never carries embedding values.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    /// candle refused a tensor operation (allocation, shape); names the operation.
    #[error("tensor operation {op} failed: {source}")]
    Tensor {
        /// Which step failed, for the log line.
        op: &'static str,
        #[source]
        source: candle_core::Error,
    },
}

/// Tags a candle result with the operation it came from.
fn tensor<T>(op: &'static str, r: candle_core::Result<T>) -> Result<T, MatcherError> {
    r.map_err(|source| MatcherError::Tensor { op, source })
}

/// The best and second-best score over a set of rows, in one pass.
#[derive(Clone, Copy)]
struct Best2 {
    /// (score, row) of the best so far; ties go to the lower row, so replays decide alike.
    best: Option<(f32, usize)>,
    second_score: f32,
    candidates: usize,
}

impl Best2 {
    fn new() -> Self {
        Self { best: None, second_score: f32::NEG_INFINITY, candidates: 0 }
    }

    fn offer(&mut self, score: f32, row: usize) {
        self.candidates += 1;
        match self.best {
            Some((b, r)) if score > b || (score == b && row < r) => {
                self.second_score = b;
                self.best = Some((score, row));
            }
            Some(_) => self.second_score = self.second_score.max(score),
            None => self.best = Some((score, row)),
        }
    }

    fn score(&self) -> f32 {
        self.best.map_or(0.0, |(s, _)| s)
    }

    fn margin(&self) -> f32 {
        match (self.best, self.candidates) {
            (None, _) => 0.0,
            (Some((s, _)), 1) => s,
            (Some((s, _)), _) => s - self.second_score,
        }
    }
}

/// The enrolled templates and what narrows a search over them. `Send + Sync`; wrap it in a
/// lock to share it (a search takes `&mut self` to rebuild its cached tensor).
pub struct Gallery {
    /// Dimension of every row; [`EMBEDDING_DIM`], kept so the row arithmetic reads plainly.
    dim: usize,
    /// Templates, row-major, `payers.len() × dim`: one allocation, cache-friendly scans.
    rows: Vec<f32>,
    /// The payer of each row.
    payers: Vec<PayerId>,
    /// The phone digits each row was enrolled with, to leave the right bucket on change.
    phones: Vec<Option<PhoneLast4>>,
    /// Row of each payer, for re-enrolment, removal and member lookups.
    row_of: HashMap<PayerId, usize>,
    /// Members of each merchant; a member need not be enrolled (yet).
    members: HashMap<MerchantId, HashSet<PayerId>>,
    /// Enrolled payers by phone digits, for the phone-narrowed search.
    phone_buckets: HashMap<PhoneLast4, Vec<PayerId>>,
    /// `rows` as a candle tensor; `None` after any change until the next full search.
    cached: Option<Tensor>,
}

impl Default for Gallery {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Gallery {
    /// Counts only: templates are biometric data and are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gallery")
            .field("len", &self.len())
            .field("dim", &self.dim)
            .field("merchants", &self.members.len())
            .field("phone_buckets", &self.phone_buckets.len())
            .field("tensor_cached", &self.cached.is_some())
            .finish_non_exhaustive()
    }
}

impl Gallery {
    /// An empty gallery of [`EMBEDDING_DIM`]-wide templates, searched on the CPU.
    pub fn new() -> Self {
        Self {
            dim: EMBEDDING_DIM,
            rows: Vec::new(),
            payers: Vec::new(),
            phones: Vec::new(),
            row_of: HashMap::new(),
            members: HashMap::new(),
            phone_buckets: HashMap::new(),
            cached: None,
        }
    }

    /// Number of enrolled payers.
    pub fn len(&self) -> usize {
        self.payers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payers.is_empty()
    }

    /// Enrols `payer`'s template; re-enrolling replaces their template and phone digits.
    pub fn enroll(&mut self, payer: PayerId, embedding: &Embedding, phone_last4: Option<PhoneLast4>) {
        self.cached = None;
        if let Some(&row) = self.row_of.get(&payer) {
            self.row_mut(row).copy_from_slice(embedding.as_slice());
            let old = std::mem::replace(&mut self.phones[row], phone_last4);
            if old != phone_last4 {
                self.leave_bucket(old, &payer);
                self.join_bucket(phone_last4, &payer);
            }
            return;
        }
        self.rows.extend_from_slice(embedding.as_slice());
        self.row_of.insert(payer.clone(), self.payers.len());
        self.phones.push(phone_last4);
        self.join_bucket(phone_last4, &payer);
        self.payers.push(payer);
    }

    /// Removes `payer`'s template, phone digits and memberships; `true` if they were enrolled.
    pub fn remove(&mut self, payer: &PayerId) -> bool {
        self.members.retain(|_, set| {
            set.remove(payer);
            !set.is_empty()
        });
        let Some(row) = self.row_of.remove(payer) else {
            return false;
        };
        self.cached = None;
        let last = self.payers.len() - 1;
        if row != last {
            self.rows.copy_within(last * self.dim..(last + 1) * self.dim, row * self.dim);
            self.row_of.insert(self.payers[last].clone(), row);
        }
        self.rows.truncate(last * self.dim);
        self.payers.swap_remove(row);
        let phone = self.phones.swap_remove(row);
        self.leave_bucket(phone, payer);
        true
    }

    /// Makes `payer` a member of `merchant` (e.g. they opened its member card).
    pub fn add_member(&mut self, merchant: &MerchantId, payer: &PayerId) {
        self.members.entry(merchant.clone()).or_default().insert(payer.clone());
    }

    /// Ends `payer`'s membership of `merchant`; nothing happens if there was none.
    pub fn remove_member(&mut self, merchant: &MerchantId, payer: &PayerId) {
        if let Some(set) = self.members.get_mut(merchant) {
            set.remove(payer);
            if set.is_empty() {
                self.members.remove(merchant);
            }
        }
    }

    /// Identifies the face of `capture` taken at `merchant`, applying `policy` in order:
    /// liveness, the merchant's members, then the phone bucket or the global gallery.
    /// `score` and `margin` of the answer are those of the last search run.
    pub fn identify(
        &mut self,
        merchant: &MerchantId,
        capture: &FaceCaptured,
        policy: &MatchPolicy,
    ) -> Result<Identification, MatcherError> {
        if capture.liveness.get() < policy.liveness_min {
            return Ok(Identification::miss(MatchRule::LivenessFailed, 0.0, 0.0));
        }
        let query = capture.embedding.as_slice();
        let members = self.search_members(merchant, query);
        if let Some(hit) = self.accept(members, policy.member_threshold, policy.member_margin_min, MatchRule::MemberHit)
        {
            return Ok(hit);
        }
        let (found, rule) = match capture.phone_last4 {
            Some(phone) => (self.search_bucket(&phone, query), MatchRule::PhoneNarrowedHit),
            None if self.len() >= policy.phone_required_gallery_min => {
                return Ok(Identification::miss(MatchRule::NeedsPhoneConfirmation, members.score(), members.margin()));
            }
            None => (self.search_all(query)?, MatchRule::GlobalHit),
        };
        Ok(self.decide_global(found, rule, policy))
    }

    /// The global (or phone-narrowed) verdict: a hit, ambiguous, or no match.
    fn decide_global(&self, found: Best2, rule: MatchRule, policy: &MatchPolicy) -> Identification {
        if let Some(hit) = self.accept(found, policy.global_threshold, policy.global_margin_min, rule) {
            return hit;
        }
        let rule = if found.score() >= policy.global_threshold { MatchRule::Ambiguous } else { MatchRule::NoMatch };
        Identification::miss(rule, found.score(), found.margin())
    }

    /// A hit under `rule` if the best passes `threshold` with at least `margin_min` lead.
    fn accept(&self, found: Best2, threshold: f32, margin_min: f32, rule: MatchRule) -> Option<Identification> {
        let (score, row) = found.best?;
        let margin = found.margin();
        (score >= threshold && margin >= margin_min).then(|| Identification {
            payer_id: Some(self.payers[row].clone()),
            rule,
            score,
            margin,
        })
    }

    /// Best two among the enrolled members of `merchant`.
    fn search_members(&self, merchant: &MerchantId, query: &[f32]) -> Best2 {
        let rows = self.members.get(merchant).into_iter().flatten().filter_map(|p| self.row_of.get(p).copied());
        self.search_rows(rows, query)
    }

    /// Best two among the payers enrolled with `phone`.
    fn search_bucket(&self, phone: &PhoneLast4, query: &[f32]) -> Best2 {
        let rows = self.phone_buckets.get(phone).into_iter().flatten().filter_map(|p| self.row_of.get(p).copied());
        self.search_rows(rows, query)
    }

    /// Best two among `rows`, by plain dot products.
    fn search_rows(&self, rows: impl Iterator<Item = usize>, query: &[f32]) -> Best2 {
        let mut found = Best2::new();
        for row in rows {
            found.offer(dot(self.row(row), query), row);
        }
        found
    }

    /// Best two over the whole gallery: one matmul of the cached tensor with the query.
    fn search_all(&mut self, query: &[f32]) -> Result<Best2, MatcherError> {
        let mut found = Best2::new();
        if self.is_empty() {
            return Ok(found);
        }
        let column = tensor("query", Tensor::from_slice(query, (self.dim, 1), &Device::Cpu))?;
        let scores = tensor("matmul", self.gallery_tensor()?.matmul(&column))?;
        let scores = tensor("read scores", scores.squeeze(1).and_then(|s| s.to_vec1::<f32>()))?;
        for (row, score) in scores.into_iter().enumerate() {
            found.offer(score, row);
        }
        Ok(found)
    }

    /// The N × d tensor of all rows (a cheap handle), rebuilt if the gallery changed since
    /// the last search.
    fn gallery_tensor(&mut self) -> Result<Tensor, MatcherError> {
        if let Some(t) = &self.cached {
            return Ok(t.clone());
        }
        let t = tensor("gallery", Tensor::from_slice(&self.rows, (self.len(), self.dim), &Device::Cpu))?;
        self.cached = Some(t.clone());
        Ok(t)
    }

    fn row(&self, row: usize) -> &[f32] {
        &self.rows[row * self.dim..(row + 1) * self.dim]
    }

    fn row_mut(&mut self, row: usize) -> &mut [f32] {
        &mut self.rows[row * self.dim..(row + 1) * self.dim]
    }

    fn join_bucket(&mut self, phone: Option<PhoneLast4>, payer: &PayerId) {
        if let Some(phone) = phone {
            self.phone_buckets.entry(phone).or_default().push(payer.clone());
        }
    }

    fn leave_bucket(&mut self, phone: Option<PhoneLast4>, payer: &PayerId) {
        let Some(phone) = phone else { return };
        if let Some(bucket) = self.phone_buckets.get_mut(&phone) {
            if let Some(i) = bucket.iter().position(|p| p == payer) {
                bucket.swap_remove(i);
            }
            if bucket.is_empty() {
                self.phone_buckets.remove(&phone);
            }
        }
    }
}

/// Cosine of two unit vectors.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_scores_when_offered_then_best_two_and_margin_are_kept() {
        let mut found = Best2::new();
        assert_eq!((found.score(), found.margin()), (0.0, 0.0));
        found.offer(0.3, 0);
        assert_eq!((found.score(), found.margin()), (0.3, 0.3), "one candidate: margin is the best");
        found.offer(0.7, 1);
        found.offer(0.5, 2);
        found.offer(0.1, 3);
        assert_eq!(found.best, Some((0.7, 1)));
        assert!((found.margin() - 0.2).abs() < 1e-6);
    }

    #[test]
    fn given_a_tie_when_offered_in_any_order_then_the_lower_row_wins_with_zero_margin() {
        for order in [[4, 2], [2, 4]] {
            let mut found = Best2::new();
            order.iter().for_each(|&row| found.offer(0.6, row));
            assert_eq!((found.best, found.margin()), (Some((0.6, 2)), 0.0));
        }
    }
}
