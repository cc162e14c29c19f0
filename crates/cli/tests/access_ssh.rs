//! Getting into a workspace (issue 16): interactive sessions through the hub
//! (`instance exec -it`, driven through a real PTY by python3's `pty`), and the SSH
//! gateway with Debian's OpenSSH clients (`ssh`, `scp`, `sftp`), on a real fleet.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fleet with a tenant `acme` and a running instance `acme/web`.
fn fleet() -> common::Fleet {
    fleet_with(&[])
}

fn fleet_with(up_args: &[&str]) -> common::Fleet {
    let f = common::up_with(up_args);
    f.run(&["tenant", "create", "acme"]);
    f.run(&["instance", "create", "acme/web", "--start"]);
    f
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `hangar ARGS` on a PTY of its own (python3's pty module): the window is 30x100
/// at the start, set to 40x120 once the output shows `READY`, then a newline is typed.
/// Answers everything the terminal showed and the exit status.
fn on_pty(f: &common::Fleet, args: &[&str]) -> (String, i32) {
    let script = r#"
import os, pty, sys, struct, fcntl, termios, time, select
def size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
size(fd, 30, 100)
out = b''
resized = False
deadline = time.time() + 60
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if fd in r:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    if not resized and b'READY' in out:
        resized = True
        size(fd, 40, 120)
        time.sleep(1.0)
        os.write(fd, b'\n')
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode('utf-8', 'replace'))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(common::bin())
        .args(args)
        .env("HANGAR_CONFIG", f.config())
        .env_remove("HANGAR_TOKEN")
        .env_remove("HANGAR_HUB")
        .output()
        .expect("python3");
    (text(&o.stdout), o.status.code().unwrap_or(-1))
}

#[test]
fn exec_it_has_a_terminal_sees_resizes_and_forwards_the_exit_status() {
    let f = fleet();
    // Before the first size is applied the shell may print nothing; `stty size` is
    // what the sandbox's terminal says.
    let (out, code) = on_pty(&f, &["instance", "exec", "-it", "acme/web", "--", "sh", "-c", "tty; stty size; echo READY; read x; stty size; exit 7"]);
    assert_eq!(code, 7, "exit status forwarded; terminal showed:\n{out}\nlog:\n{}", common::Fleet::log(&f));
    assert!(out.contains("/dev/pts/"), "tty names a PTY inside the sandbox: {out}");
    assert!(out.contains("30 100"), "the first size: {out}");
    assert!(out.contains("40 120"), "the resize reached the sandbox: {out}");
}

#[test]
fn exec_i_streams_stdin_and_keeps_stdout_and_stderr_apart() {
    let f = fleet();
    let mut c = Command::new(common::bin());
    c.args(["instance", "exec", "-i", "acme/web", "--", "sh", "-c", "wc -c; echo oops >&2; exit 3"]);
    c.env("HANGAR_CONFIG", f.config()).env_remove("HANGAR_TOKEN").env_remove("HANGAR_HUB");
    let o = with_stdin(c, &vec![b'x'; 300_000]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "300000");
    assert_eq!(text(&o.stderr).trim(), "oops");
    // A session request that is not an upgrade: 400 naming what is missing.
    let c = f.client().unwrap();
    let (status, body) = common::block_on(c.raw("POST", "/v1/tenants/acme/instances/web/session", Some(&serde_json::json!({"command": ["true"]})))).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Upgrade: hangar-session"), "{body}");
    // A stopped instance: refused with the reason, before any session.
    f.run(&["instance", "stop", "acme/web"]);
    let err = f.fail(&["instance", "exec", "-i", "acme/web", "--", "true"]);
    assert!(err.contains("stopped") || err.contains("start"), "{err}");
}

fn with_stdin(mut c: Command, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().expect("wait");
    feeder.join().unwrap();
    o
}

/// A key pair made with ssh-keygen in the fleet's dir: (private key path, public line).
fn keygen(f: &common::Fleet, name: &str) -> (PathBuf, String) {
    let path = f.dir.path().join(name);
    let o = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("{name}@test"), "-f"]).arg(&path).output().expect("ssh-keygen (openssh-client)");
    assert!(o.status.success(), "ssh-keygen: {}", text(&o.stderr));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public)
}

/// The gateway's known_hosts file, from `hangar ssh known-hosts`.
fn known_hosts(f: &common::Fleet) -> PathBuf {
    let line = f.run(&["ssh", "known-hosts"]);
    assert!(line.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", f.ssh_port)), "{line}");
    let path = f.dir.path().join("known_hosts");
    std::fs::write(&path, line).unwrap();
    path
}

/// A fleet with `acme/web` running and a key of acme's registered: (fleet, key path).
fn gateway_fleet() -> (common::Fleet, PathBuf) {
    gateway_fleet_with(&[])
}

fn gateway_fleet_with(up_args: &[&str]) -> (common::Fleet, PathBuf) {
    let f = fleet_with(up_args);
    let (key, public) = keygen(&f, "id_acme");
    let file = f.dir.path().join("id_acme.pub");
    std::fs::write(&file, public).unwrap();
    f.run(&["ssh-key", "add", "--tenant", "acme", file.to_str().unwrap(), "--name", "laptop"]);
    (f, key)
}

/// Plain OpenSSH options for the fleet's gateway: its port, only the gateway's host
/// key trusted, only `key` offered, never a prompt.
fn ssh_opts(f: &common::Fleet, key: &Path, port_flag: &str) -> Vec<String> {
    opts(f.ssh_port, &known_hosts(f), key, port_flag)
}

fn opts(port: u16, known: &Path, key: &Path, port_flag: &str) -> Vec<String> {
    vec![
        port_flag.into(),
        port.to_string(),
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
    ]
}

fn ssh(f: &common::Fleet, key: &Path, args: &[&str]) -> Output {
    Command::new("ssh").args(ssh_opts(f, key, "-p")).args(args).stdin(std::process::Stdio::null()).output().expect("ssh (openssh-client)")
}

#[test]
fn ssh_keys_are_added_listed_removed_and_bad_ones_refused() {
    let f = fleet();
    let (_, public) = keygen(&f, "id_one");
    let file = f.dir.path().join("id_one.pub");
    std::fs::write(&file, &public).unwrap();
    let added = f.json(&["ssh-key", "add", "--tenant", "acme", file.to_str().unwrap()]);
    assert!(added["name"].as_str().unwrap().starts_with("key-"), "{added}");
    assert!(added["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    // The fingerprint is OpenSSH's own.
    let fp = Command::new("ssh-keygen").arg("-lf").arg(&file).output().unwrap();
    assert!(text(&fp.stdout).contains(added["fingerprint"].as_str().unwrap()), "{}", text(&fp.stdout));
    let list = f.json(&["ssh-key", "list", "--tenant", "acme"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    // The same key again, under another name: refused, nothing changed.
    let err = f.fail(&["ssh-key", "add", "--tenant", "acme", file.to_str().unwrap(), "--name", "again"]);
    assert!(err.contains("already exists"), "{err}");
    // Malformed keys, a private key, a bad name: 4xx with the reason.
    for (content, why) in [("ssh-ed25519 not-base64!", "base64"), ("hello", "OpenSSH public key"), ("ssh-dss AAAAB3NzaC1kc3M=", "not supported")] {
        std::fs::write(&file, content).unwrap();
        let err = f.fail(&["ssh-key", "add", "--tenant", "acme", file.to_str().unwrap()]);
        assert!(err.contains(why), "{content}: {err}");
    }
    let private = f.dir.path().join("id_one");
    let err = f.fail(&["ssh-key", "add", "--tenant", "acme", private.to_str().unwrap()]);
    assert!(err.contains("private key"), "{err}");
    std::fs::write(&file, &public).unwrap();
    let err = f.fail(&["ssh-key", "add", "--tenant", "acme", file.to_str().unwrap(), "--name", "Bad Name"]);
    assert!(err.contains("name"), "{err}");
    assert_eq!(f.json(&["ssh-key", "list", "--tenant", "acme"]).as_array().unwrap().len(), 1);
    let name = added["name"].as_str().unwrap();
    f.run(&["ssh-key", "remove", "--tenant", "acme", name]);
    assert!(f.json(&["ssh-key", "list", "--tenant", "acme"]).as_array().unwrap().is_empty());
    assert!(f.fail(&["ssh-key", "remove", "--tenant", "acme", name]).contains("not found"));
}

#[test]
fn gateway_gives_a_pty_shell_exec_with_status_and_one_refusal_for_every_wrong_name_or_key() {
    let (f, key) = gateway_fleet();
    // A PTY: `tty` names a terminal inside the sandbox.
    let o = ssh(&f, &key, &["-tt", "acme.web@127.0.0.1", "--", "tty; echo TERM=$TERM"]);
    assert!(o.status.success(), "ssh -tt: {}\n{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("/dev/pts/"), "{}", text(&o.stdout));
    // Exec: output, stderr apart, the exit status forwarded.
    let o = ssh(&f, &key, &["acme.web@127.0.0.1", "--", "uname -s; echo err >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "Linux\n");
    assert_eq!(text(&o.stderr), "err\n");
    // A login shell reading commands from stdin (no PTY).
    let mut c = Command::new("ssh");
    c.args(ssh_opts(&f, &key, "-p")).args(["-T", "acme.web@127.0.0.1"]);
    let o = with_stdin(c, b"echo from-shell; exit 3\n");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("from-shell"));
    // A wrong key, an unknown instance, another tenant's instance, a user name that is
    // not TENANT.INSTANCE: the same refusal.
    f.run(&["tenant", "create", "beta"]);
    f.run(&["instance", "create", "beta/db", "--start"]);
    let (other, _) = keygen(&f, "id_other");
    let refusals: Vec<String> = [
        ssh(&f, &other, &["acme.web@127.0.0.1", "--", "true"]),
        ssh(&f, &key, &["acme.nope@127.0.0.1", "--", "true"]),
        ssh(&f, &key, &["nope.web@127.0.0.1", "--", "true"]),
        ssh(&f, &key, &["beta.db@127.0.0.1", "--", "true"]),
        ssh(&f, &key, &["acme@127.0.0.1", "--", "true"]),
    ]
    .into_iter()
    .map(|o| {
        assert_eq!(o.status.code(), Some(255));
        text(&o.stderr).replace("acme.nope", "U").replace("nope.web", "U").replace("beta.db", "U").replace("acme.web", "U").replace("acme@", "U@")
    })
    .collect();
    assert!(refusals[0].contains("Permission denied (publickey)"), "{}", refusals[0]);
    assert!(refusals.iter().all(|r| r == &refusals[0]), "refusals differ: {refusals:#?}");
    // A stopped instance: the key is good, the reason is on stderr.
    f.run(&["instance", "stop", "acme/web"]);
    let o = ssh(&f, &key, &["acme.web@127.0.0.1", "--", "true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("hangar: ") && text(&o.stderr).contains("stopped"), "{}", text(&o.stderr));
}

#[test]
fn scp_and_sftp_move_identical_bytes() {
    let (f, key) = gateway_fleet();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let up = f.dir.path().join("up.bin");
    std::fs::write(&up, &payload).unwrap();
    let o = Command::new("scp").args(ssh_opts(&f, &key, "-P")).arg(&up).arg("acme.web@127.0.0.1:/home/up.bin").output().unwrap();
    assert!(o.status.success(), "scp up: {}", text(&o.stderr));
    let o = ssh(&f, &key, &["acme.web@127.0.0.1", "--", "sha256sum /home/up.bin"]);
    let local = Command::new("sha256sum").arg(&up).output().unwrap();
    assert_eq!(text(&o.stdout).split_whitespace().next(), text(&local.stdout).split_whitespace().next());
    let down = f.dir.path().join("down.bin");
    let o = Command::new("scp").args(ssh_opts(&f, &key, "-P")).arg("acme.web@127.0.0.1:/home/up.bin").arg(&down).output().unwrap();
    assert!(o.status.success(), "scp down: {}", text(&o.stderr));
    assert!(std::fs::read(&down).unwrap() == payload, "scp down changed the bytes");
    let batch = f.dir.path().join("batch");
    std::fs::write(&batch, "cd /home\nls -l\n").unwrap();
    let o = Command::new("sftp").args(ssh_opts(&f, &key, "-P")).arg("-b").arg(&batch).arg("acme.web@127.0.0.1").output().unwrap();
    assert!(o.status.success(), "sftp: {}", text(&o.stderr));
    assert!(text(&o.stdout).contains("up.bin") && text(&o.stdout).contains("3000000"), "{}", text(&o.stdout));
}

#[test]
fn host_key_survives_a_hub_restart_and_instance_ssh_checks_the_way_in() {
    let (mut f, key) = gateway_fleet();
    let before = f.run(&["ssh", "known-hosts"]);
    let key_file = f.data_dir().join("hub/ssh_host_ed25519_key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    common::crash_and_restart(&mut f);
    assert_eq!(f.run(&["ssh", "known-hosts"]), before, "the host key changed across a restart");
    common::wait_until("the instance runs again", || f.json(&["instance", "info", "acme/web"])["observed"] == "running");
    let o = ssh(&f, &key, &["acme.web@127.0.0.1", "--", "echo back"]);
    assert_eq!(text(&o.stdout), "back\n", "{}", text(&o.stderr));
    // `instance ssh`: the right user, port and host key, with the system's ssh.
    let k = key.to_str().unwrap();
    let o = f.try_run(&["instance", "ssh", "acme/web", "-i", k, "--", "echo", "via-cli"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "via-cli\n");
    let o = f.try_run(&["instance", "ssh", "acme/web", "-i", k, "--check"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // --check says why not: a key nobody registered, then a stopped instance.
    let (other, _) = keygen(&f, "id_other");
    let o = f.try_run(&["instance", "ssh", "acme/web", "-i", other.to_str().unwrap(), "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("refused your key"), "{}", text(&o.stderr));
    f.run(&["instance", "stop", "acme/web"]);
    let o = f.try_run(&["instance", "ssh", "acme/web", "-i", k, "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not running"), "{}", text(&o.stderr));
}

/// A workload for the fault test: `/slow` streams 1,000 bytes every 100 ms for 100 s
/// (Content-Length set, so a cut is visible), anything else says `hello`.
const SLOW_SERVER: &str = r#"
import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        slow = self.path.startswith('/slow')
        body = b'x' * 1000 if slow else b'hello\n'
        self.send_response(200); self.send_header('Content-Length', str(len(body) * (1000 if slow else 1))); self.end_headers()
        for _ in range(1000 if slow else 1):
            self.wfile.write(body); self.wfile.flush()
            if slow: time.sleep(0.1)
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()
"#;

/// Waits for a child for at most `within`; its exit status.
fn wait_child(c: &mut std::process::Child, within: std::time::Duration, what: &str) -> std::process::ExitStatus {
    let t = std::time::Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        assert!(t.elapsed() < within, "{what} still runs after {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Reads one line of a child's stdout.
fn first_line(c: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line
}

#[test]
fn an_agent_killed_mid_session_or_request_disconnects_cleanly_and_other_hosts_are_served() {
    // node-b (a `local` provider host: its agent a process of its own in a network
    // namespace) is the one whose agent dies; the fleet's own host lives on.
    let f = common::up_with(&["--stale-after", "4"]);
    let out = f.run(&["host", "add", "node-b", "--provider", "local"]);
    assert!(out.contains("ready"), "{out}");
    let hosts = f.json(&["host", "list"]);
    let first = hosts.as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap().to_string()).find(|n| n != "node-b").unwrap();
    let c = f.client().unwrap();
    let (key, public) = keygen(&f, "id_faults");
    let mut hub_header = vec![];
    for (tenant, host) in [("acme", "node-b"), ("beta", first.as_str())] {
        f.run(&["tenant", "create", tenant]);
        let spec = hangar_types::api::InstanceSpec {
            image: hangar_types::api::ImageRef::Host,
            vcpus: 1,
            mem_mib: 256,
            disk_mib: 256,
            command: vec!["python3".into(), "-c".into(), SLOW_SERVER.into()],
            env: Default::default(),
            secrets: vec![],
        };
        let mut req = hangar_types::api::InstanceCreate::new("web".parse().unwrap(), spec, true);
        req.host = Some(host.parse().unwrap());
        common::block_on(async {
            let op = c.instance_create(tenant, &req).await.unwrap();
            c.operation_wait_final(op.id, std::time::Duration::from_secs(120)).await.unwrap();
            c.ssh_key_add(tenant, &hangar_types::api::SshKeyAdd { public_key: public.clone(), name: None }).await.unwrap();
            let t = c.proxy_token_create(tenant, "web", &hangar_types::access::ProxyTokenCreate { port: 8080, ttl_secs: Some(600) }).await.unwrap();
            let header = f.dir.path().join(format!("{tenant}.header"));
            std::fs::write(&header, format!("Authorization: Bearer {}\n", t.token)).unwrap();
            hub_header.push((format!("{}{}", c.base_url(), t.path), format!("@{}", header.display())));
        });
        assert_eq!(f.json(&["instance", "info", &format!("{tenant}/web")])["host"], host);
    }
    let curl = |i: usize, path: &str, extra: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "--max-time", "120", "-H", &hub_header[i].1]).args(extra).arg(format!("{}{path}", hub_header[i].0));
        cmd
    };
    let status_of = |i: usize| text(&curl(i, "hello", &["-o", "/dev/null", "-w", "%{http_code}"]).output().unwrap().stdout);
    for i in [0, 1] {
        common::wait_until("the servers in the sandboxes", || status_of(i) == "200");
    }
    let piped = |mut c: Command| c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let ssh_cmd = |args: &[&str]| {
        let mut cmd = Command::new("ssh");
        cmd.args(ssh_opts(&f, &key, "-p")).args(args);
        cmd
    };
    // In progress when node-b's agent dies: an SSH session and a streaming proxied
    // download there, an SSH session on the other host.
    let mut long = piped(ssh_cmd(&["acme.web@127.0.0.1", "--", "echo started; sleep 120"]));
    let mut other = piped(ssh_cmd(&["beta.web@127.0.0.1", "--", "echo started; sleep 4; echo still here"]));
    let mut stream = piped(curl(0, "slow", &["-o", "/dev/null", "-w", "%{http_code} %{size_download}"]));
    assert_eq!(first_line(&mut long), "started\n");
    assert_eq!(first_line(&mut other), "started\n");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let pid = std::fs::read_to_string(f.data_dir().join("hosts/node-b/agent.pid")).unwrap().trim().to_string();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    // Both of node-b's clients see a clean disconnect, soon.
    let status = wait_child(&mut long, std::time::Duration::from_secs(30), "the ssh session of the killed agent");
    let mut err = String::new();
    std::io::Read::read_to_string(long.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(255), "{err}");
    assert!(err.contains("connection to the instance was lost"), "{err}");
    let status = wait_child(&mut stream, std::time::Duration::from_secs(30), "the proxied download of the killed agent");
    let mut got = String::new();
    std::io::Read::read_to_string(stream.stdout.as_mut().unwrap(), &mut got).unwrap();
    assert!(!status.success(), "a cut download must fail, not look complete: {got}");
    let bytes: u64 = got.split_whitespace().nth(1).and_then(|b| b.parse().ok()).unwrap_or(0);
    assert!(got.starts_with("200 ") && bytes > 0 && bytes < 1_000_000, "cut after some bytes: {got}");
    // The other host's session goes on to its end, and its proxy answers, over HTTP/2
    // between the client and the hub too (ALPN h2; HTTP/1.1 beyond).
    let status = wait_child(&mut other, std::time::Duration::from_secs(30), "the other host's ssh session");
    let mut out = String::new();
    std::io::Read::read_to_string(other.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success() && out == "still here\n", "{status:?} {out:?}");
    // Served within a few seconds. One CI run saw a single `000` (no HTTP answer from
    // the hub) right after node-b's agent died, not seen again: each miss is printed
    // so a log shows it while the cause is looked for (see ARCHITECTURE, proxy).
    let t = std::time::Instant::now();
    loop {
        let out = curl(1, "hello", &["-S", "-o", "/dev/null", "-w", "%{http_code}"]).output().unwrap();
        let got = text(&out.stdout);
        if got == "200" {
            break;
        }
        eprintln!("the other host's proxy answered {got} {:?} after the kill: {}", t.elapsed(), text(&out.stderr));
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "the other host's proxy is not served: {got}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let o = curl(1, "hello", &["--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"]).output().unwrap();
    assert_eq!(text(&o.stdout), "2 200");
    // The gateway and the proxy say why node-b's instance cannot be reached now,
    // quickly...
    let o = ssh(&f, &key, &["acme.web@127.0.0.1", "--", "true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("hangar: "), "{}", text(&o.stderr));
    let t0 = std::time::Instant::now();
    let answer = text(&curl(0, "hello", &["-w", "\n%{http_code}"]).output().unwrap().stdout);
    // 503 while the hub still takes the host for alive, 409 (observed unknown) once it
    // is stale: either way `{code, message}` saying why.
    assert!((answer.ends_with("\n503") || answer.ends_with("\n409")) && answer.contains("\"code\""), "{answer}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(10), "a dead agent took {:?} to refuse", t0.elapsed());
    // ...and serve it again once the agent is back.
    common::wait_until("node-b stale", || f.json(&["host", "info", "node-b"])["state"] != "ready");
    f.run(&["host", "start", "node-b"]);
    common::wait_until("an ssh session after the agent came back", || text(&ssh(&f, &key, &["acme.web@127.0.0.1", "--", "echo again"]).stdout) == "again\n");
    common::wait_until("the proxy after the agent came back", || status_of(0) == "200");
}

#[test]
fn idle_connections_are_closed_and_a_tenant_gets_its_session_limit() {
    let (f, key) = gateway_fleet_with(&["--ssh-idle-timeout", "2", "--ssh-max-sessions", "1"]);
    // Busy for 4 s (output every half second): not idle, runs to its end.
    let t = std::time::Instant::now();
    let o = ssh(&f, &key, &["acme.web@127.0.0.1", "--", "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.5; done"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(t.elapsed() >= std::time::Duration::from_secs(4));
    // Silent: closed after the idle timeout, long before the command would end.
    let t = std::time::Instant::now();
    let o = ssh(&f, &key, &["acme.web@127.0.0.1", "--", "sleep 60"]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "an idle connection lived {:?}", t.elapsed());
    // One session at a time for acme: a second is refused while the first runs.
    let mut first = Command::new("ssh").args(ssh_opts(&f, &key, "-p")).args(["acme.web@127.0.0.1", "--", "for i in $(seq 40); do echo .; sleep 0.25; done"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    {
        use std::io::Read;
        let mut b = [0u8; 1];
        first.stdout.as_mut().unwrap().read_exact(&mut b).unwrap();
    }
    let o = ssh(&f, &key, &["acme.web@127.0.0.1", "--", "true"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("open failed"), "{}", text(&o.stderr));
    let _ = first.kill();
    let _ = first.wait();
    // The slot comes back when the first session ends.
    common::wait_until("the session slot is free again", || ssh(&f, &key, &["acme.web@127.0.0.1", "--", "true"]).status.success());
}


#[test]
fn sessions_hold_an_exec_slot_and_keep_their_env_out_of_argv() {
    let (f, key) = gateway_fleet_with(&["--exec-max-concurrent", "1"]);
    // The client's env reaches the sandbox through the process file, never a command line.
    let secret = "s3cr3t-value-4711";
    let mut held = Command::new("ssh")
        .args(ssh_opts(&f, &key, "-p"))
        .args(["-o", &format!("SetEnv=HANGAR_TEST_SECRET={secret}"), "acme.web@127.0.0.1", "--", "echo $HANGAR_TEST_SECRET; sleep 30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        std::io::BufReader::new(held.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    }
    assert_eq!(line.trim(), secret, "the env reached the sandbox");
    let ours = format!("HANGAR_TEST_SECRET={secret}");
    assert!(!common::host_command_lines().iter().any(|(_, l)| l.contains(secret) && !l.contains(&ours)), "the secret is on a host command line");
    // The session holds the instance's only exec slot: another exec is refused (429).
    let err = f.fail(&["instance", "exec", "acme/web", "--", "true"]);
    assert!(err.contains("already run"), "{err}");
    // The client leaves: the process is killed and the slot comes back at once, not
    // when the `sleep 30` its shell left behind ends (runc waits for that one's pipes).
    let _ = held.kill();
    let _ = held.wait();
    let t = std::time::Instant::now();
    common::wait_until("the exec slot is free again", || f.try_run(&["instance", "exec", "acme/web", "--", "true"]).status.success());
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "the slot came back only after {:?}", t.elapsed());
}

#[test]
fn bench_ssh_measures_the_gateway_next_to_sshd() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let o = Command::new(common::bin()).args(["bench", "--only", "ssh", "--runs", "2", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let r = v["results"].as_array().unwrap().iter().find(|r| r["bench"] == "ssh").unwrap_or_else(|| panic!("no ssh result in {v:#}")).clone();
    // Real sessions both ways (no speed is asserted: the machines are shared).
    assert!(r["hangar"].as_f64().unwrap() > 0.0 && r["raw"].as_f64().unwrap() > 0.0, "{r}");
}
