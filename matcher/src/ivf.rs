//! An approximate index for galleries too large for exact search in time (≥ 1 M): an
//! inverted file (IVF) over centroids learnt by spherical k-means with candle.
//!
//! Build: k-means on a sample (assignment = one candle `matmul` + `argmax`, update =
//! `index_add` of the members, renormalised), then every row goes to its `spill` nearest
//! lists; each list's rows are stored contiguously. Search: the queries' scores against the
//! centroids (one matmul), the `nprobe` best lists per query, and an exact scan of those lists
//! with the SIMD kernels, queries in parallel.
//!
//! Synthetic faces are isotropic, the worst case for any partitioning, so the index is only
//! trusted with a measured recall@1 against exact search (see `facepay-bench matcher`).

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::flat::{scan_range, tensor, with_slice, TensorError};
use crate::kernels;
use crate::topk::{Hit, TopK};

/// How an [`IvfIndex`] is built.
#[derive(Debug, Clone, Copy)]
pub struct IvfOptions {
    /// Number of lists (k-means centroids); about √N to 4·√N.
    pub nlist: usize,
    /// k-means iterations.
    pub iterations: usize,
    /// Training sample size per list.
    pub train_per_list: usize,
    /// Lists each row is stored in (its nearest `spill` centroids): more memory and work,
    /// fewer rows missed at a list boundary.
    pub spill: usize,
    /// Seed of the sample and the initial centroids.
    pub seed: u64,
}

impl Default for IvfOptions {
    fn default() -> Self {
        Self { nlist: 1024, iterations: 8, train_per_list: 64, spill: 1, seed: 1 }
    }
}

/// An inverted-file index; immutable once built.
pub struct IvfIndex {
    dim: usize,
    /// nlist × d unit centroids.
    centroids: Tensor,
    /// List `l` holds positions `offsets[l]..offsets[l + 1]` of `ids` and `rows`.
    offsets: Vec<usize>,
    /// Gallery row of each stored position.
    ids: Vec<u32>,
    /// The stored rows, list by list, row-major.
    rows: Vec<f32>,
}

impl std::fmt::Debug for IvfIndex {
    /// Sizes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IvfIndex").field("lists", &self.nlist()).field("stored_rows", &self.ids.len()).finish()
    }
}

impl IvfIndex {
    /// Builds the index over `rows` (row-major, `dim` wide, unit length).
    pub fn build(rows: &[f32], dim: usize, opts: &IvfOptions) -> Result<Self, TensorError> {
        let n = rows.len() / dim;
        let nlist = opts.nlist.clamp(1, n.max(1));
        let centroids = kmeans(rows, dim, nlist, opts)?;
        let lists = assign(rows, dim, &centroids, opts.spill.clamp(1, nlist))?;
        let mut offsets = vec![0usize; nlist + 1];
        lists.iter().flatten().for_each(|&l| offsets[l as usize + 1] += 1);
        for l in 0..nlist {
            offsets[l + 1] += offsets[l];
        }
        let mut next = offsets.clone();
        let mut ids = vec![0u32; offsets[nlist]];
        let mut stored = vec![0.0f32; offsets[nlist] * dim];
        for (row, ls) in lists.iter().enumerate() {
            for &l in ls {
                let at = next[l as usize];
                next[l as usize] += 1;
                ids[at] = row as u32;
                stored[at * dim..(at + 1) * dim].copy_from_slice(&rows[row * dim..(row + 1) * dim]);
            }
        }
        Ok(Self { dim, centroids, offsets, ids, rows: stored })
    }

    pub fn nlist(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Bytes of the stored rows, ids and centroids.
    pub fn bytes(&self) -> usize {
        (self.rows.len() + self.ids.len() + self.nlist() * self.dim) * 4
    }

    /// The `k` best rows for each query among the rows of its `nprobe` nearest lists.
    ///
    /// List-major: the queries are grouped by the lists they probe, and each list is scanned
    /// once for all its queries while its rows sit in cache (lists in parallel), so the
    /// scan runs at cache speed, not at memory bandwidth.
    pub fn search_batch(&self, queries: &[f32], k: usize, nprobe: usize) -> Result<Vec<Vec<Hit>>, TensorError> {
        let dim = self.dim;
        let n_queries = queries.len() / dim;
        let nlist = self.nlist();
        let q = tensor("queries", Tensor::from_slice(queries, (n_queries, dim), &Device::Cpu))?;
        let coarse = tensor("coarse matmul", q.matmul(&tensor("centroids t", self.centroids.t())?))?;
        let probes: Vec<Vec<usize>> = with_slice::<f32, _>(&coarse, |coarse| {
            coarse
                .par_chunks(nlist)
                .map(|row| {
                    let mut lists = TopK::new(nprobe);
                    lists.offer_block(row, 0);
                    lists.hits().iter().map(|h| h.row).collect()
                })
                .collect()
        })?;
        let mut by_list: Vec<Vec<u32>> = vec![Vec::new(); nlist];
        for (query, lists) in probes.iter().enumerate() {
            lists.iter().for_each(|&l| by_list[l].push(query as u32));
        }
        let found: Vec<Vec<(u32, TopK)>> = by_list
            .par_iter()
            .enumerate()
            .map(|(list, qs)| {
                let (from, to) = (self.offsets[list], self.offsets[list + 1]);
                let part = &self.rows[from * dim..to * dim];
                qs.iter()
                    .map(|&qi| {
                        let query = &queries[qi as usize * dim..(qi as usize + 1) * dim];
                        (qi, scan_range(part, dim, query, k, from, kernels::scores_f32))
                    })
                    .collect()
            })
            .collect();
        let mut tops = vec![TopK::new(k); n_queries];
        for (qi, top) in found.iter().flatten() {
            // Positions to gallery rows; a spilled row may come from two lists.
            let into = &mut tops[*qi as usize];
            for h in top.hits() {
                let row = self.ids[h.row] as usize;
                if !into.hits().iter().any(|t| t.row == row) {
                    into.offer(h.score, row);
                }
            }
        }
        Ok(tops.into_iter().map(TopK::into_hits).collect())
    }
}

/// Spherical k-means on a sample of `rows`: `nlist` unit centroids as an nlist × d tensor.
fn kmeans(rows: &[f32], dim: usize, nlist: usize, opts: &IvfOptions) -> Result<Tensor, TensorError> {
    let n = rows.len() / dim;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order.truncate((nlist * opts.train_per_list).clamp(nlist, n));
    let sample: Vec<f32> = order.iter().flat_map(|&r| rows[r * dim..(r + 1) * dim].iter().copied()).collect();
    let m = order.len();
    let x = tensor("sample", Tensor::from_vec(sample, (m, dim), &Device::Cpu))?;
    let mut c = tensor("init", x.narrow(0, 0, nlist))?;
    for _ in 0..opts.iterations {
        let best = tensor("assign", x.matmul(&tensor("t", c.t())?).and_then(|s| s.argmax_keepdim(1)))?;
        let best = tensor("squeeze", best.squeeze(1))?;
        let sums = tensor("zeros", Tensor::zeros((nlist, dim), DType::F32, &Device::Cpu))?;
        let sums = tensor("index_add", sums.index_add(&best, &x, 0))?;
        let norms = tensor("norms", sums.sqr().and_then(|s| s.sum_keepdim(1)).and_then(|s| s.sqrt()))?;
        // An empty list keeps its old centroid: its sum is zero, so mix the old one back in.
        let empty = tensor("empty", norms.le(1e-6).and_then(|e| e.to_dtype(DType::F32)))?;
        let kept = tensor("keep empty", c.broadcast_mul(&empty))?;
        let sums = tensor("add kept", sums.add(&kept))?;
        let norms = tensor("renorm", sums.sqr().and_then(|s| s.sum_keepdim(1)).and_then(|s| s.sqrt()))?;
        c = tensor("normalise", sums.broadcast_div(&norms))?;
    }
    Ok(c)
}

/// The `spill` nearest centroids of every row, tile by tile.
fn assign(rows: &[f32], dim: usize, centroids: &Tensor, spill: usize) -> Result<Vec<Vec<u32>>, TensorError> {
    let n = rows.len() / dim;
    let nlist = centroids.dim(0).map_err(|source| TensorError { op: "dim", source })?;
    let ct = tensor("centroids t", centroids.t())?;
    let mut out = Vec::with_capacity(n);
    for tile in rows.chunks(16_384 * dim) {
        let t = tensor("tile", Tensor::from_slice(tile, (tile.len() / dim, dim), &Device::Cpu))?;
        let scores = tensor("assign matmul", t.matmul(&ct))?;
        let part: Vec<Vec<u32>> = with_slice::<f32, _>(&scores, |s| {
            s.par_chunks(nlist)
                .map(|row| {
                    let mut top = TopK::new(spill);
                    top.offer_block(row, 0);
                    top.hits().iter().map(|h| h.row as u32).collect()
                })
                .collect()
        })?;
        out.extend(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::{FlatIndex, Precision};
    use crate::synthetic::SyntheticFaces;

    #[test]
    fn given_synthetic_faces_then_ivf_finds_the_exact_top_1_with_enough_probes() {
        let (n, dim) = (4000, 512);
        let faces = SyntheticFaces::new(21, n);
        let rows: Vec<f32> = (0..n).flat_map(|i| Vec::from(faces.enrolment(i))).collect();
        let queries: Vec<f32> = (0..50).flat_map(|i| Vec::from(faces.nth_capture(i * 79, 1))).collect();
        let ivf = IvfIndex::build(&rows, dim, &IvfOptions { nlist: 32, iterations: 4, ..Default::default() }).unwrap();
        assert_eq!(ivf.nlist(), 32);
        assert_eq!(ivf.ids.len(), n);
        let exact = FlatIndex::new(&rows, dim, Precision::F32).unwrap().search_batch(&queries, 1).unwrap();
        let all = ivf.search_batch(&queries, 1, 32).unwrap();
        let rows_of = |r: &[Vec<Hit>]| r.iter().map(|h| h[0].row).collect::<Vec<_>>();
        assert_eq!(rows_of(&all), rows_of(&exact), "probing every list is exact search");
        let some = ivf.search_batch(&queries, 1, 8).unwrap();
        assert!(some.iter().all(|h| h.len() == 1));
    }
}
