//! Issue 13, identities: host certificates are short-lived and renewed by the agent over
//! mTLS, nothing a host holds can pose as the hub, to the CLI or to an agent, and a
//! removed host's certificate is refused at once. Real parts: `hangar up` (hub and
//! agent) on loopback, real TLS.

mod common;

use common::*;
use hangar_client::{AgentClient, ClientError, HostClient, HubClient};
use std::time::{Duration, Instant};

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A server that presents `cert`/`key` (a host's) and answers anything with `[]`.
async fn impostor(cert: &str, key: &str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let tls = hangar_tls::server_config(cert, key, None, false).unwrap();
    let app = axum::Router::new().fallback(|| async { axum::Json(serde_json::json!([])) });
    tokio::spawn(hangar_tls::serve::serve_router(l, tls, app, std::future::pending::<()>()));
    format!("https://127.0.0.1:{port}")
}

fn transport_error<T: std::fmt::Debug>(r: Result<T, ClientError>, what: &str) {
    match r {
        Err(ClientError::Transport { .. }) => {}
        other => panic!("{what}: expected a refused TLS handshake, got {other:?}"),
    }
}

#[test]
fn host_keys_cannot_pose_as_the_hub_and_host_certificates_renew() {
    let f = up_with(&["--host-cert-lifetime", "30s"]);
    let cfg = hangar_node::config::load(&f.config()).unwrap();
    let agent = f.data_dir().join("agent");
    let (cert0, key0, agent_ca) = (read(&agent.join("host.pem")), read(&agent.join("host.key")), read(&agent.join("ca.pem")));
    block_on(async {
        hangar_tls::install_crypto_provider();
        let c = f.client().unwrap();
        let host = c.host_list().await.unwrap().remove(0);
        let name = host.name.to_string();

        // As the hub to the CLI: the CLI's client (trusting the fleet CA) refuses the
        // host's certificate, and keeps working with the real hub.
        let fake = impostor(&cert0, &key0).await;
        transport_error(HubClient::new(&fake, &cfg.ca_pem, &cfg.token).unwrap().tenant_list().await, "CLI to a hub played with a host key");
        HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token).unwrap().tenant_list().await.unwrap();
        // As the hub to an agent: an agent's client (trusting what it joined with)
        // refuses it too, so no forged desired document reaches it.
        transport_error(HostClient::new(&fake, &agent_ca, &cert0, &key0).unwrap().desired(None, Duration::ZERO).await, "agent to a hub played with a host key");
        // And calling an agent's endpoint as the hub with the host's own key fails.
        let endpoint = host.endpoint.clone().expect("the host reported its endpoint");
        let pin = vec![hangar_tls::fingerprint_pem(&cert0).unwrap()];
        let as_hub = AgentClient::pinned(&endpoint, hangar_tls::pinned_client_config(pin, Some((&cert0, &key0))).unwrap()).unwrap();
        assert!(as_hub.status().await.is_err(), "an agent answered a caller with a host key");

        // Renewal: with a 30 s lifetime the agent renews at 20 s, twice within a minute,
        // and the host stays ready; the hub reaches it pinned to the new certificate.
        let fps = |pem: &str| hangar_tls::fingerprint_pem(pem).unwrap();
        let mut seen = vec![fps(&cert0)];
        let deadline = Instant::now() + Duration::from_secs(75);
        while seen.len() < 3 {
            assert!(Instant::now() < deadline, "the host certificate was renewed {} times in 75 s; log:\n{}", seen.len() - 1, hangar_harness::fleet::tail(&f.log(), 40));
            let now = read(&agent.join("host.pem"));
            if !seen.contains(&fps(&now)) {
                seen.push(fps(&now));
                assert!(!hangar_tls::renewal_due(&now, std::time::SystemTime::now()).unwrap(), "a renewed certificate is due at once");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The hub switches to the new certificate when the agent first uses it.
        let mut ok = false;
        for _ in 0..40 {
            let h = c.host_get(&name).await.unwrap();
            if h.state == hangar_types::api::HostState::Ready && c.host_status(&name).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(ok, "the host is not ready and reachable after renewals");
        // The first certificate no longer identifies the host (refused by the hub, or
        // already expired at the handshake).
        let old = HostClient::new(&cfg.hub_url, &agent_ca, &cert0, &key0).unwrap();
        match old.desired(None, Duration::ZERO).await {
            Err(ClientError::Api(e)) => assert_eq!(e.code, hangar_types::ErrorCode::Unauthenticated, "{e:?}"),
            Err(ClientError::Transport { .. }) => {}
            other => panic!("a replaced host certificate was accepted: {other:?}"),
        }
        let events = c.events(None, 200).await.unwrap();
        assert!(events.iter().filter(|e| e.action == "host.renew-cert").count() >= 2, "renewals leave events");
        // A wrong bearer token leaves an auth.fail event naming the source, never the secret.
        let bad = "hat_0123456789abcdef-not-a-token";
        assert!(HubClient::new(&cfg.hub_url, &cfg.ca_pem, bad).unwrap().tenant_list().await.is_err());
        let events = c.events(None, 200).await.unwrap();
        let fail = events.iter().rev().find(|e| e.action == "auth.fail").expect("an auth.fail event");
        assert!(fail.object.starts_with("peer/127.0.0.1"), "{fail:?}");
        assert!(!format!("{fail:?}").contains(bad), "the event holds the presented secret: {fail:?}");

        // A removed host's certificate is refused at once: the same client, one
        // request before and one after the remove, on every hub path it uses.
        let (cert, key) = (read(&agent.join("host.pem")), read(&agent.join("host.key")));
        let as_host = HostClient::new(&cfg.hub_url, &agent_ca, &cert, &key).unwrap();
        as_host.desired(None, Duration::ZERO).await.expect("the host's current certificate works before the remove");
        c.host_remove(&name).await.unwrap();
        match as_host.desired(None, Duration::ZERO).await {
            Err(ClientError::Api(e)) => assert_eq!(e.code, hangar_types::ErrorCode::Unauthenticated, "{e:?}"),
            other => panic!("a removed host's certificate was accepted: {other:?}"),
        }
    });
}

/// `host rotate-cert`: the agent renews at once (not at a third of the lifetime left),
/// the host stays ready and reachable through the new pin, and the old certificate and
/// key are refused from the moment the new certificate is in use.
#[test]
fn rotate_cert_replaces_the_host_certificate_and_refuses_the_old_one() {
    let f = up();
    let cfg = hangar_node::config::load(&f.config()).unwrap();
    let agent = f.data_dir().join("agent");
    let (cert0, key0, agent_ca) = (read(&agent.join("host.pem")), read(&agent.join("host.key")), read(&agent.join("ca.pem")));
    let fp = |pem: &str| hangar_tls::fingerprint_pem(pem).unwrap();
    block_on(async {
        hangar_tls::install_crypto_provider();
        let c = f.client().unwrap();
        let name = c.host_list().await.unwrap().remove(0).name.to_string();
        let before = c.host_get(&name).await.unwrap();
        assert_eq!(before.cert_fingerprint.as_deref(), Some(fp(&cert0).as_str()));
        assert!(!before.cert_rotation_pending);
        let old = HostClient::new(&cfg.hub_url, &agent_ca, &cert0, &key0).unwrap();
        old.desired(None, Duration::ZERO).await.expect("the current certificate works before the rotation");

        // A tenant token may not ask; an unknown host is not found.
        c.tenant_create(&serde_json::from_value(serde_json::json!({"name": "rot"})).unwrap()).await.unwrap();
        let tt = c.token_create(&hangar_types::api::TokenCreate { tenant: Some("rot".parse().unwrap()), role: None, description: None, ttl_secs: None }).await.unwrap();
        let as_tenant = HubClient::new(&cfg.hub_url, &cfg.ca_pem, &tt.token).unwrap();
        assert_eq!(api_error(as_tenant.host_action(&name, "rotate-cert").await).code, hangar_types::ErrorCode::Forbidden);
        assert_eq!(api_error(c.host_action("no-such-host", "rotate-cert").await).code, hangar_types::ErrorCode::NotFound);

        for round in 1..=2 {
            let prev = c.host_get(&name).await.unwrap().cert_fingerprint.unwrap();
            let t = Instant::now();
            let after: hangar_types::api::Host = serde_json::from_value(f.json(&["host", "rotate-cert", &name])).unwrap();
            eprintln!("rotation {round}: {} ms", t.elapsed().as_millis());
            let now = after.cert_fingerprint.clone().expect("a fingerprint");
            assert_ne!(now, prev, "round {round}: the fingerprint did not change");
            assert!(!after.cert_rotation_pending, "round {round}: still pending after the wait");
            assert_eq!(fp(&read(&agent.join("host.pem"))), now, "round {round}: the agent holds another certificate than the hub pins");
            assert_eq!(after.state, hangar_types::api::HostState::Ready, "round {round}");
            c.host_status(&name).await.unwrap_or_else(|e| panic!("round {round}: the hub cannot reach the agent through the new pin: {e}"));
        }
        // The first certificate is refused on the same client that worked before.
        match old.desired(None, Duration::ZERO).await {
            Err(ClientError::Api(e)) => assert_eq!(e.code, hangar_types::ErrorCode::Unauthenticated, "{e:?}"),
            other => panic!("a rotated-out host certificate was accepted: {other:?}"),
        }
        // Ready still after a few more reports with the new certificate.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(c.host_get(&name).await.unwrap().state, hangar_types::api::HostState::Ready);
        let events = c.events(None, 200).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.action == "host.rotate-cert").count(), 2, "each rotation is an event");
    });
}
