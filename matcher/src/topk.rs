//! Top-k selection without sorting: a bounded, sorted list of the k best scores and a
//! threshold test that rejects almost every score of a large gallery with one compare.
//!
//! candle has no top-k operation, and sorting a whole row of N scores costs about twice the
//! matrix product that produced it. Keeping the k best seen so far costs one comparison per
//! score (against the k-th best), plus an insertion into a list of k for the rare scores
//! that beat it: O(N + k·log-ish) per row instead of O(N log N).

/// One candidate: a row of the searched gallery and its cosine with the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row (or id) of the candidate in the gallery that was searched.
    pub row: usize,
    /// Cosine with the query.
    pub score: f32,
}

/// The `k` best hits offered so far, best first; ties go to the lower row so that every
/// search order gives the same answer.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    hits: Vec<Hit>,
}

impl TopK {
    /// An empty selection of at most `k` hits.
    pub fn new(k: usize) -> Self {
        Self { k, hits: Vec::with_capacity(k + 1) }
    }

    /// The score a new hit must reach to be kept (−∞ until `k` hits are held).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.hits.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.hits.last().map_or(f32::INFINITY, |h| h.score)
        }
    }

    /// Offers one candidate.
    #[inline]
    pub fn offer(&mut self, score: f32, row: usize) {
        if self.k == 0 || score < self.threshold() {
            return;
        }
        let better = |h: &Hit| h.score > score || (h.score == score && h.row < row);
        let at = self.hits.iter().rposition(better).map_or(0, |i| i + 1);
        if at >= self.k {
            return;
        }
        self.hits.insert(at, Hit { row, score });
        self.hits.truncate(self.k);
    }

    /// Offers `scores[i]` as row `first_row + i`, for every `i`: one compare each for the
    /// scores below the current threshold.
    pub fn offer_block(&mut self, scores: &[f32], first_row: usize) {
        let mut threshold = self.threshold();
        for (i, &score) in scores.iter().enumerate() {
            if score >= threshold {
                self.offer(score, first_row + i);
                threshold = self.threshold();
            }
        }
    }

    /// Folds another selection (over other rows) into this one.
    pub fn merge(&mut self, other: &TopK) {
        for h in &other.hits {
            self.offer(h.score, h.row);
        }
    }

    /// The hits, best first.
    pub fn hits(&self) -> &[Hit] {
        &self.hits
    }

    pub fn into_hits(self) -> Vec<Hit> {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_scores_in_any_order_then_the_k_best_come_out_sorted_like_a_full_sort() {
        let scores: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1009) as f32 / 1009.0).collect();
        let mut full: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
        full.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for k in [0, 1, 2, 5, 17] {
            let mut whole = TopK::new(k);
            whole.offer_block(&scores, 0);
            let mut halves = TopK::new(k);
            let mut second = TopK::new(k);
            halves.offer_block(&scores[..500], 0);
            second.offer_block(&scores[500..], 500);
            halves.merge(&second);
            let expected: Vec<usize> = full.iter().take(k).map(|h| h.0).collect();
            assert_eq!(whole.hits().iter().map(|h| h.row).collect::<Vec<_>>(), expected);
            assert_eq!(halves.hits(), whole.hits());
        }
    }

    #[test]
    fn given_ties_then_the_lower_row_wins_whatever_the_order() {
        let mut a = TopK::new(2);
        for row in [9, 4, 6] {
            a.offer(0.5, row);
        }
        assert_eq!(a.hits().iter().map(|h| h.row).collect::<Vec<_>>(), vec![4, 6]);
    }
}
