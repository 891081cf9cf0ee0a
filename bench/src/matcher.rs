//! `facepay-bench matcher`: exact batched and single-query
//! search over a synthetic gallery, f32 against f16, the approximate indexes (binary
//! codes, IVF) against exact search, and the match policy's accuracy
//! ([`crate::matcher_accuracy`]); `--calibrate` prints the calibration instead.
//!
//! The gallery is the enrolment captures of `gallery` synthetic identities; the queries are
//! later captures of random enrolled identities (the workload of a till). Recall@1 of a
//! variant is the share of queries whose best row equals the exact f32 search's best row.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use facepay_matcher::codes::{CodeIndex, CodeOptions};
use facepay_matcher::flat::{FlatIndex, Precision, TensorError};
use facepay_matcher::ivf::{IvfIndex, IvfOptions};
use facepay_matcher::synthetic::SyntheticFaces;
use facepay_matcher::topk::Hit;
use facepay_matcher::MatcherError;

use crate::matcher_accuracy::{calibrate, measure_accuracy, AccuracyOptions, AccuracyReport, CalibrationReport};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub gallery: usize,
    pub queries: usize,
    pub k: usize,
    pub seed: u64,
    /// Single-query searches timed (the first `single` queries, one at a time).
    pub single: usize,
    /// Build and measure the IVF index too.
    pub ivf: Option<IvfOptions>,
    /// Lists probed per IVF query: each value is measured on the one index.
    pub nprobe: Vec<usize>,
    /// Build and measure the binary-code index too.
    pub codes: Option<CodeOptions>,
    /// Write `gallery.f32` and `queries.f32` (raw little-endian f32) here.
    pub export: Option<PathBuf>,
    /// Measure the policy's accuracy too.
    pub accuracy: Option<AccuracyOptions>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            gallery: 100_000,
            queries: 1_000,
            k: 5,
            seed: 20_260_302,
            single: 1_000,
            ivf: None,
            nprobe: vec![32],
            codes: None,
            export: None,
            accuracy: None,
        }
    }
}

/// The figures, one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub gallery: usize,
    pub dim: usize,
    pub queries: usize,
    pub k: usize,
    pub threads: usize,
    pub generate_s: f64,
    /// Exact f32: all queries in one batched search (tiled matmul + top-k).
    pub batch_s: f64,
    pub batch_queries_per_s: f64,
    /// The same over the f16 gallery.
    pub batch_f16_queries_per_s: f64,
    /// The same on AMX (bf16 tiles, exact f32 rerank), where the CPU has it; the engine
    /// the gallery's batches use there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_amx_queries_per_s: Option<f64>,
    /// Queries whose AMX top-k rows equal exact f32's, all k in order (must be 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amx_recall_at_k: Option<f64>,
    /// One query at a time, f32 gallery (memory-bound scan).
    pub single_query_p50_ms: f64,
    pub single_query_p99_ms: f64,
    /// One query at a time, f16 gallery.
    pub single_query_f16_p50_ms: f64,
    pub single_query_f16_p99_ms: f64,
    /// Effective read bandwidth of the median f32 single query, GB/s.
    pub single_query_gb_per_s: f64,
    pub gallery_bytes_f32: usize,
    pub gallery_bytes_f16: usize,
    /// Top-1 of the f16 gallery (batched and single) equal to exact f32's.
    pub recall_at_1_f16: f64,
    /// Share of queries whose exact top-1 is their own identity.
    pub genuine_top1: f64,
    /// The IVF figures of the fewest probes that reach recall@1 ≥ 0.99 (else the most
    /// probes measured), and every setting measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivf_queries_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivf_recall_at_1: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ivf: Vec<IvfReport>,
    /// The binary-code index against exact f32 search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codes: Option<CodesReport>,
    /// The match policy's accuracy on the calibration's population, and the member tier's
    /// cost (keys at the top level).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<AccuracyReport>,
}

/// The binary-code index (sign codes, Hamming scan, exact rerank) against exact search.
#[derive(Debug, Clone, Serialize)]
pub struct CodesReport {
    pub bits: usize,
    pub rerank: usize,
    pub build_s: f64,
    /// Codes and hyperplanes; the rerank reads the gallery's own f32 rows.
    pub codes_bytes: usize,
    /// All queries in one batched search.
    pub approx_queries_per_s: f64,
    /// `approx_queries_per_s / batch_queries_per_s` (exact f32, batched).
    pub speedup_over_exact: f64,
    /// Share of queries (batched and single) whose best row equals exact f32's.
    pub approx_recall_at_1: f64,
    /// One query at a time.
    pub approx_single_query_p50_ms: f64,
    pub approx_single_query_p99_ms: f64,
}

/// The approximate index against exact search.
#[derive(Debug, Clone, Serialize)]
pub struct IvfReport {
    pub nlist: usize,
    pub nprobe: usize,
    pub spill: usize,
    pub build_s: f64,
    pub ivf_bytes: usize,
    pub ivf_queries_per_s: f64,
    /// `ivf_queries_per_s / batch_queries_per_s`.
    pub speedup_over_exact: f64,
    pub ivf_recall_at_1: f64,
}

/// The synthetic gallery and queries of `opts`, row-major, plus the identity of each query.
pub fn workload(opts: &BenchOptions) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let faces = SyntheticFaces::new(opts.seed, opts.gallery);
    let gallery: Vec<f32> =
        (0..opts.gallery).into_par_iter().flat_map_iter(|i| Vec::from(faces.enrolment(i))).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed);
    let who: Vec<usize> = (0..opts.queries).map(|_| rng.random_range(0..opts.gallery)).collect();
    let queries: Vec<f32> = who.par_iter().flat_map_iter(|&i| Vec::from(faces.nth_capture(i, 1))).collect();
    (gallery, queries, who)
}

/// Runs the benchmark.
pub fn measure(opts: &BenchOptions) -> Result<BenchReport, TensorError> {
    let dim = facepay_domain::limits::EMBEDDING_DIM;
    let t = Instant::now();
    let (gallery, queries, who) = workload(opts);
    let generate_s = t.elapsed().as_secs_f64();
    if let Some(dir) = &opts.export {
        export(dir, &gallery, &queries).map_err(|e| TensorError { op: "export", source: e.into() })?;
    }
    let exact = FlatIndex::new(&gallery, dim, Precision::F32)?;
    let half = FlatIndex::new(&gallery, dim, Precision::F16)?;

    let t = Instant::now();
    let truth = exact.search_batch(&queries, opts.k)?;
    let batch_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let batch16 = half.search_batch(&queries, opts.k)?;
    let batch16_s = t.elapsed().as_secs_f64();

    let amx = time_amx(&gallery, &queries, &truth, opts.k);
    let single = opts.single.min(opts.queries);
    let (p50, p99, singles) = time_single(&exact, &queries[..single * dim], opts.k)?;
    let (p50_16, p99_16, singles16) = time_single(&half, &queries[..single * dim], opts.k)?;
    let agree = |a: &[Vec<Hit>], b: &[Vec<Hit>]| a.iter().zip(b).filter(|(x, y)| top1(x) == top1(y)).count();
    let single_ok = agree(&singles, &truth[..single]) == single;
    let f16_agree = agree(&batch16, &truth) + agree(&singles16, &truth[..single]);
    let ivf = match opts.ivf {
        Some(o) => run_ivf(&gallery, &queries, &truth, batch_s, o, opts)?,
        None => Vec::new(),
    };
    let codes = match opts.codes {
        Some(o) => Some(run_codes(&gallery, &queries, &truth, batch_s, o, opts)?),
        None => None,
    };
    let accuracy = match &opts.accuracy {
        Some(o) => Some(measure_accuracy(o).map_err(|e| match e {
            MatcherError::Tensor(t) => t,
        })?),
        None => None,
    };
    let chosen = ivf.iter().find(|r| r.ivf_recall_at_1 >= 0.99).or(ivf.last());
    assert!(single_ok, "the single-query path disagrees with the batched one");
    Ok(BenchReport {
        gallery: opts.gallery,
        dim,
        queries: opts.queries,
        k: opts.k,
        threads: rayon::current_num_threads(),
        generate_s,
        batch_s,
        batch_queries_per_s: opts.queries as f64 / batch_s,
        batch_f16_queries_per_s: opts.queries as f64 / batch16_s,
        batch_amx_queries_per_s: amx.map(|(s, _)| opts.queries as f64 / s),
        amx_recall_at_k: amx.map(|(_, r)| r),
        single_query_p50_ms: p50,
        single_query_p99_ms: p99,
        single_query_f16_p50_ms: p50_16,
        single_query_f16_p99_ms: p99_16,
        single_query_gb_per_s: exact.bytes() as f64 / (p50 / 1e3) / 1e9,
        gallery_bytes_f32: exact.bytes(),
        gallery_bytes_f16: half.bytes(),
        recall_at_1_f16: f16_agree as f64 / (opts.queries + single) as f64,
        genuine_top1: truth.iter().zip(&who).filter(|(h, &w)| top1(h) == Some(w)).count() as f64 / opts.queries as f64,
        ivf_queries_per_s: chosen.map(|r| r.ivf_queries_per_s),
        ivf_recall_at_1: chosen.map(|r| r.ivf_recall_at_1),
        ivf,
        codes,
        accuracy,
    })
}

/// Seconds of one AMX batch over `queries` and the share of queries whose rows equal `truth`'s.
fn time_amx(gallery: &[f32], queries: &[f32], truth: &[Vec<Hit>], k: usize) -> Option<(f64, f64)> {
    let index = facepay_matcher::amx::AmxIndex::new(gallery, facepay_domain::limits::EMBEDDING_DIM)?;
    let t = Instant::now();
    let found = index.search_batch(gallery, queries, k);
    let s = t.elapsed().as_secs_f64();
    let rows = |h: &[Hit]| h.iter().map(|h| h.row).collect::<Vec<_>>();
    let same = found.iter().zip(truth).filter(|(a, b)| rows(a) == rows(b)).count();
    Some((s, same as f64 / truth.len().max(1) as f64))
}

fn top1(hits: &[Hit]) -> Option<usize> {
    hits.first().map(|h| h.row)
}

/// p50 and p99 in ms of one-at-a-time searches, and their answers.
fn time_single(index: &FlatIndex, queries: &[f32], k: usize) -> Result<(f64, f64, Vec<Vec<Hit>>), TensorError> {
    time_each(queries, index.dim(), |q| index.search_one(q, k))
}

/// p50 and p99 in ms of `search` over each query alone, and its answers.
fn time_each(
    queries: &[f32],
    dim: usize,
    mut search: impl FnMut(&[f32]) -> Result<Vec<Hit>, TensorError>,
) -> Result<(f64, f64, Vec<Vec<Hit>>), TensorError> {
    let mut ms = Vec::new();
    let mut answers = Vec::new();
    for q in queries.chunks_exact(dim) {
        let t = Instant::now();
        answers.push(search(q)?);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms.get(((ms.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
    Ok((at(0.50), at(0.99), answers))
}

fn run_ivf(
    rows: &[f32],
    queries: &[f32],
    truth: &[Vec<Hit>],
    batch_s: f64,
    o: IvfOptions,
    opts: &BenchOptions,
) -> Result<Vec<IvfReport>, TensorError> {
    let dim = facepay_domain::limits::EMBEDDING_DIM;
    let t = Instant::now();
    let index = IvfIndex::build(rows, dim, &o)?;
    let build_s = t.elapsed().as_secs_f64();
    let mut reports = Vec::new();
    for &nprobe in &opts.nprobe {
        let t = Instant::now();
        let found = index.search_batch(queries, opts.k, nprobe)?;
        let ivf_s = t.elapsed().as_secs_f64();
        let agree = found.iter().zip(truth).filter(|(a, b)| top1(a) == top1(b)).count();
        reports.push(IvfReport {
            nlist: index.nlist(),
            nprobe,
            spill: o.spill,
            build_s,
            ivf_bytes: index.bytes(),
            ivf_queries_per_s: opts.queries as f64 / ivf_s,
            speedup_over_exact: batch_s / ivf_s,
            ivf_recall_at_1: agree as f64 / opts.queries as f64,
        });
    }
    Ok(reports)
}

/// Builds the code index over `rows` and measures it batched and one query at a time.
fn run_codes(
    rows: &[f32],
    queries: &[f32],
    truth: &[Vec<Hit>],
    batch_s: f64,
    o: CodeOptions,
    opts: &BenchOptions,
) -> Result<CodesReport, TensorError> {
    let dim = facepay_domain::limits::EMBEDDING_DIM;
    let t = Instant::now();
    let index = CodeIndex::build(rows, dim, &o)?;
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let found = index.search_batch(rows, queries, opts.k)?;
    let approx_s = t.elapsed().as_secs_f64();
    let single = opts.single.min(opts.queries);
    let (p50, p99, singles) =
        time_each(&queries[..single * dim], dim, |q| Ok(index.search_batch(rows, q, opts.k)?.remove(0)))?;
    let agree = |a: &[Vec<Hit>]| a.iter().zip(truth).filter(|(x, y)| top1(x) == top1(y)).count();
    Ok(CodesReport {
        bits: index.bits(),
        rerank: o.rerank,
        build_s,
        codes_bytes: index.bytes(),
        approx_queries_per_s: opts.queries as f64 / approx_s,
        speedup_over_exact: batch_s / approx_s,
        approx_recall_at_1: (agree(&found) + agree(&singles)) as f64 / (opts.queries + single) as f64,
        approx_single_query_p50_ms: p50,
        approx_single_query_p99_ms: p99,
    })
}

/// Writes the gallery and queries as raw little-endian f32 for other engines (faiss).
fn export(dir: &std::path::Path, gallery: &[f32], queries: &[f32]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, data) in [("gallery.f32", gallery), ("queries.f32", queries)] {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        for x in data {
            f.write_all(&x.to_le_bytes())?;
        }
        f.flush()?;
    }
    Ok(())
}

/// `facepay-bench matcher`'s arguments.
#[derive(clap::Args, Debug)]
pub struct MatcherArgs {
    #[arg(long)]
    pub json: bool,
    /// Enrolled identities (gallery rows, 512-d).
    #[arg(long, default_value_t = 100_000)]
    pub gallery: usize,
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    #[arg(long, default_value_t = 20_260_302)]
    pub seed: u64,
    /// Single queries timed one at a time (at most `queries`).
    #[arg(long, default_value_t = 1_000)]
    pub single: usize,
    /// Also build and measure an IVF index with this many lists (0: none).
    #[arg(long, default_value_t = 0)]
    pub ivf_lists: usize,
    /// Lists an IVF query probes; several values (comma-separated) are each measured.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    pub nprobe: Vec<usize>,
    /// Lists each row is stored in.
    #[arg(long, default_value_t = 1)]
    pub spill: usize,
    /// Also build and measure the binary-code index with codes of this many bits (0: none).
    #[arg(long, default_value_t = 0)]
    pub codes_bits: usize,
    /// Candidates per query the code index reranks exactly.
    #[arg(long, default_value_t = 64)]
    pub rerank: usize,
    /// Write DIR/gallery.f32 and DIR/queries.f32 (raw little-endian f32) for faiss.
    #[arg(long)]
    pub export: Option<std::path::PathBuf>,
    /// Print the calibration of the match policy's thresholds instead (score distributions
    /// of genuine, stranger and look-alike pairs, and the thresholds they give).
    #[arg(long)]
    pub calibrate: bool,
    /// Payers of the accuracy and calibration population (0: no accuracy measured).
    #[arg(long, default_value_t = 100_000)]
    pub payers: usize,
    /// Genuine captures of the accuracy run.
    #[arg(long, default_value_t = 100_000)]
    pub genuine: usize,
    /// Strangers of the accuracy run and the calibration.
    #[arg(long, default_value_t = 10_000)]
    pub impostors: usize,
    /// Look-alikes of the accuracy run and the calibration.
    #[arg(long, default_value_t = 100_000)]
    pub lookalikes: usize,
}

/// What `facepay-bench matcher` prints: the search and accuracy figures, or the calibration.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MatcherReport {
    Bench(Box<BenchReport>),
    Calibration(Box<CalibrationReport>),
}

/// `facepay-bench matcher`: exact batched and single-query search, f16 against f32, and the
/// IVF index against exact search, over a synthetic gallery ([`measure`]).
pub async fn run(args: MatcherArgs) -> anyhow::Result<MatcherReport> {
    let calibrating = args.calibrate;
    let opts = args.options();
    tokio::task::spawn_blocking(move || match (calibrating, &opts.accuracy) {
        (true, Some(o)) => Ok(MatcherReport::Calibration(Box::new(calibrate(o)?))),
        (true, None) => Err(anyhow::anyhow!("--calibrate needs --payers above 0")),
        (false, _) => Ok(MatcherReport::Bench(Box::new(measure(&opts)?))),
    })
    .await?
}

impl MatcherArgs {
    fn options(self) -> BenchOptions {
        let codes = (self.codes_bits > 0).then_some(CodeOptions {
            bits: self.codes_bits,
            rerank: self.rerank.max(1),
            ..Default::default()
        });
        let ivf = (self.ivf_lists > 0).then_some(IvfOptions {
            nlist: self.ivf_lists,
            spill: self.spill.max(1),
            ..Default::default()
        });
        BenchOptions {
            gallery: self.gallery.max(1),
            queries: self.queries.max(1),
            k: self.k.max(1),
            seed: self.seed,
            single: self.single,
            ivf,
            nprobe: self.nprobe.into_iter().map(|n| n.max(1)).collect(),
            codes,
            export: self.export,
            accuracy: (self.payers > 0).then_some(AccuracyOptions {
                payers: self.payers,
                genuine: self.genuine.max(1),
                impostors: self.impostors.max(1),
                lookalikes: self.lookalikes.max(1),
                seed: self.seed,
            }),
        }
    }
}
