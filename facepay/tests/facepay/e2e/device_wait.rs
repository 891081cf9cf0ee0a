//! The device's synchronous answer on the production profile (PostgreSQL, a Kafka-API broker,
//! `facepay serve` processes): the wait times out to 202 while nothing decides and the order
//! is decided once later; a kill -9 of the process holding a waiting request loses nothing
//! (the device's query finds the outcome); a process that only serves the API hears another
//! process's decision (PostgreSQL `NOTIFY`) and answers 200; a retry is answered from the
//! stored outcome. Needs PostgreSQL and a Kafka-API broker; skipped, saying so, without them
//! (CI requires both).

use std::time::{Duration, Instant};

use crate::support::{spawn, tail, Facepay, Stop, FAST_LEASE, TEST_PEPPER};
use facepay_api::auth::{Actor, Auth, NewKey};
use facepay_domain::auth::{Pepper, Role, SIGNATURE_HEADER};
use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use facepay_sim::keys::FleetSigner;
use serde_json::{json, Value};

const MERCHANT: &str = "1900000101";

/// A `facepay serve` with the API on a port of its own, and how to reach it.
struct Served {
    process: Facepay,
    base: String,
    log: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn serve(run: &crate::support::Run, stages: &str, name: &str) -> Served {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = run.logs.path().join(format!("{name}.log"));
    let env = [FAST_LEASE[0], FAST_LEASE[1], ("FACEPAY_HTTP_ADDR", addr.as_str())];
    let process = spawn(&run.db, &run.cfg, stages, &env, &log);
    let base = format!("http://{addr}");
    for _ in 0..600 {
        if reqwest::get(format!("{base}/health")).await.is_ok_and(|r| r.status() == 200) {
            return Served { process, base, log };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never answered:\n{}", tail(&log));
}

/// The test's device, its signer, and admin and finance keys, in the run's database.
struct Fleet {
    signer: FleetSigner,
    /// Sends platform events.
    admin: String,
    /// Reads orders and balances.
    finance: String,
    http: reqwest::Client,
    seq: std::sync::atomic::AtomicU64,
}

impl Fleet {
    async fn new(run: &crate::support::Run) -> Self {
        let device = DeviceRef {
            merchant_id: MerchantId::parse(MERCHANT).unwrap(),
            store_id: StoreId::parse("S01").unwrap(),
            device_id: DeviceId::parse("DEV-W1").unwrap(),
        };
        run.store.register_merchant(&device.merchant_id, "Wait").await.unwrap();
        run.store.register_device(&device).await.unwrap();
        let pepper = Pepper::new(TEST_PEPPER.as_bytes().to_vec());
        let signer = FleetSigner::enrol(run.store.as_ref(), &pepper, &[device]).await.unwrap();
        let auth = Auth::new(run.store.clone(), pepper);
        let key = |role| NewKey {
            role,
            merchant_id: None,
            store_id: None,
            device_id: None,
            label: "wait test".into(),
            expires_in_days: None,
        };
        let admin = auth.create_key(key(Role::Admin), &Actor::cli()).await.unwrap().1;
        let finance = auth.create_key(key(Role::Finance), &Actor::cli()).await.unwrap().1;
        Self { signer, admin, finance, http: reqwest::Client::new(), seq: 0.into() }
    }

    fn event(&self, kind: &str, payload: Value, device: bool) -> Value {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut v = json!({
            "event_id": uuid::Uuid::from_u128(0xba17 << 64 | n as u128).to_string(),
            "type": kind, "schema_version": 1,
            "occurred_at": chrono::Utc::now().to_rfc3339(), "payload": payload,
        });
        if device {
            v["merchant_id"] = MERCHANT.into();
            v["store_id"] = "S01".into();
            v["device_id"] = "DEV-W1".into();
        }
        v
    }

    /// Posts `event` (signed now by its device, or with the admin key) to `to`, with
    /// `Prefer: wait=<wait>` when given: the status, `Preference-Applied`, the body.
    async fn post(&self, to: &Served, event: &Value, wait: Option<u64>) -> (u16, Option<String>, Value) {
        let bytes = serde_json::to_vec(event).unwrap();
        let mut r = self.http.post(format!("{}/v1/events", to.base)).timeout(Duration::from_secs(20));
        r = match event.get("device_id") {
            Some(_) => r.header(SIGNATURE_HEADER, self.signer.sign(&bytes).unwrap()),
            None => r.bearer_auth(&self.admin),
        };
        if let Some(wait) = wait {
            r = r.header("prefer", format!("wait={wait}"));
        }
        let r = r.body(bytes).send().await.unwrap();
        let applied = r.headers().get("preference-applied").map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), applied, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, at: &Served, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", at.base)).bearer_auth(&self.finance).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `path` at `at` until it answers 200, at most 90 s (partitions are taken by lease).
    async fn eventually(&self, at: &Served, path: &str) -> Value {
        for _ in 0..900 {
            if let (200, body) = self.get(at, path).await {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} never answered 200:\n{}", tail(&at.log));
    }

    fn capture(&self, axis: usize, face_code: &str) -> Value {
        let mut face = vec![0.0_f32; EMBEDDING_DIM];
        face[axis] = 1.0;
        self.event("face_captured", json!({"face_code": face_code, "embedding": face, "liveness": 0.99}), true)
    }

    fn payment(&self, out_trade_no: &str, face_code: &str) -> Value {
        let pay = json!({"out_trade_no": out_trade_no, "amount": "10.00", "face_code": face_code});
        self.event("payment_requested", pay, true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_time_out_to_202_survive_a_kill_9_and_hear_another_processs_decision() {
    let _one = crate::e2e::crash::ONE_AT_A_TIME.lock().await;
    // One partition: the enrolment (keyed by its event id) is matched before the captures
    // that follow it (keyed by device), though nothing decides while they are sent.
    let Some(run) = crate::support::run(1).await else { return };
    let fleet = Fleet::new(&run).await;
    // An API-only process: it takes events in, and nothing decides them yet.
    let a = serve(&run, "api", "a").await;
    let mut face = vec![0.0_f32; EMBEDDING_DIM];
    face[9] = 1.0;
    let enrol = json!({"payer_id": "u-w1", "embedding": face});
    assert_eq!(fleet.post(&a, &fleet.event("face_enrolled", enrol, false), None).await.0, 202);
    assert_eq!(
        fleet
            .post(&a, &fleet.event("account_funded", json!({"payer_id": "u-w1", "amount": "100.00"}), false), None)
            .await
            .0,
        202
    );
    assert_eq!(fleet.post(&a, &fleet.capture(9, "100000000000000901"), None).await.0, 202);

    // The timeout path: nothing decides within the wait, so 202; the order is decided later.
    let first = fleet.payment("WT-1", "100000000000000901");
    let started = Instant::now();
    let (status, applied, body) = fleet.post(&a, &first, Some(2)).await;
    assert_eq!((status, applied), (202, None), "{body}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited: {:?}", started.elapsed());

    // kill -9 of the process holding a waiting request, once its event is in.
    assert_eq!(fleet.post(&a, &fleet.capture(9, "100000000000000902"), None).await.0, 202);
    let second = fleet.payment("WT-2", "100000000000000902");
    let waiting = {
        let (fleet_http, base, second) = (fleet.http.clone(), a.base.clone(), second.clone());
        let bytes = serde_json::to_vec(&second).unwrap();
        let sig = fleet.signer.sign(&bytes).unwrap();
        tokio::spawn(async move {
            let r =
                fleet_http.post(format!("{base}/v1/events")).header(SIGNATURE_HEADER, sig).header("prefer", "wait=10");
            r.body(bytes).send().await.map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.process.stop(Stop::Kill);
    assert!(waiting.await.unwrap().is_err(), "the waiting request died with its process");

    // A whole process decides both, once; its API answers the device's query.
    let b = serve(&run, "matcher,ledger,relay,api", "b").await;
    for no in ["WT-1", "WT-2"] {
        let order = fleet.eventually(&b, &format!("/v1/merchants/{MERCHANT}/orders/{no}")).await;
        assert_eq!(order["status"], "PAID", "{no}: {order}");
    }
    let (_, balance) = fleet.get(&b, "/v1/payers/u-w1/balance").await;
    assert_eq!(balance["balance"], "80.00", "each paid once");

    // An API-only process hears what the other process's ledger decides (NOTIFY): 200.
    let c = serve(&run, "api", "c").await;
    let (status, _, _) = fleet.post(&c, &fleet.capture(9, "100000000000000903"), Some(5)).await;
    assert_eq!(status, 200, "{}", tail(&c.log));
    let third = fleet.payment("WT-3", "100000000000000903");
    let started = Instant::now();
    let (status, applied, body) = fleet.post(&c, &third, Some(5)).await;
    assert_eq!((status, applied.as_deref()), (200, Some("wait=5")), "{body}\n{}", tail(&c.log));
    assert_eq!((body["type"].as_str(), body["payload"]["status"].as_str()), (Some("payment_result"), Some("PAID")));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "heard when decided, not found at the deadline: {took:?}");
    // A retry of the first payment, at the other process: its stored outcome, paid once.
    let (status, _, body) = fleet.post(&c, &first, Some(5)).await;
    assert_eq!(
        (status, body["in_reply_to"].clone(), body["payload"]["status"].as_str()),
        (200, first["event_id"].clone(), Some("PAID")),
        "{body}"
    );
    let (_, balance) = fleet.get(&b, "/v1/payers/u-w1/balance").await;
    assert_eq!(balance["balance"], "70.00", "three payments, each paid once");
    println!("{}", json!({"test": "device_wait", "cross_process_wait_ms": took.as_millis()}));
    drop((b, c));
}
