//! The console over real HTTP, as a browser without script would use it: sign-in and its
//! cookie, the security headers, CSRF, tenant isolation, revocation, the pages' data, the
//! languages. (The same in a real browser, with accessibility checks: console-tests/.)

use std::collections::BTreeMap;

use crate::support::app::{spawn_app, spawn_app_with, TestApp, DEVICE, MERCHANT, OTHER_MERCHANT};

/// A cookie-keeping client that follows no redirect (each answer is asserted as sent).
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
    lang: &'static str,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self.body.find(r#"name="csrf" value=""#).expect("a csrf field") + r#"name="csrf" value=""#.len();
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: app.base.clone(), cookies: BTreeMap::new(), lang: "en" }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let resp = req.header("cookie", cookie).header("accept-language", self.lang).send().await.unwrap();
        for set in resp.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            match v.is_empty() {
                true => self.cookies.remove(k),
                false => self.cookies.insert(k.to_string(), v.to_string()),
            };
        }
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        Answer { status, headers, body: resp.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(req).await
    }

    async fn sign_in(&mut self, token: &str) -> Answer {
        let csrf = self.get("/console/sign-in").await.csrf();
        self.post("/console/sign-in", &[("token", token), ("csrf", &csrf)]).await
    }
}

async fn app_with_an_order() -> TestApp {
    let app = spawn_app().await;
    app.payer("u-alice", 1, "100.00").await;
    app.pay(1, "100000000000000001", "ORDER-1", "60.00").await;
    app.eventually(&format!("/v1/merchants/{MERCHANT}/orders/ORDER-1")).await;
    app.open_card(1, "100000000000000002", "C0001").await;
    app.until(&format!("/v1/merchants/{MERCHANT}/members"), |v| v.to_string().contains("C0001")).await;
    app
}

#[tokio::test]
async fn a_key_is_exchanged_for_an_http_only_strict_session_and_never_reaches_the_page() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    let signed = b.sign_in(&app.keys.merchant).await;
    assert_eq!((signed.status, signed.location()), (303, "/console"));
    let set: Vec<&str> = signed.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    let session = set.iter().find(|c| c.starts_with("fp_session=")).expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict") && session.contains("Path=/console"));
    let home = b.get("/console").await;
    assert_eq!((home.status, home.location()), (303, format!("/console/merchants/{MERCHANT}").as_str()));
    let page = b.get(&format!("/console/merchants/{MERCHANT}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let secret = app.keys.merchant.rsplit('_').next().unwrap();
    assert!(!page.body.contains(secret), "the key's secret is never on a page");
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
    assert_eq!(page.headers.get("cache-control").unwrap(), "no-store");
    assert!(!page.body.contains("<script"), "no script at all");
    // Signing in again (as another key) ends the session the browser held.
    let before = b.cookies.clone();
    assert_eq!(b.sign_in(&app.keys.finance).await.status, 303);
    let mut stale = Browser::new(&app);
    stale.cookies = before;
    assert_eq!(stale.get("/console/merchants/x").await.location(), "/console/sign-in");
    let page = b.get("/console/finance/runs").await;
    // Signed out: the session is gone, the old cookie opens nothing.
    let old = b.cookies.clone();
    let csrf = page.csrf();
    assert_eq!(b.post("/console/sign-out", &[("csrf", &csrf)]).await.status, 303);
    b.cookies = old;
    assert_eq!(b.get("/console/merchants/x").await.location(), "/console/sign-in");
}

#[tokio::test]
async fn a_wrong_key_and_a_sign_in_posted_from_elsewhere_start_no_session() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    let forged = format!("fpk_{}_{}", "0".repeat(24), "1".repeat(64));
    let failed = b.sign_in(&forged).await;
    assert_eq!(failed.status, 401);
    assert!(failed.body.contains("Sign-in failed"), "{}", failed.body);
    assert!(!b.cookies.contains_key("fp_session"));
    // No sign-in cookie (another site's form): refused before the key is looked at.
    let mut other = Browser::new(&app);
    let posted = other.post("/console/sign-in", &[("token", &app.keys.admin), ("csrf", "x")]).await;
    assert_eq!(posted.status, 403);
    assert!(!other.cookies.contains_key("fp_session"));
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_nothing_is_done() {
    let app = spawn_app().await;
    let before = app.get_as("/v1/keys", Some(&app.keys.admin)).await.1["items"].as_array().unwrap().len();
    let mut b = Browser::new(&app);
    b.sign_in(&app.keys.admin).await;
    for csrf in [None, Some("0".repeat(64))] {
        let mut form = vec![("role", "finance"), ("label", "forged")];
        if let Some(c) = &csrf {
            form.push(("csrf", c));
        }
        let refused = b.post("/console/admin/keys", &form).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.body.contains("expired"), "{}", refused.body);
    }
    let after = app.get_as("/v1/keys", Some(&app.keys.admin)).await.1["items"].as_array().unwrap().len();
    assert_eq!(before, after, "no key was made");
    // With it, the key is made and its token shown once.
    let csrf = b.get("/console/admin/keys").await.csrf();
    let made = b.post("/console/admin/keys", &[("csrf", &csrf), ("role", "finance"), ("label", "console")]).await;
    assert_eq!((made.status, made.location()), (303, "/console/admin/keys"), "{}", made.body);
    assert!(b.get("/console/admin/keys").await.body.contains(r#"class="token""#), "the token, once");
    assert!(!b.get("/console/admin/keys").await.body.contains(r#"class="token""#), "and never again");
}

#[tokio::test]
async fn another_tenants_page_a_page_of_another_role_and_no_page_are_the_same_404() {
    let app = app_with_an_order().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.keys.merchant).await;
    let mut bodies = Vec::new();
    for path in [
        format!("/console/merchants/{OTHER_MERCHANT}/transactions"),
        format!("/console/merchants/{OTHER_MERCHANT}/orders/ORDER-1"),
        "/console/finance/breaks".to_string(),
        "/console/admin/keys".to_string(),
        "/console/no-such-page".to_string(),
    ] {
        let a = b.get(&path).await;
        assert_eq!(a.status, 404, "{path}");
        bodies.push(a.body.replace(&path, ""));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one 404 page");
    assert!(!bodies[0].contains("ORDER-1"));
    // A store key sees its store's attempts, not the whole merchant's members.
    let mut s = Browser::new(&app);
    s.sign_in(&app.keys.store).await;
    assert_eq!(s.get(&format!("/console/merchants/{MERCHANT}/members")).await.status, 404);
    assert_eq!(s.get(&format!("/console/merchants/{MERCHANT}/transactions")).await.status, 200);
}

#[tokio::test]
async fn a_revoked_key_ends_its_sessions_at_once() {
    let app = spawn_app().await;
    let mut admin = Browser::new(&app);
    admin.sign_in(&app.keys.admin).await;
    let csrf = admin.get("/console/admin/keys").await.csrf();
    admin.post("/console/admin/keys", &[("csrf", &csrf), ("role", "finance"), ("label", "soon gone")]).await;
    let made = admin.get("/console/admin/keys").await;
    let at = made.body.find("fpk_").unwrap();
    let token: String = made.body[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let key_id = token.split('_').nth(1).unwrap().to_string();
    let mut finance = Browser::new(&app);
    assert_eq!(finance.sign_in(&token).await.status, 303);
    assert_eq!(finance.get("/console/finance/runs").await.status, 200);
    let csrf = admin.get("/console/admin/keys").await.csrf();
    let revoked = admin.post(&format!("/console/admin/keys/{key_id}/revocation"), &[("csrf", &csrf)]).await;
    assert_eq!(revoked.status, 303);
    let after = finance.get("/console/finance/runs").await;
    assert_eq!((after.status, after.location()), (303, "/console/sign-in"));
    let audit = app.get_as("/v1/audit", Some(&app.keys.admin)).await.1.to_string();
    assert!(audit.contains("console_signed_in") && audit.contains("key_revoked"), "{audit}");
}

#[tokio::test]
async fn the_pages_show_what_the_api_serves_in_either_language() {
    let app = app_with_an_order().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.keys.merchant).await;
    let m = format!("/console/merchants/{MERCHANT}");
    let list = b.get(&format!("{m}/transactions")).await;
    assert!(list.body.contains("ORDER-1") && list.body.contains("¥60.00") && list.body.contains("Transactions"));
    let elsewhere = b.get(&format!("{m}/transactions?store_id=S02&device_id=")).await;
    assert!(elsewhere.status == 200 && !elsewhere.body.contains("ORDER-1"), "the store filter");
    let csv = b.get(&format!("{m}/transactions.csv?device_id={DEVICE}")).await;
    assert_eq!(csv.headers.get("content-type").unwrap(), "text/csv; charset=utf-8");
    assert!(csv.body.starts_with("occurred_at,") && csv.body.contains(",ORDER-1,60.00,PAID,"), "{}", csv.body);
    let order = b.get(&format!("{m}/orders/ORDER-1")).await;
    assert!(order.body.contains(r#"data-figure="status">PAID"#), "{}", order.body);
    let members = b.get(&format!("{m}/members")).await;
    assert!(members.body.contains("C0001"));
    assert!(!members.body.contains("u-alice"), "a merchant sees openids, not payer ids");
    let settlement = b.get(&format!("{m}/settlement")).await;
    assert!(settlement.body.contains("<svg") && settlement.body.contains("¥60.00"), "{}", settlement.body);
    let day = app.get_as(&format!("/v1/merchants/{MERCHANT}/glance"), Some(&app.keys.merchant)).await.1;
    let overview = b.get(&format!("{m}?date={}", day["day"].as_str().unwrap())).await;
    assert!(overview.body.contains(r#"data-figure="paid"><span class="money">¥60.00"#), "{}", overview.body);
    b.lang = "zh-CN,zh;q=0.9";
    assert!(b.get(&format!("{m}/transactions")).await.body.contains("交易"));
    let switched = b.get(&format!("/console/lang?to=en&back={m}/transactions")).await;
    assert_eq!(switched.location(), format!("{m}/transactions"));
    assert!(b.get(&format!("{m}/transactions")).await.body.contains("Transactions"), "the switch wins");
    let elsewhere = b.get("/console/lang?to=en&back=//evil.example/").await;
    assert_eq!(elsewhere.location(), "/console", "never a redirect off the console");
}

/// A multipart body of `fields` (name, file name, value), as a browser sends a form.
fn multipart(fields: &[(&str, Option<&str>, &str)]) -> (String, String) {
    let boundary = "----facepay-console-test";
    let mut body = String::new();
    for (name, file, value) in fields {
        let file = file.map(|f| format!("; filename=\"{f}\"\r\nContent-Type: text/csv")).unwrap_or_default();
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn finance_uploads_a_bill_and_resolves_a_break_through_the_console_and_both_are_audited() {
    let app = spawn_app().await;
    let runs = || app.get_as("/v1/reconciliation/runs", Some(&app.keys.finance));
    let mut b = Browser::new(&app);
    b.sign_in(&app.keys.finance).await;
    let csrf = b.get("/console/finance/runs").await.csrf();
    let bill = super::reconcile_http::SAMPLE;
    // Without its CSRF token first, the upload is refused and nothing is imported.
    let (kind, forged) = multipart(&[("date", None, "2026-03-02"), ("bill", Some("b.csv"), bill)]);
    let req = b.http.post(format!("{}/console/finance/bills", b.base)).header("content-type", &kind).body(forged);
    assert_eq!(b.send(req).await.status, 403);
    assert!(runs().await.1["items"].as_array().unwrap().is_empty(), "nothing imported");
    let (kind, body) = multipart(&[("csrf", None, &csrf), ("date", None, "2026-03-02"), ("bill", Some("b.csv"), bill)]);
    let req = b.http.post(format!("{}/console/finance/bills", b.base)).header("content-type", &kind).body(body);
    let up = b.send(req).await;
    assert_eq!(up.status, 303, "{}", up.body);
    assert!(up.location().starts_with("/console/finance/breaks?run_id="), "{}", up.location());
    let breaks = b.get(up.location()).await;
    let at = breaks.body.find(r#"data-break=""#).expect("a break") + r#"data-break=""#.len();
    let break_id = breaks.body[at..].split('"').next().unwrap().to_string();
    let form = [
        ("csrf", breaks.csrf()),
        ("action", "accepted".to_string()),
        ("resolved_by", "Li Na".to_string()),
        ("reason", "test payment".to_string()),
        ("back", up.location().to_string()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resolved = b.post(&format!("/console/finance/breaks/{break_id}/resolution"), &form).await;
    assert_eq!((resolved.status, resolved.location()), (303, up.location()), "{}", resolved.body);
    let after = b.get(up.location()).await;
    let row = &after.body[after.body.find(&break_id).unwrap()..];
    assert!(row[..row.find("</tr>").unwrap()].contains("Resolved"), "the row says so");
    let again = b.post(&format!("/console/finance/breaks/{break_id}/resolution"), &form).await;
    assert_eq!(again.status, 400, "a break is resolved once: {}", again.body);
    let audit = app.get_as("/v1/audit", Some(&app.keys.admin)).await.1.to_string();
    assert!(audit.contains("bill_imported") && audit.contains("break_resolved"), "{audit}");
    let csv = b
        .get(&format!("/console/finance/breaks.csv?run_id={}", &up.location()[up.location().find('=').unwrap() + 1..]))
        .await;
    assert!(csv.body.starts_with("break_id,") && csv.body.contains(&format!("{break_id},")), "{}", csv.body);
}

#[tokio::test]
async fn a_merchant_refunds_through_the_order_page_once_however_often_the_form_is_posted() {
    let app = app_with_an_order().await;
    // The till timed out and sent the payment again under a new event id: answered from the order.
    let retry = serde_json::json!({"out_trade_no": "ORDER-1", "amount": "60.00", "face_code": "100000000000000001"});
    let retry = app.event("payment_requested", retry, true);
    assert_eq!(app.post(&retry).await.0, 202);
    let retries = format!("/v1/merchants/{MERCHANT}/orders/ORDER-1/retries");
    app.until(&retries, |r| r["items"].as_array().is_some_and(|i| i.len() == 1)).await;
    // And sent that retry once more under its own event id: refused as a replay, counted.
    assert_eq!(app.post(&retry).await.0, 409);
    let mut b = Browser::new(&app);
    assert_eq!(b.sign_in(&app.keys.merchant).await.status, 303);
    let page = b.get(&format!("/console/merchants/{MERCHANT}/orders/ORDER-1")).await;
    assert!(page.body.contains(r#"name="out_refund_no""#), "a paid order offers a refund");
    let at = page.body.find(r#"name="out_refund_no" "#).unwrap();
    let refund_no = page.body[at..].split("value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let path = format!("/console/merchants/{MERCHANT}/orders/ORDER-1/refunds");
    // Without its CSRF token: refused, nothing refunded.
    let forged = b.post(&path, &[("out_refund_no", &refund_no), ("amount", "10.00")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(app.get("/v1/payers/u-alice/balance").await.1["balance"], "40.00");
    // Posted twice (a double click): one refund.
    for _ in 0..2 {
        let done = b.post(&path, &[("csrf", &page.csrf()), ("out_refund_no", &refund_no), ("amount", "10.00")]).await;
        assert_eq!(
            (done.status, done.location()),
            (303, format!("/console/merchants/{MERCHANT}/orders/ORDER-1").as_str())
        );
    }
    assert_eq!(app.get("/v1/payers/u-alice/balance").await.1["balance"], "50.00");
    let after = b.get(&format!("/console/merchants/{MERCHANT}/orders/ORDER-1")).await;
    assert!(after.body.contains(r#"data-figure="refunded"><span class="money">¥10.00<"#), "{}", after.body);
    assert!(after.body.contains(&format!(r#"data-refund="{refund_no}""#)), "the refund, once, on the order's page");
    assert_eq!(after.body.matches("data-attempt=").count(), 1, "its one decided attempt");
    assert_eq!(after.body.matches("data-retry=").count(), 1, "the retry it answered");
    assert_eq!(after.body.matches("data-repeat=").count(), 1, "the retry sent again under its event id");
    // More than is left: the ledger's refusal, on a page, and nothing moves.
    let over = b.post(&path, &[("csrf", &page.csrf()), ("out_refund_no", "RF-OVER"), ("amount", "50.01")]).await;
    assert_eq!(over.status, 422, "{}", over.body);
    assert!(over.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(app.get("/v1/payers/u-alice/balance").await.1["balance"], "50.00");
    // Finance may look at the order but not refund it.
    let mut f = Browser::new(&app);
    f.sign_in(&app.keys.finance).await;
    let seen = f.get(&format!("/console/merchants/{MERCHANT}/orders/ORDER-1")).await;
    assert!(!seen.body.contains(r#"name="out_refund_no""#));
    let tried = f.post(&path, &[("csrf", &seen.csrf()), ("out_refund_no", "RF-F"), ("amount", "1.00")]).await;
    assert_eq!(tried.status, 404);
    assert_eq!(app.get("/v1/payers/u-alice/balance").await.1["balance"], "50.00");
}

#[tokio::test]
async fn an_admin_freezes_a_payer_and_sets_a_merchants_terms_each_audited_and_decided_by_the_ledger() {
    let app = app_with_an_order().await;
    let mut a = Browser::new(&app);
    assert_eq!(a.sign_in(&app.keys.admin).await.status, 303);
    // The fleet: the merchant's device, heard of, with its terms.
    let fleet = a.get(&format!("/console/merchants/{MERCHANT}/fleet")).await;
    assert_eq!(fleet.status, 200, "{}", fleet.body);
    assert!(fleet.body.contains(&format!(r#"data-device="{DEVICE}""#)), "{}", fleet.body);
    assert!(fleet.body.contains(r#"data-figure="single_limit"><span class="money">¥1000.00<"#), "{}", fleet.body);
    let (_, api) = app.get_as(&format!("/v1/merchants/{MERCHANT}/fleet"), Some(&app.keys.admin)).await;
    let device = &api["devices"][0];
    assert!(device["last_event_at"].is_string(), "{api}");
    // Terms: a new limit and fee rate, through the ledger.
    let limit = format!("/console/merchants/{MERCHANT}/limit");
    assert_eq!(a.post(&limit, &[("csrf", &fleet.csrf()), ("single_limit", "2000.00")]).await.status, 303);
    let fee = format!("/console/merchants/{MERCHANT}/fee-rate");
    assert_eq!(a.post(&fee, &[("csrf", &fleet.csrf()), ("fee_rate_ppm", "5400")]).await.status, 303);
    let too_high = a.post(&fee, &[("csrf", &fleet.csrf()), ("fee_rate_ppm", "100001")]).await;
    assert_eq!(too_high.status, 422, "the ledger's refusal: {}", too_high.body);
    let (_, api) = app.get_as(&format!("/v1/merchants/{MERCHANT}/fleet"), Some(&app.keys.admin)).await;
    assert_eq!((api["single_limit"].as_str(), api["fee_rate_ppm"].as_i64()), (Some("2000.00"), Some(5400)), "{api}");
    // A payer frozen and unfrozen.
    let payer = a.get("/console/admin/payers?payer_id=u-alice").await;
    assert!(payer.body.contains(r#"data-figure="balance"><span class="money">¥40.00<"#), "{}", payer.body);
    let freeze = a.post("/console/admin/payers/u-alice/freeze", &[("csrf", &payer.csrf())]).await;
    assert_eq!((freeze.status, freeze.location()), (303, "/console/admin/payers?payer_id=u-alice"));
    assert_eq!(app.get("/v1/payers/u-alice/balance").await.1["frozen"], true);
    assert_eq!(a.post("/console/admin/payers/u-alice/unfreeze", &[("csrf", &payer.csrf())]).await.status, 303);
    assert_eq!(app.get("/v1/payers/u-alice/balance").await.1["frozen"], false);
    // Each audited with the admin's key; a merchant may read its fleet but not change its terms.
    let (_, audit) = app.get_as("/v1/audit", Some(&app.keys.admin)).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["merchant_limit_changed", "merchant_fee_rate_changed", "account_frozen", "account_unfrozen"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    let mut m = Browser::new(&app);
    m.sign_in(&app.keys.merchant).await;
    let own = m.get(&format!("/console/merchants/{MERCHANT}/fleet")).await;
    assert!(own.status == 200 && !own.body.contains(r#"name="single_limit""#));
    assert_eq!(m.post(&limit, &[("csrf", &own.csrf()), ("single_limit", "9000.00")]).await.status, 404);
    assert_eq!(m.get(&format!("/console/merchants/{OTHER_MERCHANT}/fleet")).await.status, 404);
    let (_, api) = app.get_as(&format!("/v1/merchants/{MERCHANT}/fleet"), Some(&app.keys.merchant)).await;
    assert_eq!(api["single_limit"], "2000.00");
}

#[tokio::test]
async fn failed_sign_ins_spend_the_addresses_budget_and_the_429_is_a_page_too() {
    // Given an address with a budget of 20 failures.
    let app = spawn_app_with(|a| a.with_failure_limit(2, 20)).await;
    let mut b = Browser::new(&app);
    let forged = format!("fpk_{}_{}", "ab".repeat(12), "1".repeat(64));
    let mut statuses = BTreeMap::<u16, usize>::new();
    for _ in 0..40 {
        let form = b.get("/console/sign-in").await;
        let status = match form.status {
            200 => b.post("/console/sign-in", &[("token", &forged), ("csrf", &form.csrf())]).await.status,
            other => other,
        };
        *statuses.entry(status).or_default() += 1;
    }
    assert!(statuses.get(&429).is_some_and(|n| *n >= 15), "{statuses:?}");
    // Then every request of the address waits, and the answer is a page in its language.
    let throttled = b.get("/console/sign-in").await;
    assert_eq!(throttled.status, 429);
    assert!(throttled.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(
        throttled.headers.get("retry-after").is_some() && throttled.headers.get("content-security-policy").is_some()
    );
    assert!(throttled.body.contains(r#"lang="en""#) && !b.cookies.contains_key("fp_session"));
    // The API's own 429 stays JSON.
    let (status, body) = app.get_as("/v1/audit", Some(&app.keys.admin)).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
}

/// Two `facepay serve` processes over one PostgreSQL database (as behind a load balancer
/// without sticky sessions): a browser signed in at one is served by the other, a form's
/// CSRF token from one page is good at the other, a new key's token is shown once whichever
/// serves the next page, and a sign-out at one ends the session at both.
#[tokio::test]
async fn a_session_started_at_one_process_is_served_by_another_and_ends_at_both() {
    let Some(db) = crate::support::postgres().await else { return };
    let (one, two) = (
        crate::support::app::spawn_sealed_app(Some(&db.url)).await,
        crate::support::app::spawn_sealed_app(Some(&db.url)).await,
    );
    let mut b = Browser::new(&one);
    assert_eq!(b.sign_in(&one.keys.admin).await.status, 303);
    b.base = two.base.clone();
    let keys = b.get("/console/admin/keys").await;
    assert_eq!(keys.status, 200, "the other process knows the session: {}", keys.location());
    let form = [("csrf", keys.csrf()), ("role", "finance".to_string()), ("label", "two".to_string())];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    b.base = one.base.clone();
    let created = b.post("/console/admin/keys", &form).await;
    assert_eq!((created.status, created.location()), (303, "/console/admin/keys"), "{}", created.body);
    b.base = two.base.clone();
    let shown = b.get("/console/admin/keys").await;
    let at = shown.body.find(r#"class="token""#).expect("the new key's token, on the next page");
    let token = shown.body[at..].split('>').nth(1).unwrap().split('<').next().unwrap().to_string();
    // (Each test process has its own pepper; one made the key.)
    assert!(one.auth.authenticate(Some(&format!("Bearer {token}"))).await.is_ok(), "a working key: {token}");
    let again = b.get("/console/admin/keys").await;
    assert!(!again.body.contains(&token), "shown once");
    let cookie = b.cookies["fp_session"].clone();
    let out = b.post("/console/sign-out", &[("csrf", &again.csrf())]).await;
    assert_eq!(out.status, 303);
    // The old cookie (kept, as a stolen one would be) is no session at the first process either.
    b.base = one.base.clone();
    b.cookies.insert("fp_session".into(), cookie);
    assert_eq!(b.get("/console/admin/keys").await.location(), "/console/sign-in");
}
