//! Crash: the ledger's `facepay serve` killed with SIGKILL at random points under load, six
//! times in one run, and restarted each time. Every event must be decided exactly once, no
//! posting duplicated or lost, the ledger balanced, and every outcome published exactly once
//! (counted on the topic). Needs PostgreSQL and a Kafka-API broker; skipped, saying so,
//! without them (CI requires both).
//!
//! Two runs: the ledger and relay killed while the matcher runs in a process of its own, and
//! the whole service (matcher, ledger, relay) killed, its gallery kept encrypted in the store
//! (`FACEPAY_FACE_MASTER_KEY`) and loaded again at each start. (A matcher killed between a
//! capture and its payment forgets the capture, so that payment is declined: decided once,
//! and answered once, all the same.)

use std::time::Duration;

use crate::support::{answered, spawn, tail, Stop, FAST_LEASE};
use rand::{Rng, SeedableRng};

/// SIGKILLs in one run (the issue asks for at least five).
const KILLS: usize = 6;

/// The runs under load (these two, and the chaos run) share the machine's two cores: one at
/// a time.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_ledger_under_load_six_times_decides_each_event_once_and_publishes_each_outcome_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    crash(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_whole_service_under_load_six_times_decides_each_event_once_and_publishes_each_outcome_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    crash(true).await
}

async fn crash(whole: bool) {
    let Some(crate::support::Run { db, store, cfg, logs, database: _database }) = crate::support::run(4).await else {
        return;
    };
    let (match_log, ledger_log) = (logs.path().join("matcher.log"), logs.path().join("ledger.log"));
    // The restarted process is a new holder: it takes its predecessor's partitions when their
    // leases lapse (`PARTITION_LEASE_MS`), whatever the broker makes of the dead member.
    let key = "7".repeat(64);
    let keys = logs.path().join("face-keys.db");
    let env = [
        FAST_LEASE[0],
        FAST_LEASE[1],
        ("FACEPAY_FACE_MASTER_KEY", key.as_str()),
        ("FACEPAY_FACE_KEYS_PATH", keys.to_str().unwrap()),
    ];
    let (stages, matcher) = match whole {
        true => ("matcher,ledger,relay", None),
        false => ("ledger,relay", Some(spawn(&db, &cfg, "matcher", &FAST_LEASE, &match_log))),
    };
    let mut ledger = Some(spawn(&db, &cfg, stages, &env, &ledger_log));

    // The load: the demo's fleet, offered at a fixed rate while the ledger keeps dying.
    let load = crate::support::load(&cfg, store.clone(), 6_000, 200);

    let seed: u64 = rand::rng().random();
    eprintln!("crash schedule seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut before = 0;
    for kill in 0..KILLS {
        // Each process works before it dies: wait for progress, then kill at a random point.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while answered(&db).await <= before {
            assert!(tokio::time::Instant::now() < deadline, "no progress before kill {kill}{}", tail(&ledger_log));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_500))).await;
        assert!(!load.is_finished(), "kill {kill} comes under load");
        ledger.take().expect("running").stop(Stop::Kill);
        before = answered(&db).await;
        eprintln!("kill {kill}: SIGKILL after {before} answers");
        ledger = Some(spawn(&db, &cfg, stages, &env, &ledger_log));
    }
    let sent = load.await.unwrap().unwrap();

    // Let the last process finish: every event answered, the outbox drained.
    crate::support::settle(&db, store.as_ref(), sent.answerable(), Duration::from_secs(180)).await;
    let logs_tail = format!("\n--- ledger ---\n{}\n--- matcher ---\n{}", tail(&ledger_log), tail(&match_log));
    drop(matcher);
    drop(ledger);
    crate::support::assert_exactly_once(&db, store.clone(), &cfg, &sent, &logs_tail).await;
    let text = std::fs::read_to_string(&ledger_log).unwrap();
    for line in text.lines().filter(|l| l.contains("outbox relay took the lease")) {
        eprintln!("{line}"); // how much each successor found published but unmarked
    }
    let restarts = text.matches("stages started").count();
    assert_eq!(restarts, KILLS + 1, "the ledger process started once and after each kill{logs_tail}");
}
