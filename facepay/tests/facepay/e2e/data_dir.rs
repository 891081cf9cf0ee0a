//! One data directory, one database (issue 22, fault 7), through the real binary: the demo
//! and `facepay reconcile` open the same ledger; `reconcile` refuses an empty ledger, naming
//! the database it opened, and writes nothing; the demo never wipes a ledger it did not make
//! or that `facepay serve` served; an error is one line, never a backtrace.

use std::path::Path;
use std::process::{Command, Output};

use facepay_ledger::Stores;

/// `facepay <args>` on the data directory `dir` (no database URL: the directory's own).
fn facepay(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facepay"))
        .args(args)
        .env("FACEPAY_DATA_DIR", dir)
        .env_remove("FACEPAY_DATABASE_URL")
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .output()
        .expect("facepay runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn stores(dir: &Path) -> Stores {
    Stores::open(&format!("sqlite://{}", dir.join("facepay.db").display())).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_refuses_an_empty_ledger_naming_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let bill = dir.path().join("bill.csv");
    std::fs::write(&bill, "交易时间,商户号\n").unwrap();
    let out = facepay(dir.path(), &["reconcile", "--bill", bill.to_str().unwrap(), "--date", "2026-03-02"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let db = dir.path().join("facepay.db");
    assert!(err.contains(&format!("the ledger in sqlite://{} is empty", db.display())), "{err}");
    assert!(!err.contains("backtrace") && err.lines().count() == 1, "one line, no backtrace: {err}");
    assert!(stores(dir.path()).await.recon.imports(10).await.unwrap().is_empty(), "nothing imported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_and_reconcile_share_the_ledger_and_the_demo_wipes_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let demo = ["demo", "--json", "--merchants", "2", "--devices", "4", "--payers", "60", "--payments", "300"];
    let out = facepay(dir.path(), &demo);
    assert!(out.status.success(), "{}", stderr(&out));
    let bill = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("bill-"))
        .expect("the demo writes its day's bill");
    let day = bill.file_stem().unwrap().to_string_lossy().trim_start_matches("bill-").to_string();
    let out = facepay(dir.path(), &["reconcile", "--bill", bill.to_str().unwrap(), "--date", &day, "--json"]);
    assert!(out.status.success(), "reconcile finds the demo's ledger: {}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["import"]["already_imported"], true, "the demo imported this very bill: {report}");
    // The demo makes its own database anew; a ledger it did not make, it refuses to touch.
    let out = facepay(dir.path(), &demo);
    assert!(out.status.success(), "the demo runs again over its own database: {}", stderr(&out));
    // Once served, the directory's ledger is no longer the demo's to remake.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_facepay"))
        .arg("serve")
        .env("FACEPAY_DATA_DIR", dir.path())
        .env_remove("FACEPAY_DATABASE_URL")
        .env("FACEPAY_HTTP_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mark = dir.path().join("demo-made");
    for _ in 0..200 {
        if !mark.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = serve.kill();
    let _ = serve.wait();
    let out = facepay(dir.path(), &demo);
    assert_eq!(out.status.code(), Some(1), "a served directory is not remade: {}", stderr(&out));
    let other = tempfile::tempdir().unwrap();
    let made = stores(other.path()).await.ledger;
    let merchant = facepay_domain::MerchantId::parse("M-KEEP").unwrap();
    made.register_merchant(&merchant, "kept").await.unwrap();
    let out = facepay(other.path(), &demo);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds a ledger the demo did not make"), "{}", stderr(&out));
    let kept = stores(other.path()).await.ledger.registry().await.unwrap();
    assert!(kept.merchants.contains_key(&merchant), "the ledger is untouched");
}

/// The same refusal on PostgreSQL, naming the database without its user or parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_refuses_an_empty_postgres_ledger_naming_it_without_credentials() {
    let Some((_, db)) = crate::support::services().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let bill = dir.path().join("bill.csv");
    std::fs::write(&bill, "交易时间,商户号\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facepay"))
        .args(["reconcile", "--bill", bill.to_str().unwrap(), "--date", "2026-03-02"])
        .env("FACEPAY_DATA_DIR", dir.path())
        .env("FACEPAY_DATABASE_URL", format!("{}?application_name=t", db.url))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let host_and_name = db.url.rsplit_once('@').map_or(db.url.as_str(), |(_, h)| h);
    assert!(err.contains(&format!("the ledger in postgres://{host_and_name} is empty")), "{err}");
    assert!(!err.contains("postgres@") && !err.contains("application_name"), "no credentials, no parameters: {err}");
}
