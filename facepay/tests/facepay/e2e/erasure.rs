//! A deleted face is gone from the disk, not only from the live path (issue 24), on both
//! profiles: a payer enrols and pays by face, the face is deleted, the databases are
//! checkpointed, and then every file of the data folder (databases, WAL, shared memory, the
//! face key file) and, on PostgreSQL, every page of every relation (dead tuples included,
//! read raw with `pageinspect`) is searched for the wrapped key's bytes and for the
//! embedding as JSON text, f32 and f16 bytes. Refused biometric events leave no embedding
//! or phone number behind either.

use serde_json::{json, Value};

use crate::support::app::{spawn_sealed_app, TestApp, MERCHANT};

/// A face of distinct, unremarkable values (unit length, as devices send them).
fn face(seed: f32) -> Vec<f32> {
    let raw: Vec<f32> = (0..facepay_domain::limits::EMBEDDING_DIM).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    raw.into_iter().map(|x| x / norm).collect()
}

/// What must not be found: `face`'s values as JSON text, as f32 and f16 bytes (as sent and
/// as the matcher normalises them), and `extra` byte strings.
fn needles(face: &[f32], extra: &[(&str, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let json_text = serde_json::to_string(&face[..6]).unwrap();
    let normalised = facepay_domain::Embedding::try_from(face.to_vec()).unwrap();
    let mut found = vec![
        ("embedding as JSON".to_string(), json_text.trim_matches(['[', ']']).as_bytes().to_vec()),
        ("embedding f32".into(), face[..8].iter().flat_map(|x| x.to_le_bytes()).collect()),
        ("normalised f32".into(), normalised.as_slice()[..8].iter().flat_map(|x| x.to_le_bytes()).collect()),
        ("embedding f16".into(), face[..16].iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()),
    ];
    found.extend(extra.iter().map(|(what, bytes)| (what.to_string(), bytes.clone())));
    found
}

/// Every `needles` hit in the files under `dir`.
fn scan_files(dir: &std::path::Path, needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for (what, needle) in needles {
            if let Some(at) = facepay_ledger::face_keys::find(&bytes, needle) {
                hits.push(format!("{what} at byte {at} of {}", path.display()));
            }
        }
    }
    hits
}

/// Every `needles` hit in the raw pages of every relation of the database at `url`.
async fn scan_pages(url: &str, needles: &[(String, Vec<u8>)]) -> Vec<String> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect").execute(&mut conn).await.unwrap();
    let relations = sqlx::query(
        "SELECT c.oid::regclass::text AS name, pg_relation_size(c.oid) / current_setting('block_size')::int AS pages \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 't', 'i', 'm') AND n.nspname IN ('public', 'pg_toast') \
         AND pg_relation_size(c.oid) > 0",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut hits = Vec::new();
    for r in relations {
        let (name, pages): (String, i64) = (r.get("name"), r.get("pages"));
        for page in 0..pages {
            let raw: Vec<u8> = sqlx::query("SELECT get_raw_page($1, $2::int) AS raw")
                .bind(&name)
                .bind(page)
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .get("raw");
            for (what, needle) in needles {
                if facepay_ledger::face_keys::find(&raw, needle).is_some() {
                    hits.push(format!("{what} in page {page} of {name}"));
                }
            }
        }
    }
    hits
}

/// Checkpoints the app's SQLite database, if it is the store, truncating its WAL.
async fn checkpoint(app: &TestApp) {
    use sqlx::Connection;
    let db = app.dir.path().join("api.db");
    if db.exists() {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.unwrap();
    }
}

/// `facepay faces verify-erasure u-gone --json` over the app's store, key file and master
/// key: its verdict, and its exit status agreeing with it.
fn verify_erasure_cli(app: &TestApp, database_url: Option<&str>, master_hex: &str, expect_erased: bool) {
    let db =
        database_url.map_or_else(|| format!("sqlite://{}", app.dir.path().join("api.db").display()), str::to_string);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facepay"))
        .args(["faces", "verify-erasure", "u-gone", "--json"])
        .env("FACEPAY_DATABASE_URL", db)
        .env("FACEPAY_FACE_MASTER_KEY", master_hex)
        .env("FACEPAY_FACE_KEYS_PATH", app.dir.path().join("face-keys.db"))
        .env("FACEPAY_DATA_DIR", app.dir.path())
        .env("FACEPAY_KEY_PEPPER", crate::support::TEST_PEPPER)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(report["erased"], expect_erased, "{report} {stderr}");
    assert_eq!(out.status.success(), expect_erased, "{stderr}");
}

/// Posts `event` and asserts the answer's status.
async fn posted(app: &TestApp, event: Value, status: u16) {
    let (got, body) = app.post(&event).await;
    assert_eq!(got, status, "{body}");
}

async fn deleted_face_leaves_no_byte(database_url: Option<&str>) {
    let app = spawn_sealed_app(database_url).await;
    let (faces, master_hex) = app.faces.clone().unwrap();
    let payer = facepay_domain::PayerId::parse("u-gone").unwrap();
    let embedding = face(0.5);
    let enrol = json!({"payer_id": "u-gone", "embedding": embedding, "phone_last4": "4321"});
    posted(&app, app.event("face_enrolled", enrol, false), 202).await;
    posted(&app, app.event("account_funded", json!({"payer_id": "u-gone", "amount": "50.00"}), false), 202).await;
    let capture = json!({"face_code": "100000000000000777", "embedding": embedding, "liveness": 0.99});
    posted(&app, app.event("face_captured", capture, true), 202).await;
    let pay = json!({"out_trade_no": "GONE-1", "amount": "12.00", "face_code": "100000000000000777"});
    posted(&app, app.event("payment_requested", pay, true), 202).await;
    let order = app.until(&format!("/v1/merchants/{MERCHANT}/orders/GONE-1"), |o| o["status"] != "PENDING").await;
    assert_eq!(order["status"], "PAID", "paid by face: {order}");

    // The wrapped key, as the key file holds it; the scan finds it there before the deletion.
    let key = faces.keys().shard(0, 1).await.unwrap().into_iter().find(|k| k.payer_id == payer).unwrap();
    let wrapped = [("wrapped key", key.wrapped_key.clone())];
    let before = faces.keys().traces(&needles(&embedding, &wrapped)).unwrap();
    assert!(before.iter().any(|t| t.what == "wrapped key"), "the scan sees a live key: {before:?}");

    let audit = |expect_erased: bool| verify_erasure_cli(&app, database_url, &master_hex, expect_erased);
    audit(false);
    posted(&app, app.event("face_deleted", json!({"payer_id": "u-gone"}), false), 202).await;
    for _ in 0..500 {
        if faces.verify_erasure(&payer).await.unwrap().erased {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let report = faces.verify_erasure(&payer).await.unwrap();
    assert!(report.erased, "{report:?}");
    assert_eq!(report.templates_logged, 1, "the log keeps the sealed template: {report:?}");
    audit(true);

    checkpoint(&app).await;
    let needles = needles(&embedding, &wrapped);
    let in_files = scan_files(app.dir.path(), &needles);
    assert!(in_files.is_empty(), "found after the deletion: {in_files:?}");
    if let Some(url) = database_url {
        let in_pages = scan_pages(url, &needles).await;
        assert!(in_pages.is_empty(), "found in PostgreSQL after the deletion: {in_pages:?}");
    }
}

async fn refused_biometric_events_keep_no_embedding(database_url: Option<&str>) {
    let app = spawn_sealed_app(database_url).await;
    let (short, long) = (face(1.5), face(2.5));
    let bad = [
        (
            "face_captured",
            json!({"face_code": "100000000000000901", "embedding": &short[..511], "liveness": 0.99}),
            true,
        ),
        (
            "face_captured",
            json!({"face_code": "100000000000000902", "embedding": long, "liveness": 2.0, "phone_last4": "8642"}),
            true,
        ),
        ("face_enrolled", json!({"payer_id": "u-bad", "embedding": &short[..511], "phone_last4": "8642"}), false),
    ];
    for (kind, payload, device) in bad {
        posted(&app, app.event(kind, payload, device), 400).await;
    }
    let kept = app.store.rejected(10).await.unwrap();
    assert_eq!(kept.len(), 3, "each refusal kept with its reason");
    let phone = [("phone digits", b"8642".to_vec())];
    let mut all = needles(&short, &phone);
    all.extend(needles(&long, &[]));
    for r in &kept {
        let hits: Vec<_> = all.iter().filter(|(_, n)| facepay_ledger::face_keys::find(&r.raw, n).is_some()).collect();
        assert!(hits.is_empty(), "kept in plain text: {hits:?}");
    }
    checkpoint(&app).await;
    let in_files = scan_files(app.dir.path(), &all);
    assert!(in_files.is_empty(), "found in the data folder: {in_files:?}");
    if let Some(url) = database_url {
        let in_pages = scan_pages(url, &all).await;
        assert!(in_pages.is_empty(), "found in PostgreSQL: {in_pages:?}");
    }
}

#[tokio::test]
async fn a_deleted_face_leaves_no_byte_in_the_embedded_data_folder() {
    deleted_face_leaves_no_byte(None).await;
}

#[tokio::test]
async fn a_deleted_face_leaves_no_byte_on_postgresql_dead_tuples_included() {
    let Some(database) = crate::support::postgres().await else { return };
    deleted_face_leaves_no_byte(Some(&database.url)).await;
}

#[tokio::test]
async fn refused_biometric_events_keep_no_embedding_embedded() {
    refused_biometric_events_keep_no_embedding(None).await;
}

#[tokio::test]
async fn refused_biometric_events_keep_no_embedding_on_postgresql() {
    let Some(database) = crate::support::postgres().await else { return };
    refused_biometric_events_keep_no_embedding(Some(&database.url)).await;
}
