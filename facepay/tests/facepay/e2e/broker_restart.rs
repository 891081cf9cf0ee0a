//! The broker restarted in the middle of a run: the stages ride out the outage (consumer
//! errors tolerated, failed stages restarted with backoff), the process does not exit, and
//! nothing is lost or done twice. The test needs a broker it may restart, that keeps its data
//! across the restart: it starts a tansu of its own (`scripts/kafka.sh`, storage `sqlite://`)
//! on another port. facepay itself does not depend on tansu. Needs PostgreSQL too; skipped,
//! saying so, without them (CI requires both).

use std::sync::Arc;
use std::time::Duration;

use crate::support::{spawn, tail, Broker};
use facepay_ingest::kafka;
use facepay_ledger::postgres::PgStore;
use facepay_ledger::LedgerStore;

/// The port of this test's own broker.
const PORT: u16 = 19092;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_mid_run_the_service_rides_it_out_and_loses_nothing() {
    let Some(broker) = Broker::installed(PORT) else { return };
    let Some((_, database)) = crate::support::services().await else { return };
    assert!(broker.run("start"), "the test's own broker starts on port {PORT}");
    let (brokers, data) = (broker.address(), broker.dir.path());

    let db = database.url.clone();
    let store: Arc<dyn LedgerStore> = Arc::new(PgStore::open(&db).await.unwrap());
    let cfg = crate::support::config(&brokers, 4);
    kafka::ensure_topics(&cfg).await.unwrap();
    let log = data.join("serve.log");
    let mut serve = spawn(&db, &cfg, "matcher,ledger,relay", &[], &log);

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
    let broker_log = data.join("tansu.log");
    let logs_tail = format!("\n--- serve ---\n{}\n--- tansu ---\n{}", tail(&log), tail(&broker_log));
    assert!(serve.0.try_wait().unwrap().is_none(), "the service is still running{logs_tail}");
    drop(serve);
    crate::support::assert_exactly_once(&db, store.clone(), &cfg, &sent, &logs_tail).await;
}
