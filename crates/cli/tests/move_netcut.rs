//! `hangar instance move` across a network cut: the target host's namespace drops the
//! source's traffic in the middle of the first pass (nftables, in that namespace only).
//! The move fails cleanly (rolled back: the instance runs on the source with its bytes,
//! the target keeps nothing staged), and once the network is back
//! a second move works.

mod common;

use common::moves::{fleet_with_web, held, sandbox, volume};
use common::{block_on, exec, wait_until, Fleet};
use hangar_types::moves::{InstanceMove, MovePhase};
use std::process::Command;
use std::time::Instant;

const TABLE: &str = "hangar_test_cut";

/// Runs `nft` in `host`'s network namespace (through its agent process).
fn nft_in(f: &Fleet, host: &str, script: &str) {
    let pid = std::fs::read_to_string(f.data_dir().join("hosts").join(host).join("agent.pid")).unwrap();
    let out = Command::new("nsenter").arg(format!("--net=/proc/{}/ns/net", pid.trim())).args(["nft", "-f", "-"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(script.as_bytes())?;
        c.wait_with_output()
    });
    let out = out.expect("nft runs");
    assert!(out.status.success(), "nft in {host}: {}\n{script}", String::from_utf8_lossy(&out.stderr));
}

/// The underlay address of `host` (its agent endpoint's IP).
fn host_ip(f: &Fleet, host: &str) -> String {
    let ep = f.json(&["host", "info", host])["endpoint"].as_str().unwrap_or_default().to_string();
    let hostport = ep.trim_start_matches("https://").split('/').next().unwrap_or_default().to_string();
    hostport.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or(hostport)
}

#[test]
fn a_move_cut_by_the_network_rolls_back_and_the_next_one_works() {
    let f = fleet_with_web("hangar-movecut-", None);
    let sb = sandbox(&f, "acme/web");
    // Enough bytes that the first pass is under way when the cut comes: the target's
    // namespace also slows what it accepts from the source until then.
    exec(&f, "acme/web", "head -c 134217728 /dev/urandom > /home/big.bin && sync");
    let sha = exec(&f, "acme/web", "cat /home/sentinel.bin /home/big.bin | sha256sum | cut -d' ' -f1");
    let src = host_ip(&f, "node-b");
    assert!(src.parse::<std::net::Ipv4Addr>().is_ok(), "node-b's endpoint address: '{src}'");
    nft_in(&f, "node-c", &format!("table inet {TABLE} {{\n chain input {{\n type filter hook input priority -5; policy accept;\n ip saddr {src} tcp flags != syn limit rate over 4 mbytes/second drop\n }}\n}}\n"));

    let c = f.client().unwrap();
    block_on(c.instance_move("acme", "web", &InstanceMove::to("node-c".parse().unwrap()))).unwrap();
    // The move's bytes show while its first pass runs (not only once it ended).
    wait_until("the first pass is moving bytes", || block_on(c.instance_move_status("acme", "web")).is_ok_and(|m| m.phase == MovePhase::Sending && m.bytes > 0));
    // The cut: nothing from the source reaches the target any more, either way.
    nft_in(&f, "node-c", &format!("flush table inet {TABLE}\ntable inet {TABLE} {{\n chain input {{\n type filter hook input priority -5; policy accept;\n ip saddr {src} drop\n }}\n chain output {{\n type filter hook output priority -5; policy accept;\n ip daddr {src} drop\n }}\n}}\n"));
    let t = Instant::now();
    let m = common::moves::wait_move_final(&f, "cut");
    assert_eq!(m.phase, MovePhase::RolledBack, "a cut move: {m:?}");
    assert!(m.error.as_deref().is_some_and(|e| !e.is_empty()), "no reason for the failed move: {m:?}");
    eprintln!("the cut move rolled back after {:?}: {:?}", t.elapsed(), m.error);
    let i = f.json(&["instance", "info", "acme/web"]);
    assert_eq!(i["host"], "node-b", "{i}");
    wait_until("running on the source again", || f.json(&["instance", "info", "acme/web"])["state"] == "running");
    assert_eq!(exec(&f, "acme/web", "cat /home/sentinel.bin /home/big.bin | sha256sum | cut -d' ' -f1"), sha, "bytes changed by the cut move");
    wait_until("the target keeps nothing of it", || held(&f, "node-c", &sb).is_empty());

    // The network back: a second move works and leaves nothing on the source.
    nft_in(&f, "node-c", &format!("delete table inet {TABLE}\n"));
    let out = f.run(&["instance", "move", "acme/web", "--to", "node-c", "--wait"]);
    assert!(out.contains("moved"), "{out}");
    assert_eq!(f.json(&["instance", "info", "acme/web"])["host"], "node-c");
    assert_eq!(exec(&f, "acme/web", "cat /home/sentinel.bin /home/big.bin | sha256sum | cut -d' ' -f1"), sha, "bytes changed by the second move");
    assert!(volume(&f, "node-c", &sb).is_dir());
    wait_until("the source holds nothing after the second move", || held(&f, "node-b", &sb).is_empty());
    let open = block_on(c.instance_move_status("acme", "web")).unwrap();
    assert_eq!(open.phase, MovePhase::Done, "{open:?}");
}
