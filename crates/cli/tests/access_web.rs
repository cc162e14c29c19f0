//! Getting into a workspace, end to end with the real binary and real sandboxes:
//! secrets at /run/secrets (read-only, changed in place, never anywhere else on the
//! host's disk, logs or events), and the hub's HTTP proxy with proxy tokens (curl and
//! a raw websocket client against a real HTTP server inside a sandbox).

mod common;

use common::{wait_until, Fleet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workload of the proxy tests: Python's http.server (the host image's python3)
/// serving /home, plus `/headers` (the request's headers as JSON), `POST /sum` (the
/// sha256 of the body) and `/ws` (a websocket echo, just enough of RFC 6455).
const SERVER: &str = r#"
import http.server, json, hashlib, base64, os
os.chdir('/home')
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def reply(self, code, body, ctype='application/json'):
        self.send_response(code); self.send_header('Content-Type', ctype); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith('/headers'):
            return self.reply(200, json.dumps({k.lower(): v for k, v in self.headers.items()}).encode())
        if self.path.startswith('/ws'):
            acc = base64.b64encode(hashlib.sha1((self.headers['Sec-WebSocket-Key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
            self.send_response(101); self.send_header('Upgrade', 'websocket'); self.send_header('Connection', 'Upgrade'); self.send_header('Sec-WebSocket-Accept', acc); self.end_headers(); self.wfile.flush()
            r = self.rfile
            while True:
                h = r.read(2)
                if len(h) < 2: return
                op, n = h[0] & 15, h[1] & 127
                if n == 126: n = int.from_bytes(r.read(2), 'big')
                mask = r.read(4) if h[1] & 128 else bytes(4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(n)))
                if op == 8: return
                self.wfile.write(bytes([0x80 | op, len(data)]) + data); self.wfile.flush()
        return super().do_GET()
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.reply(200, hashlib.sha256(data).hexdigest().encode(), 'text/plain')
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()
"#;

/// A websocket client speaking the raw HTTP/1.1 upgrade through the hub: prints the
/// status line, then the echoed text.
const WS_CLIENT: &str = r#"
import socket, ssl, sys, os, base64
host, port, path, token, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].encode()
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(['http/1.1'])
s = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(f'GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n'.encode())
buf = b''
while b'\r\n\r\n' not in buf:
    c = s.recv(4096)
    if not c: break
    buf += c
head, rest = buf.split(b'\r\n\r\n', 1)
print(head.split(b'\r\n')[0].decode())
mask = os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
while len(rest) < 2 or len(rest) < 2 + (rest[1] & 127):
    rest += s.recv(4096)
print(rest[2:2 + (rest[1] & 127)].decode())
"#;

fn hub_url(f: &Fleet) -> String {
    hangar_node::config::load(&f.config()).unwrap().hub_url
}

/// `hangar ARGS` with `input` on stdin.
fn run_with_stdin(f: &Fleet, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut c = Command::new(common::bin())
        .args(args)
        .env("HANGAR_CONFIG", f.config())
        .env_remove("HANGAR_TOKEN")
        .env_remove("HANGAR_HUB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    c.wait_with_output().unwrap()
}

fn exec(f: &Fleet, inst: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["instance", "exec", inst, "--"];
    args.extend(cmd);
    f.try_run(&args)
}

fn exec_out(f: &Fleet, inst: &str, cmd: &[&str]) -> String {
    let o = exec(f, inst, cmd);
    assert!(o.status.success(), "exec {cmd:?} in {inst} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Files under `dir` whose bytes contain `needle` (every regular file, binary too).
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let o = Command::new("grep").args(["-r", "-l", "-F", "-a", "--devices=skip", "-e", needle]).arg(dir).output().unwrap();
    assert!(o.status.code() != Some(2) || !o.stdout.is_empty(), "grep failed on {}: {}", dir.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

#[test]
fn secrets_reach_run_secrets_read_only_change_in_place_and_leak_nowhere() {
    let f = common::up();
    f.run(&["tenant", "create", "acme"]);
    let value = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw.txt");
    std::fs::write(&file, &value).unwrap();

    // Bad input is refused, naming what is wrong, and changes nothing.
    let bad = f.fail(&["secret", "set", "acme/Db_Password", "--from-file", file.to_str().unwrap()]);
    assert!(bad.contains("secret"), "{bad}");
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1]).unwrap();
    let too_big = f.fail(&["secret", "set", "acme/big", "--from-file", big.to_str().unwrap()]);
    assert!(too_big.contains("64 KiB"), "{too_big}");
    let stdin_big = run_with_stdin(&f, &["secret", "set", "acme/big", "--from-file", "-"], &vec![b'x'; 64 * 1024 + 1]);
    assert!(!stdin_big.status.success() && String::from_utf8_lossy(&stdin_big.stderr).contains("64 KiB"));
    // The hub refuses the same on its own (the CLI checks first), naming the field.
    let c = f.client().unwrap();
    let put = |name: &str, body: serde_json::Value| common::block_on(c.raw("PUT", &format!("/v1/tenants/acme/secrets/{name}"), Some(&body))).unwrap();
    let b64 = |n: usize| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![b'x'; n]);
    for (name, body, field) in [
        ("Db_Password", serde_json::json!({"value_b64": b64(3)}), "secret name"),
        ("big", serde_json::json!({"value_b64": b64(64 * 1024 + 1)}), "value"),
        ("db", serde_json::json!({"value_b64": "not base64!"}), "value_b64"),
        ("db", serde_json::json!({"value": "x"}), "request body"),
    ] {
        let (status, err) = put(name, body);
        assert_eq!(status, 400, "{err}");
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }
    assert!(f.json(&["secret", "list", "acme"]).as_array().unwrap().is_empty(), "nothing was stored");

    let out = f.run(&["secret", "set", "acme/db-password", "--from-file", file.to_str().unwrap()]);
    assert!(!out.contains(&value), "the value is never printed: {out}");
    // From stdin too: exactly 64 KiB is allowed.
    let o = run_with_stdin(&f, &["secret", "set", "acme/blob", "--from-file", "-"], &vec![b'y'; 64 * 1024]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let missing = f.fail(&["instance", "create", "acme/nope", "--secret", "nothing-here", "--start"]);
    assert!(missing.contains("nothing-here"), "{missing}");
    f.run(&["instance", "create", "acme/web", "--secret", "db-password", "--secret", "blob", "--start"]);

    assert_eq!(exec_out(&f, "acme/web", &["cat", "/run/secrets/db-password"]), value);
    assert_eq!(exec_out(&f, "acme/web", &["sh", "-c", "wc -c < /run/secrets/blob"]).trim(), "65536");
    // Owned by the sandbox's root, read-only: neither the file nor the directory can be written.
    assert_eq!(exec_out(&f, "acme/web", &["stat", "-c", "%u %g %a", "/run/secrets/db-password"]).trim(), "0 0 400");
    for attempt in ["echo x > /run/secrets/db-password", "touch /run/secrets/new", "rm -f /run/secrets/db-password", "chmod 600 /run/secrets/db-password"] {
        let o = exec(&f, "acme/web", &["sh", "-c", attempt]);
        assert!(!o.status.success(), "`{attempt}` succeeded in the sandbox");
    }
    assert_eq!(exec_out(&f, "acme/web", &["cat", "/run/secrets/db-password"]), value);
    let mounts = exec_out(&f, "acme/web", &["grep", " /run/secrets ", "/proc/self/mounts"]);
    assert!(mounts.contains(" ro,") && mounts.contains("tmpfs"), "/run/secrets is a read-only tmpfs mount: {mounts}");

    // Deleting a secret in use is refused; the list says who uses it, never the value.
    let refused = f.fail(&["secret", "delete", "acme/db-password"]);
    assert!(refused.contains("web") && refused.contains("--force"), "{refused}");
    let list = f.json(&["secret", "list", "acme"]);
    let db = list.as_array().unwrap().iter().find(|s| s["name"] == "db-password").unwrap();
    assert_eq!(db["used_by"], serde_json::json!(["web"]));
    assert!(!list.to_string().contains(&value));

    // A changed value reaches the running sandbox within one reconcile pass.
    let value2 = format!("pw2-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&file, &value2).unwrap();
    let t0 = Instant::now();
    f.run(&["secret", "set", "acme/db-password", "--from-file", file.to_str().unwrap()]);
    wait_until("the new value in the sandbox", || exec_out(&f, "acme/web", &["cat", "/run/secrets/db-password"]) == value2);
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());

    // Pools name secrets too: every member sees them; a pool naming a secret keeps it
    // from deletion even with no member; a missing one is refused at create.
    let missing = f.fail(&["pool", "create", "acme/nope", "--secret", "nothing-here", "--running", "1"]);
    assert!(missing.contains("nothing-here"), "{missing}");
    let o = run_with_stdin(&f, &["secret", "set", "acme/pool-only", "--from-file", "-"], b"for the pool");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    f.run(&["pool", "create", "acme/workers", "--secret", "pool-only", "--secret", "db-password", "--running", "1"]);
    let members = || -> Vec<String> {
        f.json(&["instance", "list", "--tenant", "acme"]).as_array().unwrap().iter().filter(|i| i["pool"] == "workers" && i["state"] != "deleted").map(|i| format!("acme/{}", i["name"].as_str().unwrap())).collect()
    };
    let member = members().pop().expect("the pool has a member");
    wait_until("the pool's secrets in its member", || exec(&f, &member, &["cat", "/run/secrets/pool-only"]).stdout == b"for the pool");
    assert_eq!(exec_out(&f, &member, &["cat", "/run/secrets/db-password"]), value2);
    f.run(&["pool", "scale", "acme/workers", "--running", "0"]);
    wait_until("the pool emptied", || members().is_empty());
    let refused = f.fail(&["secret", "delete", "acme/pool-only"]);
    assert!(refused.contains("workers") && refused.contains("--force"), "{refused}");
    f.run(&["pool", "delete", "acme/workers"]);
    f.run(&["secret", "delete", "acme/pool-only"]);

    // Nowhere else: not in any file under the data dir (hub store, keys, agent dir,
    // bundles, desired document, logs), not in the fleet's log, not in events.
    let events = f.run(&["events", "acme", "--last", "200", "--json"]);
    assert!(events.contains("secret.set"), "secret changes are audited: {events}");
    for v in [&value, &value2] {
        assert!(!events.contains(v.as_str()), "a secret value is in the events");
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v.as_bytes());
        for needle in [v.as_str(), b64.as_str()] {
            let found = files_containing(f.dir.path(), needle);
            assert!(found.is_empty(), "a secret value is on disk in {found:?}");
        }
    }
    let key = f.data_dir().join("hub/secrets.key");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions()) & 0o777, 0o600);

    // Forced: the file goes from the running sandbox within a pass.
    f.run(&["secret", "delete", "acme/db-password", "--force"]);
    wait_until("the deleted secret gone from the sandbox", || !exec(&f, "acme/web", &["test", "-e", "/run/secrets/db-password"]).status.success());
    assert_eq!(exec_out(&f, "acme/web", &["sh", "-c", "wc -c < /run/secrets/blob"]).trim(), "65536", "the other secret stays");
    // A stopped instance's secrets leave the host.
    f.run(&["instance", "stop", "acme/web"]);
    let id: hangar_types::InstanceId = f.json(&["instance", "info", "acme/web"])["id"].as_str().unwrap().parse().unwrap();
    let sandbox = id.sandbox_id().to_string();
    wait_until("the stopped sandbox's secrets removed", || {
        !std::fs::read_dir("/run/hangar/secrets").into_iter().flatten().flatten().any(|d| d.path().join(&sandbox).exists())
    });
}

/// `curl -sk` through the hub: (status, headers, body).
fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (h, b) = (dir.path().join("h"), dir.path().join("b"));
    let o = Command::new("curl").args(["-sk", "--max-time", "30", "-D"]).arg(&h).arg("-o").arg(&b).args(["-w", "%{http_code}"]).args(args).output().unwrap();
    let code = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0);
    (code, std::fs::read_to_string(&h).unwrap_or_default(), std::fs::read(&b).unwrap_or_default())
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

fn token(f: &Fleet, inst: &str, port: &str, extra: &[&str]) -> String {
    let mut args = vec!["instance", "proxy-token", inst, "--port", port];
    args.extend(extra);
    f.run(&args).trim().to_string()
}

#[test]
fn the_proxy_opens_one_port_of_one_instance_to_its_tokens() {
    let f = common::up();
    f.run(&["tenant", "create", "acme"]);
    f.run(&["instance", "create", "acme/web", "--start", "--", "python3", "-c", SERVER]);
    f.run(&["instance", "create", "acme/other"]);
    exec_out(&f, "acme/web", &["sh", "-c", "head -c 20971520 /dev/urandom > /home/big && echo hello > /home/hello.txt && echo spaced > '/home/a b.txt'"]);
    let sum = exec_out(&f, "acme/web", &["sha256sum", "/home/big"]).split_whitespace().next().unwrap().to_string();
    let hub = hub_url(&f);
    let url = |p: &str| format!("{hub}/proxy/acme/web/8080/{p}");
    wait_until("the server in the sandbox", || exec(&f, "acme/web", &["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/hello.txt')"]).status.success());

    // Without a token: 401, as `{code, message}`.
    let (code, _, body) = curl(&[&url("hello.txt")]);
    assert_eq!(code, 401, "{}", String::from_utf8_lossy(&body));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], "unauthenticated");

    let t = token(&f, "acme/web", "8080", &["--ttl", "1h"]);
    assert!(t.starts_with("hpt_"), "{t}");
    let (code, _, body) = curl(&["-H", &bearer(&t), &url("hello.txt")]);
    assert_eq!((code, body.as_slice()), (200, &b"hello\n"[..]));
    // The path goes on as it came, percent-encoding and query included.
    let (code, _, body) = curl(&["-H", &bearer(&t), &url("a%20b.txt?x=1")]);
    assert_eq!((code, body.as_slice()), (200, &b"spaced\n"[..]));

    // A token for another port or another instance does not open this one.
    let other_port = token(&f, "acme/web", "8081", &[]);
    assert_eq!(curl(&["-H", &bearer(&other_port), &url("hello.txt")]).0, 401);
    let other_inst = token(&f, "acme/other", "8080", &[]);
    assert_eq!(curl(&["-H", &bearer(&other_inst), &url("hello.txt")]).0, 401);
    assert_eq!(curl(&["-H", "Authorization: Bearer hpt_0000", &url("hello.txt")]).0, 401);
    // An API token for the tenant is enough; the admin's too.
    let admin = hangar_node::config::load(&f.config()).unwrap().token;
    assert_eq!(curl(&["-H", &bearer(&admin), &url("hello.txt")]).0, 200);
    let bad = f.fail(&["instance", "proxy-token", "acme/web", "--port", "8080", "--ttl", "99d"]);
    assert!(bad.contains("--ttl"), "{bad}");

    // A closed port: 502 with a clear body, at once.
    let closed = token(&f, "acme/web", "9999", &[]);
    let t0 = Instant::now();
    let (code, _, body) = curl(&["-H", &bearer(&closed), &format!("{hub}/proxy/acme/web/9999/")]);
    assert_eq!(code, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("9999"), "{}", String::from_utf8_lossy(&body));
    assert!(t0.elapsed() < Duration::from_secs(5), "a closed port took {:?}", t0.elapsed());

    // ?token= once: a cookie scoped to the proxied path, which then is enough.
    let (code, headers, _) = curl(&[&format!("{}?token={t}", url("hello.txt"))]);
    assert_eq!(code, 200);
    let cookie = headers.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap_or_else(|| panic!("no cookie: {headers}"));
    assert!(cookie.contains("Path=/proxy/acme/web/8080/") && cookie.contains("HttpOnly"), "{cookie}");
    assert_eq!(curl(&["-H", &format!("Cookie: hangar_proxy_token={t}"), &url("hello.txt")]).0, 200);

    // The workload sees neither the Authorization header nor the cookie.
    let (code, _, body) = curl(&["-H", &bearer(&t), "-H", "Cookie: theme=dark", "-H", "X-Custom: 1", &url("headers")]);
    assert_eq!(code, 200);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(seen.get("authorization").is_none(), "the workload saw Authorization: {seen}");
    assert_eq!(seen["cookie"], "theme=dark", "{seen}");
    assert_eq!(seen["x-custom"], "1");
    assert_eq!(seen["x-forwarded-prefix"], "/proxy/acme/web/8080");
    let (_, _, body) = curl(&["-H", &format!("Cookie: a=b; hangar_proxy_token={t}"), &url("headers")]);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["cookie"], "a=b", "the proxy's cookie is not passed on: {seen}");

    // 20 MiB down, intact; an upload streams the other way. Both over HTTP/2 (curl's
    // choice by ALPN) and HTTP/1.1 to the hub: the bodies cross differently framed
    // legs, read in large gathered reads (hangar_tls::stream).
    let dl = tempfile::tempdir().unwrap();
    let out = dl.path().join("big");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let o = Command::new("curl").args(["-skf", flag, "-w", "%{http_version}", "-H", &bearer(&t), "-o"]).arg(&out).arg(url("big")).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), version, "curl {flag} spoke another HTTP version");
        let got = Command::new("sha256sum").arg(&out).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&got.stdout).split_whitespace().next().unwrap(), sum, "the download over HTTP/{version} is intact");
        let (code, _, body) = curl(&[flag, "-H", &bearer(&t), "--data-binary", &format!("@{}", out.display()), &url("sum")]);
        assert_eq!((code, String::from_utf8_lossy(&body).into_owned()), (200, sum.clone()), "the upload over HTTP/{version} is intact");
    }

    // A websocket upgrade goes through, both ways.
    let client = dl.path().join("ws.py");
    std::fs::write(&client, WS_CLIENT).unwrap();
    let authority = hub.trim_start_matches("https://");
    let (host, port) = authority.rsplit_once(':').unwrap();
    let o = Command::new("python3").arg(&client).args([host, port, "/proxy/acme/web/8080/ws", &t, "hello through the hub"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("HTTP/1.1 101"), "{text} {}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("hello through the hub"), "{text}");

    // `instance proxy` fills the URL and the token in; the token is not in its argv.
    let o = f.try_run(&["instance", "proxy", "acme/web", "8080", "--", "curl", "-s", "/hello.txt"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n");

    // Revoked: refused from the next request on.
    let list = f.json(&["instance", "proxy-token", "list", "acme/web"]);
    assert!(!list.to_string().contains(&t), "the list never shows secrets");
    let id = list.as_array().unwrap().iter().find(|x| x["port"] == 8080).unwrap()["id"].as_str().unwrap().to_string();
    let (code, _, _) = curl(&["-H", &bearer(&t), &url("hello.txt")]);
    assert_eq!(code, 200);
    for x in list.as_array().unwrap().iter().filter(|x| x["port"] == 8080) {
        f.run(&["instance", "proxy-token", "revoke", "acme/web", x["id"].as_str().unwrap()]);
    }
    assert!(f.fail(&["instance", "proxy-token", "revoke", "acme/web", &id]).contains("not found"));
    assert_eq!(curl(&["-H", &bearer(&t), &url("hello.txt")]).0, 401);
    assert_eq!(curl(&["-H", &format!("Cookie: hangar_proxy_token={t}"), &url("hello.txt")]).0, 401);

    // Tokens, even those passed in a URL, are in neither the log nor the events.
    assert!(!f.log().contains(&t), "a proxy token is in the fleet's log");
    let events = f.run(&["events", "acme", "--last", "200", "--json"]);
    assert!(events.contains("proxy_token.create") && !events.contains(&t), "{events}");

    // A stopped instance: 409 with a message.
    f.run(&["instance", "stop", "acme/web"]);
    let (code, _, body) = curl(&["-H", &bearer(&admin), &url("hello.txt")]);
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("start it"), "{}", String::from_utf8_lossy(&body));
}

#[test]
fn secrets_reach_sandboxes_of_registered_images_too() {
    let f = common::up();
    f.run(&["tenant", "create", "acme"]);
    // A tiny root of an admin's: sh, cat, sleep and their libraries; no /run of its own.
    let src = f.data_dir().join("rootfs-src");
    std::fs::create_dir_all(&src).unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("for b in /bin/sh /bin/cat /bin/sleep; do cp -L --parents $b {0}; for l in $(ldd $b | grep -o '/[^ ]*'); do cp -L --parents $l {0}; done; done", src.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    f.run(&["image", "add", "tiny", "--dir", src.to_str().unwrap()]);
    let o = run_with_stdin(&f, &["secret", "set", "acme/token", "--from-file", "-"], b"from-stdin");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    f.run(&["instance", "create", "acme/tiny", "--image", "tiny", "--secret", "token", "--start"]);
    assert_eq!(exec_out(&f, "acme/tiny", &["cat", "/run/secrets/token"]), "from-stdin");
    assert!(!exec(&f, "acme/tiny", &["sh", "-c", "echo x > /run/secrets/token"]).status.success());
}
