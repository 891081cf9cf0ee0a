//! Scale-out: two `facepay serve` processes share the ledger-commands partitions on
//! PostgreSQL (owned through leases in the database); one is stopped or killed (SIGKILL)
//! mid-stream, the other takes over its partitions, and nothing is lost or posted twice. Needs PostgreSQL and a Kafka-API broker;
//! skipped, saying so, without them (CI requires both).

use std::time::Duration;

use crate::support::{answered, spawn, tail, Stop};
use facepay_domain::limits::{FAILOVER_MS_MAX, OUTBOX_TAKEOVER_MS_MAX};
use facepay_domain::{DeviceId, DeviceRef, FaceCode, MerchantId, Money, OutTradeNo, PayerId, StoreId};
use facepay_ingest::kafka::{self, LEDGER_COMMANDS, RELAY_LEASE};
use facepay_ingest::wire::command_key;
use facepay_ingest::wire::StageMessage;
use facepay_ledger::{Command as LedgerCommand, CommandKind, Identity};

const PAYERS: usize = 24;
const PAYMENTS_EACH: usize = 8;

/// Funding then payments for each of `payers` payers (every tenth command is also delivered
/// twice by the tests that publish one at a time).
fn commands(payers: usize) -> Vec<LedgerCommand> {
    let device = DeviceRef {
        merchant_id: MerchantId::parse("1900000101").unwrap(),
        store_id: StoreId::parse("S01").unwrap(),
        device_id: DeviceId::parse("DEV-S1").unwrap(),
    };
    let at = |n: usize| {
        "2026-03-02T02:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap() + chrono::Duration::seconds(n as i64)
    };
    let mut out = Vec::new();
    for p in 0..payers {
        let payer_id = PayerId::parse(format!("u-s{p:03}")).unwrap();
        let id = |k: usize| uuid::Uuid::from_u128(0x5ca1e << 64 | (p * 100 + k) as u128);
        let fund = CommandKind::Fund { payer_id: payer_id.clone(), amount: Money::from_fen(10_000).unwrap() };
        out.push(LedgerCommand::new(id(0), at(0), None, fund));
        for k in 1..=PAYMENTS_EACH {
            out.push(LedgerCommand::new(
                id(k),
                at(k),
                Some(device.clone()),
                CommandKind::Pay {
                    device: device.clone(),
                    out_trade_no: OutTradeNo::parse(format!("S-{p}-{k}")).unwrap(),
                    amount: Money::from_fen(700).unwrap(),
                    face_code: FaceCode::parse(format!("{:018}", 200_000_000_000_000_000_u64 + (p * 100 + k) as u64))
                        .unwrap(),
                    identity: Identity::Resolved { payer_id: payer_id.clone(), rule: "global_hit".into() },
                },
            ));
        }
    }
    out
}

/// The partitions a process was last assigned, from its log.
fn assigned(log: &std::path::Path) -> std::collections::BTreeSet<i32> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let Some(line) = text.lines().rev().find(|l| l.contains("assigned partitions")) else {
        return Default::default();
    };
    let Some(list) = line.split("partitions=[").nth(1).and_then(|r| r.split(']').next()) else {
        return Default::default();
    };
    list.split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

/// The partitions a process logged that it consumed.
fn partitions(log: &std::path::Path) -> std::collections::BTreeSet<i32> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("ledger stage consumes a partition"))
        .filter_map(|l| l.split("partition=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_partitions_and_one_leaving_mid_stream_loses_and_double_posts_nothing() {
    scale_out(Stop::Interrupt).await
}

/// The partitions are owned through the database, not the broker's group coordinator (which
/// in tansu 0.6 never gives a killed member's partitions to the survivor): the killed
/// process's leases lapse and the survivor takes its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_partitions_and_a_crash_loses_and_double_posts_nothing() {
    scale_out(Stop::Kill).await
}

async fn scale_out(stop: Stop) {
    let Some(crate::support::Run { db, store, cfg, logs, database: _database }) = crate::support::run(4).await else {
        return;
    };
    let (log_a, log_b) = (logs.path().join("a.log"), logs.path().join("b.log"));
    let mut a = Some(spawn(&db, &cfg, "ledger,relay", &[], &log_a));
    // The first process holds the relay's lease before the second starts: the one stopped
    // mid-stream is the relay, and its successor's takeover is timed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let relay_holder = loop {
        if let Some((_, holder)) = store.leases_live(RELAY_LEASE).await.unwrap().pop() {
            break holder;
        }
        assert!(tokio::time::Instant::now() < deadline, "the first process never took the relay's lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let b = spawn(&db, &cfg, "ledger,relay", &[], &log_b);
    // Wait until the group has settled with both processes holding partitions.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (now_a, now_b) = (assigned(&log_a), assigned(&log_b));
        let all: std::collections::BTreeSet<i32> = now_a.union(&now_b).copied().collect();
        if !now_a.is_empty() && !now_b.is_empty() && now_a.is_disjoint(&now_b) && all.len() == 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the group never settled: {now_a:?} {now_b:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_by_a = assigned(&log_a);

    let producer = cfg.producer().unwrap();
    let topic = cfg.topic(LEDGER_COMMANDS);
    let cmds = commands(PAYERS);
    let third = cmds.len() / 3;
    let mut stopped_at = None;
    for (i, cmd) in cmds.iter().enumerate() {
        let bytes = serde_json::to_vec(&StageMessage::Command(cmd.clone())).unwrap();
        kafka::publish(&producer, &topic, &command_key(cmd), &bytes).await.unwrap();
        if i % 10 == 0 {
            kafka::publish(&producer, &topic, &command_key(cmd), &bytes).await.unwrap();
            // delivered twice
        }
        if i == third {
            // Both work through the first third; then one of them crashes mid-stream.
            answers_reach(&db, (third + 1) as i64, Duration::from_secs(60)).await;
            if let Some(first) = a.take() {
                let _ = first.stop(stop);
                stopped_at = Some(tokio::time::Instant::now());
            }
        }
    }
    // The relay's successor holds the lease within its bound; the survivor serves every
    // partition within the failover bound.
    let stopped_at = stopped_at.expect("the first process was stopped");
    let relay_after = loop {
        let holder = store.leases_live(RELAY_LEASE).await.unwrap().pop().map(|(_, h)| h);
        if holder.is_some_and(|h| h != relay_holder) {
            break stopped_at.elapsed();
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(60), "no relay took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(relay_after <= Duration::from_millis(OUTBOX_TAKEOVER_MS_MAX), "relay took over after {relay_after:?}");
    let failover_after = loop {
        if assigned(&log_b).len() == 4 {
            break stopped_at.elapsed();
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(60), "the survivor never took every partition");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(failover_after <= Duration::from_millis(FAILOVER_MS_MAX), "failover took {failover_after:?}");
    eprintln!(
        "{{\"stop\": \"{stop:?}\", \"relay_takeover_ms\": {}, \"failover_ms\": {}}}",
        relay_after.as_millis(),
        failover_after.as_millis()
    );
    answers_reach(&db, cmds.len() as i64, Duration::from_secs(90)).await;
    drop(b);

    let tails = format!("\n--- a ---\n{}\n--- b ---\n{}", tail(&log_a), tail(&log_b));
    assert_eq!(answered(&db).await, cmds.len() as i64, "every command answered once, none lost{tails}");
    let (by_a, by_b) = (partitions(&log_a), partitions(&log_b));
    assert!(!by_a.is_empty(), "the first process worked before it crashed: {by_a:?}");
    assert!(held_by_a.is_subset(&by_b), "the survivor took over the crashed one's partitions {held_by_a:?}: {by_b:?}");
    assert_posted_once(store.clone(), PAYERS, cmds.len()).await;
    drop(store);
}

/// Each of `payers` funded once and each of its payments posted once; the ledger balanced,
/// replay equal to the projections, one event per command.
async fn assert_posted_once(store: std::sync::Arc<dyn facepay_ledger::LedgerStore>, payers: usize, commands: usize) {
    for p in 0..payers {
        let (balance, _) = store.wallet(&PayerId::parse(format!("u-s{p:03}")).unwrap()).await.unwrap().unwrap();
        assert_eq!(balance, 10_000 - 700 * PAYMENTS_EACH as i64, "payer {p}: funded once, each payment posted once");
    }
    let inv = store.check_invariants().await.unwrap();
    assert!(inv.balanced && inv.no_order_paid_twice && inv.no_overdraft, "{inv:?}");
    let report = facepay_ledger::Ledger::new(store, Default::default()).replay().await.unwrap();
    assert!(report.matches, "{:?}", report.differences);
    assert_eq!(report.events, commands as u64, "one event per command: nothing posted twice");
}

/// Payers of the backlog test: 9 000 commands, several seconds of a debug build's ledger.
const BACKLOG_PAYERS: usize = 1_000;

/// Processes join and leave while another works through a backlog written in large record
/// batches. At each change the worker's kept partitions are assigned again from the offsets
/// stored with its last commit, in the middle of a record batch; a broker may answer that read
/// with the next batch (tansu 0.6 does), which the stage must notice and read again, also when
/// a record fetched before the change is in its hands. Nothing is lost, nothing posted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_joining_and_leaving_a_backlog_of_large_record_batches_lose_and_double_post_nothing() {
    let Some(crate::support::Run { db, store, cfg, logs, database: _database }) = crate::support::run(4).await else {
        return;
    };
    let cmds = commands(BACKLOG_PAYERS);
    publish_in_large_batches(&cfg, &cmds).await;
    let log = |n: &str| logs.path().join(format!("{n}.log"));
    let worker = spawn(&db, &cfg, "ledger,relay", &[], &log("worker"));
    let (mut changes, total) = (0, cmds.len() as i64);
    // Another process joins at an eighth of the backlog and leaves at two eighths; again at
    // three and four eighths, five and six.
    for round in 0..3 {
        answers_reach(&db, total * (1 + 2 * round) / 8, Duration::from_secs(60)).await;
        if answered(&db).await >= total {
            break;
        }
        let name = format!("peer{round}");
        let peer = spawn(&db, &cfg, "ledger", &[], &log(&name));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while assigned(&log(&name)).is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the peer never held a partition:\n{}", tail(&log(&name)));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The worker's partitions moved while it had some of the backlog left.
        changes += i32::from(answered(&db).await < total);
        answers_reach(&db, total * (2 + 2 * round) / 8, Duration::from_secs(60)).await;
        let _ = peer.stop(Stop::Interrupt);
    }
    eprintln!("{{\"joined_mid_backlog\": {changes}}}");
    answers_reach(&db, total, Duration::from_secs(120)).await;
    let tails = format!("\n--- worker ---\n{}", tail(&log("worker")));
    drop(worker);
    assert!(changes >= 1, "no process joined while the backlog was worked through{tails}");
    assert_eq!(answered(&db).await, total, "every command answered once, none lost{tails}");
    assert_posted_once(store, BACKLOG_PAYERS, cmds.len()).await;
}

/// Waits until the ledger has answered `n` events, `within` at most.
async fn answers_reach(db: &str, n: i64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while answered(db).await < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `cmds` to the ledger-commands topic all at once through a producer that lingers, so
/// that each partition's records land in a few record batches as large as facepay's own
/// producers make.
async fn publish_in_large_batches(cfg: &kafka::KafkaConfig, cmds: &[LedgerCommand]) {
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "200")
        .set("batch.num.messages", facepay_domain::limits::KAFKA_PRODUCER_BATCH_MAX.to_string())
        .create()
        .unwrap();
    let topic = cfg.topic(LEDGER_COMMANDS);
    let mut acks = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        let (key, bytes) = (command_key(cmd), serde_json::to_vec(&StageMessage::Command(cmd.clone())).unwrap());
        let record = rdkafka::producer::FutureRecord::to(&topic).key(key.as_str()).payload(bytes.as_slice());
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for ack in acks {
        ack.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}
