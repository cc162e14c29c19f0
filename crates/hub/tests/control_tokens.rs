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
    TokenCreate { tenant: None, description: Some("test".into()), ttl_secs: ttl }
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
