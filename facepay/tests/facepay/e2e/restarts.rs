//! PostgreSQL stopped for a few seconds and started again in the middle of a run: the stages retry with backoff, the process
//! does not exit or crash-loop, and nothing is lost or done twice. Needs PostgreSQL (and the
//! right to restart it: `pg_ctlcluster`, as on our machines and in CI) and a Kafka-API broker;
//! skipped, saying so, without them.
//!
//! The broker-restart run is in `broker_restart.rs`: each test file is its own process, and
//! cargo runs them one after another, so a restart here disturbs no other test.

use std::time::Duration;

use crate::support::{spawn, tail, FAST_LEASE};

/// The command that does `verb` (stop, start) to the local PostgreSQL cluster, if this
/// machine has one.
fn cluster(verb: &str) -> Option<std::process::Command> {
    let version = std::fs::read_dir("/etc/postgresql").ok()?.filter_map(Result::ok).next()?.file_name();
    let ctl = std::path::Path::new("/usr/bin/pg_ctlcluster");
    if !ctl.exists() {
        return None;
    }
    let mut cmd = std::process::Command::new(ctl);
    cmd.arg("--skip-systemctl-redirect").arg(version).args(["main", verb]);
    Some(cmd)
}

/// Starts PostgreSQL again when dropped, so a failing test does not leave it down.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        if let Some(mut start) = cluster("start") {
            let _ = start.status();
        }
    }
}

/// How long PostgreSQL stays down: longer than `PG_ACQUIRE_TIMEOUT_MS`.
const DOWN_S: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_the_service_rides_it_out_and_loses_nothing() {
    let (Some(mut stop), Some(mut start)) = (cluster("stop"), cluster("start")) else {
        assert!(std::env::var("FACEPAY_REQUIRE_POSTGRES").is_err(), "CI must be able to restart PostgreSQL");
        eprintln!("skipped: no pg_ctlcluster here to restart PostgreSQL with");
        return;
    };
    let Some(crate::support::Run { db, store, cfg, logs, database: _database }) = crate::support::run(4).await else {
        return;
    };
    let log = logs.path().join("serve.log");
    let mut serve = spawn(&db, &cfg, "matcher,ledger,relay", &FAST_LEASE, &log);

    let load = crate::support::load(&cfg, store.clone(), 5_000, 300);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!load.is_finished(), "the restart comes under load");
    // Down for longer than a connection may be waited for (PG_ACQUIRE_TIMEOUT_MS): the
    // stages fail, pause, retry with backoff, and carry on once it is back.
    let guard = Restart;
    assert!(stop.status().expect("pg_ctlcluster runs").success(), "PostgreSQL stopped");
    tokio::time::sleep(Duration::from_secs(DOWN_S)).await;
    assert!(start.status().expect("pg_ctlcluster runs").success(), "PostgreSQL started");
    drop(guard);
    eprintln!("PostgreSQL was down for {DOWN_S} s");
    let sent = load.await.unwrap().unwrap();

    crate::support::settle(&db, store.as_ref(), sent.answerable(), Duration::from_secs(120)).await;
    let logs_tail = format!("\n--- serve ---\n{}", tail(&log));
    assert!(serve.0.try_wait().unwrap().is_none(), "the service is still running{logs_tail}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stage failed; restarting"), "the outage was seen and ridden out{logs_tail}");
    drop(serve);
    crate::support::assert_exactly_once(&db, store.clone(), &cfg, &sent, &logs_tail).await;
    // An outage is no reason to refuse a payment: it is retried, never decided as refused.
    let refused = store.rejected(u32::MAX).await.unwrap();
    let refused: Vec<_> = refused.iter().filter(|r| r.reason_code == "STORE_REFUSED").collect();
    assert!(refused.is_empty(), "the outage refused commands: {refused:?}");
}
