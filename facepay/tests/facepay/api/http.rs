//! The API against the real app: a fresh SQLite database, the real pipeline, HTTP on port 0.

use std::time::Duration;

use crate::support::app::{spawn_app, MERCHANT, OTHER_MERCHANT};
use serde_json::json;

#[tokio::test]
async fn health_answers() {
    let app = spawn_app().await;
    assert_eq!(app.get_as("/health", None).await, (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn a_payment_posted_over_http_can_be_queried_by_the_device() {
    let app = spawn_app().await;
    app.payer("u-alice", 1, "100.00").await;
    app.pay(1, "100000000000000001", "ORDER-1", "60.00").await;
    let order = app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/ORDER-1")).await;
    assert_eq!(order["status"], "PAID");
    assert_eq!(order["amount"], "60.00");
    assert_eq!(order["payer_id"], "u-alice");
    let (status, balance) = app.get("/v1/payers/u-alice/balance").await;
    assert_eq!((status, balance["balance"].as_str()), (200, Some("40.00")));

    // Over the balance: declined with the channel's code.
    app.pay(1, "100000000000000002", "ORDER-2", "50.00").await;
    let order = app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/ORDER-2")).await;
    assert_eq!((order["status"].as_str(), order["channel_code"].as_str()), (Some("DECLINED"), Some("NOTENOUGH")));
}

#[tokio::test]
async fn history_pages_newest_first_with_filters() {
    let app = spawn_app().await;
    app.payer("u-bob", 2, "500.00").await;
    for i in 0..5 {
        app.pay(2, &format!("10000000000000010{i}"), &format!("H-{i}"), "10.00").await;
    }
    app.pay(2, "100000000000000200", "H-big", "2000.00").await; // over the single limit
    app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/H-big")).await;

    let (status, page) = app.get(&format!("/v1/merchants/{MERCHANT}/transactions?limit=2")).await;
    assert_eq!(status, 200);
    let nos: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|i| i["out_trade_no"].as_str().unwrap()).collect();
    assert_eq!(nos, ["H-big", "H-4"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, next) = app.get(&format!("/v1/merchants/{MERCHANT}/transactions?limit=2&cursor={cursor}")).await;
    let nos: Vec<&str> =
        next["items"].as_array().unwrap().iter().map(|i| i["out_trade_no"].as_str().unwrap()).collect();
    assert_eq!(nos, ["H-3", "H-2"]);

    let (_, declined) = app.get(&format!("/v1/merchants/{MERCHANT}/transactions?status=DECLINED")).await;
    assert_eq!(declined["items"].as_array().unwrap().len(), 1);
    assert_eq!(declined["items"][0]["reason"], "OVER_SINGLE_LIMIT");
    let (_, day) = app.get(&format!("/v1/merchants/{MERCHANT}/transactions?date=2026-03-02")).await;
    assert_eq!(day["items"].as_array().unwrap().len(), 6, "02:xx UTC is 2026-03-02 in Shanghai");
    let (_, other_day) = app.get(&format!("/v1/merchants/{MERCHANT}/transactions?date=2026-03-01")).await;
    assert!(other_day["items"].as_array().unwrap().is_empty());
    let (status, err) = app.get(&format!("/v1/merchants/{MERCHANT}/transactions?limit=0")).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("limit")));
}

#[tokio::test]
async fn members_are_listed_and_pay_by_quick_pay() {
    let app = spawn_app().await;
    app.payer("u-carol", 3, "100.00").await;
    app.open_card(3, "100000000000000300", "C0001").await;
    app.pay(3, "100000000000000301", "M-1", "5.00").await;
    let order = app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/M-1")).await;
    assert_eq!(order["member_quick_pay"], true);
    let (_, members) = app.get(&format!("/v1/merchants/{MERCHANT}/members")).await;
    assert_eq!(members["items"][0]["payer_id"], "u-carol");
    assert_eq!(members["items"][0]["channel"], "mini_program");
    // The member's last visit is that payment, in the platform's time.
    assert_eq!(members["items"][0]["last_visit_at"], order["updated_at"], "{members}");
    // A second member; pages of one, newest card first, by signed cursor.
    app.payer("u-dan", 4, "100.00").await;
    app.open_card(4, "100000000000000400", "C0002").await;
    app.until(&format!("/v1/merchants/{MERCHANT}/members"), |v| v.to_string().contains("C0002")).await;
    let (_, first) = app.get(&format!("/v1/merchants/{MERCHANT}/members?limit=1")).await;
    assert_eq!(
        (first["items"][0]["card_code"].as_str(), first["items"][0]["last_visit_at"].is_null()),
        (Some("C0002"), true)
    );
    let cursor = first["next_cursor"].as_str().expect("a next page").to_string();
    let (_, second) = app.get(&format!("/v1/merchants/{MERCHANT}/members?limit=1&cursor={cursor}")).await;
    assert_eq!(second["items"][0]["card_code"], "C0001");
    let (status, err) = app.get(&format!("/v1/merchants/{OTHER_MERCHANT}/members?cursor={cursor}")).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("cursor")), "a cursor is bound to its merchant");
}

#[tokio::test]
async fn bad_events_get_a_400_naming_the_field_and_are_kept() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"out_trade_no": "X1", "amount": "1.234", "face_code": "100000000000000001"}),
            "payload.amount",
            "too_many_decimals",
        ),
        (
            json!({"out_trade_no": "X1", "amount": "0.00", "face_code": "100000000000000001"}),
            "payload.amount",
            "not_positive",
        ),
        (
            json!({"out_trade_no": "X".repeat(33), "amount": "1.00", "face_code": "100000000000000001"}),
            "payload.out_trade_no",
            "too_long",
        ),
        (
            json!({"out_trade_no": "X 1", "amount": "1.00", "face_code": "100000000000000001"}),
            "payload.out_trade_no",
            "bad_character",
        ),
    ];
    for (payload, field, code) in &cases {
        let (status, body) = app.post(&app.event("payment_requested", payload.clone(), true)).await;
        assert_eq!((status, body["field"].as_str(), body["code"].as_str()), (400, Some(*field), Some(*code)), "{body}");
    }
    let mut ghost = app.event("payment_query", json!({"out_trade_no": "X1"}), true);
    ghost["device_id"] = "DEV-GHOST".into();
    let (status, body) = app.post(&ghost).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("device_id")), "not this key's device: {body}");
    let capture = json!({"face_code": "100000000000000009", "embedding": [0.5, 0.5], "liveness": 0.9});
    let (status, body) = app.post(&app.event("face_captured", capture, true)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("wrong_dimension")));
    // Bytes that cannot be authenticated are refused before they are read, and not kept.
    let any_signature = "k=platform,t=0,v1=".to_string() + &"0".repeat(64);
    let (status, body) = app.post_bytes(b"{oops".to_vec(), None, Some(&any_signature)).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "authentication first");

    let (_, kept) = app.get("/v1/rejected-events?limit=100").await;
    assert_eq!(kept["items"].as_array().unwrap().len(), cases.len() + 2, "every authenticated refusal is kept");
    assert!(!kept.to_string().contains("0.5,0.5"), "raw bodies are not served");
}

#[tokio::test]
async fn unknown_things_are_404_and_bad_path_ids_400() {
    let app = spawn_app().await;
    assert_eq!(app.get(&format!("/v1/merchants/{MERCHANT}/orders/NOPE")).await.0, 404);
    assert_eq!(app.get("/v1/payers/u-nobody/balance").await.0, 404);
    let (status, body) = app.get(&format!("/v1/merchants/{MERCHANT}/orders/{}", "x".repeat(40))).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("out_trade_no")));
}

#[tokio::test]
async fn a_retried_http_post_of_the_same_event_funds_once() {
    let app = spawn_app().await;
    app.payer("u-dave", 4, "10.00").await;
    let fund = app.event("account_funded", json!({"payer_id": "u-dave", "amount": "5.00"}), false);
    assert_eq!(app.post(&fund).await.0, 202);
    assert_eq!(app.post(&fund).await.0, 202, "the device retried after a timeout");
    app.payer("u-sentinel", 5, "1.00").await;
    app.eventually("/v1/payers/u-sentinel/balance").await;
    let (_, balance) = app.get("/v1/payers/u-dave/balance").await;
    assert_eq!(balance["balance"], "15.00", "the redelivered event posted nothing");
}

#[tokio::test]
async fn fees_refunds_holds_and_settlement_over_http() {
    let app = spawn_app().await;
    let mut rate = app.event("merchant_fee_rate_changed", json!({"fee_rate_ppm": 5400}), false);
    rate["merchant_id"] = MERCHANT.into();
    assert_eq!(app.post(&rate).await.0, 202);
    app.payer("u-dora", 4, "300.00").await;
    app.pay(4, "100000000000000401", "F-1", "60.00").await;
    let order = app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/F-1")).await;
    assert_eq!((order["status"].as_str(), order["fee"].as_str()), (Some("PAID"), Some("0.32")));

    let refund = json!({"out_trade_no": "F-1", "out_refund_no": "RF-1", "amount": "20.00"});
    assert_eq!(app.post(&app.event("refund_requested", refund, true)).await.0, 202);
    // The payer authorises the merchant's Pay Score by face, then orders by face.
    app.capture(4, "100000000000000402").await;
    let authorise = json!({"face_code": "100000000000000402"});
    assert_eq!(app.post(&app.event("pay_score_authorised", authorise, true)).await.0, 202);
    app.capture(4, "100000000000000403").await;
    let hold = json!({"out_order_no": "PS-1", "face_code": "100000000000000403", "hold_amount": "50.00"});
    assert_eq!(app.post(&app.event("pay_score_order_created", hold, true)).await.0, 202);
    // 300 − 60 + 20 back − 50 held (the balance and the hold are read one after the other).
    app.until("/v1/payers/u-dora/balance", |b| b["held"] == "50.00" && b["balance"] == "210.00").await;
    let complete = json!({"out_order_no": "PS-1", "total_amount": "30.00"});
    assert_eq!(app.post(&app.event("pay_score_order_completed", complete, true)).await.0, 202);
    app.until("/v1/payers/u-dora/balance", |b| b["held"] == "0.00" && b["balance"] == "230.00").await;
    let order = app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/F-1")).await;
    assert_eq!(order["refunded"], "20.00");

    let (status, days) = app.get(&format!("/v1/merchants/{MERCHANT}/settlement")).await;
    assert_eq!(status, 200);
    let day = &days["items"][0];
    // Gross 60 + 30; refunds 20; fees 0.32 + 0.16 − 0.11 returned with the refund.
    assert_eq!(
        (day["day"].as_str(), day["gross"].as_str(), day["refunds"].as_str(), day["fees"].as_str()),
        (Some("2026-03-02"), Some("90.00"), Some("20.00"), Some("0.37"))
    );
    assert_eq!(day["net"], "69.63");
}

/// A matcher split over shards needs the sealed gallery and the broker: `facepay serve`
/// refuses to start embedded with `FACEPAY_MATCHER_SHARD` of more than one shard, naming what
/// is missing, instead of running a shard that would never decide a capture.
#[test]
fn serve_refuses_a_sharded_matcher_without_a_face_key_and_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_facepay"))
        .arg("serve")
        .env("FACEPAY_MATCHER_SHARD", "1/2")
        .env("FACEPAY_DATA_DIR", dir.path())
        .env("FACEPAY_HTTP_ADDR", "127.0.0.1:0")
        .env_remove("FACEPAY_DATABASE_URL")
        .env_remove("FACEPAY_FACE_MASTER_KEY")
        .env_remove("FACEPAY_KAFKA_BROKERS")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A serve that accepted the setting would run on: give it a bounded time to refuse.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("facepay serve started with a sharded matcher and nothing to shard it with");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs FACEPAY_FACE_MASTER_KEY and FACEPAY_KAFKA_BROKERS"), "{stderr}");
}

/// A unit face `a` on `axis` and the rest on `other`: cosine `a` with the face on `axis`.
fn face_near(axis: usize, a: f32, other: usize) -> Vec<f32> {
    let mut v = vec![0.0; facepay_domain::limits::EMBEDDING_DIM];
    (v[axis], v[other]) = (a, (1.0 - a * a).sqrt());
    v
}

/// Issue 23 through the real pipeline: an unsure face is asked for the phone digits
/// (`PHONE_CONFIRMATION_REQUIRED`), pays on the same order with the right digits and a new
/// capture, never with wrong ones; a look-alike of a member is asked, and its twin's digits
/// do not pay either.
#[tokio::test]
async fn an_unsure_face_is_asked_for_the_phone_digits_and_pays_with_the_right_ones_only() {
    let app = spawn_app().await;
    let enrol = |payer: &str, axis: usize, phone: &str| {
        let body = json!({"payer_id": payer, "embedding": crate::support::app::face(axis), "phone_last4": phone});
        app.event("face_enrolled", body, false)
    };
    for (payer, axis, phone) in [("u-dave", 7, "4321"), ("u-erin", 10, "1111")] {
        assert_eq!(app.post(&enrol(payer, axis, phone)).await.0, 202);
        let fund = json!({"payer_id": payer, "amount": "100.00"});
        assert_eq!(app.post(&app.event("account_funded", fund, false)).await.0, 202);
    }
    app.open_card(10, "100000000000000700", "C0700").await;
    let attempt = |code: &str, face: Vec<f32>, phone: Option<&str>, order: &str| {
        let mut capture = json!({"face_code": code, "embedding": face, "liveness": 0.99});
        if let Some(p) = phone {
            capture["phone_last4"] = p.into();
        }
        let pay = json!({"out_trade_no": order, "amount": "5.00", "face_code": code});
        (app.event("face_captured", capture, true), app.event("payment_requested", pay, true))
    };
    let order = |o: &str| format!("/v1/merchants/{MERCHANT}/orders/{o}");
    let decided = |o: String, status: &'static str, reason: Option<&'static str>| {
        let app = &app;
        async move {
            app.until(&o, |v| v["status"] == status && v["reason"].as_str() == reason).await;
        }
    };
    for (code, face, phone, o, status, reason) in [
        ("100000000000000701", face_near(7, 0.45, 8), None, "P-1", "DECLINED", Some("PHONE_CONFIRMATION_REQUIRED")),
        ("100000000000000702", face_near(7, 0.62, 9), Some("0000"), "P-2", "DECLINED", Some("IDENTITY_UNRESOLVED")),
        ("100000000000000703", face_near(7, 0.62, 9), Some("4321"), "P-1", "PAID", None),
        ("100000000000000704", face_near(10, 0.50, 11), None, "P-3", "DECLINED", Some("PHONE_CONFIRMATION_REQUIRED")),
        ("100000000000000705", face_near(10, 0.50, 12), Some("1111"), "P-3", "DECLINED", Some("IDENTITY_UNRESOLVED")),
    ] {
        let (capture, pay) = attempt(code, face, phone, o);
        assert_eq!(app.post(&capture).await.0, 202);
        assert_eq!(app.post(&pay).await.0, 202);
        decided(order(o), status, reason).await;
    }
    let paid = app.eventually(&order("P-1")).await;
    assert_eq!((paid["payer_id"].as_str(), paid["member_quick_pay"].as_bool()), (Some("u-dave"), Some(false)));
    let (_, erin) = app.get("/v1/payers/u-erin/balance").await;
    assert_eq!(erin["balance"], "100.00", "the member's look-alike paid nothing: {erin}");
}
