//! What the tests share: the embedded app over HTTP ([`app`]), answers checked against the
//! spec ([`spec`]), and, for the tests that run `facepay serve` processes against PostgreSQL
//! and a Kafka-API broker, finding the services, a fresh database (held one test at a time),
//! spawning and stopping processes.
#![allow(dead_code)] // the log test's binary uses only part of this

pub mod app;
pub mod spec;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use facepay_ingest::kafka::KafkaConfig;
use facepay_sim::fleet::{FleetOptions, FleetTime};
use facepay_sim::kafka::{SimulateOptions, SimulateReport};
use sqlx::Connection;

pub fn reachable(addr: &str) -> bool {
    addr.parse().is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

pub fn admin_url() -> String {
    std::env::var("FACEPAY_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL database on the test server; dropped (forcibly) with this value.
///
/// The tests that take one run one at a time: they spawn processes, load the machine and
/// one of them restarts the PostgreSQL server under the others' feet; the rest of the
/// binary's tests run beside them.
pub struct Database {
    pub url: String,
    pub name: String,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

/// Held by each test with a [`Database`] for its whole run (released when the test ends,
/// panicked or not).
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERVICES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERVICES.lock().await
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (admin_url(), self.name.clone());
        // Drop from a thread of its own: this may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// The broker and a fresh PostgreSQL database, or `None` (with a message) when either is
/// missing and the environment does not require them.
pub async fn services() -> Option<(String, Database)> {
    let one_at_a_time = one_at_a_time().await;
    let brokers = std::env::var("FACEPAY_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if !reachable(brokers.split(',').next().unwrap_or_default()) {
        assert!(
            std::env::var("FACEPAY_REQUIRE_KAFKA").is_err(),
            "FACEPAY_REQUIRE_KAFKA is set but no broker at {brokers}"
        );
        eprintln!("skipped: no Kafka-API broker at {brokers} (scripts/kafka.sh start)");
        return None;
    }
    Some((brokers, fresh_database(one_at_a_time).await?))
}

/// A fresh PostgreSQL database alone (no broker), or `None` (with a message) when it is
/// missing and the environment does not require it.
pub async fn postgres() -> Option<Database> {
    fresh_database(one_at_a_time().await).await
}

async fn fresh_database(one_at_a_time: tokio::sync::MutexGuard<'static, ()>) -> Option<Database> {
    let admin = admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            assert!(std::env::var("FACEPAY_REQUIRE_POSTGRES").is_err(), "PostgreSQL required: {e}");
            eprintln!("skipped: PostgreSQL not reachable ({e})");
            return None;
        }
    };
    let name = format!("facepay_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_string();
    Some(Database { url: format!("{base}/{name}"), name, _one_at_a_time: one_at_a_time })
}

/// Topics and groups of their own for one test run.
pub fn config(brokers: &str, partitions: i32) -> KafkaConfig {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = KafkaConfig::new(brokers);
    cfg.topic_prefix = format!("facepay-s{}.", &run[..12]);
    cfg.ledger_group = format!("ledger-{run}");
    cfg.match_group = format!("match-{run}");
    cfg.partitions = partitions;
    cfg
}

/// How a process is stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stop {
    /// SIGINT: it finishes its batch, leaves the group, and the group rebalances at once.
    Interrupt,
    /// SIGTERM: as an orchestrator asks.
    Terminate,
    /// SIGKILL: a crash.
    Kill,
}

/// A running `facepay serve`; dropping it kills it (SIGKILL) and reaps it, also when the test
/// fails.
pub struct Facepay(pub Child);

impl Facepay {
    /// Stops the process as `stop` says and reaps it; its exit status for a signal it could
    /// handle.
    pub fn stop(mut self, stop: Stop) -> Option<std::process::ExitStatus> {
        let signal = match stop {
            Stop::Interrupt => "-INT",
            Stop::Terminate => "-TERM",
            Stop::Kill => "-KILL",
        };
        let _ = Command::new("kill").args([signal, &self.0.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for Facepay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `facepay serve --stages <stages>` on `db` and `cfg`'s topics, with `env` on top,
/// logging to `log` (appended, so a restarted process keeps its predecessor's lines).
pub fn spawn(db: &str, cfg: &KafkaConfig, stages: &str, env: &[(&str, &str)], log: &std::path::Path) -> Facepay {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facepay"));
    cmd.args(["serve", "--stages", stages])
        .env("FACEPAY_DATABASE_URL", db)
        .env("FACEPAY_KAFKA_BROKERS", &cfg.brokers)
        .env("FACEPAY_KAFKA_TOPIC_PREFIX", &cfg.topic_prefix)
        .env("FACEPAY_KAFKA_LEDGER_GROUP", &cfg.ledger_group)
        .env("FACEPAY_KAFKA_MATCH_GROUP", &cfg.match_group)
        .env("FACEPAY_KAFKA_PARTITIONS", cfg.partitions.to_string())
        .env("FACEPAY_HTTP_ADDR", "127.0.0.1:0")
        .env("FACEPAY_KEY_PEPPER", TEST_PEPPER)
        .env("FACEPAY_LOG", "facepay=info,facepay_ingest=info,facepay_api=info")
        .env("FACEPAY_LOG_FORMAT", "text")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.stdout(Stdio::null()).stderr(file).spawn().expect("facepay starts");
    Facepay(child)
}

/// The end of a process's log, for a failure message, after every line that says why it
/// stopped (a panic's message, an error it exited with), which a long backtrace would push
/// out of the tail, and the first warnings before the end.
pub fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let why = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("panicked") || l.starts_with("Error") || l.starts_with("error:"));
    let why: Vec<String> =
        why.flat_map(|(i, _)| lines[i..(i + 4).min(lines.len())].iter().map(|l| l.to_string())).collect();
    let start = lines.len().saturating_sub(40);
    let end = lines[start..].join("\n");
    // Warnings before the end (a stage that read a partition again, gave a capture up) say
    // what a run went through.
    let warned: Vec<&str> = lines[..start].iter().copied().filter(|l| l.contains(" WARN ")).take(20).collect();
    let warned = match warned.is_empty() {
        true => String::new(),
        false => format!("{}\n--- (warnings before the end, above) ---\n", warned.join("\n")),
    };
    match why.is_empty() {
        true => format!("{warned}{end}"),
        false => format!("{}\n--- (why it stopped, above; the end of the log:) ---\n{warned}{end}", why.join("\n")),
    }
}

/// How many inbound events the ledger has answered (and kept) so far.
pub async fn answered(db: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    // The ledger's clock answers its own ticks too: they are not inbound events.
    let [a, b] = facepay_ledger::sweep::TICK_KINDS;
    let sql = format!("SELECT count(*) FROM inbound WHERE type NOT IN ('{a}', '{b}')");
    sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap()
}

/// Every message now on `topic`, as JSON.
pub async fn read_all(cfg: &KafkaConfig, topic: &str) -> Vec<serde_json::Value> {
    use rdkafka::message::Message;
    let (cfg, topics) = (cfg.clone(), [topic.to_string()]);
    // Whole topics, from a broker that may be slow to fetch (tansu on sqlite storage).
    let within = Duration::from_secs(120);
    let messages =
        tokio::task::spawn_blocking(move || facepay_ingest::kafka::read_partitions_within(&cfg, &topics, None, within));
    let messages = messages.await.unwrap().unwrap();
    messages.iter().map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap()).collect()
}

/// The pepper every spawned `facepay serve` and every simulated fleet of these tests share.
pub const TEST_PEPPER: &str = "facepay-test-pepper-0123456789abcdef0123456789";

/// A short send timeout, and the relay's lease as it is by default (spelled out: these tests
/// time a killed relay's successor against it).
pub const FAST_LEASE: [(&str, &str); 2] =
    [("FACEPAY_KAFKA_SEND_TIMEOUT_MS", "2000"), ("FACEPAY_OUTBOX_LEASE_MS", "1800")];

/// Counts of `field` over `messages`.
pub fn count_by(messages: &[serde_json::Value], field: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for m in messages {
        *counts.entry(m[field].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    counts
}

/// Waits until every one of `events` inbound events is answered and the outbox is drained (or
/// `limit` passes).
pub async fn settle(db: &str, store: &dyn facepay_ledger::LedgerStore, events: u64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while (answered(db).await < events as i64 || !store.outbox_pending(1).await.unwrap().is_empty())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asserts what a run must leave, however it was disturbed (every process stopped first: a
/// running one goes on sweeping, and the log and the projections are read one after the
/// other): every event kept once; on the
/// topics one outcome per signed event and one dead letter per signed bad one, none twice; the ledger
/// balanced, no order paid twice, no overdraft, replay equal to the live projections.
pub async fn assert_exactly_once(
    db: &str,
    store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    cfg: &KafkaConfig,
    sent: &SimulateReport,
    logs: &str,
) {
    use facepay_ingest::kafka::{DEAD_LETTER, LEDGER_OUTCOMES};
    let kept = answered(db).await;
    if kept != sent.answerable() as i64 {
        let missing = unanswered(db, cfg).await;
        panic!("each event kept once, none lost: {kept} kept of {}\n{missing}{logs}", sent.answerable());
    }
    assert!(store.outbox_pending(1).await.unwrap().is_empty(), "the outbox drained{logs}");
    let outcomes = read_all(cfg, &cfg.topic(LEDGER_OUTCOMES)).await;
    let letters = read_all(cfg, &cfg.topic(DEAD_LETTER)).await;
    let (per_event, per_letter) = (count_by(&outcomes, "in_reply_to"), count_by(&letters, "key"));
    let repeated: Vec<_> = per_event.iter().chain(&per_letter).filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "published more than once: {repeated:?}");
    // Bad events from an authenticated device get a dead letter and a `rejected` outcome; the
    // fleet's unsigned garbage is refused before authentication and published nowhere.
    let signed_bad = sent.bad_events - sent.unsigned_events;
    assert_eq!(per_letter.len() as u64, signed_bad, "one dead letter per signed bad event");
    assert_eq!(per_event.len() as u64 + sent.unsigned_events, sent.events, "one outcome per signed event");
    let rejected = outcomes.iter().filter(|o| o["type"] == "rejected").count() as u64;
    assert_eq!(rejected, signed_bad, "a signed bad event is answered `rejected`");
    let inv = store.check_invariants().await.unwrap();
    assert!(inv.balanced && inv.no_order_paid_twice && inv.no_overdraft, "{inv:?}");
    let report = facepay_ledger::Ledger::new(store, Default::default()).replay().await.unwrap();
    assert!(report.matches, "{:?}", report.differences);
}

/// The signed device events the ledger kept neither as answered nor as rejected, each with
/// where it sits and where the pipeline's later topics mention its id (for a failure's
/// message).
async fn unanswered(db: &str, cfg: &KafkaConfig) -> String {
    use facepay_ingest::kafka::{DEVICE_EVENTS, LEDGER_COMMANDS, MATCH_PARTIALS};
    use rdkafka::message::{Headers, Message};
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    // A signed bad event is kept as a rejection (its inbound row keyed by where it sat).
    let sql = "SELECT event_id FROM inbound UNION SELECT event_id FROM rejected_events WHERE event_id IS NOT NULL";
    let kept: Vec<uuid::Uuid> = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
    let kept: std::collections::HashSet<String> = kept.iter().map(|u| u.to_string()).collect();
    let topics = [DEVICE_EVENTS, MATCH_PARTIALS, LEDGER_COMMANDS].map(|t| cfg.topic(t));
    let (cfg, read) = (cfg.clone(), topics.to_vec());
    let within = Duration::from_secs(120);
    let messages =
        tokio::task::spawn_blocking(move || facepay_ingest::kafka::read_partitions_within(&cfg, &read, None, within));
    let messages = messages.await.unwrap().unwrap();
    let text =
        |m: &rdkafka::message::OwnedMessage| String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
    let signed = |m: &rdkafka::message::OwnedMessage| {
        m.headers().is_some_and(|h| h.iter().any(|h| h.key == facepay_domain::auth::SIGNATURE_HEADER))
    };
    let mut lines = Vec::new();
    for m in messages.iter().filter(|m| m.topic() == topics[0] && signed(m)) {
        let event: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
        let Some(id) = event["event_id"].as_str().filter(|id| !kept.contains(*id)) else { continue };
        let on = |t: &str| -> Vec<(i32, i64)> {
            messages
                .iter()
                .filter(|o| o.topic() == t && text(o).contains(id))
                .map(|o| (o.partition(), o.offset()))
                .collect()
        };
        let (partials, commands) = (on(&topics[1]), on(&topics[2]));
        lines.push(format!(
            "  {id} {} at {}/{}; on match-partials {partials:?}; on ledger-commands {commands:?}",
            event["type"],
            m.partition(),
            m.offset()
        ));
    }
    format!("unanswered signed device events ({}):\n{}", lines.len(), lines.join("\n"))
}

/// The demo's fleet, small, offered at `rate_per_s` (0: as fast as the broker takes it) to
/// `cfg`'s device-events topic in the background.
pub fn load(
    cfg: &KafkaConfig,
    store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    payments: usize,
    rate_per_s: u64,
) -> tokio::task::JoinHandle<anyhow::Result<SimulateReport>> {
    let fleet = FleetOptions { seed: 7, merchants: 2, devices: 6, payers: 150, payments };
    let pepper = facepay_domain::auth::Pepper::new(TEST_PEPPER.as_bytes().to_vec());
    let rate_per_s = Some(rate_per_s).filter(|r| *r > 0);
    let opts = SimulateOptions { fleet, pepper, rate_per_s, time: FleetTime::Live };
    let cfg = cfg.clone();
    tokio::spawn(async move { facepay_sim::kafka::publish(&opts, &cfg, store.as_ref()).await })
}

/// A broker of a test's own that it may stop and start again, keeping its data across the
/// restart: tansu on sqlite storage, run by `scripts/kafka.sh` on `port` with its data and
/// log in a folder of the test's. Stopped when dropped.
pub struct Broker {
    pub dir: tempfile::TempDir,
    port: u16,
}

impl Broker {
    /// A broker on `port` if tansu is installed; `None` (with a message) where it is not and
    /// the environment does not require it.
    pub fn installed(port: u16) -> Option<Self> {
        let home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap()));
        if !std::path::Path::new(&home).join("bin/tansu").exists() {
            assert!(std::env::var("FACEPAY_REQUIRE_KAFKA").is_err(), "CI installs tansu (scripts/kafka.sh install)");
            eprintln!("skipped: this test restarts a broker of its own and needs tansu (scripts/kafka.sh install)");
            return None;
        }
        Some(Self { dir: tempfile::tempdir().unwrap(), port })
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `scripts/kafka.sh <verb>` for this broker; whether it succeeded.
    pub fn run(&self, verb: &str) -> bool {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh");
        Command::new("bash")
            .arg(script)
            .arg(verb)
            .arg("sqlite://tansu.db") // in the run dir
            .env("FACEPAY_KAFKA_PORT", self.port.to_string())
            .env("FACEPAY_KAFKA_RUN_DIR", self.dir.path())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.run("stop");
    }
}

/// What a test against PostgreSQL and the broker starts from: a fresh database and its
/// store, topics of its own (created), and a folder for the processes' logs.
pub struct Run {
    pub db: String,
    pub store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    pub cfg: KafkaConfig,
    pub logs: tempfile::TempDir,
    /// Last: dropping it drops the database, after the store's pool is gone.
    pub database: Database,
}

/// A [`Run`] with `partitions` per topic, or `None` (with a message) where the services are
/// missing and not required.
pub async fn run(partitions: i32) -> Option<Run> {
    let (brokers, database) = services().await?;
    let store = facepay_ledger::postgres::PgStore::open(&database.url).await.unwrap();
    let cfg = config(&brokers, partitions);
    facepay_ingest::kafka::ensure_topics(&cfg).await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    Some(Run { db: database.url.clone(), store: std::sync::Arc::new(store), cfg, logs, database })
}
