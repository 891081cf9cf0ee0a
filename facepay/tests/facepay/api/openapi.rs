//! The answers the API really gives have the shapes the OpenAPI spec says (that the committed
//! `api/openapi.json` is the generated one is a test of `facepay-api`'s own).

use crate::support::app::{spawn_app, MERCHANT};
use crate::support::spec::{answer_schema, answer_schema_of, conforms};
use serde_json::{json, Value};

#[tokio::test]
async fn real_answers_have_the_shapes_the_spec_gives_them() {
    let spec: Value = serde_json::from_str(&facepay_api::openapi::spec_json()).unwrap();
    let app = spawn_app().await;
    app.payer("u-alice", 1, "100.00").await;
    app.open_card(1, "100000000000000002", "C0001").await;
    // The pipeline decides in order: once the order is answered, the card is open too.
    app.pay(1, "100000000000000001", "ORDER-1", "60.00").await;
    let accepted = app.post(&app.event("payment_query", json!({"out_trade_no": "ORDER-1"}), true)).await;
    let query = app.event("payment_query", json!({"out_trade_no": "ORDER-1"}), true);
    let (status, _, decided) = app.post_waiting(&query, "wait=5").await;
    assert_eq!(status, 200, "{decided}");
    let order_path = format!("/v1/merchants/{MERCHANT}/orders/ORDER-1");
    let order = app.eventually(&order_path).await;
    let get = |path: String| {
        let app = &app;
        async move {
            let (status, body) = app.get(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    let bad = app.event("payment_query", json!({"out_trade_no": ""}), true);
    assert_eq!(app.post(&bad).await.0, 400);
    let admin = |path: &str| {
        let (app, url) = (&app, format!("{}{path}", app.base));
        async move { app.http.get(url).bearer_auth(&app.keys.admin).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let spec_key = json!({"role": "merchant", "merchant_id": MERCHANT, "label": "till 3"});
    let created = app.http.post(format!("{}/v1/keys", app.base)).bearer_auth(&app.keys.admin).json(&spec_key);
    let created: Value = created.send().await.unwrap().json().await.unwrap();
    for (status, body) in [("202", &accepted.1), ("200", &decided)] {
        let schema = answer_schema_of(&spec, "post", "/v1/events", status);
        assert!(!schema.is_null(), "post /v1/events {status} has a body schema");
        if let Err(why) = conforms(&spec, schema, body, "/v1/events") {
            panic!("post /v1/events {status}: {why}\n{body}");
        }
    }
    let answers: Vec<(&str, &str, Value)> = vec![
        ("post", "/v1/keys", created),
        ("get", "/v1/keys", admin("/v1/keys").await),
        ("get", "/v1/audit", admin("/v1/audit").await),
        ("get", "/v1/rejected-events", admin("/v1/rejected-events").await),
        ("get", "/v1/merchants/{merchant_id}/orders/{out_trade_no}", order),
        (
            "get",
            "/v1/merchants/{merchant_id}/transactions",
            get(format!("/v1/merchants/{MERCHANT}/transactions")).await,
        ),
        ("get", "/v1/merchants/{merchant_id}/members", get(format!("/v1/merchants/{MERCHANT}/members")).await),
        ("get", "/v1/merchants/{merchant_id}/settlement", get(format!("/v1/merchants/{MERCHANT}/settlement")).await),
        ("get", "/v1/payers/{payer_id}/balance", get("/v1/payers/u-alice/balance".to_string()).await),
    ];
    for (method, path, body) in answers {
        let schema = answer_schema(&spec, method, path);
        assert!(!schema.is_null(), "{method} {path} has a body schema");
        let items = body["items"].as_array().map_or(1, Vec::len);
        assert!(items > 0, "{path}: something to check: {body}");
        if let Err(why) = conforms(&spec, schema, &body, path) {
            panic!("{method} {path}: {why}\n{body}");
        }
    }
}
