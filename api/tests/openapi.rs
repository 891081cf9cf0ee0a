//! The committed `api/openapi.json` is what the code generates (regenerate with
//! `FACEPAY_WRITE_OPENAPI=1 cargo test -p facepay-api --test openapi`).

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
