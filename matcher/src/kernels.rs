//! Inner-product kernels for the memory-bound scans: one query against many stored rows.
//!
//! A single-query search reads the whole gallery once and does two flops per byte-pair it
//! reads, so it is bound by memory bandwidth, not arithmetic: the kernels only have to keep
//! up with memory, which AVX2 + FMA does with room to spare (F16C widens f16 rows on the
//! fly, halving the bytes read). The instruction set is detected once at run time; without
//! it a portable loop with several accumulators (which the compiler vectorises) is used.

use std::sync::OnceLock;

use half::f16;

/// Which kernel family this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX2 + FMA + F16C.
    Avx2,
    /// Anything else.
    Portable,
}

fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            return Isa::Avx2;
        }
        Isa::Portable
    })
}

/// Dot product of two equally long vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: the CPU supports AVX2 + FMA (checked above); lengths are equal.
        return unsafe { x86::dot_f32(a, b) };
    }
    portable_dot(a.iter().copied(), b)
}

/// `out[i] = rows[i] · query` for the `out.len()` rows of `rows` (row-major, `query.len()`
/// wide).
pub fn scores_f32(rows: &[f32], query: &[f32], out: &mut [f32]) {
    let dim = query.len();
    assert_eq!(rows.len(), out.len() * dim);
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: AVX2 + FMA checked; every row is `dim` long like the query.
        unsafe { x86::scores_f32(rows, query, out) };
        return;
    }
    for (row, o) in rows.chunks_exact(dim).zip(out) {
        *o = portable_dot(row.iter().copied(), query);
    }
}

/// [`scores_f32`] for rows stored as f16, widened on the fly.
pub fn scores_f16(rows: &[f16], query: &[f32], out: &mut [f32]) {
    let dim = query.len();
    assert_eq!(rows.len(), out.len() * dim);
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: AVX2 + FMA + F16C checked; every row is `dim` long like the query.
        unsafe { x86::scores_f16(rows, query, out) };
        return;
    }
    for (row, o) in rows.chunks_exact(dim).zip(out) {
        *o = portable_dot(row.iter().map(|h| h.to_f32()), query);
    }
}

/// Eight independent accumulators, so the loop is not one long dependency chain.
fn portable_dot(a: impl Iterator<Item = f32>, b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (i, (x, y)) in a.zip(b).enumerate() {
        acc[i % 8] += x * y;
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    /// Horizontal sum of 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Dot product; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let off = i + 8 * j;
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(off)), _mm256_loadu_ps(pb.add(off)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    /// Scores of consecutive f32 rows against one query.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores_f32(rows: &[f32], query: &[f32], out: &mut [f32]) {
        for (row, o) in rows.chunks_exact(query.len()).zip(out) {
            *o = dot_f32(row, query);
        }
    }

    /// Scores of consecutive f16 rows against one f32 query.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores_f16(rows: &[f16], query: &[f32], out: &mut [f32]) {
        let n = query.len();
        let pq = query.as_ptr();
        for (row, o) in rows.chunks_exact(n).zip(out) {
            let pr = row.as_ptr() as *const __m128i;
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 8 * j;
                    let wide = _mm256_cvtph_ps(_mm_loadu_si128(pr.byte_add(off * 2)));
                    *acc = _mm256_fmadd_ps(wide, _mm256_loadu_ps(pq.add(off)), *acc);
                }
                i += 32;
            }
            let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
            while i < n {
                s += row[i].to_f32() * query[i];
                i += 1;
            }
            *o = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    }

    #[test]
    fn given_any_length_then_kernels_agree_with_the_plain_sum() {
        for dim in [1, 7, 8, 31, 32, 33, 512] {
            let q = data(dim, 1);
            let rows = data(dim * 5, 2);
            let expected: Vec<f32> =
                rows.chunks_exact(dim).map(|r| r.iter().zip(&q).map(|(a, b)| a * b).sum()).collect();
            let mut out = vec![0.0; 5];
            scores_f32(&rows, &q, &mut out);
            let halves: Vec<f16> = rows.iter().map(|&x| f16::from_f32(x)).collect();
            let mut out16 = vec![0.0; 5];
            scores_f16(&halves, &q, &mut out16);
            for i in 0..5 {
                assert!((out[i] - expected[i]).abs() < 1e-3, "dim {dim}");
                assert!((out16[i] - expected[i]).abs() < 1e-2, "dim {dim} f16");
                assert!((dot(&rows[i * dim..(i + 1) * dim], &q) - expected[i]).abs() < 1e-3);
            }
        }
    }
}
