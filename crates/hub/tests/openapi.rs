//! The committed API contract (docs/openapi.json) must match what the code serves.
//! Regenerate it with `UPDATE_OPENAPI=1 cargo test -p hangar-hub --test openapi`.

use std::sync::Arc;
use tower::ServiceExt;

fn committed() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or_default()
}

/// (METHOD, path) of every operation in a document.
fn documented(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn committed_openapi_matches_the_code() {
    let doc = hangar_hub::api::openapi_document();
    let generated = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p hangar-hub --test openapi` and commit it"
    );
}

/// Every route the router registered is an operation of the committed document.
#[test]
fn every_route_is_in_the_committed_document() {
    let routes = hangar_hub::api::route_table();
    assert!(routes.len() >= 40, "the route table looks empty: {routes:?}");
    let documented = documented(&committed());
    let missing: Vec<_> = routes.iter().filter(|r| !documented.contains(r)).collect();
    assert!(missing.is_empty(), "routes missing from docs/openapi.json: {missing:?}");
}

/// Every operation of the committed document is served: a request for it reaches a
/// handler (an authentication or body error at worst), never the "no such API route"
/// fallback or a wrong-method answer.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let ca = hangar_tls::Ca::generate("test").unwrap();
    let keys = hangar_hub::HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca: Arc::new(ca) };
    let router = hangar_hub::api::router(hangar_hub::Hub::new(store, keys, Default::default()));
    let ops = documented(&committed());
    assert_eq!(ops, hangar_hub::api::route_table(), "the document and the router disagree");
    for (method, path) in ops {
        let uri = path.replace("{tenant}", "acme").replace("{name}", "x").replace("{id}", "0");
        let req = axum::http::Request::builder().method(method.as_str()).uri(&uri).body(axum::body::Body::empty()).unwrap();
        let res = router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(status != 405 && !text.contains("no such API route"), "{method} {path} is not served: {status} {text}");
    }
    // The check above can fail: an unknown route does reach the fallback.
    let req = axum::http::Request::builder().uri("/v1/nowhere").body(axum::body::Body::empty()).unwrap();
    let res = router.oneshot(req).await.unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("no such API route"));
}
