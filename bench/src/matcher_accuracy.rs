//! `facepay-bench matcher`'s accuracy of the match policy, and `--calibrate`, the run its
//! default thresholds come from.
//!
//! Both run on [`Quality::HARD`] (see [`facepay_matcher::synthetic`]): `payers` identities
//! enrolled with their phone digits, every fifth a member of the merchant where the payments
//! happen, and for each a look-alike who never enrolled.
//!
//! - **Accuracy** ([`measure_accuracy`]), through [`Gallery::identify_batch`] as
//!   `facepay serve` decides: genuine captures of random payers, paid directly or, when
//!   asked, after one phone confirmation (a fresh capture with their digits); strangers; and
//!   every look-alike at a merchant where every twin is a member, without digits, with wrong
//!   digits and with the twin's own. Then the cost per capture of a member merchant's search
//!   against a plain scan of the whole gallery, batched and one at a time.
//! - **Calibration** ([`calibrate`]): the score distributions of genuine pairs, of each
//!   stranger's best over the whole gallery (and over a phone bucket), and of each look-alike
//!   against the twin's template; the thresholds that keep every look-alike and stranger below
//!   them by [`MATCH_CALIBRATION_GUARD`]; and whether `facepay_domain::limits` holds them.

use std::time::Instant;

use facepay_domain::event::FaceCaptured;
use facepay_domain::limits::{
    EMBEDDING_DIM, MATCH_ACCEPT_COSINE_MIN, MATCH_ASK_COSINE_MIN, MATCH_CALIBRATION_GUARD,
    MATCH_PHONE_ACCEPT_COSINE_MIN,
};
use facepay_domain::{Embedding, FaceCode, MerchantId, PayerId, PhoneLast4, Score};
use facepay_matcher::flat::{FlatIndex, Precision};
use facepay_matcher::synthetic::{Quality, SyntheticFaces};
use facepay_matcher::{BatchIndex, Gallery, Identification, MatchPolicy, MatchRule, MatcherError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

/// Every `MEMBER_EVERY`-th payer is a member of the merchant of the genuine payments (20 %).
const MEMBER_EVERY: usize = 5;

/// Captures timed for the member tier's cost, batched and one at a time.
const COST_CAPTURES: usize = 1_000;

/// Batched rounds of each, interleaved (the median is reported): one round's order flatters
/// whichever runs second on a warm cache.
const COST_ROUNDS: usize = 5;

/// The merchant of the genuine payments and strangers, with every fifth payer a member.
fn shop() -> MerchantId {
    MerchantId::parse("1900000101").expect("valid id")
}

/// The merchant where every payer is a member: the look-alikes' till.
fn club() -> MerchantId {
    MerchantId::parse("1900000102").expect("valid id")
}

/// How large a population and how many probes of each kind.
#[derive(Debug, Clone, Copy)]
pub struct AccuracyOptions {
    pub payers: usize,
    pub genuine: usize,
    pub impostors: usize,
    pub lookalikes: usize,
    pub seed: u64,
}

/// The enrolled population: its faces, the gallery as `facepay serve` holds it, and the rows.
struct Population {
    faces: SyntheticFaces,
    gallery: Gallery,
    rows: Vec<f32>,
}

impl Population {
    fn enrol(opts: &AccuracyOptions) -> Self {
        let faces = SyntheticFaces::with_quality(opts.seed, opts.payers, Quality::HARD);
        let rows: Vec<f32> =
            (0..opts.payers).into_par_iter().flat_map_iter(|i| Vec::from(faces.enrolment(i))).collect();
        let mut gallery = Gallery::new();
        for (i, row) in rows.chunks_exact(EMBEDDING_DIM).enumerate() {
            let template = Embedding::try_from(row.to_vec()).expect("a generated template");
            gallery.enroll(payer(i), &template, Some(faces.phone_last4(i)));
            gallery.add_member(&club(), &payer(i));
            if i % MEMBER_EVERY == 0 {
                gallery.add_member(&shop(), &payer(i));
            }
        }
        Self { faces, gallery, rows }
    }

    /// Identifies each (capture, merchant) as one batch, as a matcher stage does.
    fn identify(&self, probes: &[(FaceCaptured, MerchantId)]) -> Result<Vec<Identification>, MatcherError> {
        let batch: Vec<_> = probes.iter().map(|(c, m)| (m, c)).collect();
        self.gallery.identify_batch(&batch, &MatchPolicy::default())
    }
}

fn payer(i: usize) -> PayerId {
    PayerId::parse(format!("payer-{i}")).expect("valid id")
}

fn capture(embedding: Embedding, phone_last4: Option<PhoneLast4>) -> FaceCaptured {
    FaceCaptured {
        face_code: FaceCode::parse("134567890123456789").expect("18 digits"),
        embedding,
        liveness: Score::try_from(0.95).expect("in range"),
        phone_last4,
    }
}

/// Other digits than `phone`'s (the next number, wrapping).
fn wrong(phone: PhoneLast4) -> PhoneLast4 {
    let n: u16 = phone.as_str().parse().expect("4 digits");
    PhoneLast4::parse(&format!("{:04}", (n + 1) % 10_000)).expect("4 digits")
}

/// The accuracy of the default policy and the member tier's cost.
#[derive(Debug, Clone, Serialize)]
pub struct AccuracyReport {
    pub accuracy_payers: usize,
    pub accuracy_members: usize,
    pub genuine: usize,
    /// Genuine captures paid to their payer at once (member or global hit).
    pub tar_direct: f64,
    /// Paid at once, or after one phone confirmation (a fresh capture with their digits).
    pub tar_with_phone: f64,
    /// Genuine captures asked for the phone digits.
    pub genuine_asked: f64,
    /// Genuine captures paid to someone else (directly or after the digits): must be 0.
    pub genuine_wrong_payer: usize,
    pub impostors: usize,
    /// Strangers paid, without digits and with random digits.
    pub far_impostor: f64,
    pub far_impostor_with_digits: f64,
    pub lookalikes: usize,
    /// Look-alikes paid at a merchant where every twin is a member, without digits.
    pub far_lookalike_member: f64,
    /// The same with digits other than the twin's, and with the twin's own.
    pub far_lookalike_wrong_digits: f64,
    pub far_lookalike_twin_digits: f64,
    /// Look-alikes asked for the digits (without them).
    pub lookalike_asked: f64,
    /// Cost per capture at the merchant with 20 % members, against a plain exact scan of the
    /// whole gallery (top-2, batched on the engine the gallery uses: AMX where present) ([`COST_CAPTURES`] at once, the median of
    /// [`COST_ROUNDS`] interleaved rounds) and one at a time (each capture timed both ways in turn).
    pub member_tier_batch_ms_per_capture: f64,
    pub scan_batch_ms_per_capture: f64,
    /// The same captures decided at a merchant without members (the policy's own work
    /// around the scan, with no member to look up).
    pub no_member_batch_ms_per_capture: f64,
    pub member_tier_single_p50_ms: f64,
    pub scan_single_p50_ms: f64,
    pub member_tier_single_p99_ms: f64,
    pub scan_single_p99_ms: f64,
}

/// Share of `ids` that named a payer.
fn paid_share(ids: &[Identification]) -> f64 {
    ids.iter().filter(|id| id.payer_id.is_some()).count() as f64 / ids.len().max(1) as f64
}

/// Runs the accuracy measurement (see the module's documentation).
pub fn measure_accuracy(opts: &AccuracyOptions) -> Result<AccuracyReport, MatcherError> {
    let pop = Population::enrol(opts);
    let (tar_direct, tar_with_phone, genuine_asked, genuine_wrong_payer) = genuine(&pop, opts)?;
    let strangers = |digits: bool| -> Vec<(FaceCaptured, MerchantId)> {
        (0..opts.impostors as u64)
            .into_par_iter()
            .map(|n| {
                let phone = digits.then(|| pop.faces.phone_last4(n as usize % opts.payers));
                (capture(pop.faces.nth_stranger(n), phone), shop())
            })
            .collect()
    };
    let far_impostor = paid_share(&pop.identify(&strangers(false))?);
    let far_impostor_with_digits = paid_share(&pop.identify(&strangers(true))?);
    let lookalikes = |digits: fn(PhoneLast4) -> Option<PhoneLast4>| -> Vec<(FaceCaptured, MerchantId)> {
        (0..opts.lookalikes)
            .into_par_iter()
            .map(|i| {
                let twin = i % opts.payers;
                (capture(pop.faces.lookalike_capture(twin, 1), digits(pop.faces.phone_last4(twin))), club())
            })
            .collect()
    };
    let bare = pop.identify(&lookalikes(|_| None))?;
    let lookalike_asked =
        bare.iter().filter(|id| id.rule == MatchRule::NeedsPhoneConfirmation).count() as f64 / bare.len().max(1) as f64;
    let cost = member_tier_cost(&pop)?;
    Ok(AccuracyReport {
        accuracy_payers: opts.payers,
        accuracy_members: opts.payers.div_ceil(MEMBER_EVERY),
        genuine: opts.genuine,
        tar_direct,
        tar_with_phone,
        genuine_asked,
        genuine_wrong_payer,
        impostors: opts.impostors,
        far_impostor,
        far_impostor_with_digits,
        lookalikes: opts.lookalikes,
        far_lookalike_member: paid_share(&bare),
        far_lookalike_wrong_digits: paid_share(&pop.identify(&lookalikes(|p| Some(wrong(p))))?),
        far_lookalike_twin_digits: paid_share(&pop.identify(&lookalikes(Some))?),
        lookalike_asked,
        member_tier_batch_ms_per_capture: cost.member_batch_ms,
        scan_batch_ms_per_capture: cost.scan_batch_ms,
        no_member_batch_ms_per_capture: cost.plain_batch_ms,
        member_tier_single_p50_ms: cost.member_single.0,
        scan_single_p50_ms: cost.scan_single.0,
        member_tier_single_p99_ms: cost.member_single.1,
        scan_single_p99_ms: cost.scan_single.1,
    })
}

/// Genuine captures of random payers at the shop: (paid at once, paid at once or after the
/// digits, asked, paid to someone else).
fn genuine(pop: &Population, opts: &AccuracyOptions) -> Result<(f64, f64, f64, usize), MatcherError> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x6e75);
    let who: Vec<usize> = (0..opts.genuine).map(|_| rng.random_range(0..opts.payers)).collect();
    let first: Vec<_> = who.par_iter().map(|&i| (capture(pop.faces.nth_capture(i, 1), None), shop())).collect();
    let ids = pop.identify(&first)?;
    let asked: Vec<usize> = (0..ids.len()).filter(|&n| ids[n].rule == MatchRule::NeedsPhoneConfirmation).collect();
    let again: Vec<_> = asked
        .par_iter()
        .map(|&n| (capture(pop.faces.nth_capture(who[n], 2), Some(pop.faces.phone_last4(who[n]))), shop()))
        .collect();
    let confirmed = pop.identify(&again)?;
    let right = |id: &Identification, i: usize| id.payer_id.as_ref() == Some(&payer(i));
    let wrong_payer = |id: &Identification, i: usize| id.payer_id.is_some() && !right(id, i);
    let direct = ids.iter().zip(&who).filter(|(id, &i)| right(id, i)).count();
    let after = asked.iter().zip(&confirmed).filter(|(&n, id)| right(id, who[n])).count();
    let misses = ids.iter().zip(&who).filter(|(id, &i)| wrong_payer(id, i)).count()
        + asked.iter().zip(&confirmed).filter(|(&n, id)| wrong_payer(id, who[n])).count();
    let n = opts.genuine.max(1) as f64;
    Ok((direct as f64 / n, (direct + after) as f64 / n, asked.len() as f64 / n, misses))
}

/// What a capture costs at the shop (20 % members) against a plain scan, in ms.
struct Cost {
    member_batch_ms: f64,
    scan_batch_ms: f64,
    plain_batch_ms: f64,
    member_single: (f64, f64),
    scan_single: (f64, f64),
}

fn member_tier_cost(pop: &Population) -> Result<Cost, MatcherError> {
    let members: Vec<_> = (0..COST_CAPTURES)
        .map(|n| (capture(pop.faces.nth_capture((n * MEMBER_EVERY) % pop.faces.len(), 3), None), shop()))
        .collect();
    let queries: Vec<f32> = members.iter().flat_map(|(c, _)| c.embedding.as_slice().iter().copied()).collect();
    // The scan a batch is compared with runs on the engine the gallery's batches use.
    let index = BatchIndex::build(&pop.rows, EMBEDDING_DIM)?;
    let flat = FlatIndex::new(&pop.rows, EMBEDDING_DIM, Precision::F32)?;
    pop.identify(&members[..1])?; // builds the gallery's batch index, as the first batch after a change does
    let elsewhere: Vec<_> =
        members.iter().map(|(c, _)| (c.clone(), MerchantId::parse("1900000199").expect("valid id"))).collect();
    let (mut member_batch, mut scan_batch, mut plain_batch) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..COST_ROUNDS {
        let t = Instant::now();
        pop.identify(&members)?;
        member_batch.push(t.elapsed().as_secs_f64() * 1e3 / COST_CAPTURES as f64);
        let t = Instant::now();
        pop.identify(&elsewhere)?;
        plain_batch.push(t.elapsed().as_secs_f64() * 1e3 / COST_CAPTURES as f64);
        let t = Instant::now();
        index.search_batch(&pop.rows, &queries, 2)?;
        scan_batch.push(t.elapsed().as_secs_f64() * 1e3 / COST_CAPTURES as f64);
    }
    let (member_batch_ms, scan_batch_ms, plain_batch_ms) =
        (median(member_batch), median(scan_batch), median(plain_batch));
    let policy = MatchPolicy::default();
    let mut single = (Vec::new(), Vec::new());
    for ((c, m), q) in members.iter().zip(queries.chunks_exact(EMBEDDING_DIM)) {
        let t = Instant::now();
        pop.gallery.identify(m, c, &policy)?;
        single.0.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        flat.search_one(q, 2)?;
        single.1.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (member_single, scan_single) = (percentiles(single.0), percentiles(single.1));
    Ok(Cost { member_batch_ms, scan_batch_ms, plain_batch_ms, member_single, scan_single })
}

/// p50 and p99 of the timings.
fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms.get(((ms.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
    (at(0.50), at(0.99))
}

fn median(ms: Vec<f64>) -> f64 {
    percentiles(ms).0
}

/// Where a score distribution lies.
#[derive(Debug, Clone, Serialize)]
pub struct Quantiles {
    pub count: usize,
    pub min: f32,
    pub q0_0001: f32,
    pub q0_001: f32,
    pub q0_01: f32,
    pub median: f32,
    pub q0_99: f32,
    pub q0_999: f32,
    pub q0_9999: f32,
    pub max: f32,
}

impl Quantiles {
    fn of(mut scores: Vec<f32>) -> Self {
        scores.sort_by(f32::total_cmp);
        let at = |q: f64| scores.get(((scores.len() - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0);
        Self {
            count: scores.len(),
            min: at(0.0),
            q0_0001: at(0.0001),
            q0_001: at(0.001),
            q0_01: at(0.01),
            median: at(0.5),
            q0_99: at(0.99),
            q0_999: at(0.999),
            q0_9999: at(0.9999),
            max: at(1.0),
        }
    }
}

/// The score distributions and the thresholds they give.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    pub payers: usize,
    pub seed: u64,
    /// Each payer's enrolled template against a later capture of them.
    pub genuine: Quantiles,
    /// Each stranger's best score over the whole gallery (`impostor_comparisons` pairs).
    pub impostor_best: Quantiles,
    pub impostor_comparisons: u64,
    /// Each stranger's best score among the payers enrolled with random digits.
    pub impostor_bucket_best: Quantiles,
    /// Each look-alike's capture against the twin's enrolled template.
    pub lookalike: Quantiles,
    pub guard: f32,
    /// max(look-alike, stranger's best) + guard, rounded up to the hundredth: the member and
    /// global thresholds.
    pub accept_threshold: f32,
    /// max(look-alike, stranger's best in a bucket) + guard, rounded up: the phone threshold.
    pub phone_threshold: f32,
    /// Stranger's best + guard, rounded up: below it a face is unknown, not asked.
    pub ask_floor: f32,
    /// Genuine pairs under the accept threshold (asked) and under the ask floor (turned away).
    pub genuine_below_accept: f64,
    pub genuine_below_ask_floor: f64,
    /// Whether `facepay_domain::limits` holds exactly these thresholds.
    pub defaults_match: bool,
}

/// `x + guard`, rounded up to the hundredth (a float's last bit does not round it further).
fn threshold(x: f32) -> f32 {
    ((x + MATCH_CALIBRATION_GUARD) * 100.0 - 1e-3).ceil() / 100.0
}

/// Runs the calibration on `opts.payers` payers, `opts.impostors` strangers and
/// `opts.lookalikes` look-alikes (see the module's documentation).
pub fn calibrate(opts: &AccuracyOptions) -> Result<CalibrationReport, MatcherError> {
    let pop = Population::enrol(opts);
    let faces = &pop.faces;
    let dot = |a: &Embedding, b: &[f32]| a.as_slice().iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let row = |i: usize| &pop.rows[i * EMBEDDING_DIM..(i + 1) * EMBEDDING_DIM];
    let genuine: Vec<f32> = (0..opts.payers).into_par_iter().map(|i| dot(&faces.nth_capture(i, 1), row(i))).collect();
    let below = |t: f32| genuine.iter().filter(|&&g| g < t).count() as f64 / genuine.len().max(1) as f64;
    let lookalike: Vec<f32> = (0..opts.lookalikes)
        .into_par_iter()
        .map(|i| dot(&faces.lookalike_capture(i % opts.payers, 1), row(i % opts.payers)))
        .collect();
    let strangers: Vec<f32> =
        (0..opts.impostors as u64).into_par_iter().flat_map_iter(|n| Vec::from(faces.nth_stranger(n))).collect();
    let index = FlatIndex::new(&pop.rows, EMBEDDING_DIM, Precision::F32)?;
    let impostor_best: Vec<f32> =
        index.search_batch(&strangers, 1)?.iter().map(|hits| hits.first().map_or(0.0, |h| h.score)).collect();
    let in_buckets: Vec<_> = (0..opts.impostors as u64)
        .into_par_iter()
        .map(|n| (capture(faces.nth_stranger(n), Some(faces.phone_last4(n as usize % opts.payers))), shop()))
        .collect();
    let bucket_best: Vec<f32> = pop.identify(&in_buckets)?.iter().map(|id| id.score).collect();
    let (impostor_best, impostor_bucket_best, lookalike) =
        (Quantiles::of(impostor_best), Quantiles::of(bucket_best), Quantiles::of(lookalike));
    let accept_threshold = threshold(lookalike.max.max(impostor_best.max));
    let phone_threshold = threshold(lookalike.max.max(impostor_bucket_best.max));
    let ask_floor = threshold(impostor_best.max);
    let (genuine_below_accept, genuine_below_ask_floor) = (below(accept_threshold), below(ask_floor));
    Ok(CalibrationReport {
        payers: opts.payers,
        seed: opts.seed,
        impostor_comparisons: opts.impostors as u64 * opts.payers as u64,
        genuine_below_accept,
        genuine_below_ask_floor,
        genuine: Quantiles::of(genuine),
        impostor_best,
        impostor_bucket_best,
        lookalike,
        guard: MATCH_CALIBRATION_GUARD,
        defaults_match: (accept_threshold, phone_threshold, ask_floor)
            == (MATCH_ACCEPT_COSINE_MIN, MATCH_PHONE_ACCEPT_COSINE_MIN, MATCH_ASK_COSINE_MIN),
        accept_threshold,
        phone_threshold,
        ask_floor,
    })
}
