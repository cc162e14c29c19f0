//! Issue 13, tokens: list, revoke, expiry, join token expiry, per-token rate limits.
//! Two hubs on one store, each with its own token cache: a revocation on one is refused
//! at once by the other. Requests go through the real router (authentication, cache).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hangar_hub::{Hub, HubConfig, HubKeys, Principal};
use hangar_types::api::{HostAdd, TokenCreate};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

async fn hubs(cfg: HubConfig) -> (tempfile::TempDir, Arc<Hub>, Arc<Hub>) {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let ca = Arc::new(hangar_tls::Ca::generate("test").unwrap());
    let keys = HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca };
    (dir, Hub::new(store.clone(), keys.clone(), cfg.clone()), Hub::new(store, keys, cfg))
}

/// GET `path` with `token` through `hub`'s router: the status and the Retry-After header.
async fn get(hub: &Arc<Hub>, path: &str, token: &str) -> (StatusCode, Option<String>) {
    let req = Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
    let resp = hangar_hub::api::router(hub.clone()).oneshot(req).await.unwrap();
    (resp.status(), resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()))
}

fn create(ttl: Option<u64>) -> TokenCreate {
    TokenCreate { tenant: None, role: None, description: Some("test".into()), ttl_secs: ttl }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_hub_is_refused_at_once_by_the_other() {
    let (_dir, a, b) = hubs(HubConfig::default()).await;
    let t = a.token_create(&Principal::Admin, create(None)).await.unwrap();
    // Both hubs verified it: both have it cached.
    for h in [&a, &b] {
        assert_eq!(get(h, "/v1/tenants", &t.token).await.0, StatusCode::OK);
        assert_eq!(get(h, "/v1/tenants", &t.token).await.0, StatusCode::OK);
    }
    let listed = a.token_list(&Principal::Admin).await.unwrap();
    let row = listed.iter().find(|r| r.id == t.id).unwrap();
    assert!(row.last_used_at.is_some() && row.expires_at.is_none(), "{row:?}");
    assert!(!format!("{listed:?}").contains(&t.token), "token list shows a secret");

    a.token_revoke(&Principal::Admin, t.id.as_str()).await.unwrap();
    assert_eq!(get(&b, "/v1/tenants", &t.token).await.0, StatusCode::UNAUTHORIZED, "the other hub's cache kept a revoked token");
    assert_eq!(get(&a, "/v1/tenants", &t.token).await.0, StatusCode::UNAUTHORIZED);
    assert!(a.token_list(&Principal::Admin).await.unwrap().iter().all(|r| r.id != t.id));
    let again = a.token_revoke(&Principal::Admin, t.id.as_str()).await.unwrap_err();
    assert_eq!(again.0.code, hangar_types::ErrorCode::NotFound);
    let events = a.store.list_events(None, 50).await.unwrap();
    assert!(events.iter().any(|e| e.action == "token.revoke"));
    assert!(events.iter().any(|e| e.action == "auth.fail"), "refused tokens leave auth.fail events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_even_from_the_cache_and_ttls_are_checked() {
    let (_dir, a, _b) = hubs(HubConfig::default()).await;
    let t = a.token_create(&Principal::Admin, create(Some(1))).await.unwrap();
    assert!(t.expires_at.is_some());
    assert_eq!(get(&a, "/v1/tenants", &t.token).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&a, "/v1/tenants", &t.token).await.0, StatusCode::UNAUTHORIZED);
    for bad in [0, 10 * 365 * 24 * 3600 + 1] {
        let e = a.token_create(&Principal::Admin, create(Some(bad))).await.unwrap_err();
        assert!(e.0.message.starts_with("ttl_secs:"), "{:?}", e.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_expire() {
    let (_dir, a, _b) = hubs(HubConfig { join_token_ttl: Duration::from_secs(1), ..HubConfig::default() }).await;
    let add = a.host_add(&Principal::Admin, HostAdd { name: "node-a".parse().unwrap(), provider: None, join_ttl_secs: None }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (csr_pem, _) = hangar_tls::generate_csr("agent").unwrap();
    let req = hangar_types::protocol::JoinRequest { join_token: add.join_token, csr_pem, names: vec![] };
    let e = a.join(req, None).await.unwrap_err();
    assert_eq!(e.0.code, hangar_types::ErrorCode::Unauthenticated);
    assert!(e.0.message.contains("expired"), "{}", e.0.message);
    // An explicit ttl out of range is refused, naming the field.
    let e = a.host_add(&Principal::Admin, HostAdd { name: "node-b".parse().unwrap(), provider: None, join_ttl_secs: Some(5) }).await.unwrap_err();
    assert!(e.0.message.starts_with("join_ttl_secs:"), "{}", e.0.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let (_dir, a, _b) = hubs(HubConfig { token_rate: 1.0, token_burst: 3.0, ..HubConfig::default() }).await;
    let (t1, t2) = (a.token_create(&Principal::Admin, create(None)).await.unwrap(), a.token_create(&Principal::Admin, create(None)).await.unwrap());
    for _ in 0..3 {
        assert_eq!(get(&a, "/v1/tenants", &t1.token).await.0, StatusCode::OK);
    }
    let (status, retry) = get(&a, "/v1/tenants", &t1.token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(get(&a, "/v1/tenants", &t2.token).await.0, StatusCode::OK, "one token's rate limits another");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&a, "/v1/tenants", &t1.token).await.0, StatusCode::OK, "the bucket refills");
}

/// DELETE `path` with `token` through `hub`'s router: the status.
async fn delete(hub: &Arc<Hub>, path: &str, token: &str) -> StatusCode {
    let req = Request::delete(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
    hangar_hub::api::router(hub.clone()).oneshot(req).await.unwrap().status()
}

/// A token cannot revoke itself (the caller would lock itself out, with the last admin
/// token everyone); another admin token revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_revoke_itself() {
    let (_dir, a, _b) = hubs(HubConfig::default()).await;
    let (t, other) = (a.token_create(&Principal::Admin, create(None)).await.unwrap(), a.token_create(&Principal::Admin, create(None)).await.unwrap());
    let path = format!("/v1/tokens/{}", t.id);
    assert_eq!(delete(&a, &path, &t.token).await, StatusCode::CONFLICT);
    assert_eq!(get(&a, "/v1/tenants", &t.token).await.0, StatusCode::OK, "the refused self-revocation revoked it");
    assert_eq!(delete(&a, &path, &other.token).await, StatusCode::OK);
    assert_eq!(get(&a, "/v1/tenants", &t.token).await.0, StatusCode::UNAUTHORIZED);
}

/// A request through the router: status and `{code, message}` (empty if not JSON).
async fn call(hub: &Arc<Hub>, method: &str, path: &str, token: &str) -> (StatusCode, String, String) {
    let body = if method == "GET" || method == "DELETE" { Body::empty() } else { Body::from("{}") };
    let req = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}")).header("content-type", "application/json").body(body).unwrap();
    let resp = hangar_hub::api::router(hub.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
    (status, s("code"), s("message"))
}

/// Issue 13, roles: a `viewer` token reads what a token of the same scope reads (every
/// tenant, or its own) and is refused, 403 naming its role, every write and the reads
/// that hand out workload data or keys. The check sits in authentication, so the table
/// is every route the router serves, not a list someone kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_tokens_read_within_their_scope_and_write_nothing() {
    use hangar_types::api::{TenantCreate, TokenRole};
    let (_dir, a, _b) = hubs(HubConfig { token_rate: 0.0, ..HubConfig::default() }).await;
    for t in ["acme", "other"] {
        a.tenant_create(&Principal::Admin, TenantCreate { name: t.parse().unwrap(), quotas: None, isolated: false, net_prefix: None }).await.unwrap();
    }
    let token = |tenant: Option<&str>, role: Option<TokenRole>| {
        let a = a.clone();
        let req = TokenCreate { tenant: tenant.map(|t| t.parse().unwrap()), role, description: None, ttl_secs: None };
        async move { a.token_create(&Principal::Admin, req).await.unwrap() }
    };
    let admin = token(None, None).await;
    let admin_viewer = token(None, Some(TokenRole::Viewer)).await;
    let acme = token(Some("acme"), None).await;
    let acme_viewer = token(Some("acme"), Some(TokenRole::Viewer)).await;
    assert_eq!((admin.role, acme.role, admin_viewer.role, acme_viewer.role), (TokenRole::Admin, TokenRole::Tenant, TokenRole::Viewer, TokenRole::Viewer));
    // Roles that contradict the scope are refused (422: each field alone is valid),
    // naming the field.
    let e = a.token_create(&Principal::Admin, TokenCreate { tenant: Some("acme".parse().unwrap()), role: Some(TokenRole::Admin), description: None, ttl_secs: None }).await.unwrap_err();
    assert!(e.0.message.starts_with("role:") && e.0.code == hangar_types::ErrorCode::Unprocessable, "{:?}", e.0);
    let e = a.token_create(&Principal::Admin, TokenCreate { tenant: None, role: Some(TokenRole::Tenant), description: None, ttl_secs: None }).await.unwrap_err();
    assert!(e.0.message.starts_with("tenant:") && e.0.code == hangar_types::ErrorCode::Unprocessable, "{:?}", e.0);

    let fill = |p: &str| {
        p.replace("{tenant}", "acme").replace("{name}", "web").replace("{backup}", "b1").replace("{snapshot}", "s1").replace("{id}", "00000000-0000-4000-8000-000000000001")
    };
    let (mut reads, mut refused) = (0, 0);
    for (method, route) in hangar_hub::api::route_table() {
        // Host routes answer only a host certificate, never a bearer token.
        if route.starts_with("/v1/agent/") {
            continue;
        }
        let path = fill(&route);
        let read = method == "GET" && !hangar_hub::auth::VIEWER_DENIED_READS.contains(&route.as_str());
        for (viewer, peer, scope) in [(&admin_viewer, &admin, "admin"), (&acme_viewer, &acme, "acme")] {
            let (status, code, message) = call(&a, &method, &path, &viewer.token).await;
            if read {
                // The same answer as a writing token of the same scope gets.
                let (peer_status, peer_code, _) = call(&a, &method, &path, &peer.token).await;
                assert_eq!((status, code.as_str()), (peer_status, peer_code.as_str()), "{scope} viewer {method} {route}: {message}");
                assert!(!message.contains("viewer"), "{scope} viewer {method} {route} refused for its role: {message}");
                reads += 1;
            } else {
                assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "forbidden"), "{scope} viewer {method} {route}: {message}");
                assert!(message.contains("role is viewer") && message.contains(&route), "{scope} viewer {method} {route}: {message}");
                refused += 1;
            }
        }
    }
    assert!(reads >= 40 && refused >= 100, "reads {reads}, refused {refused}: the route table shrank?");
    // The proxy is not a read either.
    let (status, _, message) = call(&a, "GET", "/proxy/acme/web/8080/", &acme_viewer.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{message}");
    assert!(message.contains("role is viewer"), "{message}");
    // Scope still holds for viewers: another tenant is not found, admin routes need admin.
    assert_eq!(call(&a, "GET", "/v1/tenants/other", &acme_viewer.token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&a, "GET", "/v1/tenants/other", &admin_viewer.token).await.0, StatusCode::OK);
    assert_eq!(call(&a, "GET", "/v1/hosts", &acme_viewer.token).await.0, StatusCode::FORBIDDEN);
    // Nothing the refused writes asked for happened.
    let tenants: Vec<String> = a.tenant_list(&Principal::Admin).await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert_eq!(tenants, ["acme", "other"]);
    assert_eq!(a.token_list(&Principal::Admin).await.unwrap().len(), 4);
}
