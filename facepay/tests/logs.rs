//! Log scrubbing: what a run writes to its logs. Alone in its binary, so the thread-local
//! subscriber sees every line (tracing caches callsite interest per process).

#[path = "facepay/support/mod.rs"]
mod support;

use serde_json::json;
use support::app::{spawn_app, TestApp, MERCHANT};

/// One paid order of MERCHANT (payer u-alice).
async fn with_an_order() -> TestApp {
    let app = spawn_app().await;
    app.payer("u-alice", 1, "100.00").await;
    app.pay(1, "100000000000000001", "ORDER-1", "60.00").await;
    app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/ORDER-1")).await;
    app
}

/// Captures every log line the app writes while `run` runs (this test's runtime is on one
/// thread, so a thread-local subscriber sees the app's tasks too).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_hold_secrets_embeddings_or_payer_ids() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = with_an_order().await;
    let _ = app.get("/v1/payers/u-alice/balance").await;
    let _ = app.get_as(&format!("/v1/merchants/{MERCHANT}/orders/ORDER-1"), Some(&app.keys.merchant)).await;
    let bad = format!("fpk_{}_{}", &app.keys.finance[4..28], "f".repeat(64));
    let _ = app.get_as("/v1/rejected-events", Some(&bad)).await;
    let tampered = app.event("payment_query", json!({"out_trade_no": "Q-9"}), true);
    let _ = app.post_with(&tampered, None, Some(&format!("k=platform,t=0,v1={}", "a".repeat(64)))).await;
    // An event brought by a request with an id of the caller's: the id is in the decision's log.
    let funding = app.event("account_funded", json!({"payer_id": "u-alice", "amount": "1.00"}), false);
    let sent = app.http.post(format!("{}/v1/events", app.base)).bearer_auth(&app.keys.admin);
    let sent = sent.header("x-request-id", "req-follow-7").json(&funding).send().await.unwrap();
    assert_eq!(sent.status().as_u16(), 202);
    assert_eq!(sent.headers()["x-request-id"], "req-follow-7");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let event_id = funding["event_id"].as_str().unwrap();
    let decided = logs.lines().find(|l| l.contains("\"decided\"") && l.contains(event_id)).unwrap_or_default();
    assert!(decided.contains("req-follow-7"), "the request id follows its event to the decision: {decided:?}");
    let answered = logs.lines().find(|l| l.contains("answered")).unwrap_or_default();
    assert!(answered.contains("request_id"), "requests are logged with their id: {answered}");
    let k = &app.keys;
    for secret in [&k.admin, &k.finance, &k.merchant, &k.device, &bad] {
        assert!(!logs.contains(&secret[29..]), "a key's secret is in the logs");
    }
    assert!(!logs.contains("u-alice"), "a payer id is in the logs");
    assert!(!logs.contains("0.0,0.0,0.0") && !logs.contains("1.0,0.0"), "an embedding is in the logs");
}
