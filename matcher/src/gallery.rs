//! The gallery: enrolled face templates, merchant member lists and phone-digit buckets,
//! and the search that applies a [`MatchPolicy`] to a capture.
//!
//! Templates live in one contiguous row-major `Vec<f32>` (N × [`EMBEDDING_DIM`]); removal
//! moves the last row into the hole. A full search is a single query against the whole
//! gallery, which is memory-bound: the parallel SIMD scan of [`crate::flat`] reads the rows
//! once, in place (a tensor copy would double the memory of a changing gallery). A phone
//! bucket's search takes SIMD dot products over the rows it names. Members are not searched
//! apart: the policy reads whether the whole gallery's best is a member (a set lookup), so a
//! member costs no more than anyone else and rides the batched search. The
//! best two scores are kept by a [`TopK`] of 2; nothing is sorted. Batched searches over a
//! frozen gallery use AMX tiles where the CPU has them (`crate::amx`: bf16 products, exact
//! f32 rerank), else [`crate::FlatIndex`] (candle matmul), or from
//! [`MatchPolicy::approx_gallery_min`] payers on [`crate::codes::CodeIndex`] (binary codes,
//! exact rerank).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use facepay_domain::event::FaceCaptured;
use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::{Embedding, MerchantId, PayerId, PhoneLast4};

use crate::codes::{CodeIndex, CodeOptions};
use crate::flat::{scan, FlatIndex, Precision, TensorError};
use crate::kernels;
use crate::policy::{Candidate, CaptureFacts, Identification, MatchPolicy, Partial, TIER_CANDIDATES_MAX};
use crate::topk::{Hit, TopK};

/// A search could not be computed. Never carries embedding values.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    /// candle refused a tensor operation (allocation, shape); names the operation.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// The enrolled templates and what narrows a search over them. `Send + Sync`; wrap it in a
/// lock to share it (searches take `&self`, so a read lock serves concurrent searches).
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
    /// A frozen copy of `rows` for batched searches ([`BatchIndex`]), built on the first
    /// batch after a change (enrolment comes in bursts) and dropped by every change.
    batch_index: OnceLock<BatchIndex>,
    /// Binary codes of `rows` for batched searches of a gallery of at least
    /// [`MatchPolicy::approx_gallery_min`]; built and dropped like `batch_index`.
    batch_codes: OnceLock<CodeIndex>,
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
            .field("batch_index", &self.batch_index.get().is_some())
            .field("batch_codes", &self.batch_codes.get().is_some())
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
            batch_index: OnceLock::new(),
            batch_codes: OnceLock::new(),
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
        self.drop_batch_indexes();
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
        self.drop_batch_indexes();
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

    /// Replaces every merchant's member list with `members` (merchant, payer pairs).
    pub fn set_members(&mut self, members: impl IntoIterator<Item = (MerchantId, PayerId)>) {
        self.members.clear();
        for (merchant, payer) in members {
            self.add_member(&merchant, &payer);
        }
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

    /// Identifies the face of `capture` taken at `merchant`, applying `policy`
    /// ([`MatchPolicy::decide`]): liveness; then the payers enrolled with the typed phone
    /// digits, or without them the whole gallery, its best candidates marked if members of
    /// `merchant`. `score` and `margin` of the answer are those of that search.
    pub fn identify(
        &self,
        merchant: &MerchantId,
        capture: &FaceCaptured,
        policy: &MatchPolicy,
    ) -> Result<Identification, MatcherError> {
        Ok(self.decide(merchant, capture, policy, |query| self.search_all(query)))
    }

    /// [`Self::identify`] for many captures at once (a batch of a stage): the global
    /// searches run as one batched search (candle matmul + top-k) over a tensor copy of the
    /// gallery, which pays off from a few dozen captures on. Same answers as one by one.
    pub fn identify_batch(
        &self,
        captures: &[(&MerchantId, &FaceCaptured)],
        policy: &MatchPolicy,
    ) -> Result<Vec<Identification>, MatcherError> {
        let global = |merchant: &MerchantId, c: &FaceCaptured| {
            c.liveness.get() >= policy.liveness_min && c.phone_last4.is_none() && self.searches_all(merchant, policy)
        };
        let queries: Vec<f32> = captures
            .iter()
            .filter(|(m, c)| global(m, c))
            .flat_map(|(_, c)| c.embedding.as_slice().iter().copied())
            .collect();
        let mut found = match queries.is_empty() {
            true => Vec::new(),
            false if self.len() >= policy.approx_gallery_min => {
                self.batch_codes()?.search_batch(&self.rows, &queries, TIER_CANDIDATES_MAX)?
            }
            false => self.batch_index()?.search_batch(&self.rows, &queries, TIER_CANDIDATES_MAX)?,
        }
        .into_iter();
        let mut answers = Vec::with_capacity(captures.len());
        for (merchant, capture) in captures {
            let hits = if global(merchant, capture) { found.next().unwrap_or_default() } else { Vec::new() };
            answers.push(self.decide(merchant, capture, policy, |_| hits));
        }
        Ok(answers)
    }

    /// The policy over one capture, with `search_all` as the global search.
    fn decide(
        &self,
        merchant: &MerchantId,
        capture: &FaceCaptured,
        policy: &MatchPolicy,
        search_all: impl FnOnce(&[f32]) -> Vec<Hit>,
    ) -> Identification {
        policy.decide(facts(capture), self.len(), || self.search(merchant, capture, policy, search_all))
    }

    /// The candidates the policy decides on: the phone bucket's best when the digits were
    /// given, else `search_all`'s over the whole gallery where the policy searches it; each
    /// marked if a member of `merchant`.
    fn search(
        &self,
        merchant: &MerchantId,
        capture: &FaceCaptured,
        policy: &MatchPolicy,
        search_all: impl FnOnce(&[f32]) -> Vec<Hit>,
    ) -> Vec<Candidate> {
        let query = capture.embedding.as_slice();
        let hits = match capture.phone_last4 {
            Some(phone) => self.search_bucket(&phone, query),
            None if self.searches_all(merchant, policy) => search_all(query),
            None => Vec::new(),
        };
        let members = self.members.get(merchant);
        hits.into_iter()
            .map(|h| {
                let payer_id = self.payers[h.row].clone();
                let member = members.is_some_and(|m| m.contains(&payer_id));
                Candidate { payer_id, score: h.score, member }
            })
            .collect()
    }

    /// Whether a capture without digits at `merchant` is searched against the whole gallery.
    fn searches_all(&self, merchant: &MerchantId, policy: &MatchPolicy) -> bool {
        policy.searches_whole_gallery(self.len(), self.members.contains_key(merchant))
    }

    /// What this gallery, one shard of the whole, finds for `capture` taken at `merchant`,
    /// for a gather to [merge](Partial::merge) with the other shards' answers and decide on
    /// ([`MatchPolicy::decide_merged`]). Nothing is searched for a capture that fails the
    /// liveness check, and no global search is run where this shard alone is too large for
    /// one at a merchant with no members (the whole gallery is larger still).
    pub fn partial(&self, merchant: &MerchantId, capture: &FaceCaptured, policy: &MatchPolicy) -> Partial {
        let facts = facts(capture);
        let mut partial = Partial { facts, gallery_len: self.len() as u64, candidates: Vec::new() };
        if facts.liveness >= policy.liveness_min {
            partial.candidates = self.search(merchant, capture, policy, |query| self.search_all(query));
        }
        partial
    }

    /// The binary codes of the gallery for batched searches of a large one.
    fn batch_codes(&self) -> Result<&CodeIndex, MatcherError> {
        if let Some(index) = self.batch_codes.get() {
            return Ok(index);
        }
        let index = CodeIndex::build(&self.rows, self.dim, &CodeOptions::default())?;
        Ok(self.batch_codes.get_or_init(|| index))
    }

    /// A change to the rows makes both batch indexes stale.
    fn drop_batch_indexes(&mut self) {
        self.batch_index = OnceLock::new();
        self.batch_codes = OnceLock::new();
    }

    /// The frozen copy of the gallery for batched searches.
    fn batch_index(&self) -> Result<&BatchIndex, MatcherError> {
        if let Some(index) = self.batch_index.get() {
            return Ok(index);
        }
        let index = BatchIndex::build(&self.rows, self.dim)?;
        Ok(self.batch_index.get_or_init(|| index))
    }

    /// Best two among the payers enrolled with `phone`.
    fn search_bucket(&self, phone: &PhoneLast4, query: &[f32]) -> Vec<Hit> {
        let rows = self.phone_buckets.get(phone).into_iter().flatten().filter_map(|p| self.row_of.get(p).copied());
        self.search_rows(rows, query)
    }

    /// Best two among `rows`, by plain dot products.
    fn search_rows(&self, rows: impl Iterator<Item = usize>, query: &[f32]) -> Vec<Hit> {
        let mut found = TopK::new(TIER_CANDIDATES_MAX);
        for row in rows {
            found.offer(kernels::dot(self.row(row), query), row);
        }
        found.into_hits()
    }

    /// Best two over the whole gallery: the memory-bound parallel scan of
    /// [`crate::flat`] over the contiguous rows.
    fn search_all(&self, query: &[f32]) -> Vec<Hit> {
        scan(&self.rows, self.dim, query, TIER_CANDIDATES_MAX, kernels::scores_f32)
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

/// The exact batched search over a frozen copy of the rows: AMX tiles where the CPU has them,
/// else a candle tensor. Both answer exactly (scores in f32).
pub enum BatchIndex {
    #[cfg(target_arch = "x86_64")]
    Amx(crate::amx::AmxIndex),
    Flat(FlatIndex),
}

impl BatchIndex {
    /// The engine this machine runs batches on, over a copy of `rows` (row-major, `dim` wide).
    pub fn build(rows: &[f32], dim: usize) -> Result<Self, TensorError> {
        #[cfg(target_arch = "x86_64")]
        if let Some(index) = crate::amx::AmxIndex::new(rows, dim) {
            return Ok(BatchIndex::Amx(index));
        }
        Ok(BatchIndex::Flat(FlatIndex::new(rows, dim, Precision::F32)?))
    }

    /// The best `k` of `rows` (the rows this index was built from) for each query.
    pub fn search_batch(&self, rows: &[f32], queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, TensorError> {
        match self {
            #[cfg(target_arch = "x86_64")]
            BatchIndex::Amx(index) => Ok(index.search_batch(rows, queries, k)),
            BatchIndex::Flat(index) => index.search_batch(queries, k),
        }
    }
}

/// What the policy reads of `capture` besides its searches.
fn facts(capture: &FaceCaptured) -> CaptureFacts {
    CaptureFacts { liveness: capture.liveness.get(), phone_given: capture.phone_last4.is_some() }
}
