//! End to end, tenant networks with real packets: reach within a tenant, isolation
//! across tenants and from the host, NAT out to a namespace standing in for the outside
//! world, stable addresses, repair of links removed by hand, and a clean teardown.

mod common;

use common::{free_port, wait_until, Fleet};
use serde_json::Value;
use std::process::Command;
use std::time::Instant;

fn address(f: &Fleet, inst: &str) -> String {
    f.json(&["instance", "info", inst])["address"].as_str().expect("instance has an address").to_string()
}

fn ping(f: &Fleet, from: &str, to: &str) -> bool {
    f.try_run(&["instance", "exec", from, "--", "ping", "-c1", "-W1", to]).status.success()
}


fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Deletes a link the test made, also when the test fails.
struct DelLink(String);

impl Drop for DelLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// A network namespace with a veth to the host: the "internet" for the NAT test.
struct Outside {
    ns: String,
    host_if: String,
}

impl Outside {
    fn new(octet: u8) -> Outside {
        let o = Outside { ns: format!("hgtest-out-{octet}"), host_if: format!("hgto{octet}") };
        let cmds = [
            format!("ip netns add {}", o.ns),
            format!("ip link add {} type veth peer name hgtp{octet}", o.host_if),
            format!("ip link set hgtp{octet} netns {}", o.ns),
            format!("ip addr add 198.18.{octet}.1/24 dev {}", o.host_if),
            format!("ip link set {} up", o.host_if),
            format!("ip -n {} addr add 198.18.{octet}.2/24 dev hgtp{octet}", o.ns),
            format!("ip -n {} link set hgtp{octet} up", o.ns),
            format!("ip -n {} link set lo up", o.ns),
        ];
        for c in cmds {
            assert!(Command::new("sh").arg("-c").arg(&c).status().unwrap().success(), "{c}");
        }
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn tenants_reach_their_own_and_nothing_else() {
    let mut f = common::up();
    let range = format!("10.{}.", f.range_octet);
    f.run(&["tenant", "create", "acme"]);
    f.run(&["tenant", "create", "zeta"]);
    for i in ["acme/a", "acme/b", "zeta/x"] {
        f.run(&["instance", "create", i, "--start", "--", "sleep", "infinity"]);
    }
    let (a, b, x) = (address(&f, "acme/a"), address(&f, "acme/b"), address(&f, "zeta/x"));
    assert!(a.starts_with(&range) && b.starts_with(&range) && x.starts_with(&range), "{a} {b} {x} outside {range}0.0/16");
    assert_ne!(a, b);
    let gw_a = format!("{}.1", a.rsplit_once('.').unwrap().0);

    assert!(ping(&f, "acme/a", &b), "same tenant must reach");
    assert!(ping(&f, "acme/b", &a), "same tenant must reach");
    assert!(!ping(&f, "acme/a", &x), "other tenant reachable");
    assert!(!ping(&f, "zeta/x", &a), "other tenant reachable");
    assert!(!ping(&f, "acme/a", &gw_a), "the host (gateway address) is reachable");
    let host_ip = sh("ip -4 -o addr show scope global | awk '$2 !~ /^hg/ {print $4}' | cut -d/ -f1 | head -1");
    if !host_ip.trim().is_empty() {
        assert!(!ping(&f, "acme/a", host_ip.trim()), "the host's own address {host_ip} is reachable");
    }

    let v = f.json(&["net", "verify"]);
    assert_eq!(v["ok"], true, "{v:#}");
    let probes = v["checks"].as_array().unwrap().iter().filter(|c| c["check"].as_str().unwrap().starts_with("probe")).count();
    assert!(probes >= 4, "{v:#}");

    // NAT: the outside world sees the host's address, not the instance's.
    let out = Outside::new(f.range_octet);
    let server = Command::new("ip")
        .args(["netns", "exec", &out.ns, "python3", "-c"])
        .arg("import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',8080));s.listen();s.settimeout(30);c,a=s.accept();c.send(a[0].encode());c.close()")
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let target = format!("198.18.{}.2", f.range_octet);
    let mut seen = String::new();
    wait_until("the outside answers through NAT", || {
        let o = f.try_run(&["instance", "exec", "acme/a", "--", "python3", "-c", &format!("import socket;s=socket.create_connection(('{target}',8080),timeout=2);print(s.recv(64).decode())")]);
        seen = String::from_utf8_lossy(&o.stdout).trim().to_string();
        o.status.success()
    });
    assert_eq!(seen, format!("198.18.{}.1", f.range_octet), "the outside saw {seen}: not masqueraded");

    // Addresses are stable across stop/start and a crash of hub and agent.
    f.run(&["instance", "stop", "acme/a"]);
    f.run(&["instance", "start", "acme/a"]);
    assert_eq!(address(&f, "acme/a"), a);
    assert!(ping(&f, "acme/a", &b));
    common::crash_and_restart(&mut f);
    assert_eq!(address(&f, "acme/a"), a);
    let t0 = Instant::now();
    wait_until("reach across the restart", || ping(&f, "acme/b", &a));
    eprintln!("reach restored {:?} after ready", t0.elapsed());

    // A veth and the rules removed by hand: verify sees it, the agent repairs it.
    let inst: Value = f.json(&["instance", "info", "acme/b"]);
    let id = inst["id"].as_str().unwrap().replace('-', "");
    let veth = format!("hv{}", &id[id.len() - 12..]);
    assert!(Command::new("ip").args(["link", "del", &veth]).status().unwrap().success());
    wait_until("the agent re-creates the veth", || sh(&format!("ip -br link show {veth} 2>/dev/null")).contains(&veth));
    wait_until("same-tenant reach again", || ping(&f, "acme/a", &b));
    assert_eq!(f.json(&["net", "verify"])["ok"], true);

    // Teardown: deleting removes veths and namespaces; the last instance of a tenant
    // takes its bridge with it.
    let bridge_of = |addr: &str| {
        let o: Vec<u8> = addr.split('.').take(3).map(|p| p.parse().unwrap()).collect();
        format!("hgb{:02x}{:02x}{:02x}", o[0], o[1], o[2])
    };
    let zeta_bridge = bridge_of(&x);
    let zeta_id = f.json(&["instance", "info", "zeta/x"])["id"].as_str().unwrap().replace('-', "");
    f.run(&["instance", "delete", "zeta/x"]);
    wait_until("zeta's bridge goes", || !sh("ip -br link").contains(&zeta_bridge));
    let zeta_sid = format!("i{}", &zeta_id[zeta_id.len() - 12..]);
    assert!(!sh("ls /run/netns").contains(&zeta_sid), "zeta/x's namespace is left");
    assert!(sh("ip -br link").contains(&bridge_of(&a)), "acme's bridge must stay");
    f.run(&["instance", "delete", "acme/a"]);
    f.run(&["instance", "delete", "acme/b"]);
    wait_until("acme's bridge goes", || !sh("ip -br link").contains(&bridge_of(&a)));
    assert!(!sh("ip -br link").contains(&veth));
}

#[test]
fn a_tenant_subnet_overlapping_a_host_route_is_refused_and_nothing_is_half_made() {
    let f = common::up();
    let dummy = format!("hgtd{}", f.range_octet);
    let _del = DelLink(dummy.clone());
    // The host already routes the first tenant's /24 somewhere else.
    let subnet_host = format!("10.{}.1.5/24", f.range_octet);
    let peer = format!("hgte{}", f.range_octet);
    for c in [
        format!("ip link add {dummy} type veth peer name {peer}"),
        format!("ip addr add {subnet_host} dev {dummy}"),
        format!("ip link set {dummy} up"),
        format!("ip link set {peer} up"),
    ] {
        assert!(Command::new("sh").arg("-c").arg(&c).status().unwrap().success(), "{c}");
    }
    f.run(&["tenant", "create", "acme"]);
    let err = f.fail(&["instance", "create", "acme/a", "--start", "--", "sleep", "infinity"]);
    assert!(err.contains("overlaps the host's route"), "{err}");
    let i = f.json(&["instance", "info", "acme/a"]);
    assert_eq!(i["state"], "failed", "{i}");
    let bridge = format!("hgb0a{:02x}01", f.range_octet);
    assert!(!sh("ip -br link").contains(&bridge), "a bridge was made anyway");
}

#[test]
fn an_isolated_tenant_keeps_its_own_instances_apart() {
    let f = common::up();
    f.run(&["tenant", "create", "iso", "--isolated"]);
    f.run(&["instance", "create", "iso/a", "--start", "--", "sleep", "infinity"]);
    f.run(&["instance", "create", "iso/b", "--start", "--", "sleep", "infinity"]);
    let (a, b) = (address(&f, "iso/a"), address(&f, "iso/b"));
    assert!(!ping(&f, "iso/a", &b), "isolated instances reach each other");
    assert!(!ping(&f, "iso/b", &a), "isolated instances reach each other");
    let v = f.json(&["net", "verify"]);
    assert_eq!(v["ok"], true, "{v:#}");
}

/// A tenant asked for a /22: its instances are wired with the /22 and its one gateway,
/// reach each other, and `net verify` agrees. A prefix out of range is refused up front.
#[test]
fn a_wide_tenant_subnet_is_wired_with_its_prefix() {
    let f = common::up();
    let bad = f.try_run(&["tenant", "create", "wide", "--net-prefix", "25"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--net-prefix") && err.contains("20"), "{err}");
    let t = f.json(&["tenant", "create", "wide", "--net-prefix", "22"]);
    assert_eq!((t["net_id"].as_u64(), t["net_prefix"].as_u64()), (Some(4), Some(22)), "{t:#}");
    f.run(&["instance", "create", "wide/a", "--start", "--", "sleep", "infinity"]);
    f.run(&["instance", "create", "wide/b", "--start", "--", "sleep", "infinity"]);
    let (a, b) = (address(&f, "wide/a"), address(&f, "wide/b"));
    let subnet = format!("10.{}.4.0/22", f.range_octet);
    let inside = f.run(&["instance", "exec", "wide/a", "--", "sh", "-c", "ip -4 -o addr show eth0; ip route"]);
    assert!(inside.contains(&format!("{a}/22")), "{inside}");
    assert!(inside.contains(&format!("{subnet} dev eth0")) && inside.contains(&format!("default via 10.{}.4.1", f.range_octet)), "{inside}");
    assert!(ping(&f, "wide/a", &b) && ping(&f, "wide/b", &a), "same tenant must reach");
    assert!(f.run(&["instance", "info", "wide/a"]).contains(&format!("10.{}.4.1", f.range_octet)));
    let v = f.json(&["net", "verify"]);
    assert_eq!(v["ok"], true, "{v:#}");
}

#[test]
fn an_exhausted_cluster_range_is_a_clear_error_and_a_destroyed_tenant_frees_its_network() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("config.json");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let hangar = |args: &[&str]| Command::new(common::bin()).args(args).env("HANGAR_CONFIG", &cfg).output().unwrap();
    assert!(hangar(&["init", "--data-dir", data.to_str().unwrap(), "--listen", &listen]).status.success());
    // A /23 holds two /24s; the first is never handed out, so one tenant fits.
    let mut hub = Command::new(common::bin())
        .args(["hub", "serve", "--data-dir", data.to_str().unwrap(), "--listen", &listen, "--cluster-range", "10.99.0.0/23"])
        .env("HANGAR_CONFIG", &cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("hub answers", || hangar(&["tenant", "list"]).status.success());
    let one = hangar(&["tenant", "create", "one", "--json"]);
    assert!(one.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&one.stdout).unwrap()["net_id"], 1);
    let two = hangar(&["tenant", "create", "two"]);
    assert!(!two.status.success());
    assert!(String::from_utf8_lossy(&two.stderr).contains("no free tenant network"), "{}", String::from_utf8_lossy(&two.stderr));
    assert!(hangar(&["tenant", "destroy", "one"]).status.success());
    let two = hangar(&["tenant", "create", "two", "--json"]);
    assert!(two.status.success(), "{}", String::from_utf8_lossy(&two.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&two.stdout).unwrap()["net_id"], 1);
    let _ = hub.kill();
    let _ = hub.wait();
}

#[test]
fn a_device_with_the_bridge_name_that_hangar_does_not_own_is_left_alone() {
    let f = common::up();
    let name = format!("hgb0a{:02x}01", f.range_octet);
    let _del = DelLink(name.clone());
    assert!(Command::new("ip").args(["link", "add", &name, "type", "veth", "peer", "name", &format!("hgtc{}", f.range_octet)]).status().unwrap().success());
    f.run(&["tenant", "create", "acme"]);
    let err = f.fail(&["instance", "create", "acme/a", "--start", "--", "sleep", "infinity"]);
    assert!(err.contains("is not a hangar bridge"), "{err}");
    // Still the user's veth, untouched.
    assert!(sh(&format!("ip -d link show {name}")).contains("veth"));
}
