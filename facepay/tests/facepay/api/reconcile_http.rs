//! The reconciliation routes against the real app: a bill uploaded, its run and breaks
//! listed (filtered, paginated), a break resolved once and audited with the finance key that
//! did it, a bad bill refused naming its line; only finance keys reach these routes.

use crate::support::app::spawn_app;
use crate::support::spec::{answer_schema, conforms};
use serde_json::{json, Value};

pub(super) const SAMPLE: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注
`2026-03-02 09:15:07,`wx0000000000000001,`1900000001,`1900000101,`DEV-0042,`4200000000202603020000000001,`S01-20260302-000001,`o-payer-0001,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`60.00,`0.00,`0,`0,`0.00,`0.00,`,`,`groceries,`,`0.32000,`0.54%,`60.00,`0.00,`
`2026-03-02 11:40:51,`wx0000000000000001,`1900000001,`1900000101,`DEV-0042,`4200000000202603020000000001,`S01-20260302-000001,`o-payer-0001,`MICROPAY,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50300000000202603020000000001,`R01-000001,`50.00,`0.00,`ORIGINAL,`SUCCESS,`groceries,`,`-0.27000,`0.54%,`0.00,`50.00,`
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
`2,`60.00,`50.00,`0.00,`0.05000,`60.00,`50.00
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_is_uploaded_reconciled_listed_and_its_breaks_resolved_once() {
    let app = spawn_app().await;
    let url = |p: &str| format!("{}/v1/reconciliation/{p}", app.base);
    // Every request below as finance: a client that sends the finance key.
    let mut auth = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", app.keys.finance);
    auth.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
    let http = reqwest::Client::builder().default_headers(auth).build().unwrap();
    for (who, key) in [("merchant", Some(&app.keys.merchant)), ("admin", Some(&app.keys.admin)), ("none", None)] {
        let (status, _) = app.get_as("/v1/reconciliation/runs", key.map(String::as_str)).await;
        assert_eq!(status, if key.is_some() { 403 } else { 401 }, "{who}");
        let mut post = app.http.post(url("bills?date=2026-03-02")).body(SAMPLE);
        if let Some(k) = key {
            post = post.bearer_auth(k);
        }
        assert!([401, 403].contains(&post.send().await.unwrap().status().as_u16()), "{who} may not upload");
    }
    let up = http.post(url("bills?date=2026-03-02")).body(SAMPLE).send().await.unwrap();
    assert_eq!(up.status(), 201);
    let report: Value = up.json().await.unwrap();
    assert_eq!(report["import"]["import"]["layout"], "all");
    assert_eq!(report["run"]["report"]["totals"]["missing_in_ledger"]["count"], 2, "the ledger is empty");
    let again: Value = http.post(url("bills?date=2026-03-02")).body(SAMPLE).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["import"]["already_imported"], true);

    let runs: Value = http.get(url("runs")).send().await.unwrap().json().await.unwrap();
    assert_eq!(runs["items"].as_array().unwrap().len(), 2);
    let run_id = report["run"]["run_id"].as_str().unwrap();
    let page1: Value = http
        .get(url(&format!("breaks?run_id={run_id}&class=missing_in_ledger&limit=1")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page1["items"].as_array().unwrap().len(), 1);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2: Value = http
        .get(url(&format!("breaks?run_id={run_id}&limit=1&cursor={cursor}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_ne!(page2["items"][0]["break_id"], page1["items"][0]["break_id"]);

    let break_id = page1["items"][0]["break_id"].as_str().unwrap();
    let body = json!({"action": "ledger_corrected", "resolved_by": "finance", "reason": "event replayed"});
    let resolved = http.post(url(&format!("breaks/{break_id}/resolution"))).json(&body).send().await.unwrap();
    assert_eq!(resolved.status(), 201);
    let twice = http.post(url(&format!("breaks/{break_id}/resolution"))).json(&body).send().await.unwrap();
    assert_eq!(twice.status(), 400);
    let list: Value = http.get(url("resolutions")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"][0]["reason"], "event replayed");
    let audit: Value = http.get(format!("{}/v1/audit", app.base)).send().await.unwrap().json().await.unwrap();
    let resolved = audit.to_string();
    assert!(resolved.contains("break_resolved") && resolved.contains(break_id), "audited: {audit}");
    let other = page2["items"][0]["break_id"].as_str().unwrap();
    let confirm = json!({"action": "confirmed_paid", "resolved_by": "finance", "reason": "receipt seen"});
    let wrong = http.post(url(&format!("breaks/{other}/resolution"))).json(&confirm).send().await.unwrap();
    assert_eq!(wrong.status(), 400, "only a status mismatch of a payment is confirmed paid");
    let open: Value =
        http.get(url(&format!("breaks?run_id={run_id}&unresolved=true"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(open["items"].as_array().unwrap().len(), 1);

    let bad = SAMPLE.replacen("`60.00,`0.00,`0,", "`6O.00,`0.00,`0,", 1);
    let refused = http.post(url("bills?date=2026-03-02")).body(bad).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let e: Value = refused.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("line 2, column 13 (应结订单金额)"), "{e}");
    // Issue 22: a bill uploaded for another day is refused whole, naming its first line.
    let other_day = http.post(url("bills?date=2026-03-09")).body(SAMPLE).send().await.unwrap();
    assert_eq!(other_day.status(), 400);
    let e: Value = other_day.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("line 2: its transaction time 2026-03-02 09:15:07"), "{e}");
    let unknown_class = http.get(url("breaks?class=nonsense")).send().await.unwrap();
    assert_eq!(unknown_class.status(), 400);

    // Every answer has the shape the spec gives it, money as decimal strings too.
    assert_eq!(report["import"]["import"]["fee"], "0.05000");
    assert_eq!(page1["items"][0]["bill_amount"].as_str().map(str::len), Some(5), "{page1}");
    let spec: Value = serde_json::from_str(&facepay_api::openapi::spec_json()).unwrap();
    let bills: Value = http.get(url("bills")).send().await.unwrap().json().await.unwrap();
    let one_resolution = list["items"][0].clone();
    let answers = [
        ("post", "/v1/reconciliation/bills", report),
        ("get", "/v1/reconciliation/bills", bills),
        ("get", "/v1/reconciliation/runs", runs),
        ("get", "/v1/reconciliation/breaks", page1),
        ("get", "/v1/reconciliation/resolutions", list),
        ("post", "/v1/reconciliation/breaks/{break_id}/resolution", one_resolution),
    ];
    for (method, path, body) in answers {
        let schema = answer_schema(&spec, method, path);
        assert!(!schema.is_null(), "{method} {path} has a body schema");
        if let Err(why) = conforms(&spec, schema, &body, path) {
            panic!("{method} {path}: {why}\n{body}");
        }
    }
}
