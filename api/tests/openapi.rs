//! The committed `api/openapi.json` is what the code generates (regenerate with
//! `FACEPAY_WRITE_OPENAPI=1 cargo test --workspace --test openapi`), and the answers the API
//! really gives have the shapes the spec says.

mod support;

use serde_json::{json, Value};
use support::app::{spawn_app, MERCHANT};

#[test]
fn the_committed_spec_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let generated = facepay_api::openapi::spec_json() + "\n";
    if std::env::var("FACEPAY_WRITE_OPENAPI").is_ok() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let spec: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1");
    assert_eq!(committed, generated, "api/openapi.json is stale: run with FACEPAY_WRITE_OPENAPI=1");
}

/// Checks `value` against `schema` (the subset of JSON Schema the spec uses: objects with
/// properties and required ones, arrays, `$ref`, nullable `type` lists, string formats of
/// money, dates and times); a path and reason for the first mismatch.
fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return conforms(spec, &spec["components"]["schemas"][name], value, at);
    }
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        return match options.iter().any(|o| conforms(spec, o, value, at).is_ok()) {
            true => Ok(()),
            false => Err(format!("{at}: {value} matches none of {options:?}")),
        };
    }
    if let Some(allowed) = schema["enum"].as_array() {
        return allowed.contains(value).then_some(()).ok_or(format!("{at}: {value} not in {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let widened = kind == "integer" && types.contains(&"number");
    if !(types.contains(&kind) || widened) {
        return Err(format!("{at}: {value} is {kind}, the spec says {types:?}"));
    }
    match value {
        Value::Object(fields) => {
            let properties = schema["properties"].as_object().cloned().unwrap_or_default();
            for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    return Err(format!("{at}: {name} is required and missing"));
                }
            }
            // An object the spec gives no properties is free-form (an audit entry's detail).
            let free_form = schema.get("properties").is_none();
            for (name, v) in fields.iter().filter(|_| !free_form) {
                let Some(s) = properties.get(name) else { return Err(format!("{at}: {name} is not in the spec")) };
                conforms(spec, s, v, &format!("{at}.{name}"))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, v)| conforms(spec, &schema["items"], v, &format!("{at}[{i}]")))
        }
        Value::String(s) => match schema["format"].as_str() {
            Some("date-time") if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                Err(format!("{at}: {s} is no RFC 3339 time"))
            }
            Some("date") if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err() => {
                Err(format!("{at}: {s} is no date"))
            }
            Some("uuid") if uuid::Uuid::parse_str(s).is_err() => Err(format!("{at}: {s} is no UUID")),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The 2xx body schema of `method path` in the spec.
fn answer_schema<'a>(spec: &'a Value, method: &str, path: &str) -> &'a Value {
    let responses = &spec["paths"][path][method]["responses"];
    let ok = ["200", "201", "202"].iter().map(|s| &responses[*s]).find(|r| !r.is_null()).unwrap();
    &ok["content"]["application/json"]["schema"]
}

#[tokio::test]
async fn real_answers_have_the_shapes_the_spec_gives_them() {
    let spec: Value = serde_json::from_str(&facepay_api::openapi::spec_json()).unwrap();
    let app = spawn_app().await;
    app.payer("u-alice", 1, "100.00").await;
    let open = json!({"payer_id": "u-alice", "card_code": "C0001", "channel": "mini_program"});
    assert_eq!(app.post(&app.event("member_card_opened", open, true)).await.0, 202);
    // The pipeline decides in order: once the order is answered, the card is open too.
    app.pay(1, "100000000000000001", "ORDER-1", "60.00").await;
    let accepted = app.post(&app.event("payment_query", json!({"out_trade_no": "ORDER-1"}), true)).await;
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
    let answers: Vec<(&str, &str, Value)> = vec![
        ("post", "/v1/keys", created),
        ("get", "/v1/keys", admin("/v1/keys").await),
        ("get", "/v1/audit", admin("/v1/audit").await),
        ("get", "/v1/rejected-events", admin("/v1/rejected-events").await),
        ("post", "/v1/events", accepted.1),
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
