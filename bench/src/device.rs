//! `facepay-bench device`: simulated HTTP devices paying at a fixed rate, each payment
//! answered synchronously (`Prefer: wait=5`), as a till hears it.
//!
//! The whole service runs in this process over the chosen profile (embedded: SQLite and the
//! in-process pipeline; production: PostgreSQL, Kafka topics of its own and every stage),
//! its API on a loopback port. `payers` payers are enrolled and funded over the API (admin
//! events, each waited for). Then `devices` devices, each on an HTTP/1.1 connection of its
//! own (every one opened before the clock starts, as a till keeps its connection between
//! payers), share `rate` payments per second for `seconds`: each payment is a signed capture and
//! a signed payment request for that face, both with `Prefer: wait=5`, one after the other;
//! a device starts its next payment at its scheduled time, or at once when it runs late.
//! Latency runs from the scheduled start (a late start counts: no coordinated omission) to
//! the payment's answer. A `202` (not decided within the wait) is a timeout.
//!
//! The devices run in a process of their own by default (`facepay-bench device-load`, told
//! the plan on its stdin, answering its tally on its stdout): then the service's runtime does
//! not also schedule the load generator's thousand tasks, and a device that starts late is
//! late because the machine is busy, not because the service's own tasks ran first.
//! `--load in-process` runs them beside the service, as before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facepay_api::auth::{Actor, Auth, NewKey};
use facepay_domain::auth::{Role, SIGNATURE_HEADER};
use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use facepay_ingest::PipelineConfig;
use facepay_ledger::Stores;
use facepay_matcher::synthetic::SyntheticFaces;
use facepay_sim::keys::FleetSigner;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::pipeline::{drop_database, fresh_database};

/// The profile the service runs on.
#[derive(Debug, Clone)]
pub enum Profile {
    Embedded,
    /// PostgreSQL (a role that may CREATE DATABASE) and a Kafka-API broker.
    Production {
        postgres: String,
        brokers: String,
        partitions: i32,
    },
}

/// Where the simulated devices run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// A process of their own (`facepay-bench device-load`).
    Process,
    /// The benchmark's own runtime, beside the service.
    InProcess,
}

#[derive(Debug, Clone)]
pub struct DeviceBenchOptions {
    pub profile: Profile,
    pub load: Load,
    pub devices: usize,
    /// Payments per second offered, all devices together.
    pub rate: f64,
    pub seconds: u64,
    pub payers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceBenchReport {
    pub profile: &'static str,
    /// Where the devices ran: `process` (their own) or `in-process`.
    pub load: &'static str,
    pub devices: usize,
    pub offered_payments_per_s: f64,
    /// Payments answered 200 per second, over the run.
    pub payments_per_s: f64,
    pub payments: usize,
    /// From each payment's scheduled start to its answer (capture and payment), ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The capture request alone, ms.
    pub capture_request_p50_ms: f64,
    pub capture_request_p99_ms: f64,
    /// The payment request alone (the capture answered), ms.
    pub payment_request_p50_ms: f64,
    pub payment_request_p99_ms: f64,
    /// Payments not decided within the wait (answered 202).
    pub timeouts: usize,
    /// Answers other than 200 and 202 (must be none), and their statuses.
    pub errors: usize,
    pub error_statuses: BTreeMap<u16, usize>,
    /// The body of the first such answer.
    pub error_sample: Option<String>,
    /// The payments' statuses as answered.
    pub statuses: BTreeMap<String, usize>,
}

/// What one device measured (and, summed, all of them).
#[derive(Default, Serialize, Deserialize)]
struct Tally {
    total_ms: Vec<f64>,
    capture_ms: Vec<f64>,
    request_ms: Vec<f64>,
    timeouts: usize,
    errors: usize,
    error_statuses: BTreeMap<u16, usize>,
    error_sample: Option<String>,
    statuses: BTreeMap<String, usize>,
}

impl Tally {
    /// Adds another device's tally to this one.
    fn add(&mut self, t: Tally) {
        self.total_ms.extend(t.total_ms);
        self.request_ms.extend(t.request_ms);
        self.capture_ms.extend(t.capture_ms);
        (self.timeouts, self.errors) = (self.timeouts + t.timeouts, self.errors + t.errors);
        for (k, n) in t.statuses {
            *self.statuses.entry(k).or_default() += n;
        }
        self.error_sample = self.error_sample.take().or(t.error_sample);
        for (k, n) in t.error_statuses {
            *self.error_statuses.entry(k).or_default() += n;
        }
    }

    /// Counts an answer that is neither 200 nor 202 (the first one's body kept).
    fn error(&mut self, status: u16, body: &Value) {
        self.error_sample.get_or_insert_with(|| body.to_string());
        self.errors += 1;
        *self.error_statuses.entry(status).or_default() += 1;
    }
}

pub async fn run(opts: &DeviceBenchOptions) -> anyhow::Result<DeviceBenchReport> {
    let pepper = facepay_sim::keys::random_pepper();
    let verifier = Arc::new(facepay_ingest::authenticity::DeviceVerifier::new(pepper.clone()));
    let config = PipelineConfig { verifier, ..PipelineConfig::default() };
    match &opts.profile {
        Profile::Embedded => {
            let dir = tempfile::tempdir()?;
            let stores = Stores::open(&format!("sqlite://{}", dir.path().join("bench.db").display())).await?;
            let fleet = Fleet::register(&stores, &pepper, opts.devices).await?;
            let mut app = facepay::app::App::start(stores.clone(), config).await?;
            let mut outcomes = std::mem::replace(&mut app.pipeline.outcomes, tokio::sync::mpsc::channel(1).1);
            let drain = tokio::spawn(async move { while outcomes.recv().await.is_some() {} });
            let report = measure(opts, fleet, app.http_state(), "embedded").await;
            drain.abort();
            report
        }
        Profile::Production { postgres, brokers, partitions } => {
            let (url, db) = fresh_database(postgres, "facepay_bench_device").await?;
            let report = async {
                let stores = Stores::open(&url).await?;
                let run = uuid::Uuid::new_v4().simple().to_string();
                let mut cfg = facepay_ingest::kafka::KafkaConfig::from_env(brokers.as_str());
                cfg.topic_prefix = format!("facepay-bench-{}.", &run[..12]);
                (cfg.match_group, cfg.ledger_group) = (format!("bench-match-{run}"), format!("bench-ledger-{run}"));
                cfg.partitions = *partitions;
                let fleet = Fleet::register(&stores, &pepper, opts.devices).await?;
                let roles = facepay::production::Roles::ALL;
                let prod = facepay::production::start_with(stores.clone(), cfg, roles, config).await?;
                let report = measure(opts, fleet, prod.http.clone(), "production").await;
                let _ = prod.shutdown.send(true);
                report
            }
            .await;
            drop_database(postgres, &db).await?;
            report
        }
    }
}

/// The merchant and its devices `device(0..n)`, registered before the service starts (it reads
/// the registry at start): their signer, the pepper their keys were made under, an admin key.
struct Fleet {
    signer: Arc<FleetSigner>,
    pepper: facepay_domain::auth::Pepper,
    admin: String,
}

impl Fleet {
    async fn register(stores: &Stores, pepper: &facepay_domain::auth::Pepper, n: usize) -> anyhow::Result<Self> {
        let store = stores.ledger.clone();
        let devices: Vec<DeviceRef> = (0..n).map(device).collect();
        store.register_merchant(&devices[0].merchant_id, "Bench").await?;
        for d in &devices {
            store.register_device(d).await?;
        }
        let signer = Arc::new(FleetSigner::enrol(store.as_ref(), pepper, &devices).await?);
        let admin = admin_key(&Auth::new(store, pepper.clone())).await?;
        Ok(Self { signer, pepper: pepper.clone(), admin })
    }
}

/// The API served, the payers enrolled, the devices run (here or in a process of their own).
async fn measure(
    opts: &DeviceBenchOptions,
    fleet: Fleet,
    state: facepay_api::state::AppState,
    profile: &'static str,
) -> anyhow::Result<DeviceBenchReport> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move { axum::serve(listener, facepay_api::server::router(state)).await });
    let faces = Arc::new(SyntheticFaces::new(FACES_SEED, opts.payers));
    enrol(&addr, &fleet.admin, &faces, opts.payers).await?;
    let plan = LoadPlan {
        addr,
        pepper: fleet.pepper.expose().to_vec(),
        key_ids: fleet.signer.key_ids().into_iter().map(|(d, k)| (d.as_str().to_string(), k.to_string())).collect(),
        devices: opts.devices,
        rate: opts.rate,
        seconds: opts.seconds,
        payers: opts.payers,
    };
    let ran = match opts.load {
        Load::InProcess => run_devices(&plan, fleet.signer, faces).await,
        Load::Process => in_a_process_of_their_own(&plan).await,
    };
    server.abort();
    let LoadResult { tally, elapsed_s } = ran?;
    Ok(report(opts, profile, tally, elapsed_s))
}

/// The seed of the payers' synthetic faces (the same in the load generator's process).
const FACES_SEED: u64 = 11;

/// What the devices are to do: where the API is, their keys, the rate and how long.
#[derive(Serialize, Deserialize)]
struct LoadPlan {
    addr: String,
    /// The pepper the device keys were made under (their secrets derive from it).
    pepper: Vec<u8>,
    /// Each device's key id, by device id.
    key_ids: Vec<(String, String)>,
    devices: usize,
    rate: f64,
    seconds: u64,
    payers: usize,
}

/// What the devices measured, and how long their run took (s).
#[derive(Serialize, Deserialize)]
struct LoadResult {
    tally: Tally,
    elapsed_s: f64,
}

/// Runs `plan`'s devices in `facepay-bench device-load`, a process of their own.
async fn in_a_process_of_their_own(plan: &LoadPlan) -> anyhow::Result<LoadResult> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("device-load")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    stdin.write_all(&serde_json::to_vec(plan)?).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(out.status.success(), "the load generator failed: {}", out.status);
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `facepay-bench device-load`: reads a [`LoadPlan`] from stdin, runs its devices, prints
/// what they measured on stdout.
pub async fn load_from_stdin() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    tokio::io::stdin().read_to_end(&mut bytes).await?;
    let plan: LoadPlan = serde_json::from_slice(&bytes)?;
    let keys = plan
        .key_ids
        .iter()
        .map(|(d, k)| Ok((DeviceId::parse(d.as_str())?, facepay_domain::auth::KeyId::parse(k.as_str())?)))
        .collect::<Result<Vec<_>, facepay_domain::ValueError>>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let signer =
        Arc::new(FleetSigner::from_key_ids(&facepay_domain::auth::SecretBytes::new(plan.pepper.clone()), keys));
    let faces = Arc::new(SyntheticFaces::new(FACES_SEED, plan.payers));
    println!("{}", serde_json::to_string(&run_devices(&plan, signer, faces).await?)?);
    Ok(())
}

/// `plan`'s devices, each paying on its own connection at its share of the rate.
async fn run_devices(
    plan: &LoadPlan,
    signer: Arc<FleetSigner>,
    faces: Arc<SyntheticFaces>,
) -> anyhow::Result<LoadResult> {
    // Every device is connected before the clock starts, as a till's connection is kept alive
    // between payers: opening them all at once made the first second's payments late (the
    // connections' set-up counted as the service's latency).
    let mut conns = Vec::with_capacity(plan.devices);
    for _ in 0..plan.devices {
        conns.push(Conn::open(&plan.addr).await?);
    }
    let began = Instant::now();
    let interval = Duration::from_secs_f64(plan.devices as f64 / plan.rate);
    let count = ((plan.rate * plan.seconds as f64) / plan.devices as f64).ceil() as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let (signer, faces) = (signer.clone(), faces.clone());
        let run = DeviceRun { signer, faces, device: device(i), index: i };
        let first = began + interval.mul_f64(i as f64 / plan.devices as f64);
        tasks.spawn(async move { run.pay(conn, first, interval, count).await });
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        tally.add(done??);
    }
    Ok(LoadResult { tally, elapsed_s: began.elapsed().as_secs_f64() })
}

fn report(opts: &DeviceBenchOptions, profile: &'static str, mut t: Tally, elapsed_s: f64) -> DeviceBenchReport {
    t.total_ms.sort_by(f64::total_cmp);
    t.request_ms.sort_by(f64::total_cmp);
    t.capture_ms.sort_by(f64::total_cmp);
    let q = |v: &[f64], q: f64| crate::pipeline::quantile(v, q);
    let answered: usize = t.statuses.values().sum();
    DeviceBenchReport {
        profile,
        load: match opts.load {
            Load::Process => "process",
            Load::InProcess => "in-process",
        },
        devices: opts.devices,
        offered_payments_per_s: opts.rate,
        payments_per_s: answered as f64 / elapsed_s,
        payments: t.total_ms.len(),
        p50_ms: q(&t.total_ms, 0.5),
        p99_ms: q(&t.total_ms, 0.99),
        max_ms: t.total_ms.last().copied().unwrap_or(0.0),
        capture_request_p50_ms: q(&t.capture_ms, 0.5),
        capture_request_p99_ms: q(&t.capture_ms, 0.99),
        payment_request_p50_ms: q(&t.request_ms, 0.5),
        payment_request_p99_ms: q(&t.request_ms, 0.99),
        timeouts: t.timeouts,
        errors: t.errors,
        error_statuses: t.error_statuses,
        error_sample: t.error_sample,
        statuses: t.statuses,
    }
}

fn device(i: usize) -> DeviceRef {
    DeviceRef {
        merchant_id: MerchantId::parse("1900000101").expect("a merchant id"),
        store_id: StoreId::parse(format!("S{:02}", i / 100)).expect("a store id"),
        device_id: DeviceId::parse(format!("DEV-B{i:04}")).expect("a device id"),
    }
}

async fn admin_key(auth: &Auth) -> anyhow::Result<String> {
    let spec = NewKey {
        role: Role::Admin,
        merchant_id: None,
        store_id: None,
        device_id: None,
        label: "bench device".into(),
        expires_in_days: None,
    };
    Ok(auth.create_key(spec, &Actor::cli()).await.map_err(|e| anyhow::anyhow!("{e:?}"))?.1)
}

/// Enrols and funds every payer over the API, each event waited for, 16 at a time.
async fn enrol(addr: &str, admin: &str, faces: &SyntheticFaces, payers: usize) -> anyhow::Result<()> {
    let mut sends = tokio::task::JoinSet::new();
    let chunks: Vec<Vec<usize>> =
        (0..payers).collect::<Vec<_>>().chunks(payers.div_ceil(16).max(1)).map(<[usize]>::to_vec).collect();
    for chunk in chunks {
        let (addr, admin) = (addr.to_string(), format!("Bearer {admin}"));
        let events: Vec<Value> = chunk
            .iter()
            .flat_map(|&p| {
                let payer = format!("u-bench{p:06}");
                [
                    event("face_enrolled", json!({"payer_id": payer, "embedding": faces.enrolment(p)}), None),
                    event("account_funded", json!({"payer_id": payer, "amount": "1000.00"}), None),
                ]
            })
            .collect();
        sends.spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            for e in events {
                let (status, body) = conn.post(&e, &[("authorization", admin.as_str())]).await?;
                anyhow::ensure!(status == 200, "enrolment answered {status}: {body}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = sends.join_next().await {
        done??;
    }
    Ok(())
}

fn event(kind: &str, payload: Value, device: Option<&DeviceRef>) -> Value {
    let mut v = json!({
        "event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "schema_version": 1,
        "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "payload": payload,
    });
    if let Some(d) = device {
        v["merchant_id"] = d.merchant_id.as_str().into();
        v["store_id"] = d.store_id.as_str().into();
        v["device_id"] = d.device_id.as_str().into();
    }
    v
}

/// One device's run.
struct DeviceRun {
    signer: Arc<FleetSigner>,
    faces: Arc<SyntheticFaces>,
    device: DeviceRef,
    index: usize,
}

impl DeviceRun {
    /// `count` payments, the first at `first`, then every `interval`.
    async fn pay(self, mut conn: Conn, first: Instant, interval: Duration, count: usize) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        for n in 0..count {
            let due = first + interval.mul_f64(n as f64);
            tokio::time::sleep_until(due.into()).await;
            let payer = (self.index * 7919 + n * 104_729) % self.faces.len();
            let code = format!("{:018}", 300_000_000_000_000_000_u64 + (self.index * 100_000 + n) as u64);
            let capture =
                json!({"face_code": code, "embedding": self.faces.nth_capture(payer, n as u64 + 1), "liveness": 0.99});
            let captured = Instant::now();
            let (status, body) = self.send(&mut conn, &event("face_captured", capture, Some(&self.device))).await?;
            tally.capture_ms.push(captured.elapsed().as_secs_f64() * 1e3);
            match status {
                200 => {}
                202 => {
                    tally.timeouts += 1;
                    continue;
                }
                _ => {
                    tally.error(status, &body);
                    continue;
                }
            }
            let pay = json!({"out_trade_no": format!("B{}-{n}", self.index), "amount": "0.50", "face_code": code});
            let sent = Instant::now();
            let (status, body) = self.send(&mut conn, &event("payment_requested", pay, Some(&self.device))).await?;
            let now = Instant::now();
            match status {
                200 => {
                    let s = body["payload"]["status"].as_str().unwrap_or("?").to_string();
                    *tally.statuses.entry(s).or_default() += 1;
                    tally.total_ms.push((now - due).as_secs_f64() * 1e3);
                    tally.request_ms.push((now - sent).as_secs_f64() * 1e3);
                }
                202 => tally.timeouts += 1,
                _ => tally.error(status, &body),
            }
        }
        Ok(tally)
    }

    async fn send(&self, conn: &mut Conn, event: &Value) -> anyhow::Result<(u16, Value)> {
        let bytes = serde_json::to_vec(event)?;
        let sig = self.signer.sign(&bytes).ok_or_else(|| anyhow::anyhow!("unsigned"))?;
        conn.post_bytes(bytes, &[(SIGNATURE_HEADER, sig.as_str())]).await
    }
}

/// An HTTP/1.1 connection of one client, kept alive.
struct Conn {
    addr: String,
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { addr: addr.to_string(), sender })
    }

    async fn post(&mut self, event: &Value, headers: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
        self.post_bytes(serde_json::to_vec(event)?, headers).await
    }

    /// Posts an event with `Prefer: wait=5`: the status and the body.
    async fn post_bytes(&mut self, bytes: Vec<u8>, headers: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
        let mut request = hyper::Request::post("/v1/events")
            .header(hyper::header::HOST, self.addr.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("prefer", "wait=5");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let answer = self.sender.send_request(request.body(http_body_util::Full::new(bytes.into()))?).await?;
        let status = answer.status().as_u16();
        let body = answer.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}
