//! Host-to-host transfers between two real agents' endpoints (mutual TLS with host
//! certificates from a hosts CA, as a hub makes them) on two real btrfs pools: a full
//! and an incremental snapshot arrive byte for byte; a wrong secret, an expired ticket,
//! another host's certificate, a second use, a cut stream and a bad checksum are each
//! refused and leave nothing staged. Needs root; fails loudly without it.

use hangar_agent::drivers::volume::{BtrfsPool, PoolConfig, VolumeDriver};
use hangar_agent::identity::AgentPaths;
use hangar_agent::transfer::Transfers;
use hangar_client::AgentClient;
use hangar_tls::{Ca, CertifiedKey};
use hangar_types::transfer::{Checksum, Frame, TransferExpect, TransferId, TransferObject, TransferSend, TransferState, TransferStatus, SECRET_HEADER};
use hangar_types::{SnapshotId, VolumeId};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn require_root() {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = st.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)).unwrap();
    assert_eq!(uid, "0", "transfer tests need root (loop devices, btrfs)");
    for tool in ["mkfs.btrfs", "losetup", "btrfs"] {
        let ok = std::process::Command::new("sh").arg("-c").arg(format!("command -v {tool} >/dev/null")).status().unwrap().success();
        assert!(ok, "{tool} is missing: .ci/run installs it");
    }
}

/// One host: its pool, its certificate, its endpoint serving the transfer routes.
struct Host {
    pool: Arc<BtrfsPool>,
    storage: PathBuf,
    cert: CertifiedKey,
    fingerprint: String,
    endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Fleet {
    dir: tempfile::TempDir,
    ca: Arc<Ca>,
    hub: CertifiedKey,
    hosts: Vec<Host>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            let _ = h.stop.take().map(|s| s.send(()));
        }
        let storages: Vec<PathBuf> = self.hosts.iter().map(|h| h.storage.clone()).collect();
        // Drop may run inside the test's runtime: release the pools on a thread of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            for s in storages {
                if let Err(e) = rt.block_on(BtrfsPool::teardown(&s)) {
                    eprintln!("cannot release {}: {e}", s.display());
                }
            }
        })
        .join()
        .unwrap();
    }
}

async fn fleet(n: usize) -> Fleet {
    require_root();
    hangar_tls::install_crypto_provider();
    let dir = tempfile::Builder::new().prefix("hangar-xfer-").tempdir().unwrap();
    let fleet_ca = Ca::generate("test fleet CA").unwrap();
    let hosts_ca = Ca::generate("test hosts CA").unwrap();
    let hub = fleet_ca.issue_client("hangar-hub").unwrap();
    let hub_fp = hangar_tls::fingerprint_pem(&hub.cert_pem).unwrap();
    let mut f = Fleet { dir, ca: Arc::new(Ca::from_pem(fleet_ca.cert_pem(), fleet_ca.key_pem()).unwrap()), hub, hosts: vec![] };
    for i in 0..n {
        let root = f.dir.path().join(format!("host{i}"));
        let agent = root.join("agent");
        std::fs::create_dir_all(&agent).unwrap();
        let (csr, key_pem) = hangar_tls::generate_csr("host").unwrap();
        let cert_pem = hosts_ca.sign_host_csr(&csr, &format!("h{i}"), &["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
        let cert = CertifiedKey { cert_pem, key_pem };
        let identity = serde_json::json!({"host_id": uuid::Uuid::now_v7(), "host": format!("h{i}"), "hub_url": "https://127.0.0.1:1", "hub_client_fingerprint": hub_fp});
        std::fs::write(agent.join("identity.json"), identity.to_string()).unwrap();
        std::fs::write(agent.join("ca.pem"), fleet_ca.cert_pem()).unwrap();
        std::fs::write(agent.join("host.pem"), &cert.cert_pem).unwrap();
        std::fs::write(agent.join("host.key"), &cert.key_pem).unwrap();
        let storage = root.join("storage");
        let pool = Arc::new(BtrfsPool::open(PoolConfig { root: storage.clone(), device: None, loop_size_mib: 512 }).await.unwrap());
        let t = Transfers::new(pool.clone(), AgentPaths::new(&agent), hub_fp.clone());
        let tls = hangar_tls::server_config_swappable_with_peers(hangar_tls::SwappableCert::new(&cert.cert_pem, &cert.key_pem).unwrap(), fleet_ca.cert_pem(), t.peer_pins()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(hangar_tls::serve::serve_router(listener, tls, hangar_agent::transfer::router(t), async move {
            let _ = stopped.await;
        }));
        let fingerprint = hangar_tls::fingerprint_pem(&cert.cert_pem).unwrap();
        f.hosts.push(Host { pool, storage, cert, fingerprint, endpoint, stop: Some(stop) });
    }
    f
}

impl Fleet {
    /// The hub's client to host `i`, pinned to its certificate.
    fn agent(&self, i: usize) -> AgentClient {
        let h = &self.hosts[i];
        let tls = hangar_tls::pinned_client_config(vec![h.fingerprint.clone()], Some((&self.hub.cert_pem, &self.hub.key_pem))).unwrap();
        AgentClient::pinned(&h.endpoint, tls).unwrap()
    }

    fn ticket(&self, from: usize, to: usize, object: TransferObject, expires_in: i64) -> (TransferExpect, TransferSend) {
        let id = TransferId::new();
        let secret = format!("s-{}", uuid::Uuid::new_v4().simple());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let x = TransferExpect {
            id,
            object: object.clone(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            source_fingerprints: vec![self.hosts[from].fingerprint.clone()],
            expires_unix: now + expires_in,
        };
        let s = TransferSend { id, object, target_endpoint: self.hosts[to].endpoint.clone(), target_fingerprints: vec![self.hosts[to].fingerprint.clone()], secret, checksum: Checksum::Blake3 };
        (x, s)
    }

    /// Runs a transfer as the hub does: expect on the target, send on the source, poll
    /// the source to the end. Checks progress never goes down.
    async fn run(&self, from: usize, to: usize, x: &TransferExpect, s: &TransferSend) -> TransferStatus {
        self.agent(to).transfer_expect(x).await.unwrap();
        self.agent(from).transfer_send(s).await.unwrap();
        let mut last = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            let st = self.agent(from).transfer_status(&s.id).await.unwrap();
            assert!(st.bytes >= last, "progress went back from {last} to {}", st.bytes);
            last = st.bytes;
            if st.state.is_final() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("transfer {} did not end", s.id)
    }

    /// Nothing staged on host `i` but `keep` (complete snapshots of earlier transfers).
    fn staging_holds_only(&self, i: usize, v: &VolumeId, keep: &[&str]) -> bool {
        let d = self.hosts[i].pool.transfer_dir().unwrap().join(v);
        let mut names: Vec<String> = std::fs::read_dir(&d).map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
        names.sort();
        names == keep
    }
}

fn snap(v: &VolumeId, s: &str, parent: Option<&str>) -> TransferObject {
    TransferObject::VolumeSnapshot { volume: v.clone(), snapshot: s.parse().unwrap(), parent: parent.map(|p| p.parse().unwrap()) }
}

fn sha_of(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_move_between_hosts_and_bad_tickets_are_refused() {
    let f = fleet(3).await;
    let v: VolumeId = "tv1".parse().unwrap();
    let src = &f.hosts[0];
    let vol = src.pool.ensure(&v, 256).await.unwrap();
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(vol.join("data.bin"), &data).unwrap();
    std::fs::write(vol.join("sentinel"), "hello from host 0").unwrap();
    src.pool.snapshot(&v, &"s1".parse::<SnapshotId>().unwrap()).await.unwrap();

    // A full send.
    let (x, s) = f.ticket(0, 1, snap(&v, "s1", None), 60);
    let st = f.run(0, 1, &x, &s).await;
    assert_eq!(st.state, TransferState::Done, "{st:?}");
    assert!(st.bytes > 24 << 20, "{st:?}");
    assert!(st.sha256.as_deref().is_some_and(|d| d.starts_with("blake3:")), "the source's checksum was BLAKE3: {st:?}");
    let target = f.agent(1).transfer_status(&s.id).await.unwrap();
    assert_eq!((target.state, target.bytes, &target.sha256), (TransferState::Done, st.bytes, &st.sha256));
    let got = f.hosts[1].pool.transfer_dir().unwrap().join(&v).join("s1");
    assert_eq!(sha_of(&got.join("data.bin")), sha_of(&vol.join("data.bin")));
    assert_eq!(std::fs::read_to_string(got.join("sentinel")).unwrap(), "hello from host 0");
    assert!(f.staging_holds_only(1, &v, &["s1"]));

    // The same ticket again (the source forgot it, so it would send): host 0 is no
    // longer let in at all once its one expected stream came.
    f.agent(0).transfer_forget(&s.id).await.unwrap();
    f.agent(0).transfer_send(&s).await.unwrap();
    let again = wait_final(&f, 0, &s.id).await;
    assert_eq!(again.state, TransferState::Failed);
    assert!(again.error.as_deref().unwrap().contains("UnknownCA"), "{again:?}");
    // With another ticket of host 0's open it is let in, and the used one is refused.
    let (other, _) = f.ticket(0, 1, snap(&v, "s9", None), 60);
    f.agent(1).transfer_expect(&other).await.unwrap();
    f.agent(0).transfer_forget(&s.id).await.unwrap();
    f.agent(0).transfer_send(&s).await.unwrap();
    let again = wait_final(&f, 0, &s.id).await;
    assert!(again.error.as_deref().unwrap().contains("used already"), "{again:?}");
    f.agent(1).transfer_forget(&other.id).await.unwrap();

    // An incremental send carries only the change.
    std::fs::write(vol.join("sentinel"), "changed on host 0").unwrap();
    std::fs::write(vol.join("more.bin"), vec![7u8; 1 << 20]).unwrap();
    src.pool.snapshot(&v, &"s2".parse::<SnapshotId>().unwrap()).await.unwrap();
    let (x, s) = f.ticket(0, 1, snap(&v, "s2", Some("s1")), 60);
    let st2 = f.run(0, 1, &x, &s).await;
    assert_eq!(st2.state, TransferState::Done, "{st2:?}");
    assert!(st2.bytes < 4 << 20, "an incremental send of ~1 MiB sent {} bytes", st2.bytes);
    let got2 = f.hosts[1].pool.transfer_dir().unwrap().join(&v).join("s2");
    assert_eq!(std::fs::read_to_string(got2.join("sentinel")).unwrap(), "changed on host 0");
    assert_eq!(sha_of(&got2.join("data.bin")), sha_of(&vol.join("data.bin")));
    assert_eq!(std::fs::read(got2.join("more.bin")).unwrap(), vec![7u8; 1 << 20]);

    // Refusals: each leaves the ticket unused (or gone) and nothing staged.
    src.pool.snapshot(&v, &"s3".parse::<SnapshotId>().unwrap()).await.unwrap();
    let refused = |name: &str| (name.to_string(), f.hosts[2].pool.transfer_dir().unwrap().join(&v).join("s3"));
    // A wrong secret.
    let (x, mut s) = f.ticket(0, 2, snap(&v, "s3", None), 60);
    s.secret = "not-the-secret".into();
    let st = f.run(0, 2, &x, &s).await;
    assert!(st.error.as_deref().unwrap().contains("secret"), "{st:?}");
    assert_eq!(f.agent(2).transfer_status(&x.id).await.unwrap().state, TransferState::Expected);
    // An expired ticket.
    let (x, s) = f.ticket(0, 2, snap(&v, "s3", None), -1);
    let st = f.run(0, 2, &x, &s).await;
    assert!(st.error.as_deref().unwrap().contains("expired"), "{st:?}");
    // Another host's ticket: host 0's certificate is not the one named, so the target
    // does not even finish the handshake.
    let (mut x, s) = f.ticket(0, 2, snap(&v, "s3", None), 60);
    x.source_fingerprints = vec![f.hosts[1].fingerprint.clone()];
    let st = f.run(0, 2, &x, &s).await;
    assert_eq!(st.state, TransferState::Failed, "{st:?}");
    // A target the source does not know: the source refuses its certificate.
    let (x, mut s) = f.ticket(0, 2, snap(&v, "s3", None), 60);
    s.target_fingerprints = vec![f.hosts[1].fingerprint.clone()];
    let st = f.run(0, 2, &x, &s).await;
    assert_eq!(st.state, TransferState::Failed, "{st:?}");
    let (_, s3) = refused("s3");
    assert!(!s3.exists());
    assert!(f.staging_holds_only(2, &v, &[]));

    // Streams that do not check, sent by hand as host 0: cut before the end frame, and
    // with a wrong checksum. Both are refused and leave nothing.
    let stream_bytes = btrfs_send(&src.pool.snapshot_dir(&v).unwrap().join("s3")).await;
    for bad in ["cut", "checksum"] {
        let (x, s) = f.ticket(0, 2, snap(&v, "s3", None), 60);
        f.agent(2).transfer_expect(&x).await.unwrap();
        let mut body: Vec<u8> = stream_bytes.chunks(1 << 16).flat_map(|c| Frame::Data(c.to_vec()).encode()).collect();
        if bad == "checksum" {
            body.extend(Frame::End { bytes: stream_bytes.len() as u64, digest: [0; 32] }.encode());
        }
        let (status, answer) = post_raw(&f, 0, 2, &s, body).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer.contains(if bad == "cut" { "without its end frame" } else { "does not check" }), "{bad}: {answer}");
        assert_eq!(f.agent(2).transfer_status(&x.id).await.unwrap().state, TransferState::Failed);
        assert!(!s3.exists(), "{bad}");
        assert!(f.staging_holds_only(2, &v, &[]), "{bad}");
        f.agent(2).transfer_forget(&x.id).await.unwrap();
    }
    // The same stream, whole and checked, is accepted.
    let (x, s) = f.ticket(0, 2, snap(&v, "s3", None), 60);
    f.agent(2).transfer_expect(&x).await.unwrap();
    let mut body: Vec<u8> = stream_bytes.chunks(1 << 16).flat_map(|c| Frame::Data(c.to_vec()).encode()).collect();
    body.extend(Frame::End { bytes: stream_bytes.len() as u64, digest: Sha256::digest(&stream_bytes).into() }.encode());
    let (status, answer) = post_raw(&f, 0, 2, &s, body).await;
    assert_eq!(status, 200, "{answer}");
    // It named no checksum, as agents before BLAKE3 do: checked by SHA-256.
    assert!(answer.contains(&format!("\"{}\"", hex::encode(Sha256::digest(&stream_bytes)))), "{answer}");
    assert_eq!(std::fs::read_to_string(s3.join("sentinel")).unwrap(), "changed on host 0");

    // The target makes the volume from a staged snapshot; the staging goes.
    let t = f.agent(1);
    assert_eq!(t.transfer_staged(&v).await.unwrap(), vec!["s1".parse::<SnapshotId>().unwrap(), "s2".parse().unwrap()]);
    t.transfer_adopt(&v, &hangar_types::transfer::StagedAdopt { snapshot: "s2".parse().unwrap(), size_mib: 256 }).await.unwrap();
    let made = f.hosts[1].pool.path(&v);
    assert_eq!(std::fs::read_to_string(made.join("sentinel")).unwrap(), "changed on host 0");
    std::fs::write(made.join("writable"), "yes").unwrap();
    assert!(f.staging_holds_only(1, &v, &[]));
    // Again (a lost answer): nothing to do, still fine.
    t.transfer_adopt(&v, &hangar_types::transfer::StagedAdopt { snapshot: "s2".parse().unwrap(), size_mib: 256 }).await.unwrap();

    // Only the hub may drive transfers: host 1's certificate is refused at the handshake
    // (not the fleet CA's, not pinned) and the hub's own routes check the caller too.
    let tls = hangar_tls::pinned_client_config(vec![f.hosts[2].fingerprint.clone()], Some((&f.hosts[1].cert.cert_pem, &f.hosts[1].cert.key_pem))).unwrap();
    let not_hub = AgentClient::pinned(&f.hosts[2].endpoint, tls).unwrap();
    assert!(not_hub.transfer_status(&x.id).await.is_err());
}

async fn wait_final(f: &Fleet, i: usize, id: &TransferId) -> TransferStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let st = f.agent(i).transfer_status(id).await.unwrap();
        if st.state.is_final() {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("transfer {id} did not end")
}

async fn btrfs_send(snapshot: &Path) -> Vec<u8> {
    let out = tokio::process::Command::new("btrfs").arg("send").arg("-q").arg(snapshot).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// POSTs `body` as the stream of `s`, as host `from`: (status, answer).
async fn post_raw(f: &Fleet, from: usize, to: usize, s: &TransferSend, body: Vec<u8>) -> (u16, String) {
    let h = &f.hosts[from];
    let mut tls = hangar_tls::pinned_client_config(vec![f.hosts[to].fingerprint.clone()], Some((&h.cert.cert_pem, &h.cert.key_pem))).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let port: u16 = f.hosts[to].endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let io = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    let req = axum::http::Request::post(format!("/v1/transfers/{}/stream", s.id))
        .header("host", "127.0.0.1")
        .header(SECRET_HEADER, &s.secret)
        .body(axum::body::Body::from(body))
        .unwrap();
    let mut sender = hangar_tls::forward::handshake(io).await.unwrap();
    let resp = hangar_tls::forward::send_on(&mut sender, req).await.map_err(|(e, _)| e).unwrap();
    let status = resp.status().as_u16();
    let b = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&b).into_owned())
}

/// The hub's side on the same real endpoints: tickets recorded, progress only up, done
/// only with the target's confirmation, a refused transfer recorded failed with
/// nothing left staged of it, an expired open ticket failed by the monitor's pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_runs_transfers_and_leaks_no_ticket() {
    use hangar_hub::{Hub, HubConfig, HubKeys};
    use hangar_store::contract::fixtures;
    use hangar_store::{HostRecord, TransferRecord};
    let f = fleet(2).await;
    let store = hangar_store::open(&f.dir.path().join("hub.db").to_string_lossy()).await.unwrap();
    let keys = HubKeys { server: f.ca.issue_server("hub", &["localhost".into()]).unwrap(), client: f.hub.clone(), ca: f.ca.clone() };
    let hub = Hub::new(store, keys, HubConfig::default());
    let mut recs = vec![];
    for (i, h) in f.hosts.iter().enumerate() {
        let rec = HostRecord { endpoint: Some(h.endpoint.clone()), cert_fingerprint: Some(h.fingerprint.clone()), join_token_hash: None, ..fixtures::host(&format!("node-{i}")) };
        hub.store.insert_host(&rec).await.unwrap();
        recs.push(rec);
    }
    let v: VolumeId = "hv1".parse().unwrap();
    let vol = f.hosts[0].pool.ensure(&v, 256).await.unwrap();
    std::fs::write(vol.join("data.bin"), vec![5u8; 8 << 20]).unwrap();
    f.hosts[0].pool.snapshot(&v, &"s1".parse::<SnapshotId>().unwrap()).await.unwrap();

    let mut seen: Vec<u64> = vec![];
    let st = hub.transfer(&recs[0], &recs[1], snap(&v, "s1", None), &mut |s| seen.push(s.bytes)).await.unwrap();
    assert_eq!(st.state, TransferState::Done);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress went back: {seen:?}");
    assert_eq!(seen.last(), Some(&st.bytes));
    let rec = hub.store.get_transfer(st.id).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.bytes, &rec.sha256), (TransferState::Done, st.bytes, &st.sha256));
    assert!(f.staging_holds_only(1, &v, &["s1"]));
    // Both agents forgot it: nothing left to leak.
    assert!(f.agent(0).transfer_status(&st.id).await.is_err());
    assert!(f.agent(1).transfer_status(&st.id).await.is_err());
    // To the same host: refused before anything is recorded.
    assert!(hub.transfer(&recs[0], &recs[0], snap(&v, "s1", None), &mut |_| {}).await.is_err());

    // Sent again, the target refuses it (staged already): failed, recorded, s1 kept.
    let err = hub.transfer(&recs[0], &recs[1], snap(&v, "s1", None), &mut |_| {}).await.unwrap_err();
    assert!(err.0.message.contains("staged here already"), "{}", err.0.message);
    assert!(f.staging_holds_only(1, &v, &["s1"]));
    assert!(hub.store.list_open_transfers().await.unwrap().is_empty());

    // A ticket a killed hub left open, past its expiry, with no source running it.
    let now = time::OffsetDateTime::now_utc();
    let left = TransferRecord { state: TransferState::Running, bytes: 10, ..TransferRecord::issued(TransferId::new(), recs[0].id, recs[1].id, snap(&v, "s1", None), now - time::Duration::seconds(200), now - time::Duration::seconds(1)) };
    hub.store.insert_transfer(&left).await.unwrap();
    assert_eq!(hub.transfer_expire().await.unwrap(), 1);
    assert!(hub.store.list_open_transfers().await.unwrap().is_empty());
    assert_eq!(hub.store.get_transfer(left.id).await.unwrap().unwrap().state, TransferState::Failed);
}


/// A TCP relay to `to` that passes `cut_after` bytes from the client on, then passes
/// nothing either way while holding both connections open: a network cut, as a drop
/// rule would make it. Returns its address.
async fn cutting_relay(to: u16, cut_after: u64) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", to)).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let passed = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (p, c) = (passed.clone(), cut.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || c.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    if p.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst) + n as u64 > cut_after {
                        c.store(true, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                // Hold the connection open, passing nothing.
                std::future::pending::<()>().await;
                drop((cr, sw));
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 || cut.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                std::future::pending::<()>().await;
                drop((sr, cw));
            });
        }
    });
    port
}

/// A network cut mid-stream fails the transfer on both sides within the idle limit,
/// leaves nothing staged, and the next attempt goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_network_fails_cleanly_and_the_next_attempt_works() {
    let f = fleet(2).await;
    let v: VolumeId = "tv2".parse().unwrap();
    let vol = f.hosts[0].pool.ensure(&v, 256).await.unwrap();
    let data: Vec<u8> = (0..96u32 << 20).map(|i| (i.wrapping_mul(2246822519) >> 11) as u8).collect();
    std::fs::write(vol.join("data.bin"), &data).unwrap();
    f.hosts[0].pool.snapshot(&v, &"s1".parse::<SnapshotId>().unwrap()).await.unwrap();
    let port: u16 = f.hosts[1].endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let relay = cutting_relay(port, 4 << 20).await;

    let (x, mut s) = f.ticket(0, 1, snap(&v, "s1", None), 60);
    s.target_endpoint = format!("https://127.0.0.1:{relay}");
    let started = std::time::Instant::now();
    let st = f.run(0, 1, &x, &s).await;
    assert_eq!(st.state, TransferState::Failed, "{st:?}");
    assert!(st.error.as_deref().unwrap().contains("cut"), "{st:?}");
    assert!(st.bytes > 0 && st.bytes < 96 << 20, "{st:?}");
    let target = wait_final(&f, 1, &x.id).await;
    assert_eq!(target.state, TransferState::Failed, "{target:?}");
    assert!(started.elapsed() < hangar_agent::transfer::IDLE_MAX * 3, "took {:?}", started.elapsed());
    assert!(f.staging_holds_only(1, &v, &[]), "a cut transfer left something staged");
    f.agent(0).transfer_forget(&s.id).await.unwrap();
    f.agent(1).transfer_forget(&x.id).await.unwrap();

    // The next attempt, straight to the target, goes through whole.
    let (x, s) = f.ticket(0, 1, snap(&v, "s1", None), 60);
    let st = f.run(0, 1, &x, &s).await;
    assert_eq!(st.state, TransferState::Done, "{st:?}");
    let got = f.hosts[1].pool.transfer_dir().unwrap().join(&v).join("s1");
    assert_eq!(sha_of(&got.join("data.bin")), sha_of(&vol.join("data.bin")));
}
