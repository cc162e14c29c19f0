//! Real TLS handshakes on loopback with the fleet's PKI.

use hangar_tls::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Serves one connection; answers with the fingerprint of the client's certificate
/// ("none" if it presented none). Returns the address and the server task.
async fn server(cfg: Arc<rustls::ServerConfig>) -> (std::net::SocketAddr, tokio::task::JoinHandle<Result<String, String>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let mut s = TlsAcceptor::from(cfg).accept(tcp).await.map_err(|e| e.to_string())?;
        let fp = s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| fingerprint_der(c.as_ref()));
        let cn = s.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name_der(c.as_ref()));
        let msg = format!("{}|{}", fp.unwrap_or_else(|| "none".into()), cn.unwrap_or_default());
        s.write_all(msg.as_bytes()).await.map_err(|e| e.to_string())?;
        s.shutdown().await.map_err(|e| e.to_string())?;
        Ok(msg)
    });
    (addr, task)
}

async fn connect(addr: std::net::SocketAddr, cfg: rustls::ClientConfig, name: &str) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut s = TlsConnector::from(Arc::new(cfg)).connect(sn, tcp).await.map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(buf)
}

fn names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

#[tokio::test]
async fn ca_round_trips_and_server_cert_verifies_by_ip_and_dns() {
    install_crypto_provider();
    let ca = Ca::generate("test CA").unwrap();
    let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(ca.fingerprint(), again.fingerprint());
    assert_eq!(ca.fingerprint().len(), 64);
    let srv = again.issue_server("hub", &names()).unwrap();
    for name in ["127.0.0.1", "localhost"] {
        let (addr, task) = server(server_config(&srv.cert_pem, &srv.key_pem, None, false).unwrap()).await;
        let got = connect(addr, client_config(ca.cert_pem(), None).unwrap(), name).await.unwrap();
        assert!(got.starts_with("none|"));
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_server() {
    install_crypto_provider();
    let (a, b) = (Ca::generate("A").unwrap(), Ca::generate("B").unwrap());
    let srv = b.issue_server("hub", &names()).unwrap();
    let (addr, _task) = server(server_config(&srv.cert_pem, &srv.key_pem, None, false).unwrap()).await;
    let err = connect(addr, client_config(a.cert_pem(), None).unwrap(), "localhost").await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn mtls_requires_a_certificate_from_the_fleet_ca_and_forces_the_cn() {
    install_crypto_provider();
    let ca = Ca::generate("fleet").unwrap();
    let other = Ca::generate("other").unwrap();
    let srv = ca.issue_server("hub", &names()).unwrap();
    let cfg = server_config(&srv.cert_pem, &srv.key_pem, Some(ca.cert_pem()), true).unwrap();

    // No certificate: refused.
    let (addr, task) = server(cfg.clone()).await;
    let _ = connect(addr, client_config(ca.cert_pem(), None).unwrap(), "localhost").await;
    assert!(task.await.unwrap().is_err(), "server accepted an anonymous client");

    // A certificate from another CA: refused.
    let stranger = other.issue_client("stranger").unwrap();
    let (addr, task) = server(cfg.clone()).await;
    let _ = connect(addr, client_config(ca.cert_pem(), Some((&stranger.cert_pem, &stranger.key_pem))).unwrap(), "localhost").await;
    assert!(task.await.unwrap().is_err(), "server accepted a foreign client certificate");

    // A host certificate signed from a CSR: accepted, fingerprint and forced CN visible.
    let (csr, key) = generate_csr("i-claim-to-be-the-hub").unwrap();
    let cert = ca.sign_host_csr(&csr, "node-a", &names(), std::time::Duration::from_secs(3600)).unwrap();
    let (addr, task) = server(cfg).await;
    let got = connect(addr, client_config(ca.cert_pem(), Some((&cert, &key))).unwrap(), "localhost").await.unwrap();
    assert_eq!(got, format!("{}|host:node-a", fingerprint_pem(&cert).unwrap()));
    task.await.unwrap().unwrap();

    // The same host certificate serves the agent's endpoint, reached pinned by
    // fingerprint; it cannot pose as the hub, even to a client trusting its CA.
    let (addr, task) = server(server_config(&cert, &key, None, false).unwrap()).await;
    connect(addr, pinned_client_config(vec![fingerprint_pem(&cert).unwrap()], None).unwrap(), "127.0.0.1").await.unwrap();
    task.await.unwrap().unwrap();
    let (addr, _task) = server(server_config(&cert, &key, None, false).unwrap()).await;
    let err = connect(addr, client_config(ca.cert_pem(), None).unwrap(), "127.0.0.1").await.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
}

/// Regression for issue 13: a host certificate made by an older hub (server-auth usage,
/// signed by the hub's own CA) must not pass for the hub; a pin refuses any other
/// certificate, however well signed.
#[tokio::test]
async fn host_certificates_cannot_pose_as_the_hub_and_pins_refuse_strangers() {
    install_crypto_provider();
    let ca = Ca::generate("fleet").unwrap();
    let legacy = ca.issue_server("host:node-a", &names()).unwrap();
    let (addr, _task) = server(server_config(&legacy.cert_pem, &legacy.key_pem, None, false).unwrap()).await;
    let err = connect(addr, client_config(ca.cert_pem(), None).unwrap(), "localhost").await.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    let hub = ca.issue_server("hangar-hub", &names()).unwrap();
    let (addr, _task) = server(server_config(&hub.cert_pem, &hub.key_pem, None, false).unwrap()).await;
    let err = connect(addr, pinned_client_config(vec![fingerprint_pem(&legacy.cert_pem).unwrap()], None).unwrap(), "localhost").await.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
}

#[test]
fn renewal_is_due_at_a_third_of_the_lifetime_left_or_for_legacy_certificates() {
    let ca = Ca::generate("hosts").unwrap();
    let (csr, _) = generate_csr("x").unwrap();
    let cert = ca.sign_host_csr(&csr, "a", &names(), std::time::Duration::from_secs(300)).unwrap();
    let now = std::time::SystemTime::now();
    let s = std::time::Duration::from_secs;
    assert!(!renewal_due(&cert, now).unwrap());
    assert!(!renewal_due(&cert, now + s(150)).unwrap());
    assert!(renewal_due(&cert, now + s(250)).unwrap());
    let legacy = ca.issue_server("host:a", &names()).unwrap();
    assert!(renewal_due(&legacy.cert_pem, now).unwrap(), "server-auth host certificates renew at once");
}

#[tokio::test]
async fn optional_client_certs_allow_anonymous_and_still_verify() {
    install_crypto_provider();
    let ca = Ca::generate("fleet").unwrap();
    let srv = ca.issue_server("hub", &names()).unwrap();
    let cfg = server_config(&srv.cert_pem, &srv.key_pem, Some(ca.cert_pem()), false).unwrap();
    let (addr, task) = server(cfg.clone()).await;
    assert!(connect(addr, client_config(ca.cert_pem(), None).unwrap(), "localhost").await.unwrap().starts_with("none|"));
    task.await.unwrap().unwrap();
    let c = ca.issue_client("user").unwrap();
    let (addr, task) = server(cfg.clone()).await;
    let got = connect(addr, client_config(ca.cert_pem(), Some((&c.cert_pem, &c.key_pem))).unwrap(), "localhost").await.unwrap();
    assert!(got.starts_with(&fingerprint_pem(&c.cert_pem).unwrap()));
    task.await.unwrap().unwrap();
    let bad = Ca::generate("other").unwrap().issue_client("x").unwrap();
    let (addr, task) = server(cfg).await;
    let _ = connect(addr, client_config(ca.cert_pem(), Some((&bad.cert_pem, &bad.key_pem))).unwrap(), "localhost").await;
    assert!(task.await.unwrap().is_err(), "a presented foreign certificate must still be refused");
}

#[test]
fn private_files_are_0600_and_bad_input_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("key.pem");
    write_private(&p, "secret").unwrap();
    write_private(&p, "secret2").unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "secret2");
    assert!(fingerprint_pem("not pem").is_err());
    let ca = Ca::generate("x").unwrap();
    assert!(ca.sign_host_csr("garbage", "a", &[], std::time::Duration::from_secs(60)).is_err());
    assert!(ca.issue_server("hub", &["bad name!".into()]).is_err());
}
