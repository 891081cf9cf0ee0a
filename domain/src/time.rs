//! Time: the platform's clock, and calendar days in China time.
//!
//! Every time rule (daily caps, the 45 s revocation, the reversal window, Pay Score expiry,
//! history and settlement days) runs on time the **platform** assigned: the moment facepay
//! accepted an event, read from a [`Clock`]. A device's `occurred_at` is its claim, kept and
//! checked against that moment, and never decides anything. A simulation that needs another
//! time (the demo's past day, tests) drives a [`ManualClock`]; no rule is ever switched off.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

/// Asia/Shanghai. China has kept UTC+8 all year since 1991, so a fixed offset is exact for
/// every date facepay can see, and needs no time-zone database.
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// The Asia/Shanghai calendar day of an instant: the day of daily caps and daily bills.
pub fn shanghai_day(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&shanghai()).date_naive()
}

/// The platform's clock: where accept times, signature windows and the ledger's sweeps read
/// "now". One per process, shared.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's own clock (a production process's).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock, shared.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock a simulation drives: it reads what it was last driven to, never less (it only
/// runs forwards). Once [`ManualClock::release`]d it follows the system clock, still never
/// running backwards (the demo's simulated day is over; `--serve` takes live requests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<ManualInner>);

#[derive(Debug)]
struct ManualInner {
    ms: AtomicI64,
    released: AtomicBool,
}

impl ManualClock {
    /// A clock standing at `at`.
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self(Arc::new(ManualInner { ms: AtomicI64::new(at.timestamp_millis()), released: AtomicBool::new(false) }))
    }

    /// Moves the clock to `at`, unless it reads later already.
    pub fn advance_to(&self, at: DateTime<Utc>) {
        self.0.ms.fetch_max(at.timestamp_millis(), Ordering::SeqCst);
    }

    /// From now on the clock follows the system clock (from no earlier than where it stands).
    pub fn release(&self) {
        self.0.released.store(true, Ordering::SeqCst);
    }

    /// This clock, shared.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        if self.0.released.load(Ordering::SeqCst) {
            self.0.ms.fetch_max(Utc::now().timestamp_millis(), Ordering::SeqCst);
        }
        DateTime::from_timestamp_millis(self.0.ms.load(Ordering::SeqCst)).expect("a clock reading in range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_turns_at_16_00_utc() {
        let before: DateTime<Utc> = "2026-03-01T15:59:59Z".parse().unwrap();
        let after: DateTime<Utc> = "2026-03-01T16:00:00Z".parse().unwrap();
        assert_eq!(shanghai_day(before).to_string(), "2026-03-01");
        assert_eq!(shanghai_day(after).to_string(), "2026-03-02");
    }

    #[test]
    fn a_manual_clock_never_runs_backwards_and_follows_the_system_once_released() {
        let start: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().unwrap();
        let clock = ManualClock::starting_at(start);
        clock.advance_to(start + chrono::Duration::seconds(10));
        clock.advance_to(start);
        assert_eq!(clock.now(), start + chrono::Duration::seconds(10));
        clock.release();
        assert!(clock.now() >= Utc::now() - chrono::Duration::seconds(1));
    }
}
