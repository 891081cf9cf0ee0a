//! Answers checked against the OpenAPI spec the code generates.

use serde_json::Value;

/// Checks `value` against `schema` (the subset of JSON Schema the spec uses: objects with
/// properties and required ones, `allOf` of objects (a flattened field), arrays, `$ref`,
/// nullable `type` lists, string formats of money, dates and times); a path and reason for
/// the first mismatch.
pub fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        return conforms(spec, resolved(spec, r), value, at);
    }
    if let Some(parts) = schema["allOf"].as_array() {
        return conforms(spec, &merged(spec, parts), value, at);
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
            // A map: every value has the schema of `additionalProperties`.
            if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                return fields.iter().try_for_each(|(k, v)| conforms(spec, values, v, &format!("{at}.{k}")));
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

fn resolved<'a>(spec: &'a Value, reference: &str) -> &'a Value {
    &spec["components"]["schemas"][reference.rsplit('/').next().unwrap()]
}

/// The one object an `allOf` of objects describes: every part's properties and required ones.
fn merged(spec: &Value, parts: &[Value]) -> Value {
    let (mut properties, mut required) = (serde_json::Map::new(), Vec::new());
    for part in parts {
        let part = part["$ref"].as_str().map_or(part, |r| resolved(spec, r));
        let part = match part["allOf"].as_array() {
            Some(inner) => merged(spec, inner),
            None => part.clone(),
        };
        properties.extend(part["properties"].as_object().cloned().unwrap_or_default());
        required.extend(part["required"].as_array().cloned().unwrap_or_default());
    }
    serde_json::json!({ "type": "object", "properties": properties, "required": required })
}

/// The 2xx body schema of `method path` in the spec.
pub fn answer_schema<'a>(spec: &'a Value, method: &str, path: &str) -> &'a Value {
    let responses = &spec["paths"][path][method]["responses"];
    let ok = ["200", "201", "202"].iter().map(|s| &responses[*s]).find(|r| !r.is_null()).unwrap();
    &ok["content"]["application/json"]["schema"]
}

/// The schema of the body `method path` answers with `status`.
pub fn answer_schema_of<'a>(spec: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    &spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
}
