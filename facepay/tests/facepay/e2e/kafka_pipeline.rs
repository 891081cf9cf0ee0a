//! The production profile's transport against a real Kafka-API broker (tansu in CI:
//! `scripts/kafka.sh start`). Skipped, saying so, when no broker answers, unless
//! `FACEPAY_REQUIRE_KAFKA=1` (CI sets it).

use std::sync::Arc;
use std::time::Duration;

use facepay::production::{self, Roles};
use facepay_domain::auth::Pepper;
use facepay_domain::limits::{EMBEDDING_DIM, FAILOVER_MS_MAX};
use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use facepay_ingest::kafka::{self, KafkaConfig, DEAD_LETTER, DEVICE_EVENTS, LEDGER_COMMANDS, LEDGER_OUTCOMES};
use facepay_ingest::wire::StageMessage;
use facepay_ledger::store::prelude::*;
use facepay_ledger::{SqliteStore, Stores};
use facepay_sim::keys::FleetSigner;
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
        "occurred_at": chrono::Utc::now().to_rfc3339(),
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

/// A face nobody enrolls.
fn other_face() -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[300] = 1.0;
    v
}

/// A store with the test's merchant and device, and a signer holding the device's key (and
/// the platform's) under a fresh pepper.
async fn store(dir: &std::path::Path) -> (Stores, Pepper, FleetSigner) {
    let store = SqliteStore::open(&format!("sqlite://{}", dir.join("k.db").display())).await.unwrap();
    let merchant = MerchantId::parse(MERCHANT).unwrap();
    store.register_merchant(&merchant, "K").await.unwrap();
    let device = DeviceRef {
        merchant_id: merchant,
        store_id: StoreId::parse("S01").unwrap(),
        device_id: DeviceId::parse("DEV-K1").unwrap(),
    };
    store.register_device(&device).await.unwrap();
    let pepper = facepay_sim::keys::random_pepper();
    let signer = FleetSigner::enrol(&store, &pepper, &[device]).await.unwrap();
    (Stores::of(store), pepper, signer)
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

/// Every message on `topic` now, as JSON.
async fn read_all(cfg: &KafkaConfig, topic: &str) -> Vec<Value> {
    let (cfg, topics) = (cfg.clone(), [topic.to_string()]);
    let messages = tokio::task::spawn_blocking(move || kafka::read_partitions(&cfg, &topics, None)).await.unwrap();
    messages.unwrap().iter().map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap()).collect()
}

/// Waits until the relay has published (and marked) everything in the outbox.
async fn drained(store: &dyn LedgerStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !store.outbox_pending(1).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes one event, signed (by DEV-K1, or the platform), under the one key rule; waits
/// for the broker's ack.
async fn publish(producer: &rdkafka::producer::FutureProducer, topic: &str, signer: &FleetSigner, bytes: Vec<u8>) {
    let signature = signer.sign(&bytes);
    kafka::publish_signed(producer, topic, &bytes, signature.as_deref()).await.unwrap()
}

/// Stops a started process gracefully and checks every stage ended cleanly.
async fn stop(prod: production::Production) {
    let _ = prod.shutdown.send(true);
    let mut tasks = prod.tasks;
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
}

/// Ends a started process as a crash would: its tasks dropped mid-flight, nothing given up
/// (its leases in the database stay until they lapse).
async fn crash(prod: production::Production) {
    let mut tasks = prod.tasks;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// What the face tests share: a store with the test's device, its pepper and signer, a
/// fresh configuration, a face master key, and a producer onto the device-events topic.
struct FaceRun {
    _dir: tempfile::TempDir,
    stores: Stores,
    store: Arc<dyn LedgerStore>,
    pepper: Pepper,
    signer: FleetSigner,
    cfg: KafkaConfig,
    /// The face master key, as hex.
    hex: String,
    producer: rdkafka::producer::FutureProducer,
    topic: String,
}

impl FaceRun {
    async fn new(brokers: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (stores, pepper, signer) = store(dir.path()).await;
        let store = stores.ledger.clone();
        // One partition: the platform's events (keyed by their own ids) and the device's reach
        // the stages in the order sent.
        let mut cfg = config(brokers);
        cfg.partitions = 1;
        let (_, hex) = facepay_matcher::vault::MasterKey::generate();
        let (producer, topic) = (cfg.producer().unwrap(), cfg.topic(DEVICE_EVENTS));
        Self { _dir: dir, stores, store, pepper, signer, cfg, hex: hex.to_string(), producer, topic }
    }

    /// Pipeline settings with a face store for `shard`, sealed under the run's master key,
    /// its keys in the run's one face key file.
    async fn sealed(&self, shard: facepay_ingest::faces::Shard) -> facepay_ingest::PipelineConfig {
        use facepay_matcher::vault::{MasterKey, Vault};
        let vault = Vault::new(MasterKey::from_hex(&self.hex).unwrap());
        let keys = facepay_ledger::face_keys::FaceKeyFile::open(&self._dir.path().join("face-keys.db")).await.unwrap();
        facepay_ingest::PipelineConfig {
            verifier: Arc::new(facepay_ingest::authenticity::DeviceVerifier::new(self.pepper.clone())),
            faces: Some(facepay_ingest::faces::FaceStore::new(self.store.clone(), keys, vault, shard)),
            ..Default::default()
        }
    }

    /// Publishes one event, signed; waits for the broker's ack.
    async fn send(&self, bytes: Vec<u8>) {
        publish(&self.producer, &self.topic, &self.signer, bytes).await
    }
}

fn id(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0xca11 << 64 | n)
}

/// A run of the production stages over a SQLite store with the test's device, on topics of
/// its own, and a producer to its device-events topic.
struct Started {
    _dir: tempfile::TempDir,
    store: Arc<dyn LedgerStore>,
    signer: FleetSigner,
    cfg: KafkaConfig,
    prod: production::Production,
    producer: rdkafka::producer::FutureProducer,
    topic: String,
}

/// One partition per topic: the platform's events (keyed by their own ids) and the device's
/// reach the stages in the order sent.
async fn started(brokers: &str) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let (stores, pepper, signer) = store(dir.path()).await;
    let store = stores.ledger.clone();
    let mut cfg = config(brokers);
    cfg.partitions = 1;
    let prod = production::start(stores, cfg.clone(), Roles::ALL, &pepper).await.unwrap();
    let (producer, topic) = (cfg.producer().unwrap(), cfg.topic(DEVICE_EVENTS));
    Started { _dir: dir, store, signer, cfg, prod, producer, topic }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_events_through_kafka_are_decided_once_and_answered_through_the_outbox() {
    let Some(brokers) = brokers() else { return };
    let Started { _dir, store, signer, cfg, prod, producer, topic } = started(&brokers).await;
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
    // One partition: the platform's events first, then the device's, in order.
    for bytes in &sends {
        kafka::publish_signed(&producer, &topic, bytes, signer.sign(bytes).as_deref()).await.unwrap();
    }
    let got = outcomes(&cfg, &[id(2), id(4), id(5), id(6)]).await;
    let by = |n: u128| got.iter().find(|v| v["in_reply_to"] == id(n).to_string()).unwrap().clone();
    assert_eq!(by(4)["payload"]["status"], "PAID", "{:?}", by(4));
    assert_eq!(by(5)["payload"]["replayed"], true, "the exact retry is answered from the stored outcome");
    // The bad event is answered too, to its device, with the reason and the field at fault.
    assert_eq!(by(6)["type"], "rejected", "{:?}", by(6));
    assert_eq!(
        (&by(6)["payload"]["code"], &by(6)["payload"]["field"], &by(6)["device"]["device_id"]),
        (&json!("too_many_decimals"), &json!("payload.amount"), &json!("DEV-K1")),
        "{:?}",
        by(6)
    );

    // A command delivered twice (a producer retry, a rebalance) posts once.
    let fund_again = facepay_ledger::Command::new(
        id(2),
        chrono::Utc::now(),
        None,
        facepay_ledger::CommandKind::Fund {
            payer_id: facepay_domain::PayerId::parse("u-k").unwrap(),
            amount: "100.00".parse().unwrap(),
        },
    );
    let cmd_topic = cfg.topic(LEDGER_COMMANDS);
    let again = serde_json::to_vec(&StageMessage::Command(fund_again)).unwrap();
    kafka::publish(&producer, &cmd_topic, "payer:u-k", &again).await.unwrap();
    let marker = event(7, "account_funded", json!({"payer_id": "u-k", "amount": "0.01"}), false);
    kafka::publish_signed(&producer, &topic, &marker, signer.sign(&marker).as_deref()).await.unwrap();
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

    drained(store.as_ref()).await;
    // Exactly one outcome per inbound event on the topic: the command delivered twice was
    // answered once.
    let all = read_all(&cfg, &cfg.topic(LEDGER_OUTCOMES)).await;
    let mut per_event = std::collections::BTreeMap::<String, usize>::new();
    for v in &all {
        *per_event.entry(v["in_reply_to"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_event.len(), 7, "one outcome for each of the 6 good events and the bad one: {per_event:?}");
    assert!(per_event.values().all(|n| *n == 1), "{per_event:?}");
    // Each step from a ledger command to its published outcome was timed (the metrics'
    // histograms and `facepay-bench pipeline`'s `steps_ms`).
    let totals = facepay_ingest::metrics::METRICS.steps();
    let untimed: Vec<_> = totals.steps.iter().filter(|s| s.count == 0).map(|s| s.step.name()).collect();
    assert!(untimed.is_empty(), "steps never timed: {untimed:?}");
    assert!(facepay_ingest::metrics::METRICS.render().contains("facepay_ledger_commit_seconds_count"));

    stop(prod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_table_and_the_partition_keeps_moving() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (stores, pepper, signer) = store(dir.path()).await;
    let store = stores.ledger.clone();
    let mut cfg = config(&brokers);
    cfg.partitions = 1; // one partition: the poison sits in front of the good event
    let prod = production::start(stores, cfg.clone(), Roles::ALL, &pepper).await.unwrap();
    let producer = cfg.producer().unwrap();

    let mut wrong_version: Value = serde_json::from_slice(&event(1, "account_funded", json!({}), false)).unwrap();
    wrong_version["schema_version"] = 2.into();
    let oversize =
        event(2, "account_funded", json!({"payer_id": "u-p", "amount": "1.00", "pad": "x".repeat(70_000)}), false);
    // Signed by the platform: refused for what they are, kept with their reason.
    let poison: [(&str, Vec<u8>); 2] =
        [("unsupported_version", serde_json::to_vec(&wrong_version).unwrap()), ("too_long", oversize)];
    let device_topic = cfg.topic(DEVICE_EVENTS);
    for (_, bytes) in &poison {
        kafka::publish_signed(&producer, &device_topic, bytes, signer.sign(bytes).as_deref()).await.unwrap();
    }
    // Bytes nobody could sign, a well-formed event without a signature, and one signed by the
    // device for another event id (a forgery) fail authentication: refused, counted, and
    // kept and published nowhere (whoever sent them is unknown).
    kafka::publish_signed(&producer, &device_topic, b"\xff\xfe not json at all", None).await.unwrap();
    let unsigned = event(4, "account_funded", json!({"payer_id": "u-p", "amount": "9.00"}), false);
    kafka::publish_signed(&producer, &device_topic, &unsigned, None).await.unwrap();
    let forged = event(5, "payment_query", json!({"out_trade_no": "P-1"}), true);
    let other_sig = signer.sign(&event(6, "payment_query", json!({"out_trade_no": "P-1"}), true));
    kafka::publish_signed(&producer, &device_topic, &forged, other_sig.as_deref()).await.unwrap();
    // Garbage straight on the ledger's own topic is kept too.
    kafka::publish(&producer, &cfg.topic(LEDGER_COMMANDS), "poison", b"{\"type\": \"nonsense\"}").await.unwrap();
    let good = event(3, "account_funded", json!({"payer_id": "u-p", "amount": "5.00"}), false);
    kafka::publish_signed(&producer, &device_topic, &good, signer.sign(&good).as_deref()).await.unwrap();

    let got = outcomes(&cfg, &[id(3)]).await;
    assert_eq!(got[0]["type"], "applied", "the good event behind the poison was applied: {got:?}");
    drained(store.as_ref()).await;
    // No device signed the poison: nobody is answered on the outcomes topic (the platform's
    // rejections are the operators', in the dead letters; the unauthenticated are nobody's).
    let answers = read_all(&cfg, &cfg.topic(LEDGER_OUTCOMES)).await;
    assert_eq!(answers.len(), 1, "only the good event is answered: {answers:?}");
    let letters = read_all(&cfg, &cfg.topic(DEAD_LETTER)).await;
    assert_eq!(letters.len(), 3, "one dead letter per authenticated poison message: {letters:?}");
    let rejected = store.rejected(100).await.unwrap();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(rejected.iter().all(|r| r.reason_code != "bad_signature"), "nothing unauthenticated kept: {rejected:?}");
    for (reason, bytes) in &poison {
        assert!(letters.iter().any(|l| l["reason_code"] == *reason), "{reason} in {letters:?}");
        let kept = rejected.iter().find(|r| r.reason_code == *reason && r.source == "kafka");
        let kept = kept.unwrap_or_else(|| panic!("{reason} kept, from the device-events topic: {rejected:?}"));
        let cut = bytes.len().min(facepay_domain::limits::REJECTED_RAW_BYTES_MAX);
        assert_eq!(kept.raw, bytes[..cut], "{reason}: the raw bytes are kept (cut at the limit)");
    }
    assert!(rejected.iter().any(|r| r.source == "kafka-ledger" && r.reason_code == "malformed"));
    let (balance_fen, _) = store.wallet(&facepay_domain::PayerId::parse("u-p").unwrap()).await.unwrap().unwrap();
    assert_eq!(balance_fen, 500);

    stop(prod).await;
}

/// Refused biometric events, from the device and the platform, are answered and kept with
/// their reason, and neither the dead letters, the outcomes nor the kept rows hold the
/// embedding or the phone digits in plain text (issue 24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_biometric_events_publish_and_keep_no_embedding() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (stores, pepper, signer) = store(dir.path()).await;
    let store = stores.ledger.clone();
    let mut cfg = config(&brokers);
    cfg.partitions = 1;
    let prod = production::start(stores, cfg.clone(), Roles::ALL, &pepper).await.unwrap();
    let producer = cfg.producer().unwrap();
    let values: Vec<f32> = (0..511).map(|i| (i as f32 * 0.61 + 0.3).cos() / 16.0).collect();
    let bad = [
        event(
            11,
            "face_captured",
            json!({"face_code": "100000000000000911", "embedding": values, "liveness": 0.99}),
            true,
        ),
        event(
            12,
            "face_captured",
            json!({"face_code": "100000000000000912", "embedding": values, "liveness": 2.0, "phone_last4": "8642"}),
            true,
        ),
        event(13, "face_enrolled", json!({"payer_id": "u-bad", "embedding": values, "phone_last4": "8642"}), false),
    ];
    for bytes in &bad {
        let topic = cfg.topic(DEVICE_EVENTS);
        kafka::publish_signed(&producer, &topic, bytes, signer.sign(bytes).as_deref()).await.unwrap();
    }
    let answers = outcomes(&cfg, &[id(11), id(12)]).await;
    assert!(answers.iter().all(|a| a["type"] == "rejected"), "the device hears `rejected`: {answers:?}");
    drained(store.as_ref()).await;
    let letters = read_all(&cfg, &cfg.topic(DEAD_LETTER)).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    let numbers = serde_json::to_string(&values[..4]).unwrap();
    let needles = [numbers.trim_matches(['[', ']']).to_string(), "8642".to_string()];
    let published: Vec<String> = letters.iter().chain(&answers).map(|v| v.to_string()).collect();
    let kept: Vec<String> =
        store.rejected(10).await.unwrap().iter().map(|r| String::from_utf8_lossy(&r.raw).into()).collect();
    assert_eq!(kept.len(), 3);
    for text in published.iter().chain(&kept) {
        assert!(needles.iter().all(|n| !text.contains(n.as_str())), "in plain text: {text}");
    }
    stop(prod).await;
}

/// A matcher stopped between a face capture and its payment, and started again, still pays
/// from the payer the capture identified: the capture's identity was kept in the store with
/// its batch (`capture_memos`) and restored when the restarted stage was given its
/// partitions. Before, the restarted matcher had
/// forgotten the capture and the payment was declined as an unknown capture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matcher_restarted_between_a_capture_and_its_payment_still_knows_the_payer() {
    use facepay_ingest::faces::Shard;

    let Some(brokers) = brokers() else { return };
    let run = FaceRun::new(&brokers).await;
    let (store, cfg) = (&run.store, &run.cfg);
    let send = |bytes: Vec<u8>| run.send(bytes);

    let first = production::start_with(run.stores.clone(), cfg.clone(), Roles::ALL, run.sealed(Shard::ALL).await)
        .await
        .unwrap();
    send(event(21, "face_enrolled", json!({"payer_id": "u-r", "embedding": face()}), false)).await;
    send(event(22, "account_funded", json!({"payer_id": "u-r", "amount": "100.00"}), false)).await;
    let capture = json!({"face_code": "100000000000000021", "embedding": face(), "liveness": 0.99});
    send(event(23, "face_captured", capture, true)).await;
    outcomes(cfg, &[id(22), id(23)]).await;
    stop(first).await;

    let second = production::start_with(run.stores.clone(), cfg.clone(), Roles::ALL, run.sealed(Shard::ALL).await)
        .await
        .unwrap();
    let pay = json!({"out_trade_no": "K-R1", "amount": "25.00", "face_code": "100000000000000021"});
    send(event(24, "payment_requested", pay, true)).await;
    let got = outcomes(cfg, &[id(24)]).await;
    assert_eq!(got[0]["payload"]["status"], "PAID", "{:?}", got[0]);
    let (balance_fen, _) = store.wallet(&facepay_domain::PayerId::parse("u-r").unwrap()).await.unwrap().unwrap();
    assert_eq!(balance_fen, 10_000 - 2_500);
    stop(second).await;
}

/// A unit face along `axes` (weights normalised by the parser).
fn face_of(axes: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    axes.iter().for_each(|&(i, w)| v[i] = w);
    v
}

/// The first payer id `u-<n>` whose face belongs to shard `index` of 2.
fn payer_on(index: u32, skip: usize) -> String {
    use facepay_ingest::faces::Shard;
    let shard = Shard { index, count: 2 };
    (0..)
        .map(|n| format!("u-{n}"))
        .filter(|p| shard.owns(&facepay_domain::PayerId::parse(p).unwrap()))
        .nth(skip)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gallery_split_over_two_shard_processes_decides_each_capture_from_both_and_never_on_one() {
    use facepay_ingest::faces::Shard;

    let Some(brokers) = brokers() else { return };
    let run = FaceRun::new(&brokers).await;
    let (store, cfg) = (&run.store, &run.cfg);
    let shard = |index: u32| run.sealed(Shard { index, count: 2 });
    let send = |bytes: Vec<u8>| run.send(bytes);
    let lead = Roles { matcher: true, ledger: true, relay: true, api: false };
    let first = production::start_with(run.stores.clone(), cfg.clone(), lead, shard(0).await).await.unwrap();
    let only_matcher = Roles { matcher: true, ledger: false, relay: false, api: false };
    let second = production::start_with(run.stores.clone(), cfg.clone(), only_matcher, shard(1).await).await.unwrap();

    // A member whose face only shard 1 holds; look-alikes split over the two shards; a
    // payer on shard 0 alone. Each is funded with 100.00.
    let (member, twin0, twin1, solo) = (payer_on(1, 0), payer_on(0, 0), payer_on(1, 1), payer_on(0, 1));
    let faces = [
        (&member, face_of(&[(7, 1.0)])),
        (&twin0, face_of(&[(11, 1.0)])),
        (&twin1, face_of(&[(11, 1.0), (12, 0.1)])),
        (&solo, face_of(&[(20, 1.0)])),
    ];
    for (n, (payer, embedding)) in faces.iter().enumerate() {
        let n = 100 + 2 * n as u128;
        send(event(n, "face_enrolled", json!({"payer_id": payer, "embedding": embedding}), false)).await;
        send(event(n + 1, "account_funded", json!({"payer_id": payer, "amount": "100.00"}), false)).await;
    }
    // The member opens the merchant's card by face: the gather resolves the capture from both
    // shards' partials, the ledger opens the card, and shard 1 (which holds the member's
    // face) reads the ledger's cards into its member list.
    let capture = json!({"face_code": "100000000000000109", "embedding": face_of(&[(7, 1.0)]), "liveness": 0.99});
    send(event(109, "face_captured", capture, true)).await;
    let card = json!({"face_code": "100000000000000109", "card_code": "card-001", "channel": "card_package"});
    send(event(110, "member_card_opened", card, true)).await;
    let opened = outcomes(cfg, &[id(107), id(110)]).await;
    assert!(opened.iter().all(|o| o["type"] == "applied"), "{opened:?}");
    tokio::time::sleep(Duration::from_millis(facepay_domain::limits::MATCH_MEMBERS_REFRESH_MS + 500)).await;
    // Both shards are consuming once each has kept its own payers' faces.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.face_gallery(0, 2).await.unwrap().len() + store.face_gallery(1, 2).await.unwrap().len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the shards never kept their faces");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pay = |n: u128, code: &str, embedding: Vec<f32>| {
        let capture = json!({"face_code": code, "embedding": embedding, "liveness": 0.99});
        let payment = json!({"out_trade_no": format!("K-S{n}"), "amount": "10.00", "face_code": code});
        [event(n, "face_captured", capture, true), event(n + 1, "payment_requested", payment, true)]
    };
    for bytes in
        [pay(120, "100000000000000120", face_of(&[(7, 1.0)])), pay(122, "100000000000000122", face_of(&[(11, 1.0)]))]
            .into_iter()
            .flatten()
    {
        send(bytes).await;
    }
    let got = outcomes(cfg, &[id(110), id(121), id(123)]).await;
    let by = |n: u128| got.iter().find(|v| v["in_reply_to"] == id(n).to_string()).unwrap().clone();
    assert_eq!(by(121)["payload"]["status"], "PAID", "the member on shard 1 pays: {:?}", by(121));
    assert_eq!(by(123)["payload"]["status"], "DECLINED", "look-alikes on both shards: {:?}", by(123));
    let wallet = |p: &str| {
        let (store, payer) = (store.clone(), facepay_domain::PayerId::parse(p).unwrap());
        async move { store.wallet(&payer).await.unwrap().unwrap().0 }
    };
    assert_eq!(wallet(&member).await, 9_000, "paid from the member's wallet");
    assert_eq!((wallet(&twin0).await, wallet(&twin1).await), (10_000, 10_000), "neither look-alike pays");

    // Shard 1's process dies (no clean leave: its leases stay until they lapse). The
    // gather's partitions it held move to the first process (owned through the database,
    // not the broker's group), and a capture of shard 0's own payer is never paid on shard
    // 0's view alone.
    let died = tokio::time::Instant::now();
    crash(second).await;
    for bytes in pay(130, "100000000000000130", face_of(&[(20, 1.0)])) {
        send(bytes).await;
    }
    let got = outcomes(cfg, &[id(131)]).await;
    assert_eq!(got[0]["payload"]["status"], "DECLINED", "{:?}", got[0]);
    assert_eq!(wallet(&solo).await, 10_000, "nothing paid without shard 1's answer");
    let memos = store.captures_recent(chrono::Utc::now() - chrono::Duration::minutes(5), 100).await.unwrap();
    let rule = |code: &str| memos.iter().find(|m| m.face_code.as_str() == code).map(|m| m.rule.clone());
    assert_eq!(rule("100000000000000120").as_deref(), Some("member_hit"));
    assert_eq!(rule("100000000000000122").as_deref(), Some("needs_phone_confirmation"));
    assert_eq!(rule("100000000000000130").as_deref(), Some("shards_incomplete"));
    let (failover, bound) = (died.elapsed(), FAILOVER_MS_MAX + facepay_domain::limits::MATCH_GATHER_WAIT_MS);
    eprintln!("the capture after the crash decided {} ms after it", failover.as_millis());
    assert!(failover < Duration::from_millis(bound + 5_000), "decided {failover:?} after the crash");
    stop(first).await;
}

/// Issue 21, finding 1: every matcher follows the gallery while it runs. Two processes split
/// the device events' two partitions (owned through the database); a face enrolled through the
/// one holding partition 0 pays through the one holding partition 1 straight after the
/// enrolment is answered, and a deletion through the first stops the second paying from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_face_enrolled_through_one_matcher_pays_through_the_other_at_once() {
    use facepay_ingest::faces::Shard;

    let Some(brokers) = brokers() else { return };
    let mut run = FaceRun::new(&brokers).await;
    run.cfg.partitions = 2;
    let cfg = run.cfg.clone();
    let roles = Roles { matcher: true, ledger: true, relay: true, api: false };
    let first =
        production::start_with(run.stores.clone(), cfg.clone(), roles, run.sealed(Shard::ALL).await).await.unwrap();
    let second =
        production::start_with(run.stores.clone(), cfg.clone(), roles, run.sealed(Shard::ALL).await).await.unwrap();
    // Each process holds one of the device events' partitions.
    let leases = format!("part:{}:{}:", cfg.match_group, run.topic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held = run.store.leases_live(&leases).await.unwrap();
        let holders: std::collections::BTreeSet<&String> = held.iter().map(|(_, holder)| holder).collect();
        if held.len() == 2 && holders.len() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the processes never split the partitions: {held:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to = |partition: i32, bytes: Vec<u8>| {
        let (producer, topic, signature) = (run.producer.clone(), run.topic.clone(), run.signer.sign(&bytes));
        async move {
            let headers = kafka::device_event_headers(signature.as_deref(), None, None);
            let record = rdkafka::producer::FutureRecord::to(&topic).partition(partition).key("k").payload(&bytes);
            producer.send(record.headers(headers), Duration::from_secs(10)).await.unwrap();
        }
    };
    let pay = |n: u128| {
        let (code, order) = (format!("10000000000000{n:04}"), format!("K-F{n}"));
        let capture = json!({"face_code": code, "embedding": face(), "liveness": 0.99});
        let payment = json!({"out_trade_no": order, "amount": "10.00", "face_code": code});
        [event(n, "face_captured", capture, true), event(n + 1, "payment_requested", payment, true)]
    };
    to(0, event(200, "face_enrolled", json!({"payer_id": "u-f", "embedding": face()}), false)).await;
    to(0, event(201, "account_funded", json!({"payer_id": "u-f", "amount": "100.00"}), false)).await;
    let done = outcomes(&cfg, &[id(200), id(201)]).await;
    assert!(done.iter().all(|o| o["type"] == "applied"), "{done:?}");
    let answered = tokio::time::Instant::now();
    for bytes in pay(210) {
        to(1, bytes).await;
    }
    let paid = outcomes(&cfg, &[id(211)]).await;
    assert_eq!(paid[0]["payload"]["status"], "PAID", "the other matcher knew the face: {:?}", paid[0]);
    assert!(answered.elapsed() < Duration::from_secs(5), "paid {:?} after the enrolment", answered.elapsed());

    to(0, event(220, "face_deleted", json!({"payer_id": "u-f"}), false)).await;
    outcomes(&cfg, &[id(220)]).await;
    for bytes in pay(230) {
        to(1, bytes).await;
    }
    let declined = outcomes(&cfg, &[id(231)]).await;
    assert_eq!(declined[0]["payload"]["status"], "DECLINED", "deleted through the other: {:?}", declined[0]);
    let (balance_fen, _) = run.store.wallet(&facepay_domain::PayerId::parse("u-f").unwrap()).await.unwrap().unwrap();
    assert_eq!(balance_fen, 9_000, "paid once, from the enrolled payer");
    stop(second).await;
    stop(first).await;
}

/// Issue 19's findings 1 to 3 over the device-events topic: a device's claimed time is
/// refused far from the accept time and decides no day; a device event naming a payer is
/// refused; a Pay Score order by face needs the payer's authorisation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_a_devices_claimed_time_and_named_payer_decide_nothing() {
    let Some(brokers) = brokers() else { return };
    let Started { _dir, store, signer, cfg, prod, producer, topic } = started(&brokers).await;
    let claiming = |n: u128, kind: &str, payload: Value, claim: Option<&str>| {
        let mut v: Value = serde_json::from_slice(&event(n, kind, payload, true)).unwrap();
        if let Some(c) = claim {
            v["occurred_at"] = c.into();
        }
        serde_json::to_vec(&v).unwrap()
    };
    let capture = |n: u128, code: &str| {
        claiming(n, "face_captured", json!({"face_code": code, "embedding": face(), "liveness": 0.99}), None)
    };
    let pay = |n: u128, order: &str, code: &str, claim: Option<&str>| {
        let payload = json!({"out_trade_no": order, "amount": "900.00", "face_code": code});
        claiming(n, "payment_requested", payload, claim)
    };
    // One partition: the platform's events first, then the device's, in order.
    let sends = vec![
        event(200, "face_enrolled", json!({"payer_id": "u-v", "embedding": face()}), false),
        event(201, "account_funded", json!({"payer_id": "u-v", "amount": "5000.00"}), false),
        capture(202, "100000000000000202"),
        pay(203, "V-1", "100000000000000202", None),
        capture(204, "100000000000000204"),
        pay(205, "V-2", "100000000000000204", None),
        capture(206, "100000000000000206"),
        pay(207, "V-3", "100000000000000206", Some("2001-01-01T00:00:00Z")),
        claiming(208, "payment_query", json!({"out_trade_no": "V-1"}), Some("2030-06-01T00:00:00Z")),
        claiming(
            209,
            "pay_score_order_created",
            json!({"out_order_no": "PS-V", "payer_id": "u-v", "hold_amount": "100.00"}),
            None,
        ),
        claiming(
            210,
            "member_card_opened",
            json!({"payer_id": "u-v", "card_code": "C-V", "channel": "card_package"}),
            None,
        ),
        capture(211, "100000000000000211"),
        claiming(
            212,
            "pay_score_order_created",
            json!({"out_order_no": "PS-W", "face_code": "100000000000000211", "hold_amount": "100.00"}),
            None,
        ),
        claiming(213, "payment_query", json!({"out_trade_no": "V-2"}), None),
        // An order left unpaid (a face nobody enrolled), then a forward-dated event.
        claiming(
            214,
            "face_captured",
            json!({"face_code": "100000000000000214", "embedding": other_face(), "liveness": 0.99}),
            None,
        ),
        pay(215, "V-4", "100000000000000214", None),
        claiming(216, "payment_query", json!({"out_trade_no": "V-4"}), Some("2030-06-01T00:00:00Z")),
        claiming(217, "payment_query", json!({"out_trade_no": "V-4"}), None),
    ];
    for bytes in &sends {
        kafka::publish_signed(&producer, &topic, bytes, signer.sign(bytes).as_deref()).await.unwrap();
    }
    let got = outcomes(&cfg, &[id(203), id(205), id(212), id(213), id(215), id(217)]).await;
    let by = |n: u128| got.iter().find(|v| v["in_reply_to"] == id(n).to_string()).unwrap().clone();
    assert_eq!(by(203)["payload"]["status"], "PAID", "{got:?}");
    assert_eq!(by(205)["payload"]["reason"], "DAILY_AMOUNT_CAP", "{got:?}");
    assert_eq!(by(212)["payload"]["code"], "PAY_SCORE_NOT_AUTHORISED", "{got:?}");
    drained(store.as_ref()).await;
    let letters = read_all(&cfg, &cfg.topic(DEAD_LETTER)).await;
    let reason = |n: u128| {
        let l = letters.iter().find(|l| l["event_id"] == id(n).to_string());
        l.map(|l| (l["reason_code"].as_str().unwrap().to_string(), l["field"].as_str().unwrap_or_default().to_string()))
    };
    assert_eq!(reason(207), Some(("occurred_at_skew".into(), "occurred_at".into())), "{letters:?}");
    assert_eq!(reason(208), Some(("occurred_at_skew".into(), "occurred_at".into())), "{letters:?}");
    assert_eq!(reason(209), Some(("missing".into(), "payload.face_code".into())), "{letters:?}");
    assert_eq!(reason(210), Some(("missing".into(), "payload.face_code".into())), "{letters:?}");
    assert_eq!(reason(216), Some(("occurred_at_skew".into(), "occurred_at".into())), "{letters:?}");
    // The forward-dated event moved no clock: the unpaid order waits out its 45 s (the
    // sweeper runs every second on the platform's clock).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (merchant, no) = (MerchantId::parse(MERCHANT).unwrap(), facepay_domain::OutTradeNo::parse("V-4").unwrap());
    let order = store.order(&merchant, &no).await.unwrap().unwrap();
    assert_eq!(order.status, facepay_domain::OrderStatus::Declined);
    let (balance_fen, _) = store.wallet(&facepay_domain::PayerId::parse("u-v").unwrap()).await.unwrap().unwrap();
    assert_eq!(balance_fen, 500_000 - 90_000, "one payment of 900.00, nothing held, nothing else");
    let page = facepay_ledger::store::MembersPage { before_id: None, limit: 10 };
    assert!(store.members(&MerchantId::parse(MERCHANT).unwrap(), page).await.unwrap().is_empty());
    stop(prod).await;
}
