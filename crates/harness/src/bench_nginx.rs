//! The proxy bench's peer: nginx as a TLS-terminating reverse proxy in front of the same
//! sandbox server, on the same host, in the same run. It is what a user would put in
//! front of a workspace's port instead of hangar's proxy, and it pays the same per-byte
//! work (a TLS session to curl, a plaintext connection to the sandbox, one more process
//! copying the body), so it shows what that hop costs on this machine whoever makes it.

use crate::fleet::free_port;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx in the foreground in a process group of its own, killed with its workers when
/// dropped (killing the master alone leaves its workers running).
pub struct Nginx {
    child: Child,
    pub port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Starts nginx on a free loopback port with a throwaway self-signed certificate,
/// proxying every path to `upstream` (`host:port`), HTTP/2 or HTTP/1.1 by ALPN, with the
/// worker count nginx picks for this machine. The peer gets its fastest setting here:
/// responses buffered in memory in 256 KiB buffers, never in temporary files (with its
/// defaults, one-page buffers, it keeps about 0.45 of the straight download; unbuffered
/// with 256 KiB reads, about 0.65; this, about 0.70).
pub fn start(dir: &Path, upstream: &str) -> Result<Nginx> {
    let (key, cert) = (dir.join("nginx.key"), dir.join("nginx.pem"));
    let o = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("cannot run openssl (package openssl) for the nginx peer's certificate")?;
    if !o.status.success() {
        bail!("openssl req: {}", String::from_utf8_lossy(&o.stderr));
    }
    let port = free_port()?;
    let tmp = dir.join("nginx-tmp");
    std::fs::create_dir_all(&tmp)?;
    let conf = dir.join("nginx.conf");
    let log = dir.join("nginx-error.log");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes auto;\npid {dir}/nginx.pid;\nerror_log {log} warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n\
               server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
                 location / {{ proxy_pass http://{upstream}; proxy_http_version 1.1; proxy_buffering on; proxy_max_temp_file_size 0; proxy_buffer_size 256k; proxy_buffers 8 256k; proxy_busy_buffers_size 512k; }}\n  }}\n}}\n",
            dir = dir.display(),
            log = log.display(),
            tmp = tmp.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )?;
    let child = Command::new("nginx")
        .process_group(0)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nginx, the proxy bench's peer: install nginx-light")?;
    let mut nginx = Nginx { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = nginx.child.try_wait()? {
            bail!("nginx ended ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            bail!("nginx did not listen on {port}: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(nginx)
}
