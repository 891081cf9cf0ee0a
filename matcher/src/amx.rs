//! Exact batched search on Intel AMX: bf16 tile products find the candidates, f32 dot
//! products give the exact scores.
//!
//! A batch of queries against the gallery is a matrix product. AMX multiplies 16 × 32 bf16
//! tiles in one instruction (`TDPBF16PS`, f32 accumulators), many times the throughput of
//! AVX-512 FMAs, so the product runs at the speed the gallery streams from memory.
//!
//! **Exact, provably.** Rounding a unit vector's values to bf16 (8 significant bits,
//! unit roundoff u = 2⁻⁸) moves each product x·y by at most |x·y|(2u + u²), so the whole
//! dot product of two unit vectors by at most `(2u + u²)·Σ|xᵢyᵢ| ≤ 2u + u²` (Cauchy–Schwarz),
//! plus the f32 accumulation's `d·2⁻²⁴`: [`BF16_SCORE_ERROR_MAX`]. If t̂ is the k-th best
//! bf16 score, every row of the exact top k has a bf16 score ≥ t̂ − 2·that bound (the k
//! rows of the bf16 top k have exact scores ≥ t̂ − bound, so the exact k-th is too). The scan
//! keeps every row over that line (its running t̂ only rises, so it keeps a superset) and
//! scores them again in f32 from the gallery's own rows: the answer is exact search's.
//!
//! Layout: the gallery is copied once to bf16 in AMX's pair-interleaved ("VNNI") layout, in
//! groups of 16 rows × 32 dimensions, 1 KiB a tile; queries are converted per batch. Each
//! thread takes a share of the query blocks and streams the gallery once, a chunk that fits
//! its L2 at a time; tile state is per thread, configured and released around its work.

use std::arch::asm;
use std::sync::OnceLock;

use half::bf16;
use rayon::prelude::*;

use crate::kernels;
use crate::topk::{Hit, TopK};

/// Largest difference between a dot product of two unit vectors and the same product over
/// their bf16 roundings with f32 accumulation (see the module's documentation), padded up.
pub const BF16_SCORE_ERROR_MAX: f32 = 0.0081;

/// Rows (or queries) per tile.
const TILE: usize = 16;
/// bf16 values per tile row (64 bytes).
const TILE_K: usize = 32;
/// Gallery rows per step of the kernel: two B tiles.
const STEP_ROWS: usize = 2 * TILE;
/// Queries per step of the kernel: two A tiles.
const STEP_QUERIES: usize = 2 * TILE;
/// Gallery rows a thread holds in its L2 while it runs all its queries against them.
const CHUNK_ROWS: usize = 1024;
/// Candidates a query may hold before the ones under its line are dropped.
const CANDIDATES_PRUNE_AT: usize = 64;

/// Whether this CPU and kernel let the process use AMX bf16 tiles (asked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA: Linux hands out the tile state on request.
        // SAFETY: a plain syscall with integer arguments.
        amx_bf16 && amx_tile && unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) } == 0
    })
}

/// The gallery in bf16 tiles for [`AmxIndex::search_batch`].
pub struct AmxIndex {
    dim: usize,
    len: usize,
    /// Groups of [`TILE`] rows (the last padded with zeros), each `dim / TILE_K` tiles of
    /// 16 pair-rows × 16 rows × 2 values.
    packed: Vec<u16>,
}

impl std::fmt::Debug for AmxIndex {
    /// Shape only: the rows are biometric templates.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmxIndex").field("len", &self.len).field("dim", &self.dim).finish()
    }
}

/// bf16 bits of `x`, rounded to nearest even.
fn bits(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

impl AmxIndex {
    /// Copies `rows` (row-major, `dim` wide, unit vectors) into bf16 tiles. `None` where AMX
    /// is not [`available`] or `dim` is not a whole number of tiles.
    pub fn new(rows: &[f32], dim: usize) -> Option<Self> {
        if !available() || dim == 0 || !dim.is_multiple_of(TILE_K) || !rows.len().is_multiple_of(dim) {
            return None;
        }
        let len = rows.len() / dim;
        let groups = len.div_ceil(STEP_ROWS) * 2;
        let mut packed = vec![0u16; groups * TILE * dim];
        packed.par_chunks_mut(TILE * dim).enumerate().for_each(|(g, group)| {
            for j in 0..TILE {
                let Some(row) = rows.get((g * TILE + j) * dim..(g * TILE + j + 1) * dim) else { break };
                for (k, &x) in row.iter().enumerate() {
                    // Tile k / 32, pair-row (k % 32) / 2, column j, element k % 2.
                    let (tile, within) = (k / TILE_K, k % TILE_K);
                    group[tile * TILE * TILE_K + (within / 2) * TILE * 2 + j * 2 + within % 2] = bits(x);
                }
            }
        });
        Some(Self { dim, len, packed })
    }

    /// The `k` best rows for each of the `queries` (row-major, unit vectors), best first,
    /// with exact f32 scores from `rows`, the f32 gallery this index was built from.
    pub fn search_batch(&self, rows: &[f32], queries: &[f32], k: usize) -> Vec<Vec<Hit>> {
        assert_eq!(rows.len(), self.len * self.dim, "the rows this index was built from");
        assert!(queries.len().is_multiple_of(self.dim));
        let n = queries.len() / self.dim;
        let blocks = n.div_ceil(STEP_QUERIES);
        let mut q = vec![0u16; blocks * STEP_QUERIES * self.dim];
        q.par_iter_mut().zip(queries.par_iter()).for_each(|(b, &x)| *b = bits(x));
        let threads = rayon::current_num_threads().max(1);
        let per_thread = blocks.div_ceil(threads).max(1);
        let found: Vec<Vec<Candidates>> = (0..blocks)
            .step_by(per_thread)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|first| self.scan(&q, first..(first + per_thread).min(blocks), n, k))
            .collect();
        let mut answers: Vec<Vec<Hit>> =
            found.into_par_iter().flatten().map(|c| c.rerank(rows, queries, self.dim, k)).collect();
        answers.truncate(n);
        answers
    }

    /// Candidates of every query of the query blocks `blocks` over the whole gallery (the
    /// zero padding past the `n` queries takes none).
    fn scan(&self, q: &[u16], blocks: std::ops::Range<usize>, n: usize, k: usize) -> Vec<Candidates> {
        let first_query = blocks.start * STEP_QUERIES;
        let mut found: Vec<Candidates> =
            (0..blocks.len() * STEP_QUERIES).map(|i| Candidates::new(first_query + i, k)).collect();
        let mut scores = [0f32; STEP_QUERIES * STEP_ROWS];
        let tiles = Tiles::configure();
        let steps = self.len.div_ceil(STEP_ROWS);
        for chunk in (0..steps).step_by(CHUNK_ROWS / STEP_ROWS) {
            for block in blocks.clone() {
                let a = &q[block * STEP_QUERIES * self.dim..];
                for step in chunk..(chunk + CHUNK_ROWS / STEP_ROWS).min(steps) {
                    let b = &self.packed[step * STEP_ROWS * self.dim..(step + 1) * STEP_ROWS * self.dim];
                    tiles.product(a, b, self.dim, &mut scores);
                    let local = &mut found[(block - blocks.start) * STEP_QUERIES..][..STEP_QUERIES];
                    let valid = (self.len - step * STEP_ROWS).min(STEP_ROWS);
                    let queries = (n - (block * STEP_QUERIES).min(n)).min(STEP_QUERIES);
                    for (c, row) in local.iter_mut().zip(scores.chunks_exact(STEP_ROWS)).take(queries) {
                        c.offer(&row[..valid], step * STEP_ROWS);
                    }
                }
            }
        }
        found
    }
}

/// One query's rows over its line: their bf16 scores, and the bf16 top k that draws the line.
struct Candidates {
    query: usize,
    top: TopK,
    rows: Vec<(u32, f32)>,
}

impl Candidates {
    fn new(query: usize, k: usize) -> Self {
        Self { query, top: TopK::new(k), rows: Vec::new() }
    }

    /// The bf16 score under which no row of the exact top k can lie.
    fn line(&self) -> f32 {
        self.top.threshold() - 2.0 * BF16_SCORE_ERROR_MAX
    }

    /// Offers `scores[i]` as row `first_row + i`.
    fn offer(&mut self, scores: &[f32], first_row: usize) {
        let mut line = self.line();
        if !any_at_least(scores, line) {
            return;
        }
        for (i, &s) in scores.iter().enumerate() {
            if s >= line {
                self.top.offer(s, first_row + i);
                self.rows.push(((first_row + i) as u32, s));
                line = self.line();
            }
        }
        if self.rows.len() > CANDIDATES_PRUNE_AT {
            self.rows.retain(|&(_, s)| s >= line);
        }
    }

    /// The exact top `k` of the candidates, scored in f32 against `rows`.
    fn rerank(self, rows: &[f32], queries: &[f32], dim: usize, k: usize) -> Vec<Hit> {
        let Some(query) = queries.get(self.query * dim..(self.query + 1) * dim) else { return Vec::new() };
        let line = self.line();
        let mut top = TopK::new(k);
        for (row, s) in self.rows {
            if s >= line {
                let row = row as usize;
                top.offer(kernels::dot(&rows[row * dim..(row + 1) * dim], query), row);
            }
        }
        top.into_hits()
    }
}

/// This thread's AMX tile state: configured for the kernel's eight tiles, released on drop.
struct Tiles;

/// `ldtilecfg`'s 64-byte description: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl Tiles {
    fn configure() -> Self {
        let mut cfg = TileConfig([0; 64]);
        cfg.0[0] = 1;
        for t in 0..8 {
            cfg.0[16 + 2 * t] = 64;
            cfg.0[48 + t] = TILE as u8;
        }
        // SAFETY: AMX is available (an index exists only then) and the config is valid.
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
        Tiles
    }

    /// `scores` (32 queries × 32 rows, row-major) = the 32 queries at `a` (bf16, `dim` wide)
    /// times the 32 packed rows at `b`.
    fn product(&self, a: &[u16], b: &[u16], dim: usize, scores: &mut [f32; STEP_QUERIES * STEP_ROWS]) {
        assert!(a.len() >= STEP_QUERIES * dim && b.len() >= STEP_ROWS * dim);
        let (stride_a, stride_c) = (dim * 2, STEP_ROWS * 4);
        let (a0, a1) = (a.as_ptr(), a[TILE * dim..].as_ptr());
        let (b0, b1) = (b.as_ptr(), b[TILE * dim..].as_ptr());
        // SAFETY: the tiles are configured; every load reads 16 rows of 64 bytes inside `a`
        // (stride `dim` values) or `b` (contiguous 1 KiB tiles), every store writes 16 rows
        // of 64 bytes inside `scores`, as the asserts and the layout guarantee.
        unsafe {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack));
            for t in 0..dim / TILE_K {
                let (a0, a1) = (a0.add(t * TILE_K), a1.add(t * TILE_K));
                let (b0, b1) = (b0.add(t * TILE * TILE_K), b1.add(t * TILE * TILE_K));
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                    sa = in(reg) stride_a, sb = in(reg) 64usize,
                    options(nostack),
                );
            }
            let c = scores.as_mut_ptr();
            asm!(
                "tilestored [{c00} + {sc}*1], tmm0",
                "tilestored [{c01} + {sc}*1], tmm1",
                "tilestored [{c10} + {sc}*1], tmm2",
                "tilestored [{c11} + {sc}*1], tmm3",
                c00 = in(reg) c, c01 = in(reg) c.add(TILE), c10 = in(reg) c.add(TILE * STEP_ROWS),
                c11 = in(reg) c.add(TILE * STEP_ROWS + TILE), sc = in(reg) stride_c,
                options(nostack),
            );
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: releases this thread's tile state, configured by `configure`.
        unsafe { asm!("tilerelease", options(nostack)) };
    }
}

/// Whether any of `scores` is at least `line`: 16 compares an instruction (AMX comes with
/// AVX-512).
fn any_at_least(scores: &[f32], line: f32) -> bool {
    // SAFETY: an AmxIndex exists only where AMX is available, and every AMX CPU has AVX-512F.
    unsafe { any_at_least_avx512(scores, line) }
}

#[target_feature(enable = "avx512f")]
fn any_at_least_avx512(scores: &[f32], line: f32) -> bool {
    use std::arch::x86_64::{_mm512_cmp_ps_mask, _mm512_loadu_ps, _mm512_set1_ps, _CMP_GE_OQ};
    let at = _mm512_set1_ps(line);
    let mut chunks = scores.chunks_exact(16);
    for c in &mut chunks {
        // SAFETY: `c` holds 16 f32.
        let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        if _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, at) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&s| s >= line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::{FlatIndex, Precision};
    use crate::synthetic::SyntheticFaces;

    #[test]
    fn given_amx_when_searched_in_batch_then_every_answer_equals_exact_f32_search() {
        let faces = SyntheticFaces::new(4, 3_001);
        let rows: Vec<f32> = (0..faces.len()).flat_map(|i| Vec::from(faces.enrolment(i))).collect();
        let Some(index) = AmxIndex::new(&rows, 512) else {
            eprintln!("no AMX on this machine: skipped");
            return;
        };
        let mut queries: Vec<f32> = (0..70).flat_map(|i| Vec::from(faces.nth_capture(i * 40, 1))).collect();
        queries.extend((0..7).flat_map(|n| Vec::from(faces.nth_stranger(n))));
        let exact = FlatIndex::new(&rows, 512, Precision::F32).unwrap().search_batch(&queries, 5).unwrap();
        let got = index.search_batch(&rows, &queries, 5);
        assert_eq!(got.len(), exact.len());
        for (g, e) in got.iter().zip(&exact) {
            let rows = |h: &[Hit]| h.iter().map(|h| h.row).collect::<Vec<_>>();
            assert_eq!(rows(g), rows(e));
            assert!(g.iter().zip(e).all(|(a, b)| (a.score - b.score).abs() < 1e-5), "{g:?} {e:?}");
        }
        assert_eq!(got[69][0].row, 69 * 40, "the last gallery group is padded, not lost");
    }
}
