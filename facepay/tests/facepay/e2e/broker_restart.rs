//! The broker restarted in the middle of a run: the stages ride out the outage (consumer
//! errors tolerated, failed stages restarted with backoff), the process does not exit, and
//! nothing is lost or done twice. The test needs a broker it may restart, that keeps its data
//! across the restart: it starts a tansu of its own (`scripts/kafka.sh`, storage `sqlite://`)
//! on another port. facepay itself does not depend on tansu. Needs PostgreSQL too; skipped,
//! saying so, without them (CI requires both).

use std::sync::Arc;
use std::time::Duration;

use crate::support::{spawn, tail};
use facepay_ingest::kafka;
use facepay_ledger::postgres::PgStore;
use facepay_ledger::LedgerStore;

/// The port of this test's own broker.
const PORT: &str = "19092";

/// This test's broker, run by `scripts/kafka.sh` with its data in `dir`.
struct Broker {
    dir: std::path::PathBuf,
}

impl Broker {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
    }

    fn run(&self, verb: &str) -> bool {
        let storage = "sqlite://tansu.db"; // in the run dir
        std::process::Command::new("bash")
            .arg(Self::script())
            .arg(verb)
            .arg(storage)
            .env("FACEPAY_KAFKA_PORT", PORT)
            .env("FACEPAY_KAFKA_RUN_DIR", &self.dir)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.run("stop");
    }
}

fn tansu_installed() -> bool {
    let home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap()));
    std::path::Path::new(&home).join("bin/tansu").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6 on sqlite storage: after the restart a fresh reader gets no record of the \
            outcomes topic from its start within 120 s (its watermarks say 13 607 are there), so publication \
            once cannot be checked; the service rides the restart out (every event answered, no stage \
            failure); run against a broker that serves its log after a restart with `-- --ignored`"]
async fn broker_restarted_mid_run_the_service_rides_it_out_and_loses_nothing() {
    if !tansu_installed() {
        assert!(std::env::var("FACEPAY_REQUIRE_KAFKA").is_err(), "CI installs tansu (scripts/kafka.sh install)");
        eprintln!("skipped: this test restarts a broker of its own and needs tansu (scripts/kafka.sh install)");
        return;
    }
    let Some((_, database)) = crate::support::services().await else { return };
    let data = tempfile::tempdir().unwrap();
    let broker = Broker { dir: data.path().to_path_buf() };
    assert!(broker.run("start"), "the test's own broker starts on port {PORT}");
    let brokers = format!("127.0.0.1:{PORT}");

    let db = database.url.clone();
    let store: Arc<dyn LedgerStore> = Arc::new(PgStore::open(&db).await.unwrap());
    let cfg = crate::support::config(&brokers, 4);
    kafka::ensure_topics(&cfg).await.unwrap();
    let log = data.path().join("serve.log");
    // tansu's sqlite storage takes seconds to acknowledge a batch under this load: sends may
    // take their default time, and the relay's a few seconds (its lease outlasting them).
    let slow_broker = [("FACEPAY_OUTBOX_SEND_TIMEOUT_MS", "5000"), ("FACEPAY_OUTBOX_LEASE_MS", "7000")];
    let mut serve = spawn(&db, &cfg, "matcher,ledger,relay", &slow_broker, &log);

    // The devices publish a backlog (paced: tansu's sqlite engine refuses some flat-out
    // produces), and the broker goes down while facepay works through it (a device's own
    // producer would fail across the restart too; that is not what this test is about).
    let sent = crate::support::load(&cfg, store.clone(), 6_000, 2_000).await.unwrap().unwrap();
    let answered = crate::support::answered(&db).await;
    assert!(
        answered < sent.answerable() as i64,
        "the restart comes mid-run ({answered} of {} answered)",
        sent.answerable()
    );
    assert!(broker.run("stop"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(broker.run("start"), "the broker comes back with its data");
    eprintln!("broker restarted after {} of {} answers", crate::support::answered(&db).await, sent.events);

    crate::support::settle(&db, store.as_ref(), sent.answerable(), Duration::from_secs(180)).await;
    let broker_log = data.path().join("tansu.log");
    let logs_tail = format!("\n--- serve ---\n{}\n--- tansu ---\n{}", tail(&log), tail(&broker_log));
    assert!(serve.0.try_wait().unwrap().is_none(), "the service is still running{logs_tail}");
    drop(serve);
    crate::support::assert_exactly_once(&db, store.clone(), &cfg, &sent, &logs_tail).await;
}
