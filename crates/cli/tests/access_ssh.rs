//! Getting into a workspace (issue 16): interactive sessions through the hub
//! (`instance exec -it`, driven through a real PTY by python3's `pty`), and the SSH
//! gateway with Debian's OpenSSH clients (`ssh`, `scp`, `sftp`), on a real fleet.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fleet with a tenant `acme` and a running instance `acme/web`.
fn fleet() -> common::Fleet {
    let f = common::up();
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

#[allow(dead_code)]
fn unused(_: &Path, _: PathBuf) {}
