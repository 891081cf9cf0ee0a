//! The production profile's transport against a real Kafka-API broker (tansu in CI:
//! `scripts/kafka.sh start`). Skipped, saying so, when no broker answers, unless
//! `FACEPAY_REQUIRE_KAFKA=1` (CI sets it).

use std::sync::Arc;
use std::time::Duration;

use facepay_api::production::{self, Roles};
use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use facepay_ingest::kafka::{self, KafkaConfig, DEVICE_EVENTS, LEDGER_COMMANDS, LEDGER_OUTCOMES};
use facepay_ledger::{LedgerStore, SqliteStore};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde_json::{json, Value};

fn brokers() -> Option<String> {
    let brokers = std::env::var("FACEPAY_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    let up = std::net::TcpStream::connect_timeout(&first.parse().ok()?, Duration::from_secs(1)).is_ok();
    if up {
        return Some(brokers);
    }
    assert!(
        std::env::var("FACEPAY_REQUIRE_KAFKA").is_err(),
        "FACEPAY_REQUIRE_KAFKA is set but no broker answers at {brokers}"
    );
    eprintln!("skipped: no Kafka-API broker at {brokers} (start one with scripts/kafka.sh start)");
    None
}

fn config(brokers: &str) -> KafkaConfig {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = KafkaConfig::new(brokers);
    cfg.topic_prefix = format!("facepay-t{}.", &run[..12]);
    cfg.match_group = format!("match-{run}");
    cfg.ledger_group = format!("ledger-{run}");
    cfg.partitions = 4;
    cfg
}

const MERCHANT: &str = "1900000101";

fn event(n: u128, kind: &str, payload: Value, device: bool) -> Vec<u8> {
    let mut v = json!({
        "event_id": uuid::Uuid::from_u128(0xca11 << 64 | n).to_string(),
        "type": kind, "schema_version": 1,
        "occurred_at": format!("2026-03-02T02:00:{:02}Z", n % 60),
        "payload": payload,
    });
    if device {
        v["merchant_id"] = MERCHANT.into();
        v["store_id"] = "S01".into();
        v["device_id"] = "DEV-K1".into();
    }
    serde_json::to_vec(&v).unwrap()
}

fn face() -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[7] = 1.0;
    v
}

async fn store(dir: &std::path::Path) -> Arc<dyn LedgerStore> {
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("k.db").display())).await.unwrap();
    let merchant = MerchantId::parse(MERCHANT).unwrap();
    store.register_merchant(&merchant, "K").await.unwrap();
    let device = DeviceRef {
        merchant_id: merchant,
        store_id: StoreId::parse("S01").unwrap(),
        device_id: DeviceId::parse("DEV-K1").unwrap(),
    };
    store.register_device(&device).await.unwrap();
    Arc::new(store)
}

/// Reads the outcomes topic until `want` outcomes for the given event ids arrived.
async fn outcomes(cfg: &KafkaConfig, wanted: &[uuid::Uuid]) -> Vec<Value> {
    let consumer: StreamConsumer = cfg.consumer(&format!("reader-{}", uuid::Uuid::new_v4())).unwrap();
    consumer.subscribe(&[&cfg.topic(LEDGER_OUTCOMES)]).unwrap();
    let mut found: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while found.len() < wanted.len() {
        let msg = tokio::time::timeout_at(deadline, consumer.recv()).await.expect("outcomes in time").unwrap();
        let v: Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        let id = uuid::Uuid::parse_str(v["in_reply_to"].as_str().unwrap()).unwrap();
        if wanted.contains(&id) && !found.iter().any(|f| f["in_reply_to"] == v["in_reply_to"]) {
            found.push(v);
        }
    }
    found
}

fn id(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0xca11 << 64 | n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_events_through_kafka_are_decided_once_and_answered_through_the_outbox() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let cfg = config(&brokers);
    let prod = production::start(store.clone(), cfg.clone(), Roles { matcher: true, ledger: true, relay: true })
        .await
        .unwrap();

    let producer = cfg.producer().unwrap();
    let topic = cfg.topic(DEVICE_EVENTS);
    let sends = [
        event(1, "face_enrolled", json!({"payer_id": "u-k", "embedding": face()}), false),
        event(2, "account_funded", json!({"payer_id": "u-k", "amount": "100.00"}), false),
        event(
            3,
            "face_captured",
            json!({"face_code": "100000000000000001", "embedding": face(), "liveness": 0.99}),
            true,
        ),
        event(
            4,
            "payment_requested",
            json!({"out_trade_no": "K-1", "amount": "60.00", "face_code": "100000000000000001"}),
            true,
        ),
        event(
            5,
            "payment_requested",
            json!({"out_trade_no": "K-1", "amount": "60.00", "face_code": "100000000000000001"}),
            true,
        ),
        event(
            6,
            "payment_requested",
            json!({"out_trade_no": "K-1", "amount": "1.234", "face_code": "100000000000000001"}),
            true,
        ),
    ];
    // One device's events share a key, so they stay in order; platform events go first.
    for bytes in &sends {
        kafka::publish(&producer, &topic, "DEV-K1", bytes).await.unwrap();
    }
    let got = outcomes(&cfg, &[id(2), id(4), id(5)]).await;
    let by = |n: u128| got.iter().find(|v| v["in_reply_to"] == id(n).to_string()).unwrap().clone();
    assert_eq!(by(4)["payload"]["status"], "PAID", "{:?}", by(4));
    assert_eq!(by(5)["payload"]["replayed"], true, "the exact retry is answered from the stored outcome");

    // A command delivered twice (a producer retry, a rebalance) posts once.
    let fund_again = facepay_ledger::Command {
        event_id: id(2),
        occurred_at: "2026-03-02T02:00:02Z".parse().unwrap(),
        device: None,
        kind: facepay_ledger::CommandKind::Fund {
            payer_id: facepay_domain::PayerId::parse("u-k").unwrap(),
            amount: "100.00".parse().unwrap(),
        },
    };
    let cmd_topic = cfg.topic(LEDGER_COMMANDS);
    kafka::publish(&producer, &cmd_topic, "payer:u-k", &serde_json::to_vec(&fund_again).unwrap()).await.unwrap();
    let marker = event(7, "account_funded", json!({"payer_id": "u-k", "amount": "0.01"}), false);
    kafka::publish(&producer, &topic, "payer:u-k", &marker).await.unwrap();
    outcomes(&cfg, &[id(7)]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (balance_fen, _) = store.wallet(&facepay_domain::PayerId::parse("u-k").unwrap()).await.unwrap().unwrap();
    assert_eq!(balance_fen, 10_000 - 6_000 + 1, "funded once, paid once, plus the marker");

    // The offsets live in the database, with the writes; the outbox is drained.
    let offsets = store.offsets(&cfg.ledger_group, &cmd_topic).await.unwrap();
    assert!(offsets.values().sum::<i64>() >= 5, "{offsets:?}");
    assert!(store.outbox_pending(10).await.unwrap().is_empty());
    // The bad event was kept with its reason.
    let rejected = store.rejected(10).await.unwrap();
    assert!(rejected.iter().any(|r| r.reason_code == "too_many_decimals" && r.source == "kafka"));

    let _ = prod.shutdown.send(true);
    let mut tasks = prod.tasks;
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
}
