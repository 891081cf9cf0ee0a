//! Where a phase's cores went: the CPU time of this process, of the PostgreSQL server and of
//! the broker, read from Linux's `/proc` before and after the phase (all zero elsewhere).
//!
//! A server's time is its live processes' plus what its parent has reaped: PostgreSQL's
//! postmaster collects each backend that exits (`cutime`/`cstime`), so a connection closed
//! during the phase still counts.

use serde::Serialize;

/// `/proc`'s unit of CPU time: `USER_HZ`, 100 per second on every Linux the kernel's ABI
/// supports (`sysconf(_SC_CLK_TCK)`).
const TICKS_PER_S: u64 = 100;

/// The name the broker's process runs under (`/proc/<pid>/comm`), unless
/// `FACEPAY_BENCH_BROKER_PROCESS` names another.
const BROKER_PROCESS_DEFAULT: &str = "tansu";

/// CPU time taken so far (ms), by whom.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTotals {
    own_ms: u64,
    postgres_ms: u64,
    broker_ms: u64,
}

/// A phase's CPU time per event (ms), by whom, and the cores all three kept busy on average.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuPerEvent {
    /// This process: facepay's stages (or the chain's forwarders), the load's publisher and
    /// reader.
    pub own_ms: f64,
    pub postgres_ms: f64,
    pub broker_ms: f64,
    /// All three's CPU time over the phase's wall-clock time.
    pub cores_busy: f64,
}

impl CpuTotals {
    pub fn now() -> Self {
        let broker = std::env::var("FACEPAY_BENCH_BROKER_PROCESS").unwrap_or_else(|_| BROKER_PROCESS_DEFAULT.into());
        let mut totals = Self { own_ms: ticks_ms(own_ticks()), ..Self::default() };
        for (comm, ticks) in processes() {
            if comm == "postgres" {
                totals.postgres_ms += ticks_ms(ticks);
            } else if comm == broker {
                totals.broker_ms += ticks_ms(ticks);
            }
        }
        totals
    }

    /// Per event of `events`, from `self` to `later`, `wall_ms` apart.
    pub fn per_event(&self, later: &Self, events: usize, wall_ms: f64) -> CpuPerEvent {
        let spent = |a: u64, b: u64| b.saturating_sub(a) as f64;
        let (own, pg, broker) = (
            spent(self.own_ms, later.own_ms),
            spent(self.postgres_ms, later.postgres_ms),
            spent(self.broker_ms, later.broker_ms),
        );
        let n = events.max(1) as f64;
        CpuPerEvent {
            own_ms: own / n,
            postgres_ms: pg / n,
            broker_ms: broker / n,
            cores_busy: if wall_ms > 0.0 { (own + pg + broker) / wall_ms } else { 0.0 },
        }
    }
}

fn ticks_ms(ticks: u64) -> u64 {
    ticks * 1_000 / TICKS_PER_S
}

fn own_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| stat_ticks(&s)).map_or(0, |(_, t)| t)
}

/// Every process's `comm` and CPU ticks (its own and its reaped children's).
fn processes() -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| stat_ticks(&s))
        .collect()
}

/// `comm` and `utime + stime + cutime + cstime` of one `/proc/<pid>/stat` line (`comm` is
/// in parentheses and may hold spaces: the fields after it are counted from its `)`).
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // Fields 14–17 of proc(5), counted from `state` (field 3) as index 0.
    let ticks = fields.get(11..15)?.iter().map(|f| f.parse::<i64>().unwrap_or(0).max(0) as u64).sum();
    Some((comm, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_its_own_and_reaped_ticks() {
        let line = "42 (post gres) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 20 10 20 0 1 0 5 0 0";
        assert_eq!(stat_ticks(line), Some(("post gres".to_string(), 40)));
    }

    #[test]
    fn this_process_is_seen_to_spend_time() {
        let before = CpuTotals::now();
        let began = std::time::Instant::now();
        let mut x = 0u64;
        while began.elapsed() < std::time::Duration::from_millis(120) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let spent = before.per_event(&CpuTotals::now(), 1, 120.0);
        assert!(spent.own_ms >= 50.0, "{spent:?} ({x})");
    }
}
