//! `facepay-bench pipeline`: device events through Kafka to committed ledger outcomes.
//!
//! Three phases, each on fresh topics (and, for facepay, a fresh PostgreSQL database), with
//! the production stages running in this process:
//! 1. the broker alone: the same number of messages of the same sizes produced to a topic and
//!    consumed back, as fast as it goes (its produce → consume throughput);
//! 2. facepay saturated: the demo fleet's events published as fast as the broker takes them;
//!    events per second from the first publish to the last outcome read back;
//! 3. facepay at a fixed offered load (half the saturating rate): each outcome's latency from
//!    the publish of its event to its arrival on the outcomes topic (p50, p99);
//! 4. the broker chain: the same events carried by the broker alone through the pipeline's
//!    three topics, forwarded batch by batch with no decoding and no database, flat out and
//!    at phase 3's load: what the topics alone cost, apart from facepay's own work;
//! 5. the ledger alone: the ledger commands phase 2's matcher made of the events, committed
//!    as the ledger stage commits them (the same rows, outbox and offsets, full batches) with
//!    no broker, on a fresh database: the most the pipeline's own ledger moves.
//!
//! Phases 2 and 4 (flat out) also say where the cores went: the CPU time per event of this
//! process, of PostgreSQL and of the broker ([`crate::cpu`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facepay_domain::limits::{MATCH_BATCH_MAX, SIMULATE_ACKS_MAX};
use facepay_ingest::kafka::{self, KafkaConfig, DEAD_LETTER, DEVICE_EVENTS, LEDGER_COMMANDS, LEDGER_OUTCOMES};
use facepay_ingest::metrics::StepTotals;
use facepay_ingest::Inbound;
use facepay_ledger::{PgStore, Stores};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use sqlx::Connection;
use tokio::sync::mpsc;

use crate::cpu::{CpuPerEvent, CpuTotals};

use facepay::production::{self, Roles};
use facepay_domain::auth::SIGNATURE_HEADER;
use facepay_ingest::authenticity::DeviceVerifier;
use facepay_sim::fleet::{fleet_devices, send_fleet, FleetOptions, FleetTime};
use facepay_sim::keys::FleetSigner;

#[derive(Debug, Clone)]
pub struct PipelineBenchOptions {
    pub brokers: String,
    /// The PostgreSQL server (a role that may CREATE DATABASE).
    pub postgres: String,
    pub fleet: FleetOptions,
    /// The pepper the fleet's device keys are made under.
    pub pepper: facepay_domain::auth::Pepper,
    pub partitions: i32,
    /// The latency phase's offered load (events/s); `None`: half the saturating rate. Fixed,
    /// two builds compared in turn face the same load whatever their saturation runs gave.
    pub offered: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineBenchReport {
    pub events: usize,
    pub partitions: i32,
    /// Device events in, committed outcomes out, per second, saturated.
    pub events_per_s: f64,
    /// The broker's own produce → consume throughput for as many messages of the same sizes.
    pub broker_events_per_s: f64,
    /// `events_per_s / broker_events_per_s`.
    pub ratio_of_broker: f64,
    /// The offered load of the latency phase (half the saturating rate, or `--offered`).
    pub offered_events_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Where the latency phase's time goes, from the records' producer timestamps (ms,
    /// p50 and p99): device event → its ledger command (the matcher stage), ledger command →
    /// its published outcome (the ledger's batch and commit, the outbox, the relay).
    pub hops_ms: Hops,
    /// Inside the hops, the latency phase's mean time per batch of each step (per tick for
    /// `ownership_tick`; [`facepay_ingest::metrics::Step`], by name, ms) and the ledger's
    /// mean batch size.
    pub steps_ms: std::collections::BTreeMap<&'static str, f64>,
    pub ledger_batch_mean: f64,
    /// The broker alone carrying each event through the pipeline's three topics (device
    /// events → ledger commands → outcomes), forwarded batch by batch as the stages do but
    /// with no decoding and no database: the most a pipeline of three topics moves on this
    /// broker and machine.
    pub broker_chain_events_per_s: f64,
    /// `events_per_s / broker_chain_events_per_s`.
    pub ratio_of_broker_chain: f64,
    /// The chain's latency (publish → arrival on the third topic) at `offered_events_per_s`:
    /// the part of `p50_ms` / `p99_ms` that the topics alone take.
    pub broker_chain_p50_ms: f64,
    pub broker_chain_p99_ms: f64,
    /// facepay's own latency over the topics': `p50_ms - broker_chain_p50_ms` and
    /// `p99_ms - broker_chain_p99_ms`, at the same offered load.
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    /// The ledger alone committing the ledger commands of the saturated run's events, in full
    /// batches with no broker: events per second (the all-rows ceiling of the ledger).
    pub ledger_alone_events_per_s: f64,
    /// `events_per_s / ledger_alone_events_per_s`.
    pub ratio_of_ledger_alone: f64,
    /// `ledger_alone_events_per_s / broker_chain_events_per_s`: above 0.6, the ledger's rows
    /// leave room for `ratio_of_broker_chain` ≥ 0.6.
    pub ledger_alone_of_broker_chain: f64,
    /// The PostgreSQL WAL the ledger alone wrote, per event (bytes): what each event's rows
    /// cost the disk.
    pub ledger_alone_wal_bytes_per_event: f64,
    /// The WAL the saturated run wrote per event: the ledger's rows, the relay's deletes of
    /// what it published, the ownership's leases.
    pub wal_bytes_per_event: f64,
    /// The saturated run's CPU time per event (ms): facepay (this process), PostgreSQL, the
    /// broker; and the cores they kept busy ([`crate::cpu`]).
    pub cpu_ms_per_event: CpuPerEvent,
    /// The same for the broker chain flat out (this process: its forwarders).
    pub broker_chain_cpu_ms_per_event: CpuPerEvent,
    pub store: &'static str,
}

/// Percentiles of each hop of an event through the pipeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hops {
    pub match_p50: f64,
    pub match_p99: f64,
    pub ledger_to_outcome_p50: f64,
    pub ledger_to_outcome_p99: f64,
}

/// Runs the three phases.
pub async fn run(opts: &PipelineBenchOptions) -> anyhow::Result<PipelineBenchReport> {
    let (events, signer) = fleet_events(&opts.fleet, &opts.pepper).await?;
    let broker_events_per_s = broker_baseline(opts, &events).await?;
    let saturated_run = facepay_run(opts, &events, &signer, None).await?;
    let saturated = saturated_run.events_per_s;
    let (alone_s, alone_wal_bytes) = ledger_alone(opts, &signer, &saturated_run.topics).await?;
    let ledger_alone = events.len() as f64 / alone_s;
    let offered = opts.offered.unwrap_or(saturated / 2.0);
    let before = facepay_ingest::metrics::METRICS.steps();
    let Run { latencies_ms: mut latencies, hops: hops_ms, .. } =
        facepay_run(opts, &events, &signer, Some(offered)).await?;
    let (steps_ms, ledger_batch_mean) = step_means(before, facepay_ingest::metrics::METRICS.steps());
    let (chain_events_per_s, _, chain_cpu) = broker_chain(opts, &events, None).await?;
    let (_, mut chained, _) = broker_chain(opts, &events, Some(offered)).await?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    chained.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| quantile(&latencies, q);
    Ok(PipelineBenchReport {
        events: events.len(),
        partitions: opts.partitions,
        events_per_s: saturated,
        broker_events_per_s,
        ratio_of_broker: saturated / broker_events_per_s,
        offered_events_per_s: offered,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        hops_ms,
        steps_ms,
        ledger_batch_mean,
        broker_chain_events_per_s: chain_events_per_s,
        ratio_of_broker_chain: saturated / chain_events_per_s,
        broker_chain_p50_ms: quantile(&chained, 0.50),
        broker_chain_p99_ms: quantile(&chained, 0.99),
        added_p50_ms: at(0.50) - quantile(&chained, 0.50),
        added_p99_ms: at(0.99) - quantile(&chained, 0.99),
        ledger_alone_events_per_s: ledger_alone,
        ratio_of_ledger_alone: saturated / ledger_alone,
        ledger_alone_of_broker_chain: ledger_alone / chain_events_per_s,
        ledger_alone_wal_bytes_per_event: alone_wal_bytes as f64 / events.len() as f64,
        wal_bytes_per_event: saturated_run.wal_bytes_per_event,
        cpu_ms_per_event: saturated_run.cpu,
        broker_chain_cpu_ms_per_event: chain_cpu,
        store: "PostgreSQL",
    })
}

/// The mean time per batch of each step (ms) and the mean ledger batch size between two
/// snapshots of the process's metrics.
fn step_means(before: StepTotals, after: StepTotals) -> (std::collections::BTreeMap<&'static str, f64>, f64) {
    let mean = |n: u64, sum: u64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
    let means = before
        .steps
        .iter()
        .zip(&after.steps)
        .map(|(b, a)| (a.step.name(), mean(a.count - b.count, a.sum_us - b.sum_us) / 1_000.0))
        .collect();
    (means, mean(after.batches - before.batches, after.batch_items - before.batch_items))
}

/// The `q` quantile of sorted `values` (0 for none).
pub(crate) fn quantile(values: &[f64], q: f64) -> f64 {
    values.get(((values.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0)
}

/// The demo fleet's events, signed, as (key, bytes, signature), in order; and the fleet's
/// keys, to install in each run's database.
async fn fleet_events(
    fleet: &FleetOptions,
    pepper: &facepay_domain::auth::Pepper,
) -> anyhow::Result<(Vec<Signed>, FleetSigner)> {
    let (tx, mut rx) = mpsc::channel(facepay_domain::limits::STAGE_CHANNEL_CAPACITY);
    let (fleet, signer) = (*fleet, FleetSigner::new(pepper, &fleet_devices(fleet))?);
    let signer2 = signer.clone();
    let sender = tokio::spawn(async move { send_fleet(&fleet, signer2, tx, FleetTime::Live).await });
    let mut out = Vec::new();
    while let Some(item) = rx.recv().await {
        let (bytes, signature) = match item {
            Inbound::Raw { bytes, signature, .. } => (bytes, signature),
            Inbound::Checked { envelope, .. } => (envelope.to_json(), None),
        };
        out.push((facepay_ingest::kafka::device_event_key_of(&bytes), bytes, signature));
    }
    sender.await??;
    Ok((out, signer))
}

/// An event as published: its key, its bytes, its signature.
type Signed = (String, Vec<u8>, Option<String>);

fn fresh_config(opts: &PipelineBenchOptions) -> KafkaConfig {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = KafkaConfig::from_env(opts.brokers.as_str());
    cfg.topic_prefix = format!("facepay-bench-{}.", &run[..12]);
    cfg.match_group = format!("bench-match-{run}");
    cfg.ledger_group = format!("bench-ledger-{run}");
    cfg.partitions = opts.partitions;
    cfg
}

/// Publishes `events` to `topic`, paced to `rate` if given; the instant each was sent.
async fn publish(
    producer: &FutureProducer,
    topic: &str,
    events: &[Signed],
    rate: Option<f64>,
) -> anyhow::Result<Vec<Instant>> {
    let started = Instant::now();
    let mut sent_at = Vec::with_capacity(events.len());
    let mut acks = Vec::with_capacity(SIMULATE_ACKS_MAX);
    for (i, (key, bytes, signature)) in events.iter().enumerate() {
        if let Some(rate) = rate {
            tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        }
        sent_at.push(Instant::now());
        let mut record = FutureRecord::to(topic).key(key.as_str()).payload(bytes.as_slice());
        if let Some(sig) = signature {
            let header = rdkafka::message::Header { key: SIGNATURE_HEADER, value: Some(sig.as_str()) };
            record = record.headers(rdkafka::message::OwnedHeaders::new_with_capacity(1).insert(header));
        }
        acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
        if acks.len() >= SIMULATE_ACKS_MAX {
            for ack in std::mem::take(&mut acks) {
                ack.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for ack in acks {
        ack.await?.map_err(|(e, _)| e)?;
    }
    Ok(sent_at)
}

/// The broker alone: produce the same messages to a fresh topic and read them back.
async fn broker_baseline(opts: &PipelineBenchOptions, events: &[Signed]) -> anyhow::Result<f64> {
    let cfg = fresh_config(opts);
    kafka::ensure_topics(&cfg).await?;
    let topic = cfg.topic(DEVICE_EVENTS);
    // Until 2026-11-28 the clock ran from before the consumer group's join (seconds),
    // lowering this figure.
    let (consumer, producer) = warmed_up(&cfg, &topic, &topic).await?;
    let began = Instant::now();
    let (published, read) = tokio::join!(publish(&producer, &topic, events, None), async {
        let mut n = 0;
        while n < events.len() {
            consumer.recv().await?;
            n += 1;
        }
        anyhow::Ok(n)
    });
    published?;
    read?;
    Ok(events.len() as f64 / began.elapsed().as_secs_f64())
}

/// What one facepay run measured.
struct Run {
    events_per_s: f64,
    /// Each outcome's latency from its event's publish.
    latencies_ms: Vec<f64>,
    /// At a rate only.
    hops: Hops,
    /// The run's topics, to read its ledger commands back.
    topics: KafkaConfig,
    cpu: CpuPerEvent,
    /// The PostgreSQL WAL written per event while it ran (the relay's deletes included).
    wal_bytes_per_event: f64,
}

/// facepay on fresh topics and a fresh database: publishes `events` (at `rate`, or flat out)
/// and reads every answer back.
async fn facepay_run(
    opts: &PipelineBenchOptions,
    events: &[Signed],
    signer: &FleetSigner,
    rate: Option<f64>,
) -> anyhow::Result<Run> {
    let cfg = fresh_config(opts);
    let (url, db) = fresh_database(&opts.postgres, "facepay_bench_pipe").await?;
    let result = async {
        let stores = Stores::of(PgStore::open(&url).await?);
        register_fleet(opts, signer, stores.ledger.as_ref()).await?;
        let verifier = Arc::new(DeviceVerifier::new(opts.pepper.clone()));
        let pipeline = facepay_ingest::PipelineConfig { verifier, ..Default::default() };
        let prod = production::start_with(stores, cfg.clone(), Roles::ALL, pipeline).await?;
        let reader: StreamConsumer = cfg.consumer(&format!("{}-reader", cfg.ledger_group))?;
        reader.subscribe(&[&cfg.topic(LEDGER_OUTCOMES), &cfg.topic(DEAD_LETTER)])?;
        let producer = cfg.producer()?;
        let topic = cfg.topic(DEVICE_EVENTS);
        warm_up(opts, signer, &producer, &topic, &reader).await?;
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        let lsn = wal_lsn(&mut conn).await?;
        let (began, cpu_before) = (Instant::now(), CpuTotals::now());
        // The events the fleet could not sign are refused before authentication and answered
        // nowhere (docs/SECURITY.md): every other one gets an outcome or a dead letter.
        let answerable = events.iter().filter(|(_, _, signature)| signature.is_some()).count();
        let (sent_at, answers) =
            tokio::join!(publish(&producer, &topic, events, rate), read_ids(&reader, answerable, Read::Answers));
        let (sent_at, answers) = (sent_at?, answers?);
        let elapsed = began.elapsed().as_secs_f64();
        let cpu = cpu_before.per_event(&CpuTotals::now(), events.len(), elapsed * 1e3);
        let wal_bytes_per_event = wal_since(&mut conn, &lsn).await? as f64 / events.len() as f64;
        let _ = prod.shutdown.send(true);
        let latencies = latencies_ms(events, &sent_at, &answers);
        let hops = match rate {
            Some(_) => hops(&cfg).await?,
            None => Hops::default(),
        };
        let events_per_s = events.len() as f64 / elapsed;
        anyhow::Ok(Run { events_per_s, latencies_ms: latencies, hops, topics: cfg.clone(), cpu, wal_bytes_per_event })
    }
    .await;
    drop_database(&opts.postgres, &db).await?;
    result
}

/// The fleet's merchants, devices and keys, in `store`.
async fn register_fleet(
    opts: &PipelineBenchOptions,
    signer: &FleetSigner,
    store: &dyn facepay_ledger::LedgerStore,
) -> anyhow::Result<()> {
    for d in fleet_devices(&opts.fleet) {
        store.register_merchant(&d.merchant_id, d.merchant_id.as_str()).await?;
        store.register_device(&d).await?;
    }
    signer.install(store).await
}

/// Phase 5 on a fresh database with the fleet registered: seconds the ledger alone takes to
/// commit `run`'s ledger commands ([`crate::pipeline_ledger`]), and the WAL bytes the server
/// wrote meanwhile (the machine otherwise quiet).
async fn ledger_alone(
    opts: &PipelineBenchOptions,
    signer: &FleetSigner,
    run: &KafkaConfig,
) -> anyhow::Result<(f64, i64)> {
    let (url, db) = fresh_database(&opts.postgres, "facepay_bench_ledger").await?;
    let result = async {
        let stores = Stores::of(PgStore::open(&url).await?);
        register_fleet(opts, signer, stores.ledger.as_ref()).await?;
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        let lsn = wal_lsn(&mut conn).await?;
        let seconds = crate::pipeline_ledger::commit_alone_s(stores.ledger.clone(), run).await?;
        let wal_bytes = wal_since(&mut conn, &lsn).await?;
        anyhow::Ok((seconds, wal_bytes))
    }
    .await;
    drop_database(&opts.postgres, &db).await?;
    result
}

/// The server's WAL position (the whole server's: the benchmark is its only writer).
async fn wal_lsn(conn: &mut sqlx::PgConnection) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text").fetch_one(conn).await?)
}

/// The WAL bytes the server wrote since `lsn`.
async fn wal_since(conn: &mut sqlx::PgConnection, lsn: &str) -> anyhow::Result<i64> {
    let sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint";
    Ok(sqlx::query_scalar(sql).bind(lsn).fetch_one(conn).await?)
}

/// Each event's hops, from the producer timestamps of its device event, its ledger command
/// and its outcome on the topics (ms).
async fn hops(cfg: &KafkaConfig) -> anyhow::Result<Hops> {
    let topics = [DEVICE_EVENTS, LEDGER_COMMANDS, LEDGER_OUTCOMES].map(|t| cfg.topic(t));
    let (cfg, names) = (cfg.clone(), topics.to_vec());
    let messages = tokio::task::spawn_blocking(move || kafka::read_partitions(&cfg, &names, None)).await??;
    let mut at: [HashMap<String, i64>; 3] = Default::default();
    for m in &messages {
        let (Some(i), Some(ms)) = (topics.iter().position(|t| t == m.topic()), m.timestamp().to_millis()) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
        let id = [&v["event_id"], &v["payload"]["event_id"], &v["payload"]["in_reply_to"], &v["in_reply_to"]]
            .into_iter()
            .find_map(|f| f.as_str());
        if let Some(id) = id {
            at[i].entry(id.to_string()).or_insert(ms);
        }
    }
    let (mut matched, mut ledger): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for (id, &sent) in &at[0] {
        if let (Some(&command), Some(&outcome)) = (at[1].get(id), at[2].get(id)) {
            matched.push((command - sent) as f64);
            ledger.push((outcome - command) as f64);
        }
    }
    matched.sort_by(|a, b| a.total_cmp(b));
    ledger.sort_by(|a, b| a.total_cmp(b));
    Ok(Hops {
        match_p50: quantile(&matched, 0.5),
        match_p99: quantile(&matched, 0.99),
        ledger_to_outcome_p50: quantile(&ledger, 0.5),
        ledger_to_outcome_p99: quantile(&ledger, 0.99),
    })
}

/// Sends one payment query through the pipeline and waits for its answer, so that the
/// measured run starts once every stage has joined its consumer group and holds its
/// partitions: a group's join (seconds) is start-up, not the latency of an event.
async fn warm_up(
    opts: &PipelineBenchOptions,
    signer: &FleetSigner,
    producer: &FutureProducer,
    topic: &str,
    reader: &StreamConsumer,
) -> anyhow::Result<()> {
    let device = fleet_devices(&opts.fleet).into_iter().next().ok_or_else(|| anyhow::anyhow!("no device"))?;
    let id = uuid::Uuid::new_v4().to_string();
    let bytes = serde_json::to_vec(&serde_json::json!({
        "event_id": id, "schema_version": 1, "type": "payment_query",
        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "merchant_id": device.merchant_id.as_str(), "store_id": device.store_id.as_str(),
        "device_id": device.device_id.as_str(), "payload": {"out_trade_no": "BENCH-WARM-UP"},
    }))?;
    let (key, signature) = (facepay_ingest::kafka::device_event_key_of(&bytes), signer.sign(&bytes));
    let signed = [(key, bytes, signature)];
    publish(producer, topic, &signed, None).await?;
    while read_ids(reader, 1, Read::Answers).await?.first().is_some_and(|(answered, _)| *answered != id) {}
    Ok(())
}

/// What [`read_ids`] reads.
#[derive(Clone, Copy)]
enum Read {
    /// facepay's outcomes and dead letters: JSON, each naming its event in `in_reply_to`.
    Answers,
    /// Device events as published (the broker chain's): named by `event_id`; the fleet's
    /// poison messages are not JSON and name nothing (counted, with no latency).
    Events,
}

/// Reads `n` records; each one's event id and arrival.
async fn read_ids(reader: &StreamConsumer, n: usize, what: Read) -> anyhow::Result<Vec<(String, Instant)>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let msg = tokio::time::timeout(Duration::from_secs(120), reader.recv()).await??;
        let at = Instant::now();
        let bytes = msg.payload().unwrap_or_default();
        let id = match what {
            Read::Events => event_id(bytes).unwrap_or_default(),
            Read::Answers => {
                let answer: Answer = serde_json::from_slice(bytes).map_err(|e| {
                    let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
                    anyhow::anyhow!("{topic}/{partition}@{offset}: not an answer: {e}")
                })?;
                answer.in_reply_to.unwrap_or_default()
            }
        };
        out.push((id, at));
    }
    Ok(out)
}

/// Each arrival's latency (ms) from the publish of the event it names.
fn latencies_ms(events: &[Signed], sent_at: &[Instant], arrived: &[(String, Instant)]) -> Vec<f64> {
    let ids: HashMap<String, usize> =
        events.iter().enumerate().filter_map(|(i, (_, b, _))| Some((event_id(b)?, i))).collect();
    arrived
        .iter()
        .filter_map(|(id, at)| Some(at.duration_since(*sent_at.get(*ids.get(id)?)?).as_secs_f64() * 1e3))
        .collect()
}

/// The broker chain: `events` published to the device-events topic and carried by two
/// [`forward`]ers through the ledger-commands topic to the outcomes topic, read back there.
/// Events per second (from the first publish to the last arrival), each one's latency and the
/// CPU time per event.
async fn broker_chain(
    opts: &PipelineBenchOptions,
    events: &[Signed],
    rate: Option<f64>,
) -> anyhow::Result<(f64, Vec<f64>, CpuPerEvent)> {
    let cfg = fresh_config(opts);
    kafka::ensure_topics(&cfg).await?;
    let [first, middle, last] = [DEVICE_EVENTS, LEDGER_COMMANDS, LEDGER_OUTCOMES].map(|t| cfg.topic(t));
    let hops = [
        tokio::spawn(forward(cfg.clone(), format!("{}-hop-1", cfg.match_group), first.clone(), middle.clone())),
        tokio::spawn(forward(cfg.clone(), format!("{}-hop-2", cfg.match_group), middle, last.clone())),
    ];
    let result = async {
        let (reader, producer) = warmed_up(&cfg, &first, &last).await?;
        let (began, cpu_before) = (Instant::now(), CpuTotals::now());
        let (sent_at, arrived) =
            tokio::join!(publish(&producer, &first, events, rate), read_ids(&reader, events.len(), Read::Events));
        let (sent_at, arrived) = (sent_at?, arrived?);
        let elapsed = began.elapsed().as_secs_f64();
        let cpu = cpu_before.per_event(&CpuTotals::now(), events.len(), elapsed * 1e3);
        anyhow::Ok((events.len() as f64 / elapsed, latencies_ms(events, &sent_at, &arrived), cpu))
    }
    .await;
    hops.iter().for_each(tokio::task::JoinHandle::abort);
    result
}

/// A producer, and a reader of `last` that has read back one record sent to `first`: a
/// broker phase's clock starts once every consumer group on the way has joined (seconds of
/// start-up, not throughput).
async fn warmed_up(cfg: &KafkaConfig, first: &str, last: &str) -> anyhow::Result<(StreamConsumer, FutureProducer)> {
    let reader: StreamConsumer = cfg.consumer(&format!("{}-reader", cfg.ledger_group))?;
    reader.subscribe(&[last])?;
    let producer = cfg.producer()?;
    let record = [("warm-up".to_string(), br#"{"event_id":"warm-up"}"#.to_vec(), None)];
    publish(&producer, first, &record, None).await?;
    read_ids(&reader, 1, Read::Events).await?;
    Ok((reader, producer))
}

/// One hop of the broker chain: every record of `from` produced again to `to` under its key,
/// batch by batch as a stage does (the stages' own [`kafka::fill_batch`], up to
/// [`MATCH_BATCH_MAX`]; all sent, then all acknowledged), with no decoding and no database.
/// Runs until aborted.
async fn forward(cfg: KafkaConfig, group: String, from: String, to: String) -> anyhow::Result<()> {
    let consumer: StreamConsumer = cfg.consumer(&group)?;
    consumer.subscribe(&[&from])?;
    let producer = cfg.producer()?;
    let mut errors = kafka::RecvErrors::default();
    loop {
        let Some(first) = errors.check(consumer.recv().await).await? else { continue };
        let mut batch = vec![first.detach()];
        kafka::fill_batch(&consumer, &mut errors, &mut batch, cfg.batch_linger, MATCH_BATCH_MAX).await?;
        let mut acks = Vec::with_capacity(batch.len());
        for m in &batch {
            let record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&to).key(m.key().unwrap_or_default()).payload(m.payload().unwrap_or_default());
            acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for ack in acks {
            ack.await?.map_err(|(e, _)| e)?;
        }
    }
}

/// The event an answer names. Read as a struct of one field, not a `serde_json::Value`: the
/// readers run inside the measured time, and the chain's reader built each capture's 512
/// numbers as values (until 2026-12-08: 46 µs of CPU per event for the chain's process in
/// one run, 33–41 since).
#[derive(serde::Deserialize)]
struct Answer {
    in_reply_to: Option<String>,
}

/// A device event's id, read alone as the signature check reads it.
fn event_id(bytes: &[u8]) -> Option<String> {
    facepay_ingest::authenticity::event_id_of(bytes).map(|id| id.to_string())
}

/// A database of its own on the server of `admin` (a role that may CREATE DATABASE), named
/// `<prefix>_<uuid>`: its URL and name.
pub(crate) async fn fresh_database(admin: &str, prefix: &str) -> anyhow::Result<(String, String)> {
    let db = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await?;
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    Ok((format!("{base}/{db}"), db))
}

pub(crate) async fn drop_database(admin: &str, db: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await?;
    Ok(())
}
