//! The committed API contract (docs/openapi.json) must match what the code serves.
//! Regenerate it with `UPDATE_OPENAPI=1 cargo test -p hangar-hub --test openapi`.

#[test]
fn committed_openapi_matches_the_code() {
    let doc = hangar_hub::http::openapi_document();
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
    // Every route the router serves is documented.
    let v: serde_json::Value = serde_json::from_str(&generated).unwrap();
    for p in ["/v1/tenants", "/v1/tenants/{tenant}/instances/{name}/exec", "/v1/operations/{id}/wait", "/v1/agent/report"] {
        assert!(v["paths"].get(p).is_some(), "{p} missing from the OpenAPI document");
    }
}
