//! Issue 13, protocol evolution: a report from a newer agent (extra optional fields,
//! at the top and inside) is applied by today's hub, through the real router and JSON
//! extractor; a wrong type is still refused naming the field.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hangar_hub::{Hub, HubConfig, HubKeys};
use hangar_store::contract::fixtures;
use hangar_store::HostRecord;
use hangar_types::api::HostState;
use std::sync::Arc;
use tower::ServiceExt;

#[tokio::test]
async fn a_newer_agents_report_with_extra_fields_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = hangar_store::open(&dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let ca = Arc::new(hangar_tls::Ca::generate("test").unwrap());
    let keys = HubKeys { server: ca.issue_server("hub", &["localhost".into()]).unwrap(), client: ca.issue_client("hub").unwrap(), ca };
    let hub = Hub::new(store, keys, HubConfig::default());
    let rec = HostRecord { state: HostState::Joining, join_token_hash: None, cert_fingerprint: Some("fp-a".into()), ..fixtures::host("node-a") };
    hub.store.insert_host(&rec).await.unwrap();
    let send = |body: String| {
        let hub = hub.clone();
        async move {
            let mut req = Request::post("/v1/agent/report").header("content-type", "application/json").body(Body::from(body)).unwrap();
            req.extensions_mut().insert(hangar_tls::serve::PeerInfo { fingerprint: Some("fp-a".into()), addr: "127.0.0.1:9".parse().unwrap() });
            let resp = hangar_hub::api::router(hub).oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let newer = r#"{"schema_version":1,"agent_version":"1.9.0","capacity":{"vcpus":4,"mem_mib":2048,"disk_mib":9000,"gpus":2},
        "endpoint":"https://127.0.0.1:7","drivers":["runc"],"instances":[],"uptime_secs":12,"labels":{"zone":"a"}}"#;
    let (status, body) = send(newer.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let h = hub.store.get_host(&"node-a".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!((h.state, h.capacity.vcpus, h.agent_version.as_deref()), (HostState::Ready, 4, Some("1.9.0")));
    let (status, body) = send(newer.replace(r#""vcpus":4"#, r#""vcpus":"four""#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("vcpus"), "{body}");
}
