//! A hostile tenant against the network, with real sandboxes on three hosts (the local
//! one and two `local`-provider namespaces): from a sandbox, the hub's API and the
//! services of the hub's machine, an agent endpoint and a host's underlay address stay
//! out of reach, and a VXLAN frame carrying another tenant's VNI, sent from a sandbox or
//! from a fake peer on the host network, is never taken in by the victim's overlay.
//!
//! Reachability is checked twice where a lost reply could hide a packet that got
//! through: the connection fails, and a counter in the target's namespace saw nothing
//! from the sandbox. VXLAN injection is checked on the victim's bridge: the injected MAC
//! is never learned, while the same frame from a listed peer is (so the check can see it).

mod common;

use common::*;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A fleet with two provider hosts, the victim tenant `acme` on both (its overlay up) and
/// the attacker `evil` on node-b.
struct Setup {
    f: Fleet,
    /// The first two octets of the fleet's addresses: `10.<octet>`.
    net: String,
}

impl Setup {
    fn new() -> Setup {
        let f = common::up();
        let net = format!("10.{}", f.range_octet);
        for h in ["node-b", "node-c"] {
            f.run(&["host", "add", h, "--provider", "local"]);
        }
        f.run(&["tenant", "create", "acme"]);
        f.run(&["tenant", "create", "evil"]);
        for (inst, host) in [("acme/a", "node-b"), ("acme/b", "node-c"), ("evil/x", "node-b")] {
            f.run(&["instance", "create", inst, "--host", host, "--start", "--", "sleep", "infinity"]);
        }
        let s = Setup { f, net };
        let b = s.address("acme/b");
        wait_until("acme's overlay between node-b and node-c", || s.ping("acme/a", &b));
        s
    }

    fn address(&self, inst: &str) -> String {
        self.f.json(&["instance", "info", inst])["address"].as_str().expect("an address").to_string()
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        self.f.try_run(&["instance", "exec", from, "--", "ping", "-c1", "-W1", to]).status.success()
    }

    /// A TCP connection from inside `inst` (2 s timeout).
    fn tcp(&self, inst: &str, ip: &str, port: u16) -> bool {
        self.f.try_run(&["instance", "exec", inst, "--", "timeout", "2", "bash", "-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")]).status.success()
    }

    /// The network namespace of a provider host, through its agent process.
    fn ns(&self, host: &str) -> String {
        let pid = std::fs::read_to_string(self.f.data_dir().join("hosts").join(host).join("agent.pid")).unwrap();
        format!("/proc/{}/ns/net", pid.trim())
    }

    /// A host's agent endpoint: (address, port).
    fn endpoint(&self, host: &str) -> (String, u16) {
        let e = self.f.json(&["host", "info", host])["endpoint"].as_str().expect("an endpoint").to_string();
        let (ip, port) = e.trim_start_matches("https://").rsplit_once(':').unwrap();
        (ip.to_string(), port.parse().unwrap())
    }

    fn hub_port(&self) -> u16 {
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(self.f.config()).unwrap()).unwrap();
        cfg["hub_url"].as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// acme's VXLAN id: its subnet's first three octets.
    fn acme_vni(&self) -> u32 {
        let o: Vec<u32> = self.address("acme/b").split('.').take(3).map(|p| p.parse().unwrap()).collect();
        (o[0] << 16) | (o[1] << 8) | o[2]
    }

    /// Whether a host's bridges learned `mac` (the vxlan device's and the bridge's fdb).
    fn learned(&self, host: &str, mac: &str) -> bool {
        String::from_utf8_lossy(&in_ns(&self.ns(host), "bridge fdb show").stdout).contains(mac)
    }
}

fn in_ns(ns: &str, cmd: &str) -> Output {
    Command::new("nsenter").arg(format!("--net={ns}")).args(["sh", "-c", cmd]).output().unwrap()
}

/// Sends a VXLAN packet (five times) carrying an ARP request from `mac`, with `vni`, to
/// `to`:4789. argv: vni, mac (hex), target, sender address, asked address.
const INJECT: &str = "import socket,struct,sys
vni=int(sys.argv[1]);mac=bytes.fromhex(sys.argv[2]);spa=socket.inet_aton(sys.argv[4]);tpa=socket.inet_aton(sys.argv[5])
arp=struct.pack('!HHBBH',1,0x0800,6,4,1)+mac+spa+bytes(6)+tpa
pkt=struct.pack('!B3xI',8,vni<<8)+b'\\xff'*6+mac+b'\\x08\\x06'+arp
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for _ in range(5): s.sendto(pkt,(sys.argv[3],4789))";

fn inject_args(vni: u32, mac: &str, to: &str, spa: &str, tpa: &str) -> Vec<String> {
    ["python3", "-c", INJECT, &vni.to_string(), &mac.replace(':', ""), to, spa, tpa].iter().map(|s| s.to_string()).collect()
}

/// A counter for packets matching `expr`, in a table of its own in a namespace (the
/// caller's own when None), seen before anything else can drop them; removed on drop.
struct Watch {
    ns: Option<String>,
    table: String,
}

impl Watch {
    fn new(ns: Option<String>, table: &str, expr: &str) -> Watch {
        let w = Watch { ns, table: table.to_string() };
        w.nft(&format!("table inet {table} {{ chain c {{ type filter hook prerouting priority -400; policy accept; {expr} counter; }}; }}"));
        w
    }

    fn nft(&self, script: &str) -> String {
        let mut c = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}")).arg("nft");
                c
            }
            None => Command::new("nft"),
        };
        let mut child = c.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nft: {script}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn packets(&self) -> u64 {
        let out = self.nft(&format!("list table inet {}", self.table));
        out.split("packets ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).expect("a counter")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.nft(&format!("delete table inet {}", self.table))));
    }
}

/// A process the test started, killed when the test ends.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sandbox_cannot_reach_the_hub_api_or_services_of_the_hubs_machine() {
    let s = Setup::new();
    let f = &s.f;
    let port = s.hub_port();
    let gw = format!("{}.0.1", s.net);
    let evil = s.address("evil/x");
    // On a provider host the hub is one route away (the host network's gateway).
    let at_hub = Watch::new(None, &format!("hgtest_hub{}", f.range_octet), &format!("ip saddr {evil} ip daddr {gw}"));
    assert!(!s.tcp("evil/x", &gw, port), "a sandbox on node-b connects to the hub's API at {gw}:{port}");
    assert_eq!(at_hub.packets(), 0, "packets of a sandbox on node-b reached the hub's API address");
    // On the hub's own host the hub is local.
    f.run(&["instance", "create", "evil/l", "--host", "local", "--start", "--", "sleep", "infinity"]);
    assert!(!s.tcp("evil/l", &gw, port), "a sandbox on the hub's host connects to the hub's API at {gw}:{port}");

    // Any other service of the hub's machine (SSH, say): a listener on all addresses,
    // aimed at through the machine's own address (masqueraded by node-b on the way).
    let o = Command::new("sh").arg("-c").arg("ip -4 -o addr show scope global | awk '$2 !~ /^hg/ {print $4}' | cut -d/ -f1 | head -1").output().unwrap();
    let machine = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if machine.is_empty() {
        eprintln!("this machine has no global address of its own: the service part is skipped");
    } else {
        let sport = free_port();
        let listener = Command::new("python3").stderr(Stdio::null())
            .args(["-c", &format!("import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',{sport}));s.listen(64);time.sleep(300)")])
            .spawn()
            .unwrap();
        let _listener = Kill(listener);
        wait_until("the stand-in service listens", || Command::new("timeout").args(["2", "bash", "-c", &format!("exec 3<>/dev/tcp/{machine}/{sport}")]).output().unwrap().status.success());
        assert!(!s.tcp("evil/x", &machine, sport), "a sandbox on node-b connects to a service of the hub's machine at {machine}:{sport}");
        assert!(!s.tcp("evil/l", &machine, sport), "a sandbox on the hub's host connects to a service of the hub's machine at {machine}:{sport}");
    }

    // `net verify` probes the same from every host, each a named check that passes.
    let v = f.json(&["net", "verify"]);
    assert_eq!(v["ok"], true, "{v:#}");
    let names: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    for want in ["-> hub API", "-> agent endpoint of", "-> underlay of", ":4789", "overlay peers of acme"] {
        assert!(names.iter().any(|n| n.contains(want)), "no '{want}' check: {names:?}");
    }
}

/// Packets the agent's "hub from sandboxes" rule dropped in a host's namespace; None
/// without the rule.
fn hub_rule_drops(ns: &str) -> Option<u64> {
    let listing: serde_json::Value = serde_json::from_slice(&in_ns(ns, "nft -j list ruleset").stdout).unwrap();
    listing["nftables"].as_array()?.iter().find(|i| i["rule"]["comment"] == "hub from sandboxes")?["rule"]["expr"].as_array()?.iter().find_map(|x| x["counter"]["packets"].as_u64())
}

/// The hub at the address its agent talks to it at is out of reach whether or not that
/// address is in the cluster range (on real machines it is the outside world to a
/// sandbox): the agent drops it by address, before any other forwarding rule. Here
/// node-b's agent knows the hub at the host network's gateway, so the rule's counter
/// shows the hub's own rule, not the cluster range's, stopped the sandbox.
#[test]
fn a_sandbox_cannot_reach_the_hub_at_the_address_its_agent_uses() {
    let s = Setup::new();
    let port = s.hub_port();
    let gw = format!("{}.0.1", s.net);
    let ns = s.ns("node-b");
    let before = hub_rule_drops(&ns).expect("node-b's agent has no rule for its hub's address");
    assert!(!s.tcp("evil/x", &gw, port), "a sandbox on node-b connects to the hub's API at {gw}:{port}");
    let after = hub_rule_drops(&ns).unwrap();
    assert!(after > before, "the hub rule dropped nothing ({before} -> {after}): the sandbox's packets went another way");
    // The instances' own traffic is untouched.
    let b = s.address("acme/b");
    assert!(s.ping("acme/a", &b), "acme/a no longer reaches acme/b across hosts");
}

#[test]
fn a_sandbox_cannot_reach_an_agent_endpoint() {
    let s = Setup::new();
    let evil = s.address("evil/x");
    let (c_ip, c_port) = s.endpoint("node-c");
    let (b_ip, b_port) = s.endpoint("node-b");
    // The endpoints answer whoever may reach them (the hub's machine).
    for (ip, port) in [(&c_ip, c_port), (&b_ip, b_port)] {
        assert!(Command::new("timeout").args(["2", "bash", "-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")]).output().unwrap().status.success(), "{ip}:{port} does not answer at all");
    }
    let at_c = Watch::new(Some(s.ns("node-c")), &format!("hgtest_agent{}", s.f.range_octet), &format!("ip saddr {evil}"));
    assert!(!s.tcp("evil/x", &c_ip, c_port), "a sandbox on node-b connects to node-c's agent at {c_ip}:{c_port}");
    assert_eq!(at_c.packets(), 0, "packets of a sandbox on node-b reached node-c");
    assert!(!s.tcp("evil/x", &b_ip, b_port), "a sandbox connects to its own host's agent at {b_ip}:{b_port}");
}

#[test]
fn a_sandbox_cannot_reach_a_host_underlay_address() {
    let s = Setup::new();
    let evil = s.address("evil/x");
    let (c_ip, _) = s.endpoint("node-c");
    let (b_ip, _) = s.endpoint("node-b");
    let at_c = Watch::new(Some(s.ns("node-c")), &format!("hgtest_under{}", s.f.range_octet), &format!("ip saddr {evil}"));
    assert!(!s.ping("evil/x", &c_ip), "a sandbox on node-b reaches node-c's underlay address {c_ip}");
    assert_eq!(at_c.packets(), 0, "packets of a sandbox on node-b reached node-c");
    assert!(!s.ping("evil/x", &b_ip), "a sandbox reaches its own host's underlay address {b_ip}");
    // A tenant still reaches its own across hosts (over the overlay, not the underlay).
    let b = s.address("acme/b");
    assert!(s.ping("acme/a", &b), "acme/a no longer reaches acme/b across hosts");
}

/// The control half of the injection tests: the same frame from a listed peer (node-b's
/// own namespace, as its VXLAN device would send it) is learned by node-c.
fn a_listed_peer_is_learned(s: &Setup, mac: &str) {
    let (c_ip, _) = s.endpoint("node-c");
    let (spa, tpa) = (format!("{}.250", s.address("acme/b").rsplit_once('.').unwrap().0), s.address("acme/b"));
    let args = inject_args(s.acme_vni(), mac, &c_ip, &spa, &tpa);
    let out = Command::new("nsenter").arg(format!("--net={}", s.ns("node-b"))).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("node-c learns the MAC a listed peer sent", || s.learned("node-c", mac));
}

#[test]
fn a_sandbox_cannot_inject_a_vxlan_frame_with_another_tenants_vni() {
    let s = Setup::new();
    let mac = "02:66:66:00:00:01";
    let (c_ip, _) = s.endpoint("node-c");
    let (b_ip, _) = s.endpoint("node-b");
    let (spa, tpa) = (format!("{}.250", s.address("acme/b").rsplit_once('.').unwrap().0), s.address("acme/b"));
    // At a peer host and at its own host, with acme's VNI.
    for to in [&c_ip, &b_ip] {
        let args = inject_args(s.acme_vni(), mac, to, &spa, &tpa);
        let mut cmd: Vec<&str> = vec!["instance", "exec", "evil/x", "--"];
        cmd.extend(args.iter().map(String::as_str));
        let out = s.f.try_run(&cmd);
        assert!(out.status.success(), "the sandbox could not even send: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(!s.learned("node-c", mac), "node-c's overlay took in a frame a sandbox injected with acme's VNI");
    assert!(!s.learned("node-b", mac), "node-b's overlay took in a frame its own sandbox injected with acme's VNI");
    a_listed_peer_is_learned(&s, "02:66:66:00:00:02");
}

#[test]
fn a_fake_peer_cannot_inject_a_vxlan_frame_with_another_tenants_vni() {
    let s = Setup::new();
    let o = s.f.range_octet;
    // A namespace on the fleet's host network that the hub never listed as a peer.
    let ns = format!("hgtest-fp{o}");
    let (outer, inner) = (format!("hgtfo{o}"), format!("hgtfi{o}"));
    struct Gone(String, String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.1]).status();
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _gone = Gone(ns.clone(), outer.clone());
    let bridge = format!("hgp0a{o:02x}00");
    for c in [
        format!("ip netns add {ns}"),
        format!("ip link add {outer} type veth peer name {inner} netns {ns}"),
        format!("ip link set {outer} master {bridge} up"),
        format!("ip -n {ns} addr add {}.0.200/24 dev {inner}", s.net),
        format!("ip -n {ns} link set {inner} up"),
    ] {
        assert!(Command::new("sh").arg("-c").arg(&c).status().unwrap().success(), "{c}");
    }
    let (c_ip, _) = s.endpoint("node-c");
    wait_until("the fake peer reaches node-c", || Command::new("ip").args(["netns", "exec", &ns, "ping", "-c1", "-W1", &c_ip]).output().unwrap().status.success());
    let mac = "02:66:66:00:00:03";
    let (spa, tpa) = (format!("{}.250", s.address("acme/b").rsplit_once('.').unwrap().0), s.address("acme/b"));
    let out = Command::new("ip").args(["netns", "exec", &ns]).args(inject_args(s.acme_vni(), mac, &c_ip, &spa, &tpa)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_secs(1));
    assert!(!s.learned("node-c", mac), "node-c's overlay took in a frame from a host that is not its peer");
    a_listed_peer_is_learned(&s, "02:66:66:00:00:04");
}
