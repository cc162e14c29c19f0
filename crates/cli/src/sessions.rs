//! `instance exec -i/-t`: the local terminal attached to a session in the instance
//! (through the hub, see `hangar_types::session`): raw mode with `-t`, SIGWINCH sent as
//! resizes, the remote exit status as ours.

use anyhow::{bail, Result};
use hangar_client::session::{frame_writer, FrameReader};
use hangar_client::HubClient;
use hangar_types::session::{Frame, SessionRequest};
use std::collections::BTreeMap;
use std::io::Write;

/// What `exec` exits with when the session ended without a status.
const NO_STATUS: i32 = 255;

/// Puts the terminal back as it was when dropped.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enter() -> Result<RawMode> {
        let stdin = std::io::stdin();
        let before = rustix::termios::tcgetattr(&stdin)?;
        let mut raw = before.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(RawMode(before))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.0);
    }
}

fn window_size() -> (u16, u16) {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(w) if w.ws_row > 0 && w.ws_col > 0 => (w.ws_row, w.ws_col),
        _ => (24, 80),
    }
}

/// Runs `command` in `tenant/name` attached to this terminal; the remote exit status.
pub async fn exec(c: &HubClient, tenant: &str, name: &str, command: &[String], interactive: bool, tty: bool) -> Result<i32> {
    if tty && !rustix::termios::isatty(std::io::stdin()) {
        bail!("-t needs a terminal on stdin: run it from a terminal, or drop -t to pipe stdin with -i");
    }
    let (rows, cols) = if tty { window_size() } else { (0, 0) };
    let mut env = BTreeMap::new();
    if tty {
        env.insert("TERM".to_string(), std::env::var("TERM").unwrap_or_else(|_| "xterm".into()));
    }
    let req = SessionRequest { command: command.to_vec(), env, tty, rows, cols };
    let stream = c.instance_session(tenant, name, &req).await?;
    let (rd, wr) = tokio::io::split(stream);
    let (tx, writer) = frame_writer(wr);
    let _raw = if tty { Some(RawMode::enter()?) } else { None };
    if interactive {
        // A thread, not tokio's stdin: a read blocked on the terminal must not hold up
        // the runtime's shutdown when the session ends.
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 16 * 1024];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(Frame::StdinEof);
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Frame::Stdin(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        tx.send(Frame::StdinEof).await?;
    }
    if tty {
        let tx = tx.clone();
        let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                let (rows, cols) = window_size();
                if tx.send(Frame::Resize { rows, cols }).await.is_err() {
                    return;
                }
            }
        });
    }
    // Held to the end: the writer shuts the connection's write side once every sender
    // is gone, and the far end takes a closed connection as "abandon" (input ends with
    // a StdinEof frame instead).
    let _open = tx;
    let mut frames = FrameReader::new(rd);
    let mut code = None;
    let mut error = None;
    loop {
        match frames.next().await {
            Ok(Some(Frame::Stdout(b))) => {
                let mut o = std::io::stdout().lock();
                o.write_all(&b)?;
                o.flush()?;
            }
            Ok(Some(Frame::Stderr(b))) => {
                let mut e = std::io::stderr().lock();
                e.write_all(&b)?;
                e.flush()?;
            }
            Ok(Some(Frame::Exit(c))) => {
                code = Some(c);
                break;
            }
            Ok(Some(Frame::Error(m))) => error = Some(m),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    writer.abort();
    drop(_raw);
    match (code, error) {
        (Some(c), _) => Ok(c),
        (None, Some(m)) => {
            eprintln!("hangar: session ended: {m}");
            Ok(NO_STATUS)
        }
        (None, None) => {
            eprintln!("hangar: session ended without an exit status (the instance's host or the hub went away)");
            Ok(NO_STATUS)
        }
    }
}
