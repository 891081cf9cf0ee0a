//! The API's OpenAPI 3.1 description. The operations are the handlers' own annotations
//! (`#[utoipa::path]` beside each handler) collected by the router that serves them
//! ([`crate::http::api_routes`], utoipa-axum); the schemas are the real types' (`ToSchema`
//! on the domain's ids and money, the ledger's rows, the API's answers). Here: what the whole
//! document says (title, security, the answers every operation may give). Committed as
//! `api/openapi.json`; a test keeps the file in step with the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

/// The document's frame; the router's operations are merged into it ([`spec`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "facepay", description = "Face-payment fleets: ingest, orders, history, members, settlement, keys, audit, \
        reconciliation of the channel's daily bill (finance keys). \
        Money is a decimal string (CNY), timestamps RFC 3339. Every failure answers ErrorBody: a bad parameter or body 400 \
        naming the field, no or a bad key 401 (always the same body; too many failures from one address: 429), a key \
        whose role may not call the operation 403 (before anything else is read), anything the caller may not see 404, \
        a body too large 413, of another type 415, the key's budget spent 429, a moment's unavailability 503."),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The whole document: the frame, the router's operations and their schemas, and the
/// answers every operation may give.
pub fn spec() -> utoipa::openapi::OpenApi {
    let (_, operations) = crate::http::api_routes().split_for_parts();
    let mut api = ApiDoc::openapi().merge_from(operations);
    EveryAuthenticatedOperation.modify(&mut api);
    api
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("fpk_<key id>_<secret>").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// What every operation may answer, added to each that does not list it: 414 (a request
/// target over `URI_LEN_MAX`) and 429 (the address's budget of failed authentication spent);
/// and every operation but `/health`: 401 (no or a bad key), 403 (a role the operation does
/// not serve), 429 (the key's budget too), 503 (the store or the pipeline unavailable for a
/// moment: `Retry-After`).
struct EveryAuthenticatedOperation;

impl Modify for EveryAuthenticatedOperation {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        let common = [
            ("401", answer("no key, or a key or signature that does not authenticate (always this body)")),
            ("403", answer("the key's role may not call this operation")),
            ("429", answer("too many requests: retry after `Retry-After` seconds")),
            ("503", answer("unavailable for a moment (the store or the pipeline): retry after `Retry-After` seconds")),
        ];
        let anyone = [
            ("414", answer("a request target over 8 KiB")),
            ("429", answer("too many failed authentications from this address: retry after `Retry-After` seconds")),
        ];
        for (path, item) in api.paths.paths.iter_mut() {
            let public = path == "/health";
            let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for op in ops.into_iter().flatten() {
                let answers = common.iter().filter(|_| !public).chain(anyone.iter());
                for (status, response) in answers {
                    op.responses.responses.entry(status.to_string()).or_insert_with(|| response.clone().into());
                }
            }
        }
    }
}

/// The spec as pretty JSON (what `api/openapi.json` holds).
pub fn spec_json() -> String {
    spec().to_pretty_json().expect("the spec serialises")
}

#[cfg(test)]
mod tests {
    use super::spec_json;

    /// The committed `api/openapi.json` is what the code generates (regenerate with
    /// `FACEPAY_WRITE_OPENAPI=1 cargo test -p facepay-api --lib openapi`).
    #[test]
    fn the_committed_spec_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = spec_json() + "\n";
        if std::env::var("FACEPAY_WRITE_OPENAPI").is_ok() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let spec: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1");
        assert_eq!(committed, generated, "api/openapi.json is stale: run with FACEPAY_WRITE_OPENAPI=1");
    }

    /// The bounds the schemas' attributes spell out as literals are the limits the code
    /// enforces.
    #[test]
    fn the_spec_bounds_are_the_limits() {
        use facepay_domain::limits::{API_KEY_TTL_DAYS_MAX, KEY_LABEL_LEN_MAX, PAGE_LIMIT_MAX};
        let spec: serde_json::Value = serde_json::from_str(&spec_json()).unwrap();
        let mut limits = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["name"] == "limit") {
                    assert_eq!(p["schema"]["maximum"], PAGE_LIMIT_MAX, "{method} {path}");
                    limits += 1;
                }
            }
        }
        assert!(limits >= 8, "every list takes a limit: {limits}");
        let new_key = &spec["components"]["schemas"]["NewKey"]["properties"];
        assert_eq!(new_key["label"]["maxLength"], KEY_LABEL_LEN_MAX, "{new_key}");
        assert_eq!(new_key["expires_in_days"]["maximum"], API_KEY_TTL_DAYS_MAX, "{new_key}");
    }
}
