//! Authentication, roles, tenant isolation, device signatures, rate limits, audit and
//! privacy, against the real app over HTTP.

use crate::support::app::{signature, spawn_app, spawn_app_with, TestApp, DEVICE, MERCHANT, OTHER_MERCHANT};
use serde_json::{json, Value};

/// One paid order of MERCHANT (payer u-alice), for the routes to find.
async fn with_an_order() -> TestApp {
    let app = spawn_app().await;
    app.payer("u-alice", 1, "100.00").await;
    app.pay(1, "100000000000000001", "ORDER-1", "60.00").await;
    app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/ORDER-1")).await;
    app.open_card(1, "100000000000000002", "C0001").await;
    app
}

/// A failure body: the one error shape, and nothing of anyone's data.
fn assert_no_data(route: &str, who: &str, body: &Value) {
    let keys: Vec<&str> = body.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    assert!(keys.iter().all(|k| ["code", "message", "field", "request_id"].contains(k)), "{route} {who}: {body}");
    assert!(!body["request_id"].as_str().unwrap_or_default().is_empty(), "{route} {who}: {body}");
    let text = body.to_string();
    assert!(!text.contains("ORDER-1") && !text.contains("u-alice"), "{route} {who} leaks: {text}");
}

#[tokio::test]
async fn every_route_times_every_role_and_tenant() {
    let app = with_an_order().await;
    let k = &app.keys;
    let m = MERCHANT;
    // Expected status per principal: admin, finance, merchant, store key, device, other
    // merchant, other device, no key, a forged key.
    let forged = format!("fpk_{}_{}", "0".repeat(24), "1".repeat(64));
    let who: [(&str, Option<&str>); 9] = [
        ("admin", Some(&k.admin)),
        ("finance", Some(&k.finance)),
        ("merchant", Some(&k.merchant)),
        ("store", Some(&k.store)),
        ("device", Some(&k.device)),
        ("other merchant", Some(&k.other_merchant)),
        ("other device", Some(&k.other_device)),
        ("none", None),
        ("forged", Some(&forged)),
    ];
    let routes: [(String, [u16; 9]); 8] = [
        (format!("/v1/merchants/{m}/orders/ORDER-1"), [403, 200, 200, 200, 200, 404, 404, 401, 401]),
        (format!("/v1/merchants/{m}/transactions"), [403, 200, 200, 200, 403, 404, 403, 401, 401]),
        (format!("/v1/merchants/{m}/members"), [403, 200, 200, 403, 403, 404, 403, 401, 401]),
        (format!("/v1/merchants/{m}/settlement"), [403, 200, 200, 403, 403, 404, 403, 401, 401]),
        ("/v1/payers/u-alice/balance".into(), [200, 200, 403, 403, 403, 403, 403, 401, 401]),
        ("/v1/rejected-events".into(), [200, 200, 403, 403, 403, 403, 403, 401, 401]),
        ("/v1/keys".into(), [200, 403, 403, 403, 403, 403, 403, 401, 401]),
        ("/v1/audit".into(), [200, 200, 403, 403, 403, 403, 403, 401, 401]),
    ];
    for (route, want) in &routes {
        for ((name, key), want) in who.iter().zip(want) {
            let (status, body) = app.get_as(route, *key).await;
            assert_eq!(status, *want, "GET {route} as {name}: {body}");
            if status != 200 {
                assert_no_data(route, name, &body);
            }
        }
    }
    // Another tenant's ids answer exactly as ids that do not exist.
    let (ghost, _) = app.get_as(&format!("/v1/merchants/{m}/orders/NO-SUCH"), Some(&k.merchant)).await;
    let (theirs, _) = app.get_as(&format!("/v1/merchants/{m}/orders/ORDER-1"), Some(&k.other_merchant)).await;
    assert_eq!((ghost, theirs), (404, 404));
    // Writes: keys and platform events are for admin keys only.
    let spec = json!({"role": "finance"});
    for (name, key) in &who[1..] {
        let mut r = app.http.post(format!("{}/v1/keys", app.base)).json(&spec);
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        let status = r.send().await.unwrap().status().as_u16();
        assert!(status == 403 || status == 401, "POST /v1/keys as {name}: {status}");
        let fund = app.event("account_funded", json!({"payer_id": "u-alice", "amount": "1.00"}), false);
        let (status, body) = app.post_with(&fund, *key, None).await;
        assert!(status == 403 || status == 401, "a platform event from {name}: {status} {body}");
    }
}

#[tokio::test]
async fn keys_are_created_shown_once_listed_revoked_and_audited() {
    let app = spawn_app().await;
    let spec = json!({"role": "merchant", "merchant_id": MERCHANT, "label": "back office"});
    let r =
        app.http.post(format!("{}/v1/keys", app.base)).bearer_auth(&app.keys.admin).json(&spec).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let key_id = created["key"]["key_id"].as_str().unwrap().to_string();
    assert!(created["key"].get("secret_hash").is_none(), "no hash served: {created}");
    assert_eq!(app.get_as(&format!("/v1/merchants/{MERCHANT}/members"), Some(&token)).await.0, 200);

    let (_, listed) = app.get_as("/v1/keys", Some(&app.keys.admin)).await;
    assert!(!listed.to_string().contains(token.rsplit('_').next().unwrap()), "the secret is never listed");
    assert!(listed["items"].as_array().unwrap().iter().any(|k| k["key_id"] == key_id.as_str()));

    let bad_scope = json!({"role": "merchant", "merchant_id": "1999999999"});
    let r = app.http.post(format!("{}/v1/keys", app.base)).bearer_auth(&app.keys.admin).json(&bad_scope).send();
    assert_eq!(r.await.unwrap().status().as_u16(), 422, "a key for a merchant that does not exist");

    let r = app.http.delete(format!("{}/v1/keys/{key_id}", app.base)).bearer_auth(&app.keys.admin).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 204);
    let (status, body) = app.get_as(&format!("/v1/merchants/{MERCHANT}/members"), Some(&token)).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "revoked at once: {body}");
    let r = app.http.delete(format!("{}/v1/keys/{key_id}", app.base)).bearer_auth(&app.keys.admin).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 404, "revoked once");

    let (_, audit) = app.get_as("/v1/audit", Some(&app.keys.finance)).await;
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == key_id.as_str())
        .map(|e| (e["action"].as_str().unwrap(), e["role"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("key_revoked", "admin"), ("key_created", "admin")]);
}

#[tokio::test]
async fn admin_actions_are_audited_with_their_principal() {
    let app = spawn_app().await;
    app.payer("u-erin", 2, "10.00").await;
    assert_eq!(app.post(&app.event("account_frozen", json!({"payer_id": "u-erin"}), false)).await.0, 202);
    let mut limit = app.event("merchant_limit_changed", json!({"single_limit": "5000.00"}), false);
    limit["merchant_id"] = MERCHANT.into();
    assert_eq!(app.post(&limit).await.0, 202);
    let (_, audit) = app.get_as("/v1/audit?limit=50", Some(&app.keys.admin)).await;
    let find = |action: &str, subject: &str| {
        audit["items"].as_array().unwrap().iter().find(|e| e["action"] == action && e["subject"] == subject).cloned()
    };
    let frozen = find("account_frozen", "u-erin").expect("freeze audited");
    assert_eq!(frozen["role"], "admin");
    assert!(find("merchant_limit_changed", MERCHANT).is_some(), "{audit}");
    let admin_id = &app.keys.admin[4..28];
    assert_eq!(frozen["principal"], admin_id);
}

#[tokio::test]
async fn device_signatures_clock_and_replays() {
    let app = spawn_app().await;
    let ev = |app: &TestApp| app.event("payment_query", json!({"out_trade_no": "Q-1"}), true);

    let good = ev(&app);
    assert_eq!(app.post_signed(&good, &app.keys.device, app.now()).await.0, 202);
    let (status, body) = app.post_signed(&good, &app.keys.device, app.now()).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("replayed")), "{body}");

    // A stale signing time or a tampered body is not authentication: the one 401 body.
    let skewed = ev(&app);
    let (status, body) = app.post_signed(&skewed, &app.keys.device, app.now() - 301).await;
    assert_eq!((status, body["code"].as_str(), body["field"].as_str()), (401, Some("unauthorized"), None));
    assert_eq!(app.post_signed(&ev(&app), &app.keys.device, app.now() + 290).await.0, 202, "inside the window");

    let tampered = ev(&app);
    let bytes = serde_json::to_vec(&tampered).unwrap();
    let sig = signature(&app.keys.device, &bytes, app.now());
    let mut changed = tampered.clone();
    changed["payload"]["out_trade_no"] = "Q-2".into();
    let (status, body) = app.post_with(&changed, None, Some(&sig)).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");

    // Another merchant's device key cannot speak for this merchant's device: its sender is
    // known (the other device), so the refusal is kept.
    let (status, body) = app.post_signed(&ev(&app), &app.keys.other_device, app.now()).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("wrong_origin")), "{body}");
    // Nor can a device claim another merchant.
    let mut foreign = ev(&app);
    foreign["merchant_id"] = OTHER_MERCHANT.into();
    let (status, body) = app.post_signed(&foreign, &app.keys.device, app.now()).await;
    assert_eq!((status, body["code"].as_str(), body["field"].as_str()), (403, Some("wrong_origin"), Some("device_id")));
    // Unsigned and keyless: 401, and not kept (anyone could send it).
    let (status, _) = app.post_with(&ev(&app), None, None).await;
    assert_eq!(status, 401);

    let (_, kept) = app.get("/v1/rejected-events?limit=100").await;
    let mut reasons: Vec<&str> =
        kept["items"].as_array().unwrap().iter().map(|r| r["reason_code"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, ["replayed", "wrong_origin", "wrong_origin"], "only authenticated senders' refusals: {kept}");
    assert!(kept["items"].as_array().unwrap().iter().all(|r| r["source"] == "http"));
    let _ = DEVICE;
}

#[tokio::test]
async fn cursors_are_signed_and_bound_to_their_merchant() {
    let app = spawn_app().await;
    app.payer("u-bob", 2, "500.00").await;
    for i in 0..3 {
        app.pay(2, &format!("10000000000000010{i}"), &format!("H-{i}"), "10.00").await;
    }
    app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/H-2")).await;
    let path = format!("/v1/merchants/{MERCHANT}/transactions?limit=1");
    let (_, page) = app.get_as(&path, Some(&app.keys.merchant)).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (status, _) = app.get_as(&format!("{path}&cursor={cursor}"), Some(&app.keys.merchant)).await;
    assert_eq!(status, 200);
    // The position alone, a forged MAC, or the cursor on another merchant's history: 400.
    let position = cursor.split('.').next().unwrap();
    let forged = format!("{position}.{}", "0".repeat(32));
    for bad in [position.to_string(), forged] {
        let (status, body) = app.get_as(&format!("{path}&cursor={bad}"), Some(&app.keys.merchant)).await;
        assert_eq!((status, body["field"].as_str()), (400, Some("cursor")), "{bad}: {body}");
    }
    let theirs = format!("/v1/merchants/{OTHER_MERCHANT}/transactions?limit=1&cursor={cursor}");
    let (status, body) = app.get_as(&theirs, Some(&app.keys.other_merchant)).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("cursor")), "{body}");
}

#[tokio::test]
async fn merchants_see_their_own_openid_of_a_payer_never_the_internal_id() {
    let app = with_an_order().await;
    let path = format!("/v1/merchants/{MERCHANT}/orders/ORDER-1");
    let (_, as_finance) = app.get_as(&path, Some(&app.keys.finance)).await;
    assert_eq!(as_finance["payer_id"], "u-alice");
    let (_, as_merchant) = app.get_as(&path, Some(&app.keys.merchant)).await;
    let openid = as_merchant["payer_id"].as_str().unwrap().to_string();
    assert!(openid.starts_with("o_") && !openid.contains("alice"), "{openid}");
    let (_, history) = app.get_as(&format!("/v1/merchants/{MERCHANT}/transactions"), Some(&app.keys.merchant)).await;
    assert_eq!(history["items"][0]["payer_id"], openid.as_str(), "stable within the merchant");
    let mut members = Value::Null;
    for _ in 0..500 {
        members = app.get_as(&format!("/v1/merchants/{MERCHANT}/members"), Some(&app.keys.merchant)).await.1;
        if members["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(members["items"][0]["payer_id"], openid.as_str());
    assert!(!history.to_string().contains("u-alice") && !members.to_string().contains("u-alice"));
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|a| a.with_rate_limit(1, 3)).await;
    let path = format!("/v1/merchants/{MERCHANT}/members");
    for _ in 0..3 {
        assert_eq!(app.get_as(&path, Some(&app.keys.merchant)).await.0, 200);
    }
    let r = app.http.get(format!("{}{path}", app.base)).bearer_auth(&app.keys.merchant).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Per key: another key is untouched.
    assert_eq!(app.get_as(&path, Some(&app.keys.finance)).await.0, 200);
}

#[tokio::test]
async fn every_error_carries_the_request_id_it_was_answered_under() {
    let app = spawn_app().await;
    let r = app.http.get(format!("{}/v1/rejected-events", app.base)).header("x-request-id", "trace-42").send().await;
    let r = r.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["code"].as_str(), body["request_id"].as_str()), (Some("unauthorized"), Some("trace-42")));
    let r = app.http.get(format!("{}/health", app.base)).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 32, "one is made when none is given");
}

#[tokio::test]
async fn metrics_count_decisions_batches_and_refusals() {
    let app = with_an_order().await;
    let _ = app.post_signed(&app.event("payment_query", json!({"out_trade_no": "Z"}), true), &app.keys.device, 0).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, facepay_api::observe::metrics_router()).await });
    let text = app.http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |prefix: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("facepay_decisions_total{outcome=\"PAID\"}") >= 1);
    assert!(value("facepay_ledger_batch_size_count") >= 1);
    assert!(value("facepay_refused_input_total{reason=\"clock_skew\"}") >= 1, "{text}");
    // The order's capture was matched: the matcher's latency histogram counted it.
    assert!(value("facepay_match_seconds_count") >= 1, "{text}");
    assert!(
        text.contains("# TYPE facepay_broker_errors_total counter") && text.contains("# TYPE facepay_ingest_lag gauge")
    );
}

#[tokio::test]
async fn a_revoked_device_key_stops_signing_at_once() {
    let app = spawn_app().await;
    let ev = |app: &TestApp| app.event("payment_query", json!({"out_trade_no": "R-1"}), true);
    assert_eq!(app.post_signed(&ev(&app), &app.keys.device, app.now()).await.0, 202);
    let key_id = &app.keys.device[4..28];
    let r = app.http.delete(format!("{}/v1/keys/{key_id}", app.base)).bearer_auth(&app.keys.admin).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 204);
    let (status, body) = app.post_signed(&ev(&app), &app.keys.device, app.now()).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, _) = app.get_as(&format!("/v1/merchants/{MERCHANT}/orders/R-1"), Some(&app.keys.device)).await;
    assert_eq!(status, 401, "nor read as a bearer key");
}

#[tokio::test]
async fn a_store_key_sees_its_stores_transactions_only() {
    use facepay_ledger::store::HistoryFilter;
    let app = with_an_order().await;
    let (status, page) = app.get_as(&format!("/v1/merchants/{MERCHANT}/transactions"), Some(&app.keys.store)).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.iter().all(|i| i["store_id"] == "S01"), "{page}");
    // The filter is the store's: another store of the same merchant has none of these rows.
    let merchant = facepay_domain::MerchantId::parse(MERCHANT).unwrap();
    let of = |store: &str| HistoryFilter {
        store_id: Some(facepay_domain::StoreId::parse(store).unwrap()),
        limit: 50,
        ..Default::default()
    };
    assert_eq!(app.store.history(&merchant, &of("S01")).await.unwrap().len(), items.len());
    assert!(app.store.history(&merchant, &of("S02")).await.unwrap().is_empty());
    // Asking for its own store is its page; for another store, the same 404 as nothing.
    let own = app.get_as(&format!("/v1/merchants/{MERCHANT}/transactions?store_id=S01"), Some(&app.keys.store)).await;
    assert_eq!((own.0, own.1["items"].as_array().unwrap().len()), (200, items.len()));
    let other = app.get_as(&format!("/v1/merchants/{MERCHANT}/transactions?store_id=S02"), Some(&app.keys.store)).await;
    assert_eq!(other.0, 404, "{}", other.1);
    // A whole-merchant key filters by store and by device.
    let by = |q: &str| format!("/v1/merchants/{MERCHANT}/transactions?{q}");
    let s02 = app.get_as(&by("store_id=S02"), Some(&app.keys.merchant)).await;
    assert_eq!((s02.0, s02.1["items"].as_array().unwrap().len()), (200, 0));
    let device = app.get_as(&by(&format!("device_id={DEVICE}")), Some(&app.keys.merchant)).await;
    assert!(device.1["items"].as_array().unwrap().iter().all(|i| i["device_id"] == DEVICE), "{}", device.1);
    assert!(!device.1["items"].as_array().unwrap().is_empty());
    let bad = app.get_as(&by("device_id=%20"), Some(&app.keys.merchant)).await;
    assert_eq!((bad.0, bad.1["field"].as_str()), (400, Some("device_id")), "{}", bad.1);
    // Merchant-wide views stay closed to it.
    let (status, _) = app.get_as(&format!("/v1/merchants/{MERCHANT}/settlement"), Some(&app.keys.store)).await;
    assert_eq!(status, 403);
}
