//! Token buckets: a sustained rate and a burst per key (an API key, a device key, a source
//! address), bounded in the number of keys it tracks.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// Token buckets per key, in thousandths of a request. When it tracks `keys_max` keys and a
/// new one comes, it forgets them all (each starts again with a full burst): memory stays
/// bounded whatever the callers send.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_sec: u64,
    burst: u64,
    keys_max: usize,
    by_key: Mutex<HashMap<K, (u64, Instant)>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(per_sec: u32, burst: u32, keys_max: usize) -> Self {
        let (per_sec, burst) = (u64::from(per_sec.max(1)), u64::from(burst.max(1)));
        Self { per_sec, burst, keys_max, by_key: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `key`'s bucket, or says how many whole seconds until one is
    /// there (at least 1).
    pub fn take(&self, key: &K, now: Instant) -> Result<(), u64> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if by_key.len() >= self.keys_max && !by_key.contains_key(key) {
            by_key.clear();
        }
        let (per_sec, full) = (self.per_sec * 1000, self.burst * 1000);
        let (tokens, at) = by_key.entry(key.clone()).or_insert((full, now));
        let refill = now.saturating_duration_since(*at).as_millis() as u64 * per_sec / 1000;
        *tokens = (*tokens + refill).min(full);
        *at = now;
        if *tokens >= 1000 {
            *tokens -= 1000;
            return Ok(());
        }
        Err(((1000 - *tokens) / per_sec + 1).max(1))
    }

    /// Whether `key` has a request left, without taking one.
    pub fn has_room(&self, key: &K, now: Instant) -> Result<(), u64> {
        let by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        let Some((tokens, at)) = by_key.get(key) else { return Ok(()) };
        let refill = now.saturating_duration_since(*at).as_millis() as u64 * self.per_sec;
        let tokens = (tokens + refill).min(self.burst * 1000);
        match tokens >= 1000 {
            true => Ok(()),
            false => Err(((1000 - tokens) / (self.per_sec * 1000) + 1).max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(2, 3, 10);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.take(&"k", t0).is_ok()));
        assert_eq!(limiter.take(&"k", t0), Err(1));
        assert_eq!(limiter.has_room(&"k", t0), Err(1));
        assert!(limiter.has_room(&"k", t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.take(&"k", t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.take(&"other", t0).is_ok(), "keys are apart");
    }

    #[test]
    fn it_tracks_a_bounded_number_of_keys() {
        let limiter = RateLimiter::new(1, 1, 2);
        let t0 = Instant::now();
        for k in 0..1000 {
            let _ = limiter.take(&k, t0);
        }
        assert!(limiter.by_key.lock().unwrap().len() <= 2);
    }
}
