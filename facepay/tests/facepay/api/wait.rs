//! The device's synchronous answer on the embedded profile: `Prefer: wait=N` on
//! `POST /v1/events` answers 200 with the outcome, a repeated event id is answered from the
//! stored outcome (never another device's), and past the waiters' bound the answer is 202.

use std::time::Duration;

use crate::support::app::{signature, spawn_app, spawn_app_waiting_at_most, MERCHANT, OTHER_DEVICE, OTHER_MERCHANT};
use serde_json::json;

fn payment(out_trade_no: &str, face_code: &str, amount: &str) -> serde_json::Value {
    json!({"out_trade_no": out_trade_no, "amount": amount, "face_code": face_code})
}

#[tokio::test]
async fn a_device_that_waits_hears_its_payment_decided_in_the_answer() {
    let app = spawn_app().await;
    app.payer("u-wait", 5, "100.00").await;
    let capture =
        json!({"face_code": "100000000000000501", "embedding": crate::support::app::face(5), "liveness": 0.99});
    let (status, applied, body) = app.post_waiting(&app.event("face_captured", capture, true), "wait=5").await;
    assert_eq!((status, applied.as_deref(), body["type"].as_str()), (200, Some("wait=5"), Some("applied")), "{body}");

    let pay = app.event("payment_requested", payment("W-1", "100000000000000501", "30.00"), true);
    let (status, applied, body) = app.post_waiting(&pay, "wait=5").await;
    assert_eq!((status, applied.as_deref()), (200, Some("wait=5")), "{body}");
    assert_eq!(body["in_reply_to"], pay["event_id"]);
    assert_eq!(body["type"], "payment_result");
    assert_eq!((body["payload"]["status"].as_str(), body["payload"]["amount"].as_str()), (Some("PAID"), Some("30.00")));
    assert_eq!(body["device"]["device_id"], crate::support::app::DEVICE);
    // The device sees the payer as its merchant does (the openid), never the internal id.
    let payer = body["payload"]["payer_id"].as_str().unwrap();
    assert!(payer.starts_with("o_") && payer != "u-wait", "{payer}");
    let order = app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/W-1")).await;
    assert_eq!(order["status"], "PAID");
}

#[tokio::test]
async fn a_retry_of_the_same_event_is_answered_from_the_stored_outcome_and_pays_once() {
    let app = spawn_app().await;
    app.payer("u-retry", 6, "100.00").await;
    app.capture(6, "100000000000000601").await;
    let pay = app.event("payment_requested", payment("W-2", "100000000000000601", "40.00"), true);
    let bytes = serde_json::to_vec(&pay).unwrap();
    let (first, _, body) =
        app.post_waiting_bytes(bytes.clone(), &signature(&app.keys.device, &bytes, app.now()), "wait=5").await;
    assert_eq!((first, body["payload"]["status"].as_str()), (200, Some("PAID")), "{body}");
    // The network lost that answer: the device sends the same event again, signed again.
    app.wait(2);
    let sig = signature(&app.keys.device, &bytes, app.now());
    let (again, applied, body) = app.post_waiting_bytes(bytes.clone(), &sig, "wait=5").await;
    assert_eq!((again, applied.as_deref()), (200, Some("wait=5")), "{body}");
    assert_eq!(
        (body["in_reply_to"].clone(), body["payload"]["status"].as_str()),
        (pay["event_id"].clone(), Some("PAID"))
    );
    // Without a wait, a repeat is still a 409 (nothing kept, nothing paid).
    let (plain, _) = app.post_bytes(bytes, None, Some(&sig)).await;
    assert_eq!(plain, 409);
    let (_, balance) = app.get("/v1/payers/u-retry/balance").await;
    assert_eq!(balance["balance"], "60.00", "paid once");
    // The order shows its payment sent again, twice (the waited copy and the refused one).
    let (status, repeats) = app.get(&format!("/v1/merchants/{MERCHANT}/orders/W-2/repeats")).await;
    assert_eq!(status, 200, "{repeats}");
    assert_eq!(repeats["items"].as_array().map(Vec::len), Some(1), "{repeats}");
    assert_eq!(
        (&repeats["items"][0]["event_id"], repeats["items"][0]["repeats"].as_i64()),
        (&pay["event_id"], Some(2))
    );
}

#[tokio::test]
async fn an_event_id_another_device_used_is_refused_and_never_answered_with_its_outcome() {
    let app = spawn_app().await;
    app.payer("u-mine", 7, "100.00").await;
    app.capture(7, "100000000000000701").await;
    let pay = app.event("payment_requested", payment("W-3", "100000000000000701", "10.00"), true);
    assert_eq!(app.post_waiting(&pay, "wait=5").await.0, 200);
    // Another merchant's device sends an event under the same event id.
    let mut theirs = app.event("payment_query", json!({"out_trade_no": "W-3"}), true);
    theirs["event_id"] = pay["event_id"].clone();
    theirs["merchant_id"] = OTHER_MERCHANT.into();
    theirs["device_id"] = OTHER_DEVICE.into();
    let bytes = serde_json::to_vec(&theirs).unwrap();
    let sig = signature(&app.keys.other_device, &bytes, app.now());
    let (status, applied, body) = app.post_waiting_bytes(bytes, &sig, "wait=2").await;
    assert_eq!((status, applied, body["code"].as_str()), (409, None, Some("replayed")), "{body}");
    assert!(body.get("payload").is_none(), "no outcome of another device: {body}");
    // Nor is it counted on the order: another device's copy is not this order's repeat.
    let (status, repeats) = app.get(&format!("/v1/merchants/{MERCHANT}/orders/W-3/repeats")).await;
    assert_eq!((status, repeats["items"].as_array().map(Vec::len)), (200, Some(0)), "{repeats}");
}

#[tokio::test]
async fn past_the_waiters_bound_the_device_is_answered_202_and_its_payment_is_decided_all_the_same() {
    let app = spawn_app_waiting_at_most(0).await;
    app.payer("u-busy", 8, "100.00").await;
    app.capture(8, "100000000000000801").await;
    let pay = app.event("payment_requested", payment("W-4", "100000000000000801", "20.00"), true);
    let started = std::time::Instant::now();
    let (status, applied, body) = app.post_waiting(&pay, "wait=5").await;
    assert_eq!((status, applied, body["status"].as_str()), (202, None, Some("accepted")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once, not after the wait");
    let order = app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/W-4")).await;
    assert_eq!(order["status"], "PAID");
}
