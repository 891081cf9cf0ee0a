//! Exact search over a gallery held in a candle tensor.
//!
//! - **Batched** ([`FlatIndex::search_batch`]): the gallery is cut into tiles of rows; each
//!   tile is multiplied with all the queries at once (one candle `matmul`, compute-bound,
//!   AVX-512 through the gemm crate), and each query's row of scores goes through a
//!   [`TopK`] on the CPU, queries in parallel. Tiles keep the score block small enough to be
//!   read back while it is still in cache, and nothing is ever sorted.
//! - **Single query** ([`FlatIndex::search_one`]): a matrix–vector product is memory-bound,
//!   so it is a straight parallel scan of the tensor's storage with the SIMD kernels of
//!   [`crate::kernels`], each thread over its own contiguous range with its own [`TopK`].
//! - **f16 storage** ([`Precision::F16`]) halves the gallery's memory and the bytes a single
//!   query reads; batched search widens each tile to f32 before its matmul.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor, WithDType};
use half::f16;
use rayon::prelude::*;

use crate::kernels;
use crate::topk::{Hit, TopK};

/// A candle operation failed; names the operation, never carries vector values.
#[derive(Debug, thiserror::Error)]
#[error("tensor operation {op} failed: {source}")]
pub struct TensorError {
    /// Which step failed, for the log line.
    pub op: &'static str,
    #[source]
    pub source: candle_core::Error,
}

/// Tags a candle result with the operation it came from.
pub(crate) fn tensor<T>(op: &'static str, r: candle_core::Result<T>) -> Result<T, TensorError> {
    r.map_err(|source| TensorError { op, source })
}

/// How gallery rows are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 4 bytes a value: exact.
    #[default]
    F32,
    /// 2 bytes a value: half the memory and half the bytes a scan reads; cosines of unit
    /// vectors move by about 1e-4, far below any decision margin.
    F16,
}

/// Rows per tile of a batched search: the score block of a tile (queries × tile) is read
/// back while still in cache, and each matmul is still large enough to run at full speed.
const TILE_ROWS: usize = 4096;

/// Rows scored per kernel call in a scan: the scores stay in L1.
const SCAN_BLOCK_ROWS: usize = 512;

/// Most rows a scan reads on its caller's thread (16 MiB of f32). Handing a smaller scan to
/// the thread pool costs more than it saves where the cores are busy anyway, as they are in the
/// pipeline: the caller blocks until a pool thread wakes, the pool's idle threads spin and
/// yield between scans, and each hand-over is a task switch on either side (`facepay-bench
/// pipeline`, docs/BENCHMARKS.md, 2026-12-08 ninth session).
const SCAN_INLINE_ROWS_MAX: usize = 8_192;

/// An immutable N × d gallery in one candle tensor, searched exactly.
pub struct FlatIndex {
    dim: usize,
    len: usize,
    /// N × d, dtype F32 or F16, contiguous, on the CPU.
    rows: Tensor,
}

impl std::fmt::Debug for FlatIndex {
    /// Shape and type only: the rows are biometric templates.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatIndex")
            .field("len", &self.len)
            .field("dim", &self.dim)
            .field("dtype", &self.rows.dtype())
            .finish()
    }
}

impl FlatIndex {
    /// Copies `rows` (row-major, `dim` wide) into a tensor of the given precision.
    pub fn new(rows: &[f32], dim: usize, precision: Precision) -> Result<Self, TensorError> {
        assert!(dim > 0 && rows.len().is_multiple_of(dim), "rows must be whole rows of {dim} values");
        let len = rows.len() / dim;
        let t = tensor("gallery", Tensor::from_slice(rows, (len, dim), &Device::Cpu))?;
        let rows = match precision {
            Precision::F32 => t,
            Precision::F16 => tensor("gallery to f16", t.to_dtype(DType::F16))?,
        };
        Ok(Self { dim, len, rows })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes the stored rows take.
    pub fn bytes(&self) -> usize {
        self.len * self.dim * self.rows.dtype().size_in_bytes()
    }

    pub fn precision(&self) -> Precision {
        if self.rows.dtype() == DType::F16 {
            Precision::F16
        } else {
            Precision::F32
        }
    }

    /// The `k` best rows for one query, by a parallel memory-bound scan.
    pub fn search_one(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, TensorError> {
        assert_eq!(query.len(), self.dim);
        match self.precision() {
            Precision::F32 => {
                with_slice::<f32, _>(&self.rows, |rows| scan(rows, self.dim, query, k, kernels::scores_f32))
            }
            Precision::F16 => {
                with_slice::<f16, _>(&self.rows, |rows| scan(rows, self.dim, query, k, kernels::scores_f16))
            }
        }
    }

    /// The `k` best rows for each of the `queries` (row-major, `dim` wide), best first.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, TensorError> {
        assert!(queries.len().is_multiple_of(self.dim));
        let n_queries = queries.len() / self.dim;
        let mut tops = vec![TopK::new(k); n_queries];
        if n_queries == 0 || self.is_empty() {
            return Ok(tops.into_iter().map(TopK::into_hits).collect());
        }
        let q = tensor("queries", Tensor::from_slice(queries, (n_queries, self.dim), &Device::Cpu))?;
        for start in (0..self.len).step_by(TILE_ROWS) {
            let rows = TILE_ROWS.min(self.len - start);
            let tile = tensor("tile", self.rows.narrow(0, start, rows))?;
            let tile = tensor("tile to f32", tile.to_dtype(DType::F32))?;
            let scores = tensor("matmul", q.matmul(&tile.t().map_err(|source| TensorError { op: "t", source })?))?;
            with_slice::<f32, _>(&scores, |scores| {
                tops.par_iter_mut().zip(scores.par_chunks(rows)).for_each(|(top, row)| top.offer_block(row, start));
            })?;
        }
        Ok(tops.into_iter().map(TopK::into_hits).collect())
    }

    /// All rows as f32, row-major (for building other indexes and for export).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, TensorError> {
        let t = tensor("to f32", self.rows.to_dtype(DType::F32))?;
        tensor("flatten", t.flatten_all().and_then(|t| t.to_vec1::<f32>()))
    }
}

/// Runs `f` on the contiguous CPU storage of `t` as a slice of `T`, without copying.
pub(crate) fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R, TensorError> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(TensorError { op: "cpu storage", source: candle_core::Error::Msg("not on the CPU".into()) });
    };
    let data = tensor("storage slice", CpuStorage::as_slice::<T>(cpu))?;
    let Some((from, to)) = layout.contiguous_offsets() else {
        return Err(TensorError { op: "contiguous", source: candle_core::Error::Msg("strided tensor".into()) });
    };
    Ok(f(&data[from..to]))
}

/// The `k` best of `rows` (row-major, `dim` wide) for `query`: up to [`SCAN_INLINE_ROWS_MAX`]
/// rows scanned here in blocks by `kernel`; more split into contiguous ranges over the thread
/// pool, each scanned into its own [`TopK`], then merged.
pub(crate) fn scan<T: Sync>(
    rows: &[T],
    dim: usize,
    query: &[f32],
    k: usize,
    kernel: fn(&[T], &[f32], &mut [f32]),
) -> Vec<Hit> {
    let n = rows.len() / dim;
    if n <= SCAN_INLINE_ROWS_MAX {
        return scan_range(rows, dim, query, k, 0, kernel).into_hits();
    }
    let parts = rayon::current_num_threads().max(1) * 2;
    let per_part = n.div_ceil(parts).max(SCAN_BLOCK_ROWS);
    let partial: Vec<TopK> = rows
        .par_chunks(per_part * dim)
        .enumerate()
        .map(|(p, part)| scan_range(part, dim, query, k, p * per_part, kernel))
        .collect();
    let mut top = TopK::new(k);
    partial.iter().for_each(|t| top.merge(t));
    top.into_hits()
}

/// One thread's share of [`scan`]: rows `first_row..` in `part`.
pub(crate) fn scan_range<T>(
    part: &[T],
    dim: usize,
    query: &[f32],
    k: usize,
    first_row: usize,
    kernel: fn(&[T], &[f32], &mut [f32]),
) -> TopK {
    let mut top = TopK::new(k);
    let mut scores = [0.0f32; SCAN_BLOCK_ROWS];
    for (b, block) in part.chunks(SCAN_BLOCK_ROWS * dim).enumerate() {
        let out = &mut scores[..block.len() / dim];
        kernel(block, query, out);
        top.offer_block(out, first_row + b * SCAN_BLOCK_ROWS);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticFaces;

    fn gallery(n: usize) -> Vec<f32> {
        let faces = SyntheticFaces::new(9, n);
        (0..n).flat_map(|i| Vec::from(faces.enrolment(i))).collect()
    }

    fn brute(rows: &[f32], q: &[f32], k: usize) -> Vec<usize> {
        let mut top = TopK::new(k);
        for (i, r) in rows.chunks_exact(q.len()).enumerate() {
            top.offer(r.iter().zip(q).map(|(a, b)| a * b).sum(), i);
        }
        top.hits().iter().map(|h| h.row).collect()
    }

    #[test]
    fn given_a_gallery_then_batch_single_and_f16_find_the_brute_force_top_k() {
        let dim = 512;
        let n = 5000; // more than one tile and several scan blocks
        let rows = gallery(n);
        let faces = SyntheticFaces::new(9, n);
        let queries: Vec<f32> = (0..20).flat_map(|i| Vec::from(faces.nth_capture(i * 97, 1))).collect();
        let f32_index = FlatIndex::new(&rows, dim, Precision::F32).unwrap();
        let f16_index = FlatIndex::new(&rows, dim, Precision::F16).unwrap();
        assert_eq!((f32_index.bytes(), f16_index.bytes()), (n * dim * 4, n * dim * 2));
        let batch = f32_index.search_batch(&queries, 5).unwrap();
        let batch16 = f16_index.search_batch(&queries, 5).unwrap();
        for (i, q) in queries.chunks_exact(dim).enumerate() {
            let expected = brute(&rows, q, 5);
            let rows_of = |hits: &[Hit]| hits.iter().map(|h| h.row).collect::<Vec<_>>();
            assert_eq!(rows_of(&batch[i]), expected);
            assert_eq!(rows_of(&f32_index.search_one(q, 5).unwrap()), expected);
            assert_eq!(batch[i][0].row, i * 97, "the genuine identity comes first");
            assert_eq!(f16_index.search_one(q, 1).unwrap()[0].row, i * 97);
            assert_eq!(batch16[i][0].row, i * 97);
            assert!((batch16[i][0].score - batch[i][0].score).abs() < 1e-3);
        }
        assert_eq!(f32_index.to_f32_vec().unwrap(), rows);
    }

    #[test]
    fn given_galleries_either_side_of_the_inline_bound_then_a_scan_finds_the_brute_force_top_k() {
        let dim = 512;
        let n = SCAN_INLINE_ROWS_MAX + 600; // all n: the pool scans; the first bound rows: the caller
        let rows = gallery(n);
        let faces = SyntheticFaces::new(9, n);
        for len in [SCAN_INLINE_ROWS_MAX, n] {
            let rows = &rows[..len * dim];
            for genuine in [0, len / 2, len - 1] {
                let q = Vec::from(faces.nth_capture(genuine, 1));
                let found: Vec<usize> = scan(rows, dim, &q, 5, kernels::scores_f32).iter().map(|h| h.row).collect();
                assert_eq!(found, brute(rows, &q, 5), "{len} rows");
                assert_eq!(found[0], genuine, "the genuine identity comes first ({len} rows)");
            }
        }
    }

    #[test]
    fn given_an_empty_gallery_then_searches_return_nothing() {
        let index = FlatIndex::new(&[], 512, Precision::F32).unwrap();
        assert!(index.search_one(&[0.0; 512], 3).unwrap().is_empty());
        assert_eq!(index.search_batch(&[0.0; 1024], 3).unwrap(), vec![vec![], vec![]]);
    }
}
