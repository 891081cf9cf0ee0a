//! The embedded app over HTTP for the API tests: a fresh SQLite database, the real pipeline,
//! HTTP on port 0, two merchants with a device each, and a key of every role.

use std::sync::Arc;
use std::time::Duration;

use facepay::app::{open_store, App};
use facepay::config::{sqlite_url, Secret};
use facepay_api::auth::{Actor, Auth, NewKey};
use facepay_domain::auth::{ApiToken, EventSignature, Role, SIGNATURE_HEADER};
use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::time::{Clock, ManualClock};
use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use facepay_ingest::authenticity::DeviceVerifier;
use facepay_ingest::faces::{FaceStore, Shard};
use facepay_ingest::PipelineConfig;
use facepay_ledger::face_keys::FaceKeyFile;
use facepay_ledger::LedgerStore;
use facepay_matcher::vault::{MasterKey, Vault};
use serde_json::{json, Value};

pub const MERCHANT: &str = "1900000101";
pub const DEVICE: &str = "DEV-0042";
pub const OTHER_MERCHANT: &str = "1900000202";
pub const OTHER_DEVICE: &str = "DEV-0099";

/// A key of every role, for both tenants.
pub struct Keys {
    pub admin: String,
    pub finance: String,
    pub merchant: String,
    /// A merchant key scoped to store S01 of MERCHANT.
    pub store: String,
    pub device: String,
    pub other_merchant: String,
    pub other_device: String,
}

pub struct TestApp {
    pub base: String,
    /// The platform's clock, driven by the test: each [`TestApp::event`] is a second later.
    pub clock: ManualClock,
    pub http: reqwest::Client,
    pub store: Arc<dyn LedgerStore>,
    pub auth: Arc<Auth>,
    pub keys: Keys,
    /// The gallery at rest, when the app keeps faces sealed ([`spawn_sealed_app`]), and its
    /// master key in hex.
    pub faces: Option<(facepay_ingest::faces::FaceStore, String)>,
    /// The data folder: the SQLite database (when it is the store) and the face key file.
    pub dir: tempfile::TempDir,
    seq: std::sync::atomic::AtomicU64,
}

fn device_ref(merchant: &str, device: &str) -> DeviceRef {
    DeviceRef {
        merchant_id: MerchantId::parse(merchant).unwrap(),
        store_id: StoreId::parse("S01").unwrap(),
        device_id: DeviceId::parse(device).unwrap(),
    }
}

async fn key(auth: &Auth, role: Role, device: Option<&DeviceRef>, merchant: Option<&str>, store: bool) -> String {
    let spec = NewKey {
        role,
        merchant_id: device.map(|d| d.merchant_id.clone()).or(merchant.map(|m| MerchantId::parse(m).unwrap())),
        store_id: device.map(|d| d.store_id.clone()).or(store.then(|| StoreId::parse("S01").unwrap())),
        device_id: device.map(|d| d.device_id.clone()),
        label: format!("test {role}"),
        expires_in_days: None,
    };
    auth.create_key(spec, &Actor::cli()).await.unwrap().1
}

/// The app, with `configure` applied to its authentication (e.g. a low rate limit).
pub async fn spawn_app_with(configure: impl FnOnce(Auth) -> Auth) -> TestApp {
    spawn(configure, None, false, Default::default()).await
}

/// The app with at most `max` requests waiting for their outcome (`Prefer: wait`).
pub async fn spawn_app_waiting_at_most(max: usize) -> TestApp {
    spawn(|a| a, None, false, Arc::new(facepay_ingest::waiters::Waiters::new(max))).await
}

/// The app keeping faces sealed (a face master key, the face key file in its folder), over
/// `database_url` (default: SQLite in its folder).
pub async fn spawn_sealed_app(database_url: Option<&str>) -> TestApp {
    spawn(|a| a, database_url, true, Default::default()).await
}

async fn spawn(
    configure: impl FnOnce(Auth) -> Auth,
    database_url: Option<&str>,
    sealed: bool,
    waiters: Arc<facepay_ingest::waiters::Waiters>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url.map_or_else(|| sqlite_url(&dir.path().join("api.db")), str::to_string);
    let stores = open_store(&Secret::new(url)).await.unwrap();
    let store = stores.ledger.clone();
    let (mine, other) = (device_ref(MERCHANT, DEVICE), device_ref(OTHER_MERCHANT, OTHER_DEVICE));
    for d in [&mine, &other] {
        store.register_merchant(&d.merchant_id, "Test").await.unwrap();
        store.register_device(d).await.unwrap();
    }
    let verifier = Arc::new(DeviceVerifier::new(facepay_sim::keys::random_pepper()));
    let clock = ManualClock::starting_at("2026-03-02T02:00:00Z".parse().unwrap());
    let faces = match sealed {
        true => {
            let keys = FaceKeyFile::open(&dir.path().join("face-keys.db")).await.unwrap();
            let (master, hex) = MasterKey::generate();
            Some((FaceStore::new(store.clone(), keys, Vault::new(master), Shard::ALL), hex.to_string()))
        }
        false => None,
    };
    let config = PipelineConfig {
        verifier,
        clock: clock.shared(),
        faces: faces.as_ref().map(|(f, _)| f.clone()),
        waiters,
        ..PipelineConfig::default()
    };
    let mut app = App::start(stores, config).await.unwrap();
    let auth = Arc::new(configure(Auth::new(store.clone(), app.verifier.pepper().clone())));
    app.auth = auth.clone();
    let keys = Keys {
        admin: key(&auth, Role::Admin, None, None, false).await,
        finance: key(&auth, Role::Finance, None, None, false).await,
        merchant: key(&auth, Role::Merchant, None, Some(MERCHANT), false).await,
        store: key(&auth, Role::Merchant, None, Some(MERCHANT), true).await,
        device: key(&auth, Role::Device, Some(&mine), None, false).await,
        other_merchant: key(&auth, Role::Merchant, None, Some(OTHER_MERCHANT), false).await,
        other_device: key(&auth, Role::Device, Some(&other), None, false).await,
    };
    let mut outcomes = std::mem::replace(&mut app.pipeline.outcomes, tokio::sync::mpsc::channel(1).1);
    tokio::spawn(async move { while outcomes.recv().await.is_some() {} });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = app.http_state();
    tokio::spawn(async move {
        let _keep = app;
        axum::serve(listener, facepay_api::server::router(state)).await.unwrap();
    });
    TestApp { base, clock, http: reqwest::Client::new(), store, auth, keys, faces, dir, seq: 0.into() }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|a| a).await
}

/// The `facepay-signature` of `body` made with device token `token`, signed at `signed_at`.
pub fn signature(token: &str, body: &[u8], signed_at: i64) -> String {
    let token = ApiToken::parse(token).unwrap();
    let v: Value = serde_json::from_slice(body).unwrap();
    let event_id = v["event_id"].as_str().unwrap().parse().unwrap();
    EventSignature::sign(token.key_id, &token.secret, signed_at, event_id, body).header()
}

impl TestApp {
    /// The platform's time now, unix seconds (what a device with a good clock signs with).
    pub fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// An event a second after the last, occurring (by its sender's word) at that moment.
    pub fn event(&self, kind: &str, payload: Value, device: bool) -> Value {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.clock.advance_to(self.clock.now() + chrono::Duration::seconds(1));
        let mut v = json!({
            "event_id": uuid::Uuid::from_u128(0xa11 << 64 | n as u128).to_string(),
            "type": kind,
            "schema_version": 1,
            "occurred_at": self.clock.now().to_rfc3339(),
            "payload": payload,
        });
        if device {
            v["merchant_id"] = MERCHANT.into();
            v["store_id"] = "S01".into();
            v["device_id"] = DEVICE.into();
        }
        v
    }

    /// Posts an event as its sender would: a device event signed by this device, anything
    /// else with the admin key.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        match body.get("device_id").is_some() {
            true => self.post_signed(body, &self.keys.device, self.now()).await,
            false => self.post_with(body, Some(&self.keys.admin), None).await,
        }
    }

    pub async fn post_signed(&self, body: &Value, device_token: &str, signed_at: i64) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        let sig = signature(device_token, &bytes, signed_at);
        self.post_bytes(bytes, None, Some(&sig)).await
    }

    pub async fn post_with(&self, body: &Value, bearer: Option<&str>, sig: Option<&str>) -> (u16, Value) {
        self.post_bytes(serde_json::to_vec(body).unwrap(), bearer, sig).await
    }

    pub async fn post_bytes(&self, bytes: Vec<u8>, bearer: Option<&str>, sig: Option<&str>) -> (u16, Value) {
        let mut r = self.http.post(format!("{}/v1/events", self.base)).body(bytes);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        if let Some(s) = sig {
            r = r.header(SIGNATURE_HEADER, s);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Posts a device event signed by this device now with `Prefer: wait=<wait>`: the status,
    /// the `Preference-Applied` header, the body.
    pub async fn post_waiting(&self, body: &Value, wait: &str) -> (u16, Option<String>, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        let sig = signature(&self.keys.device, &bytes, self.now());
        self.post_waiting_bytes(bytes, &sig, wait).await
    }

    pub async fn post_waiting_bytes(&self, bytes: Vec<u8>, sig: &str, wait: &str) -> (u16, Option<String>, Value) {
        let r = self.http.post(format!("{}/v1/events", self.base)).body(bytes);
        let r = r.header(SIGNATURE_HEADER, sig).header("prefer", wait).send().await.unwrap();
        let applied = r.headers().get("preference-applied").map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), applied, r.json().await.unwrap_or(Value::Null))
    }

    /// GET with the finance key (which reads everything).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(path, Some(&self.keys.finance)).await
    }

    pub async fn get_as(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Polls until `path` answers 200 (the pipeline is asynchronous), at most 5 s.
    pub async fn eventually(&self, path: &str) -> Value {
        for _ in 0..500 {
            let (status, body) = self.get(path).await;
            if status == 200 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path} never answered 200");
    }

    /// Polls `path` (as finance) until `done` holds for its body, at most 5 s.
    pub async fn until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path} never reached the expected state");
    }

    /// Moves the platform's clock on by `seconds`.
    pub fn wait(&self, seconds: i64) {
        self.clock.advance_to(self.clock.now() + chrono::Duration::seconds(seconds));
    }

    /// Enrols and funds `payer` with a face of all `value`s (distinct payers use distinct axes).
    pub async fn payer(&self, payer: &str, axis: usize, fund: &str) {
        let assert_accepted = |(s, b): (u16, Value)| assert_eq!(s, 202, "{b}");
        assert_accepted(
            self.post(&self.event("face_enrolled", json!({"payer_id": payer, "embedding": face(axis)}), false)).await,
        );
        assert_accepted(
            self.post(&self.event("account_funded", json!({"payer_id": payer, "amount": fund}), false)).await,
        );
    }

    /// The device captures the face on `payer_axis` under `face_code`.
    pub async fn capture(&self, payer_axis: usize, face_code: &str) {
        let capture = json!({"face_code": face_code, "embedding": face(payer_axis), "liveness": 0.99});
        assert_eq!(self.post(&self.event("face_captured", capture, true)).await.0, 202);
    }

    pub async fn pay(&self, payer_axis: usize, face_code: &str, out_trade_no: &str, amount: &str) {
        self.capture(payer_axis, face_code).await;
        let pay = json!({"out_trade_no": out_trade_no, "amount": amount, "face_code": face_code});
        assert_eq!(self.post(&self.event("payment_requested", pay, true)).await.0, 202);
    }

    /// The payer on `payer_axis` opens the merchant's member card `card_code` by face.
    pub async fn open_card(&self, payer_axis: usize, face_code: &str, card_code: &str) {
        self.capture(payer_axis, face_code).await;
        let open = json!({"face_code": face_code, "card_code": card_code, "channel": "mini_program"});
        assert_eq!(self.post(&self.event("member_card_opened", open, true)).await.0, 202);
    }
}

pub fn face(axis: usize) -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[axis] = 1.0;
    v
}
