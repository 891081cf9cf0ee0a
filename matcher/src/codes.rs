//! The approximate index for galleries too large for exact search in time (≥ 1 M): binary
//! sign codes (SimHash) scanned by Hamming distance, then an exact rerank of the few best.
//!
//! A row's code is the signs of its projections on `bits` random hyperplanes (a seeded
//! Gaussian matrix; the gallery is projected tile by tile with one candle `matmul` each). A
//! random hyperplane separates two vectors with probability θ/π, θ their angle, so the
//! Hamming distance of two codes estimates their angle *whatever the data's distribution*.
//! That is why this index works where [`crate::ivf`] does not: a partition needs clusters,
//! and face embeddings of different people have none (the synthetic model is isotropic),
//! while a hash only needs the angle gap between the genuine template (cosine 0.6–0.8:
//! 52–75 of 256 bits differ) and the nearest stranger (cosine ≈ 0.25 at best: ≈ 107).
//!
//! 256 bits (the default) are 32 bytes a row, 1/64 of the f32 row: a 1 M gallery's codes
//! take 32 MB. The scan keeps each query's `rerank` nearest codes (appended while within
//! the current limit, the best selected in linear time when twice as many piled up); the rerank computes their exact cosines from the caller's f32 rows, so every
//! score returned is exact and only the candidate set is approximate: a genuine template
//! the codes miss leaves strangers' scores, far below any threshold. Recall@1 against exact
//! search is measured by `facepay-bench matcher --codes-bits 256` (docs/BENCHMARKS.md).
//!
//! Storage: codes are kept in groups of [`GROUP_ROWS`] = 8 rows, word-major within the group,
//! so word `j` of the 8 rows is one 512-bit register: the AVX-512 kernel computes 8 distances
//! with one XOR, one `VPOPCNTQ` and one add per word, and never sums across lanes; for codes
//! of 256 and 512 bits it keeps 4 (or 2) queries' words in registers and reads each group
//! once for all of them. Rows past the end of the gallery (padding of the last group) are
//! never offered. Without AVX-512 a portable loop computes the same distances.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use crate::flat::{tensor, with_slice, TensorError};
use crate::kernels;
use crate::topk::{Hit, TopK};

/// Rows per code group: one AVX-512 register holds one word of each.
pub const GROUP_ROWS: usize = 8;

/// Gallery rows projected per candle matmul when the codes are built.
const BUILD_TILE_ROWS: usize = 16_384;

/// Code groups scanned for all the queries before moving on: 512 groups of 512-bit codes are
/// 256 KiB, read from L2 by every query of the batch instead of from memory.
const SCAN_BLOCK_GROUPS: usize = 512;

/// How a [`CodeIndex`] is built and searched.
#[derive(Debug, Clone, Copy)]
pub struct CodeOptions {
    /// Hyperplanes (bits per code), rounded up to a multiple of 64. More bits estimate the
    /// angle more finely (the standard deviation of a distance shrinks as 1/√bits) and cost
    /// proportionally more scan time and memory.
    pub bits: usize,
    /// Candidates per query whose exact cosine is computed: a margin against a genuine
    /// template that the hash ranks a few places too low.
    pub rerank: usize,
    /// Seed of the hyperplanes: the same seed gives the same codes.
    pub seed: u64,
}

impl Default for CodeOptions {
    fn default() -> Self {
        Self { bits: 256, rerank: 64, seed: 1 }
    }
}

/// A query's nearest codes so far: candidates within the current limit are appended, and
/// when twice `keep` have piled up the best `keep` are selected (`select_nth_unstable`,
/// linear) and the limit tightens to the worst of them. Amortised O(1) per candidate,
/// where an insertion into a sorted list costs O(keep).
#[derive(Debug, Clone)]
struct Nearest {
    keep: usize,
    /// Distances above this cannot be among the `keep` nearest any more.
    max: u64,
    /// (distance, row); at most `2 * keep`.
    found: Vec<(u64, usize)>,
}

impl Nearest {
    fn new(keep: usize) -> Self {
        Self { keep: keep.max(1), max: u64::MAX, found: Vec::with_capacity(2 * keep.max(1)) }
    }

    #[inline]
    fn limit(&self) -> u64 {
        self.max
    }

    #[inline]
    fn offer(&mut self, distance: u64, row: usize) {
        if distance <= self.max {
            self.found.push((distance, row));
            if self.found.len() >= 2 * self.keep {
                self.prune();
            }
        }
    }

    /// Keeps the `keep` nearest (ties to the lower row, as exact search breaks them).
    fn prune(&mut self) {
        if self.found.len() > self.keep {
            self.found.select_nth_unstable(self.keep - 1);
            self.found.truncate(self.keep);
            self.max = self.found[self.keep - 1].0;
        }
    }

    fn merge(&mut self, other: Nearest) {
        other.found.into_iter().for_each(|(d, row)| self.offer(d, row));
    }

    /// The `keep` nearest, nearest first.
    fn finish(mut self) -> Vec<(u64, usize)> {
        self.found.sort_unstable();
        self.found.truncate(self.keep);
        self.found
    }
}

/// Binary codes of a frozen gallery; searched together with that gallery's f32 rows.
pub struct CodeIndex {
    dim: usize,
    /// Rows coded (the gallery's length when it was built).
    len: usize,
    /// 64-bit words per code.
    words: usize,
    /// Candidates reranked per query.
    rerank: usize,
    /// dim × bits Gaussian hyperplanes.
    planes: Tensor,
    /// Groups of [`GROUP_ROWS`] codes, word-major: group `g`, word `j`, row `r` of the group
    /// is `codes[(g * words + j) * GROUP_ROWS + r]`.
    codes: Vec<u64>,
}

impl std::fmt::Debug for CodeIndex {
    /// Sizes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeIndex").field("len", &self.len).field("bits", &(self.words * 64)).finish()
    }
}

impl CodeIndex {
    /// Codes every row of `rows` (row-major, `dim` wide).
    pub fn build(rows: &[f32], dim: usize, opts: &CodeOptions) -> Result<Self, TensorError> {
        assert!(dim > 0 && rows.len().is_multiple_of(dim), "rows must be whole rows of {dim} values");
        let words = opts.bits.div_ceil(64).max(1);
        let len = rows.len() / dim;
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let planes: Vec<f32> = (0..dim * words * 64).map(|_| rng.sample(StandardNormal)).collect();
        let planes = tensor("planes", Tensor::from_vec(planes, (dim, words * 64), &Device::Cpu))?;
        let mut index = Self { dim, len, words, rerank: opts.rerank.max(1), planes, codes: Vec::new() };
        let group_words = words * GROUP_ROWS;
        index.codes = vec![u64::MAX; len.div_ceil(GROUP_ROWS) * group_words];
        for (t, tile) in rows.chunks(BUILD_TILE_ROWS * dim).enumerate() {
            let signs = index.project(tile)?;
            let first_group = t * BUILD_TILE_ROWS / GROUP_ROWS;
            let groups = (tile.len() / dim).div_ceil(GROUP_ROWS);
            let out = &mut index.codes[first_group * group_words..(first_group + groups) * group_words];
            out.par_chunks_mut(group_words).zip(signs.par_chunks(GROUP_ROWS * words)).for_each(|(group, rows)| {
                for (r, code) in rows.chunks(words).enumerate() {
                    code.iter().enumerate().for_each(|(j, &w)| group[j * GROUP_ROWS + r] = w);
                }
            });
        }
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bits per code.
    pub fn bits(&self) -> usize {
        self.words * 64
    }

    /// Bytes of the codes and hyperplanes (the rows searched are the caller's).
    pub fn bytes(&self) -> usize {
        self.codes.len() * 8 + self.dim * self.bits() * 4
    }

    /// The codes of `vectors` (row-major, `dim` wide), `words` per vector, row after row.
    fn project(&self, vectors: &[f32]) -> Result<Vec<u64>, TensorError> {
        let n = vectors.len() / self.dim;
        let x = tensor("vectors", Tensor::from_slice(vectors, (n, self.dim), &Device::Cpu))?;
        let p = tensor("projection", x.matmul(&self.planes))?;
        with_slice::<f32, _>(&p, |p| {
            p.par_chunks(64)
                .map(|bits| bits.iter().enumerate().fold(0u64, |w, (b, &x)| w | (u64::from(x > 0.0) << b)))
                .collect()
        })
    }

    /// The `k` best rows for each of `queries` (row-major, `dim` wide), best first, with exact
    /// scores: the `rerank` nearest codes of each query, rescored against `rows`, the f32
    /// rows this index was built from.
    pub fn search_batch(&self, rows: &[f32], queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, TensorError> {
        assert_eq!(rows.len(), self.len * self.dim, "the rows the codes were built from");
        assert!(queries.len().is_multiple_of(self.dim));
        let codes = self.project(queries)?;
        let candidates = self.scan(&codes, queries.len() / self.dim);
        let dim = self.dim;
        Ok(candidates
            .into_par_iter()
            .zip(queries.par_chunks(dim))
            .map(|(found, query)| {
                let mut top = TopK::new(k);
                for (_, row) in found.finish() {
                    top.offer(kernels::dot(&rows[row * dim..(row + 1) * dim], query), row);
                }
                top.into_hits()
            })
            .collect())
    }

    /// The `rerank` nearest codes of each query code: the groups are split into one range per
    /// worker; each worker scans its range block by block, every query over each block while
    /// the block sits in L2; the workers' selections are then merged per query.
    fn scan(&self, query_codes: &[u64], n_queries: usize) -> Vec<Nearest> {
        let group_words = self.words * GROUP_ROWS;
        let groups = self.codes.len() / group_words;
        let parts = rayon::current_num_threads().max(1) * 2;
        let per_part = groups.div_ceil(parts).max(1);
        let partial: Vec<Vec<Nearest>> = self
            .codes
            .par_chunks(per_part * group_words)
            .enumerate()
            .map(|(p, part)| {
                let mut tops = vec![Nearest::new(self.rerank); n_queries];
                for (b, block) in part.chunks(SCAN_BLOCK_GROUPS * group_words).enumerate() {
                    let first_row = (p * per_part + b * SCAN_BLOCK_GROUPS) * GROUP_ROWS;
                    scan_block(block, query_codes, first_row, self.len, &mut tops);
                }
                tops
            })
            .collect();
        let mut parts = partial.into_iter();
        let mut tops = parts.next().unwrap_or_else(|| vec![Nearest::new(self.rerank); n_queries]);
        for part in parts {
            tops.iter_mut().zip(part).for_each(|(top, other)| top.merge(other));
        }
        tops
    }
}

/// Offers to each query's selection every row of `block` whose
/// code is within the selection's current worst distance from the query's code; `queries`
/// holds one code per selection in `tops`. Rows `first_row..`; those from `len` on are
/// padding and skipped.
fn scan_block(block: &[u64], queries: &[u64], first_row: usize, len: usize, tops: &mut [Nearest]) {
    let words = queries.len() / tops.len().max(1);
    #[cfg(target_arch = "x86_64")]
    if has_avx512_popcnt() {
        // SAFETY: AVX-512F and VPOPCNTDQ are present (checked at run time); the block is
        // whole groups of `words` words and `queries` one code of `words` per selection.
        unsafe { x86::scan_block(block, queries, words, first_row, len, tops) };
        return;
    }
    for (q, top) in queries.chunks_exact(words).zip(tops) {
        scan_block_portable(block, q, first_row, len, top);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512_popcnt() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vpopcntdq"))
}

/// [`scan_block`] without SIMD: the same distances, one lane at a time.
fn scan_block_portable(block: &[u64], query: &[u64], first_row: usize, len: usize, top: &mut Nearest) {
    let words = query.len();
    let mut max = top.limit();
    for (g, group) in block.chunks_exact(words * GROUP_ROWS).enumerate() {
        for r in 0..GROUP_ROWS {
            let d: u32 = query.iter().enumerate().map(|(j, q)| (group[j * GROUP_ROWS + r] ^ q).count_ones()).sum();
            let row = first_row + g * GROUP_ROWS + r;
            if u64::from(d) <= max && row < len {
                top.offer(u64::from(d), row);
                max = top.limit();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Nearest, GROUP_ROWS};

    /// 8 distances per group and query: per word, XOR the group's register with the
    /// broadcast query word, count bits per lane, add. Common code widths get a kernel of
    /// their own that keeps two queries' words in registers and reads each group once for both.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub unsafe fn scan_block(
        block: &[u64],
        queries: &[u64],
        words: usize,
        first_row: usize,
        len: usize,
        tops: &mut [Nearest],
    ) {
        // Queries per pass: as many as the 32 registers hold with the group's word.
        let per_pass = match words {
            4 => 4,
            8 => 2,
            _ => 0,
        };
        let done = tops.len() / per_pass.max(1) * per_pass;
        let passes =
            queries[..done * words].chunks_exact(per_pass.max(1) * words).zip(tops.chunks_exact_mut(per_pass.max(1)));
        match words {
            4 => passes.for_each(|(q, t)| scan_many::<4, 4>(block, q, first_row, len, t)),
            8 => passes.for_each(|(q, t)| scan_many::<8, 2>(block, q, first_row, len, t)),
            _ => {}
        }
        for (q, top) in queries[done * words..].chunks_exact(words).zip(&mut tops[done..]) {
            scan_any(block, q, first_row, len, top);
        }
    }

    /// `Q` queries of exactly `W` words each against the block.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    unsafe fn scan_many<const W: usize, const Q: usize>(
        block: &[u64],
        queries: &[u64],
        first_row: usize,
        len: usize,
        tops: &mut [Nearest],
    ) {
        let q: [[__m512i; W]; Q] =
            std::array::from_fn(|i| std::array::from_fn(|j| _mm512_set1_epi64(queries[i * W + j] as i64)));
        let mut max: [u64; Q] = std::array::from_fn(|i| tops[i].limit());
        let mut max_v = max.map(|m| _mm512_set1_epi64(m as i64));
        for (g, group) in block.chunks_exact(W * GROUP_ROWS).enumerate() {
            let mut acc = [_mm512_setzero_si512(); Q];
            for j in 0..W {
                let c = _mm512_loadu_si512(group.as_ptr().add(j * GROUP_ROWS) as *const __m512i);
                for (acc, q) in acc.iter_mut().zip(&q) {
                    *acc = _mm512_add_epi64(*acc, _mm512_popcnt_epi64(_mm512_xor_si512(c, q[j])));
                }
            }
            for i in 0..Q {
                if _mm512_cmple_epu64_mask(acc[i], max_v[i]) != 0 {
                    max[i] = offer(acc[i], max[i], first_row + g * GROUP_ROWS, len, &mut tops[i]);
                    max_v[i] = _mm512_set1_epi64(max[i] as i64);
                }
            }
        }
    }

    /// Codes of any width.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    unsafe fn scan_any(block: &[u64], query: &[u64], first_row: usize, len: usize, top: &mut Nearest) {
        let words = query.len();
        let mut max = top.limit();
        let mut max_v = _mm512_set1_epi64(max as i64);
        for (g, group) in block.chunks_exact(words * GROUP_ROWS).enumerate() {
            let mut acc = _mm512_setzero_si512();
            for (j, &q) in query.iter().enumerate() {
                let c = _mm512_loadu_si512(group.as_ptr().add(j * GROUP_ROWS) as *const __m512i);
                acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(c, _mm512_set1_epi64(q as i64))));
            }
            if _mm512_cmple_epu64_mask(acc, max_v) != 0 {
                max = offer(acc, max, first_row + g * GROUP_ROWS, len, top);
                max_v = _mm512_set1_epi64(max as i64);
            }
        }
    }

    /// Offers the group's rows (from `first_row`) within `max` and before `len`; the new limit.
    #[target_feature(enable = "avx512f")]
    unsafe fn offer(acc: __m512i, mut max: u64, first_row: usize, len: usize, top: &mut Nearest) -> u64 {
        let mut d = [0u64; GROUP_ROWS];
        _mm512_storeu_si512(d.as_mut_ptr() as *mut __m512i, acc);
        for (r, &d) in d.iter().enumerate() {
            if d <= max && first_row + r < len {
                top.offer(d, first_row + r);
                max = top.limit();
            }
        }
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::{FlatIndex, Precision};
    use crate::synthetic::SyntheticFaces;

    fn faces(n: usize, queries: usize) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
        let faces = SyntheticFaces::new(33, n);
        let rows: Vec<f32> = (0..n).flat_map(|i| Vec::from(faces.enrolment(i))).collect();
        let who: Vec<usize> = (0..queries).map(|i| (i * 97 + 5) % n).collect();
        let q: Vec<f32> = who.iter().flat_map(|&i| Vec::from(faces.nth_capture(i, 1))).collect();
        (rows, q, who)
    }

    #[test]
    fn given_codes_of_any_width_then_the_scan_selects_the_nearest_by_plain_hamming_distance() {
        let (rows, queries, _) = faces(1003, 7); // the last group is padded; 7 = 4 + 2 + 1 queries
        for bits in [192, 256, 512] {
            let words = bits / 64;
            let opts = CodeOptions { bits, rerank: 10, ..Default::default() };
            let index = CodeIndex::build(&rows, 512, &opts).unwrap();
            let codes = index.project(&rows).unwrap();
            let qcodes = index.project(&queries).unwrap();
            let found = index.scan(&qcodes, 7);
            for (q, top) in qcodes.chunks(words).zip(found) {
                let mut expected = TopK::new(10);
                for (row, code) in codes.chunks(words).enumerate() {
                    let d: u32 = code.iter().zip(q).map(|(a, b)| (a ^ b).count_ones()).sum();
                    expected.offer(-(d as f32), row);
                }
                let expected: Vec<(u64, usize)> = expected.hits().iter().map(|h| (-h.score as u64, h.row)).collect();
                let top = top.finish();
                assert_eq!(top, expected, "{bits} bits");
                let mut portable = Nearest::new(10);
                for (b, block) in index.codes.chunks(SCAN_BLOCK_GROUPS * words * GROUP_ROWS).enumerate() {
                    scan_block_portable(block, q, b * SCAN_BLOCK_GROUPS * GROUP_ROWS, index.len(), &mut portable);
                }
                assert_eq!(portable.finish(), expected, "the portable kernel agrees");
                assert!(top.iter().all(|&(_, row)| row < 1003), "padding is never offered");
            }
        }
    }

    #[test]
    fn given_synthetic_faces_then_the_reranked_codes_find_the_exact_top_1_with_exact_scores() {
        let (rows, queries, who) = faces(5000, 60);
        let index = CodeIndex::build(&rows, 512, &CodeOptions::default()).unwrap();
        assert_eq!((index.len(), index.bits(), index.codes.len()), (5000, 256, 5000 * 4));
        let exact = FlatIndex::new(&rows, 512, Precision::F32).unwrap().search_batch(&queries, 3).unwrap();
        let found = index.search_batch(&rows, &queries, 3).unwrap();
        for ((got, want), &w) in found.iter().zip(&exact).zip(&who) {
            assert_eq!(got[0].row, want[0].row);
            assert_eq!(got[0].row, w, "the genuine identity first");
            assert!((got[0].score - want[0].score).abs() < 1e-5, "scores are exact cosines");
        }
        let all = CodeIndex::build(&rows, 512, &CodeOptions { rerank: 5000, ..Default::default() }).unwrap();
        let rows_of =
            |r: &[Vec<Hit>]| r.iter().map(|h| h.iter().map(|h| h.row).collect::<Vec<_>>()).collect::<Vec<_>>();
        let everything = all.search_batch(&rows, &queries, 3).unwrap();
        assert_eq!(rows_of(&everything), rows_of(&exact), "reranking everything is exact search");
        let single = index.search_batch(&rows, &queries[..512], 3).unwrap();
        assert_eq!(single[0], found[0], "one query alone gets the same answer");
    }

    #[test]
    fn given_an_empty_gallery_then_searches_return_nothing() {
        let index = CodeIndex::build(&[], 512, &CodeOptions::default()).unwrap();
        assert!(index.is_empty());
        assert_eq!(index.search_batch(&[], &[0.5; 1024], 3).unwrap(), vec![vec![], vec![]]);
    }
}
