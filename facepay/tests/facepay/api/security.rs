//! Devices are untrusted (issue 19): each numbered finding of the issue, tried again over
//! HTTP as an attacker with a valid device key (or none) would, against the real app. The
//! threat model in `docs/SECURITY.md` names these tests.

use crate::support::app::{
    signature, spawn_app, spawn_app_with, TestApp, DEVICE, MERCHANT, OTHER_DEVICE, OTHER_MERCHANT,
};
use facepay_domain::time::Clock;
use serde_json::{json, Value};

/// A device event the test's device sends, claiming to have occurred at `claim`.
fn claimed(app: &TestApp, kind: &str, payload: Value, claim: &str) -> Value {
    let mut v = app.event(kind, payload, true);
    v["occurred_at"] = claim.into();
    v
}

/// `app`'s device captures payer `axis`'s face as `code` and pays `amount` for `order`,
/// claiming `claim` for the payment; the answer to the payment's POST.
async fn pay_claiming(app: &TestApp, axis: usize, code: &str, order: &str, amount: &str, claim: &str) -> (u16, Value) {
    app.capture(axis, code).await;
    let pay = json!({"out_trade_no": order, "amount": amount, "face_code": code});
    app.post(&claimed(app, "payment_requested", pay, claim)).await
}

/// Finding 1: the daily cap counts the platform's day. Claims far from the accept time are
/// refused; a claim inside the window across midnight still counts on the platform's day.
#[tokio::test]
async fn finding_1_a_device_chosen_occurred_at_never_escapes_the_daily_cap() {
    let app = spawn_app().await;
    app.payer("u-cap", 1, "5000.00").await;
    let order = |o: &str| format!("/v1/merchants/{MERCHANT}/orders/{o}");
    let now = app.clock.now().to_rfc3339();
    assert_eq!(pay_claiming(&app, 1, "100000000000000101", "C-1", "900.00", &now).await.0, 202);
    assert_eq!(app.eventually(&order("C-1")).await["status"], "PAID");
    let now = app.clock.now().to_rfc3339();
    assert_eq!(pay_claiming(&app, 1, "100000000000000102", "C-2", "900.00", &now).await.0, 202);
    assert_eq!(app.eventually(&order("C-2")).await["reason"], "DAILY_AMOUNT_CAP");
    // Dated 2001 or 2030: refused for the claim, kept with the reason, nothing decided.
    for (n, claim) in [(3, "2001-01-01T00:00:00Z"), (4, "2030-06-01T00:00:00Z")] {
        let (status, body) =
            pay_claiming(&app, 1, &format!("10000000000000010{n}"), &format!("C-{n}"), "900.00", claim).await;
        assert_eq!(
            (status, body["code"].as_str(), body["field"].as_str()),
            (400, Some("occurred_at_skew"), Some("occurred_at"))
        );
    }
    // Past Shanghai midnight by the platform's clock, a payment claiming 23:58 of the day
    // before counts on the new day (and pays: the new day's cap is untouched); the next,
    // claiming a minute ahead, meets the new day's cap.
    app.clock.advance_to("2026-03-02T16:01:00Z".parse().unwrap());
    let (status, _) = pay_claiming(&app, 1, "100000000000000105", "C-5", "900.00", "2026-03-02T15:58:00Z").await;
    assert_eq!(status, 202);
    assert_eq!(app.eventually(&order("C-5")).await["status"], "PAID");
    let (_, _) = pay_claiming(&app, 1, "100000000000000106", "C-6", "900.00", "2026-03-02T16:03:00Z").await;
    assert_eq!(app.eventually(&order("C-6")).await["reason"], "DAILY_AMOUNT_CAP");
    let history = |day: &str| format!("/v1/merchants/{MERCHANT}/transactions?date={day}&status=PAID");
    for (day, paid) in [("2026-03-02", 1), ("2026-03-03", 1), ("2001-01-01", 0), ("2030-06-01", 0)] {
        assert_eq!(app.get(&history(day)).await.1["items"].as_array().unwrap().len(), paid, "{day}");
    }
    let (_, kept) = app.get("/v1/rejected-events").await;
    let skewed = kept["items"].as_array().unwrap().iter().filter(|r| r["reason_code"] == "occurred_at_skew").count();
    assert_eq!(skewed, 2, "{kept}");
}

/// Finding 2: a forward-dated event moves no clock. Another merchant's order left unpaid is
/// revoked 45 s after its creation by the platform's clock, not at once.
#[tokio::test]
async fn finding_2_a_forward_dated_event_does_not_move_the_ledgers_clock() {
    let app = spawn_app().await;
    // The other merchant's device leaves an order unpaid (a face nobody enrolled).
    let capture =
        json!({"face_code": "200000000000000001", "embedding": crate::support::app::face(9), "liveness": 0.99});
    let theirs = |kind: &str, payload: Value| {
        let mut v = app.event(kind, payload, true);
        (v["merchant_id"], v["device_id"]) = (OTHER_MERCHANT.into(), OTHER_DEVICE.into());
        v
    };
    for body in [
        theirs("face_captured", capture),
        theirs(
            "payment_requested",
            json!({"out_trade_no": "W-1", "amount": "1.00", "face_code": "200000000000000001"}),
        ),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        let sig = signature(&app.keys.other_device, &bytes, app.now());
        assert_eq!(app.post_bytes(bytes, None, Some(&sig)).await.0, 202);
    }
    let order = format!("/v1/merchants/{OTHER_MERCHANT}/orders/W-1");
    assert_eq!(app.eventually(&order).await["status"], "DECLINED");
    // This merchant's device sends an event dated 2030: refused, and nothing moves.
    let (status, _) =
        app.post(&claimed(&app, "payment_query", json!({"out_trade_no": "W-1"}), "2030-06-01T00:00:00Z")).await;
    assert_eq!(status, 400);
    app.wait(20);
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await; // two sweeps at least
    assert_eq!(app.get(&order).await.1["status"], "DECLINED", "not revoked before its 45 s");
    // Past 45 s (and the sweep's 15 s slack) of the platform's clock, it is.
    app.wait(45);
    let revoked = app.until(&order, |o| o["status"] == "REVOKED").await;
    let (created, updated) = (revoked["created_at"].as_str().unwrap(), revoked["updated_at"].as_str().unwrap());
    let age = updated.parse::<chrono::DateTime<chrono::Utc>>().unwrap()
        - created.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert_eq!(age, chrono::Duration::seconds(45), "revoked as of its deadline");
}

/// Finding 3: no device event names a payer. A Pay Score order or a member card naming one
/// is refused (its face code is missing); by face, a Pay Score order needs the payer's
/// authorisation of that merchant, and a capture authorises one thing once.
#[tokio::test]
async fn finding_3_a_device_cannot_charge_or_bind_a_payer_it_names() {
    let app = spawn_app().await;
    app.payer("u-victim", 2, "500.00").await;
    let balance = "/v1/payers/u-victim/balance";
    for (kind, payload) in [
        ("pay_score_order_created", json!({"out_order_no": "PS-1", "payer_id": "u-victim", "hold_amount": "200.00"})),
        ("member_card_opened", json!({"payer_id": "u-victim", "card_code": "C-1", "channel": "card_package"})),
    ] {
        let (status, body) = app.post(&app.event(kind, payload, true)).await;
        assert_eq!((status, body["field"].as_str()), (400, Some("payload.face_code")), "{kind}: {body}");
    }
    // By face, without the payer's authorisation: refused, nothing held.
    app.capture(2, "100000000000000201").await;
    let order = json!({"out_order_no": "PS-2", "face_code": "100000000000000201", "hold_amount": "200.00"});
    assert_eq!(app.post(&app.event("pay_score_order_created", order, true)).await.0, 202);
    app.until("/v1/rejected-events", |r| r.to_string().contains("PAY_SCORE_NOT_AUTHORISED")).await;
    assert_eq!(app.get(balance).await.1["held"], "0.00");
    // The payer authorises by face; the spent capture cannot order, a fresh one can.
    app.capture(2, "100000000000000202").await;
    let authorise = json!({"face_code": "100000000000000202"});
    assert_eq!(app.post(&app.event("pay_score_authorised", authorise, true)).await.0, 202);
    let reused = json!({"out_order_no": "PS-3", "face_code": "100000000000000202", "hold_amount": "200.00"});
    assert_eq!(app.post(&app.event("pay_score_order_created", reused, true)).await.0, 202);
    app.until("/v1/rejected-events", |r| r.to_string().contains("CAPTURE_USED")).await;
    app.capture(2, "100000000000000203").await;
    let fresh = json!({"out_order_no": "PS-4", "face_code": "100000000000000203", "hold_amount": "200.00"});
    assert_eq!(app.post(&app.event("pay_score_order_created", fresh, true)).await.0, 202);
    app.until(balance, |b| b["held"] == "200.00" && b["balance"] == "300.00").await;
    // Another merchant's device cannot use this device's capture.
    app.capture(2, "100000000000000204").await;
    let mut elsewhere = app.event(
        "member_card_opened",
        json!({"face_code": "100000000000000204", "card_code": "C-9", "channel": "card_package"}),
        true,
    );
    (elsewhere["merchant_id"], elsewhere["device_id"]) = (OTHER_MERCHANT.into(), OTHER_DEVICE.into());
    let bytes = serde_json::to_vec(&elsewhere).unwrap();
    let sig = signature(&app.keys.other_device, &bytes, app.now());
    assert_eq!(app.post_bytes(bytes, None, Some(&sig)).await.0, 202);
    app.until("/v1/rejected-events", |r| r.to_string().contains("IDENTITY_UNRESOLVED")).await;
    let (_, members) = app.get(&format!("/v1/merchants/{OTHER_MERCHANT}/members")).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 0, "{members}");
}

/// Finding 3b: a device key signs its own device's events only; naming its own merchant,
/// store and device on a platform or merchant event does not make that event its own.
#[tokio::test]
async fn finding_3b_a_device_cannot_fund_a_wallet_or_change_its_merchants_terms() {
    let app = spawn_app().await;
    app.payer("u-own", 3, "10.00").await;
    for (kind, payload) in [
        ("account_funded", json!({"payer_id": "u-own", "amount": "900.00"})),
        ("account_unfrozen", json!({"payer_id": "u-own"})),
        ("merchant_limit_changed", json!({"single_limit": "99999.00"})),
        ("merchant_fee_rate_changed", json!({"fee_rate_ppm": 0})),
    ] {
        let (status, body) = app.post(&app.event(kind, payload, true)).await;
        assert_eq!(
            (status, body["code"].as_str(), body["field"].as_str()),
            (403, Some("wrong_origin"), Some("device_id")),
            "{kind}: {body}"
        );
    }
    // Kept with their reason; the wallet has what the platform funded, no more.
    let kept = app.until("/v1/rejected-events", |r| r["items"].as_array().is_some_and(|i| i.len() >= 4)).await;
    assert_eq!(kept.to_string().matches("wrong_origin").count(), 4, "{kept}");
    let marker = app.event("account_funded", json!({"payer_id": "u-own", "amount": "0.01"}), false);
    assert_eq!(app.post(&marker).await.0, 202);
    app.until("/v1/payers/u-own/balance", |b| b["balance"] == "10.01").await;
}

/// Finding 4: before authentication, nothing is revealed: whatever the registry holds for
/// what the request names, the answer is the one 401 body.
#[tokio::test]
async fn finding_4_unauthenticated_callers_learn_nothing_of_the_registry() {
    let app = spawn_app().await;
    let named = |merchant: &str, store: &str, device: &str| {
        let mut v = app.event("payment_query", json!({"out_trade_no": "Q"}), true);
        (v["merchant_id"], v["store_id"], v["device_id"]) = (merchant.into(), store.into(), device.into());
        serde_json::to_vec(&v).unwrap()
    };
    let forged = format!("k={},t={},v1={}", "ab".repeat(12), app.now(), "00".repeat(32));
    let bodies = [
        named("no-such-merchant", "S01", DEVICE),
        named(MERCHANT, "S01", OTHER_DEVICE),
        named(MERCHANT, "S01", "DEV-GHOST"),
        named(MERCHANT, "S02", DEVICE),
        named(MERCHANT, "S01", DEVICE),
        b"not even json".to_vec(),
    ];
    let mut answers = Vec::new();
    for bytes in bodies {
        for sig in [forged.as_str(), "k=platform,t=0,v1=00", "garbage"] {
            let (status, mut body) = app.post_bytes(bytes.clone(), None, Some(sig)).await;
            body.as_object_mut().unwrap().remove("request_id");
            answers.push((status, body));
        }
    }
    let first = answers[0].clone();
    assert_eq!(first.0, 401);
    assert!(answers.iter().all(|a| *a == first), "one answer for all: {answers:?}");
    // Reads too: another tenant's order, another store's, and none at all answer alike.
    app.payer("u-alice", 1, "100.00").await;
    app.pay(1, "100000000000000001", "ORDER-1", "1.00").await;
    app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/ORDER-1")).await;
    let mut bodies = Vec::new();
    for (path, key) in [
        (format!("/v1/merchants/{MERCHANT}/orders/ORDER-1"), &app.keys.other_merchant),
        (format!("/v1/merchants/{MERCHANT}/orders/NOPE"), &app.keys.merchant),
        (format!("/v1/merchants/{OTHER_MERCHANT}/orders/NOPE"), &app.keys.merchant),
    ] {
        let (status, mut body) = app.get_as(&path, Some(key)).await;
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push((status, body));
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]) && bodies[0].0 == 404, "{bodies:?}");
}

/// Finding 5: unauthenticated input writes nothing and is throttled per source address.
#[tokio::test]
async fn finding_5_unauthenticated_input_writes_nothing_and_is_throttled() {
    let app = spawn_app_with(|a| a.with_failure_limit(2, 20)).await;
    let padding = "x".repeat(60_000);
    let (mut unauthorised, mut throttled) = (0, 0);
    for n in 0..200 {
        let mut v = app.event("payment_query", json!({"out_trade_no": "Q", "pad": padding}), true);
        v["event_id"] = uuid::Uuid::new_v4().to_string().into();
        let sig = format!("k={},t={},v1={:064x}", "ab".repeat(12), app.now(), n);
        let r = app
            .http
            .post(format!("{}/v1/events", app.base))
            .header("facepay-signature", sig)
            .json(&v)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => unauthorised += 1,
            429 => {
                assert!(r.headers().get("retry-after").is_some());
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["code"], "rate_limited");
                throttled += 1;
            }
            other => panic!("{other}"),
        }
    }
    assert!((20..30).contains(&unauthorised) && throttled >= 170, "{unauthorised} 401, {throttled} 429");
    // Wrong API keys count against the same budget.
    let forged = format!("fpk_{}_{}", "ab".repeat(12), "1".repeat(64));
    assert_eq!(app.get_as("/v1/audit", Some(&forged)).await.0, 429);
    // The address is throttled for every request now, whatever it carries: the store shows
    // nothing was kept of the flood.
    assert_eq!(app.get_as("/v1/audit", Some(&app.keys.admin)).await.0, 429);
    assert!(app.store.rejected(100).await.unwrap().is_empty(), "nothing kept of it");
    let metrics = facepay_ingest::metrics::METRICS.render();
    assert!(metrics.contains("facepay_unauthenticated_total{source=\"http_throttled\"}"), "{metrics}");
}

/// Finding 6: every failure answers the one error body, axum's own rejections included, and
/// a route checks the caller's role before it reads the query or the body.
#[tokio::test]
async fn finding_6_every_failure_has_the_one_error_body_and_roles_come_first() {
    let app = spawn_app().await;
    let url = |p: &str| format!("{}{p}", app.base);
    let k = &app.keys;
    let h = &app.http;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, Option<&str>)> = vec![
        (
            h.post(url("/v1/keys")).bearer_auth(&k.admin).header("content-type", "text/plain").body("{}"),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            h.post(url("/v1/keys")).bearer_auth(&k.admin).header("content-type", "application/json").body("{bad"),
            400,
            "malformed",
            Some("."),
        ),
        (h.post(url("/v1/keys")).bearer_auth(&k.admin).json(&json!({"role": 5})), 400, "invalid", Some("role")),
        (
            h.post(url("/v1/keys")).bearer_auth(&k.admin).json(&json!({"role": "admin", "label": "x".repeat(70_000)})),
            413,
            "payload_too_large",
            None,
        ),
        (h.post(url("/v1/events")).bearer_auth(&k.admin).body(vec![b' '; 70_000]), 413, "payload_too_large", None),
        (
            h.post(url("/v1/events")).bearer_auth(&k.admin).json(&app.event(
                "payment_query",
                json!({"out_trade_no": "Q"}),
                true,
            )),
            403,
            "forbidden",
            None,
        ),
        (h.get(url("/v1/rejected-events?limit=-1")).bearer_auth(&k.finance), 400, "invalid", Some("limit")),
        (h.get(url("/v1/rejected-events?limit=abc")).bearer_auth(&k.finance), 400, "invalid", Some("limit")),
        (h.get(url("/v1/rejected-events?limit=0")).bearer_auth(&k.finance), 400, "out_of_range", Some("limit")),
        (
            h.get(url("/v1/reconciliation/breaks?unresolved=maybe")).bearer_auth(&k.finance),
            400,
            "invalid",
            Some("unresolved"),
        ),
        (h.get(url("/v1/nowhere")).bearer_auth(&k.finance), 404, "not_found", None),
        (h.delete(url("/v1/audit")).bearer_auth(&k.admin), 405, "method_not_allowed", None),
        (
            h.get(url(&format!("/v1/audit?cursor={}", "9".repeat(9_000)))).bearer_auth(&k.admin),
            414,
            "uri_too_long",
            None,
        ),
        // The role check comes before the body and the query are read.
        (
            h.post(url("/v1/keys")).bearer_auth(&k.merchant).header("content-type", "application/json").body("{bad"),
            403,
            "forbidden",
            None,
        ),
        (
            h.post(url("/v1/reconciliation/bills?date=nonsense")).bearer_auth(&k.merchant).body("x"),
            403,
            "forbidden",
            None,
        ),
        (h.get(url("/v1/rejected-events?limit=abc")).bearer_auth(&k.merchant), 403, "forbidden", None),
    ];
    for (req, status, code, field) in cases {
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let json = r.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(json, "{status} {code}: {body}");
        assert_eq!((got, body["code"].as_str(), body["field"].as_str()), (status, Some(code), field), "{body}");
        assert!(!body["request_id"].as_str().unwrap_or_default().is_empty(), "{body}");
    }
}

/// Finding 7: the smaller ones. A store key learns nothing of a sibling store's orders;
/// keys refuse unknown stores and long labels; money strings are canonical; a refused
/// capture keeps no embedding in plain text.
#[tokio::test]
async fn finding_7_stores_keys_money_and_kept_embeddings() {
    let app = spawn_app().await;
    // A second store's device of the same merchant pays an order.
    let s2 = facepay_domain::DeviceRef {
        merchant_id: facepay_domain::MerchantId::parse(MERCHANT).unwrap(),
        store_id: facepay_domain::StoreId::parse("S02").unwrap(),
        device_id: facepay_domain::DeviceId::parse("DEV-S2").unwrap(),
    };
    app.store.register_device(&s2).await.unwrap();
    app.payer("u-eve", 5, "100.00").await;
    // The running app reads the registry again within REGISTRY_REFRESH_MS.
    tokio::time::sleep(std::time::Duration::from_millis(facepay_domain::limits::REGISTRY_REFRESH_MS + 500)).await;
    let (s2_key, _) = {
        let spec = facepay_api::auth::NewKey {
            role: facepay_domain::auth::Role::Device,
            merchant_id: Some(s2.merchant_id.clone()),
            store_id: Some(s2.store_id.clone()),
            device_id: Some(s2.device_id.clone()),
            label: "S02".into(),
            expires_in_days: None,
        };
        let (_, token) = app.auth.create_key(spec, &facepay_api::auth::Actor::cli()).await.unwrap();
        (token, ())
    };
    for (kind, payload) in [
        (
            "face_captured",
            json!({"face_code": "100000000000000501", "embedding": crate::support::app::face(5), "liveness": 0.99}),
        ),
        ("payment_requested", json!({"out_trade_no": "S2-1", "amount": "1.00", "face_code": "100000000000000501"})),
    ] {
        let mut v = app.event(kind, payload, true);
        (v["store_id"], v["device_id"]) = ("S02".into(), "DEV-S2".into());
        let bytes = serde_json::to_vec(&v).unwrap();
        let sig = signature(&s2_key, &bytes, app.now());
        assert_eq!(app.post_bytes(bytes, None, Some(&sig)).await.0, 202);
    }
    app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/S2-1")).await;
    let strip = |(s, mut b): (u16, Value)| {
        b.as_object_mut().unwrap().remove("request_id");
        (s, b)
    };
    let sibling = strip(app.get_as(&format!("/v1/merchants/{MERCHANT}/orders/S2-1"), Some(&app.keys.store)).await);
    let none = strip(app.get_as(&format!("/v1/merchants/{MERCHANT}/orders/NOPE"), Some(&app.keys.store)).await);
    assert_eq!(sibling, none);
    assert_eq!(sibling.0, 404);

    let key = |spec: Value| {
        let r = app.http.post(format!("{}/v1/keys", app.base)).bearer_auth(&app.keys.admin).json(&spec);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(key(json!({"role": "merchant", "merchant_id": MERCHANT, "store_id": "S99"})).await, 422);
    assert_eq!(key(json!({"role": "merchant", "merchant_id": MERCHANT, "label": "x".repeat(60_000)})).await, 422);
    assert_eq!(key(json!({"role": "merchant", "merchant_id": MERCHANT, "store_id": "S02", "label": "ok"})).await, 201);

    for amount in ["60.", ".5", "060.00", "1e2", "+5"] {
        let pay = json!({"out_trade_no": "M-1", "amount": amount, "face_code": "100000000000000509"});
        let (status, body) = app.post(&app.event("payment_requested", pay, true)).await;
        assert_eq!((status, body["field"].as_str()), (400, Some("payload.amount")), "{amount}: {body}");
    }
    let mut embedding = vec![0.25_f32; 511];
    embedding[7] = 0.125;
    let capture =
        json!({"face_code": "100000000000000510", "embedding": embedding, "liveness": 0.9, "phone_last4": "7391"});
    assert_eq!(app.post(&app.event("face_captured", capture, true)).await.0, 400);
    let kept = app.store.rejected(100).await.unwrap();
    let raw: Vec<String> = kept.iter().map(|r| String::from_utf8_lossy(&r.raw).into_owned()).collect();
    let capture_kept = raw.iter().find(|r| r.contains("100000000000000510")).expect("the refused capture is kept");
    assert!(
        !capture_kept.contains("0.25") && !capture_kept.contains("0.125") && !capture_kept.contains("7391"),
        "{capture_kept}"
    );
    assert!(capture_kept.contains("sha256:"), "{capture_kept}");
}
