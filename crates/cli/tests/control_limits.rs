//! Issue 13, limits: a slowloris client holding many connections open without a request
//! cannot starve the hub's listener. The hub runs with a low file limit (1024, as under
//! a default systemd unit); the attacker (from another loopback address) opens 1,500
//! connections and keeps re-opening them; fresh clients are still served at once and
//! the host stays ready with a 3 s stale threshold.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The pid of the fleet's `hangar up` process (its command line names the data dir).
fn up_pid(f: &Fleet) -> u32 {
    let dir = f.data_dir().display().to_string();
    for (pid, line) in common::host_command_lines() {
        let args: Vec<&str> = line.split(' ').collect();
        if args.contains(&"up") && args.contains(&dir.as_str()) {
            return pid;
        }
    }
    panic!("no `hangar up` process for {dir}");
}

#[test]
fn a_slowloris_client_cannot_starve_the_listener() {
    let f = up_with(&["--stale-after", "3"]);
    let pid = up_pid(&f);
    let o = std::process::Command::new("prlimit").arg(format!("--pid={pid}")).arg("--nofile=1024:1024").output().expect("prlimit (util-linux)");
    assert!(o.status.success(), "prlimit: {}", String::from_utf8_lossy(&o.stderr));
    let cfg = hangar_node::config::load(&f.config()).unwrap();
    let hub: std::net::SocketAddr = cfg.hub_url.trim_start_matches("https://").parse().unwrap();
    block_on(async {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed_by_hub = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut attackers = vec![];
        for _ in 0..1500 {
            let (stop, closed) = (stop.clone(), closed_by_hub.clone());
            attackers.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = tokio::net::TcpSocket::new_v4().unwrap();
                    if s.bind("127.0.0.2:0".parse().unwrap()).is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    let Ok(mut c) = s.connect(hub).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    // Say nothing; wait until the hub hangs up (or the attack ends).
                    let mut b = [0u8; 1];
                    let r = tokio::time::timeout(Duration::from_secs(30), c.read(&mut b)).await;
                    if matches!(r, Ok(Ok(0)) | Ok(Err(_))) {
                        closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = Instant::now();
        let mut worst = Duration::ZERO;
        while t.elapsed() < Duration::from_secs(20) {
            // A fresh client each time: a new connection from 127.0.0.1.
            let c = hangar_client::HubClient::new(&cfg.hub_url, &cfg.ca_pem, &cfg.token).unwrap();
            let q = Instant::now();
            let hosts = tokio::time::timeout(Duration::from_secs(5), c.host_list()).await;
            worst = worst.max(q.elapsed());
            let hosts = hosts.unwrap_or_else(|_| panic!("a fresh client was not served within 5 s during the attack ({:?} in)", t.elapsed())).unwrap();
            assert!(hosts.iter().all(|h| h.state == hangar_types::api::HostState::Ready), "a host went {:?} during the attack", hosts.iter().map(|h| h.state).collect::<Vec<_>>());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for a in attackers {
            a.abort();
        }
        let closed = closed_by_hub.load(std::sync::atomic::Ordering::Relaxed);
        assert!(closed >= 1000, "the hub closed only {closed} idle connections: they are not capped");
        eprintln!("slowest fresh request during the attack: {worst:?}; idle connections the hub closed: {closed}");
    });
}
