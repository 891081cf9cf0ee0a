//! End to end over Kafka: the demo's device fleet published to the device-events topic comes
//! out as ledger outcomes and projections identical to the embedded profile's for the same
//! seed. One partition per topic, so the Kafka profile sees the events in the order the
//! embedded one does (with more partitions, events of different devices interleave
//! differently, and the scale-out and crash tests check the invariants instead). Needs
//! PostgreSQL and a Kafka-API broker; skipped, saying so, without them (CI requires both).

use std::sync::Arc;
use std::time::Duration;

use facepay::demo::{self, DemoOptions};
use facepay::production::{self, Roles};
use facepay_domain::time::ManualClock;
use facepay_ingest::kafka::{DEAD_LETTER, LEDGER_OUTCOMES};
use facepay_ledger::postgres::PgStore;
use facepay_ledger::sweep::Sweeper;
use facepay_ledger::Delivery;
use facepay_ledger::Stores;
use facepay_sim::fleet::{FleetOptions, FleetTime};
use facepay_sim::kafka::{self as simulate, SimulateOptions};

fn fleet(dir: &std::path::Path) -> DemoOptions {
    DemoOptions {
        fleet: FleetOptions { seed: 11, merchants: 3, devices: 8, payers: 200, payments: 1_500 },
        data_dir: dir.to_path_buf(),
        progress: false,
        // The Kafka run reconciles nothing: the embedded one must not either (a confirmed
        // timeout success moves money).
        reconcile: false,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_through_kafka_gives_the_embedded_profiles_outcomes_and_projections() {
    let Some((brokers, database)) = crate::support::services().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let opts = fleet(dir.path());
    let (embedded, app) = demo::run(&opts).await.unwrap();
    assert!(embedded.invariants_hold());

    // The Kafka profile replays the same simulated days: the fleet's clock drives the
    // platform's, each event stamped with its simulated accept time (as the HTTP ingest
    // stamps what it passes on), and the ledger's clock sweeps once the days are over, as the
    // embedded run's did.
    let stores = Stores::of(PgStore::open(&database.url).await.unwrap());
    let store = stores.ledger.clone();
    let cfg = crate::support::config(&brokers, 1);
    let clock = ManualClock::starting_at("2026-03-02T00:00:00Z".parse().unwrap());
    let verifier = Arc::new(facepay_ingest::authenticity::DeviceVerifier::new(opts.pepper.clone()));
    let pipeline = facepay_ingest::PipelineConfig {
        verifier,
        clock: clock.shared(),
        sweep_interval: Duration::ZERO,
        ..Default::default()
    };
    let prod = production::start_with(stores, cfg.clone(), Roles::ALL, pipeline).await.unwrap();
    let opts = SimulateOptions {
        fleet: opts.fleet,
        pepper: opts.pepper.clone(),
        rate_per_s: None,
        time: FleetTime::Driven(clock.clone()),
    };
    let sent = simulate::publish(&opts, &cfg, store.as_ref()).await.unwrap();
    assert_eq!(sent.events, embedded.events.inbound, "the same fleet sends the same events");
    crate::support::settle(&database.url, store.as_ref(), sent.answerable(), Duration::from_secs(120)).await;
    let ledger = facepay_ledger::Ledger::new(store.clone(), Default::default()).uncached();
    Sweeper::new(ledger, Delivery::default(), clock.shared()).sweep_all().await.unwrap();

    // The same projections, entity by entity, and the same history.
    let (want, got) = (app.store.load_all().await.unwrap(), store.load_all().await.unwrap());
    assert_eq!(got.balances_fen, want.balances_fen, "balances");
    assert_eq!(got.orders, want.orders, "orders");
    assert_eq!(got.members, want.members, "members");
    assert_eq!(got.daily, want.daily, "daily usage");
    assert_eq!(got, want, "every projection");
    let history = |mut rows: Vec<facepay_ledger::store::HistoryRow>| {
        rows.iter_mut().for_each(|r| r.id = 0);
        rows.sort_by_key(|r| r.event_id);
        rows
    };
    let want_history = history(app.store.history_all().await.unwrap());
    assert_eq!(history(store.history_all().await.unwrap()), want_history);

    // The same outcomes: one per signed event (the bad ones `rejected`), with the embedded
    // run's counts.
    let outcomes = crate::support::read_all(&cfg, &cfg.topic(LEDGER_OUTCOMES)).await;
    let letters = crate::support::read_all(&cfg, &cfg.topic(DEAD_LETTER)).await;
    // Bad events that fail authentication are kept nowhere and answered nowhere (the
    // embedded bus answers them `unauthenticated`, naming nothing).
    let unauthenticated = embedded.rejected.by_reason.get("unauthenticated").copied().unwrap_or(0);
    assert!(unauthenticated > 0, "the fleet sends some unsigned garbage");
    assert_eq!(outcomes.len() as u64 + unauthenticated, sent.events);
    let rejected = outcomes.iter().filter(|o| o["type"] == "rejected").count();
    assert_eq!(rejected, letters.len(), "each signed bad event answered `rejected` and kept");
    let paid = outcomes.iter().filter(|o| o["type"] == "payment_result" && o["payload"]["status"] == "PAID");
    let paid_first = paid.filter(|o| o["payload"]["replayed"] == false).count() as u64;
    assert_eq!(paid_first, embedded.payments.succeeded, "payments succeeded");
    assert_eq!(letters.len() as u64, embedded.rejected.kept, "rejections kept");

    // The stages' consumers reported their lag per partition (librdkafka's statistics).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let lag =
        format!("facepay_ingest_lag{{topic=\"{}\",partition=\"0\"}}", cfg.topic(facepay_ingest::kafka::DEVICE_EVENTS));
    while !facepay_ingest::metrics::METRICS.render().contains(&lag) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(facepay_ingest::metrics::METRICS.render().contains(&lag), "{}", facepay_ingest::metrics::METRICS.render());

    let _ = prod.shutdown.send(true);
    let mut tasks = prod.tasks;
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
}
