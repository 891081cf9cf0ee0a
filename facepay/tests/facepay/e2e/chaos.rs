//! Chaos (issue 21): three whole `facepay serve` processes share the stages under load; every
//! few seconds one of them is killed with SIGKILL and started again, and once the devices
//! have published everything the broker itself is stopped and started again (a tansu of the
//! test's own on sqlite storage, which keeps its log across the restart). The partitions are
//! owned through the database, so a killed process's partitions move to the survivors when
//! its leases lapse, and the restarted process takes its share back. Afterwards: every event
//! answered exactly once (each outcome published once, read back from the restarted broker),
//! nothing refused by a write conflict, balances equal to the postings, replay and the audit
//! chain intact. Prints the outcome latency (p50/p99 overall and for events sent within a
//! failover of a kill) as JSON. Needs PostgreSQL and tansu; skipped, saying so, without them
//! (CI requires both). Bounded: about a minute and a half.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{answered, spawn, tail, Broker, Facepay, Stop};
use facepay_domain::limits::FAILOVER_MS_MAX;
use facepay_ingest::kafka::{DEVICE_EVENTS, LEDGER_OUTCOMES};
use facepay_ledger::postgres::PgStore;
use facepay_ledger::LedgerStore;
use rand::{Rng, SeedableRng};
use rdkafka::message::Message;

const PROCESSES: usize = 3;

/// The port of this test's own broker (apart from the broker-restart test's).
const BROKER_PORT: u16 = 19093;

/// SIGKILLs in one run, one every few seconds.
const KILLS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_killed_in_turn_under_load_answer_every_event_once() {
    let _one = crate::e2e::crash::ONE_AT_A_TIME.lock().await;
    let Some(broker) = Broker::installed(BROKER_PORT) else { return };
    let Some((_, database)) = crate::support::services().await else { return };
    assert!(broker.run("start"), "the test's own broker starts on port {BROKER_PORT}");
    let (db, logs) = (database.url.clone(), &broker.dir);
    let store: std::sync::Arc<dyn LedgerStore> = std::sync::Arc::new(PgStore::open(&db).await.unwrap());
    let cfg = crate::support::config(&broker.address(), 6);
    facepay_ingest::kafka::ensure_topics(&cfg).await.unwrap();
    let key = "5".repeat(64);
    let keys = logs.path().join("face-keys.db");
    let env = [("FACEPAY_FACE_MASTER_KEY", key.as_str()), ("FACEPAY_FACE_KEYS_PATH", keys.to_str().unwrap())];
    let log = |i: usize| logs.path().join(format!("p{i}.log"));
    let start = |i: usize| spawn(&db, &cfg, "matcher,ledger,relay", &env, &log(i));
    let mut processes: Vec<Option<Facepay>> = (0..PROCESSES).map(|i| Some(start(i))).collect();

    let load = crate::support::load(&cfg, store.clone(), 5_000, 150);
    let seed: u64 = rand::rng().random();
    eprintln!("chaos schedule seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut kills = Vec::with_capacity(KILLS);
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..4_000))).await;
        assert!(!load.is_finished(), "kill {kill} comes under load");
        let victim = rng.random_range(0..PROCESSES);
        processes[victim].take().expect("running").stop(Stop::Kill);
        kills.push(chrono::Utc::now());
        eprintln!("kill {kill}: SIGKILL process {victim} after {} answers", answered(&db).await);
        processes[victim] = Some(start(victim));
    }
    let sent = load.await.unwrap().unwrap();
    // Every event is on the broker (a device's own producer would fail across the restart
    // too; that is not what this test is about): the broker restarts while the processes work
    // through what the kills left queued, and their outcomes are read back from it afterwards.
    assert!(broker.run("stop"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(broker.run("start"), "the broker comes back with its data");
    eprintln!("broker restarted after {} of {} answers", answered(&db).await, sent.answerable());
    crate::support::settle(&db, store.as_ref(), sent.answerable(), Duration::from_secs(120)).await;
    // Stopped before the log is compared with the projections: a process still running would
    // go on sweeping (revoking orders past their deadline) between the two reads.
    drop(processes);
    let logs_tail: String = (0..PROCESSES).map(|i| format!("\n--- p{i} ---\n{}", tail(&log(i)))).collect();
    crate::support::assert_exactly_once(&db, store.clone(), &cfg, &sent, &logs_tail).await;

    let outcomes = crate::support::read_all(&cfg, &cfg.topic(LEDGER_OUTCOMES)).await;
    let refused: Vec<_> = outcomes.iter().filter(|o| o["payload"]["code"] == "STORE_REFUSED").collect();
    assert!(refused.is_empty(), "a write conflict became a refusal: {refused:?}");
    let verified = facepay_ledger::Ledger::new(store.clone(), Default::default()).verify().await.unwrap();
    assert!(verified.ok, "{verified:?}");
    let latency = latencies(&cfg, &kills).await;
    eprintln!("{latency}");
}

/// Outcome latency: each outcome's publication time minus its device event's (both the
/// producers' record timestamps), over all events and over those sent within
/// [`FAILOVER_MS_MAX`] after a kill; as JSON.
async fn latencies(cfg: &facepay_ingest::kafka::KafkaConfig, kills: &[chrono::DateTime<chrono::Utc>]) -> String {
    let read = |topic: String| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || facepay_ingest::kafka::read_partitions(&cfg, &[topic], None))
    };
    let (events, outcomes) = (read(cfg.topic(DEVICE_EVENTS)), read(cfg.topic(LEDGER_OUTCOMES)));
    let stamp = |m: &rdkafka::message::OwnedMessage, field: &str| {
        let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
        Some((v[field].as_str()?.to_string(), m.timestamp().to_millis()?))
    };
    let sent: HashMap<String, i64> =
        events.await.unwrap().unwrap().iter().filter_map(|m| stamp(m, "event_id")).collect();
    let window_ms = FAILOVER_MS_MAX as i64;
    let near_kill = |at: i64| kills.iter().any(|k| (0..=window_ms).contains(&(at - k.timestamp_millis())));
    let (mut all, mut failover) = (Vec::new(), Vec::new());
    for (event_id, answered_at) in outcomes.await.unwrap().unwrap().iter().filter_map(|m| stamp(m, "in_reply_to")) {
        let Some(&sent_at) = sent.get(&event_id) else { continue };
        all.push(answered_at - sent_at);
        if near_kill(sent_at) {
            failover.push(answered_at - sent_at);
        }
    }
    let pct = |v: &mut Vec<i64>, q: f64| {
        v.sort_unstable();
        v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0)
    };
    format!(
        "{{\"outcomes\": {}, \"p50_ms\": {}, \"p99_ms\": {}, \"failover_outcomes\": {}, \"failover_p50_ms\": {}, \
         \"failover_p99_ms\": {}, \"failover_max_ms\": {}}}",
        all.len(),
        pct(&mut all, 0.5),
        pct(&mut all, 0.99),
        failover.len(),
        pct(&mut failover, 0.5),
        pct(&mut failover, 0.99),
        failover.iter().max().copied().unwrap_or(0)
    )
}
