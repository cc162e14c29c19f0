//! Interactive sessions on this host: after the endpoint accepted a session request (the
//! hub's certificate, the sandbox's exec slot, the process started by
//! [`Runtime::session`](crate::drivers::runtime::Runtime::session)), this pumps
//! [`Frame`]s between the upgraded connection and the process: stdin, resizes and EOF
//! in; output and, last, the exit status out. A client that goes away kills the process
//! (never left running without anyone attached); the connection ends after the status.

use crate::drivers::runtime::SessionProcess;
use hangar_client::session::{frame_writer, FrameReader};
use hangar_types::session::{Frame, FRAME_MAX_PAYLOAD};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long output still in flight is read after the process exited.
const DRAIN: Duration = Duration::from_millis(500);

/// Runs the session to its end.
pub async fn run<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, mut p: SessionProcess) {
    let (rd, wr) = tokio::io::split(stream);
    let (tx, writer) = frame_writer(wr);
    let runtime_pid = p.child.id();
    let pty = match p.pty.take().map(|fd| Pty::new(fd, runtime_pid)).transpose() {
        Ok(p) => p.map(Arc::new),
        Err(e) => {
            p.files.kill_process();
            let _ = tx.send(Frame::Error(format!("cannot use the terminal: {e}"))).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let mut outputs = Vec::new();
    let input: Input = match &pty {
        Some(pty) => {
            let (out, tx) = (pty.clone(), tx.clone());
            outputs.push(tokio::spawn(async move { out.pump_out(tx).await }));
            Input::Pty(pty.clone())
        }
        None => {
            if let Some(o) = p.child.stdout.take() {
                outputs.push(tokio::spawn(pump(o, tx.clone(), Frame::Stdout)));
            }
            if let Some(e) = p.child.stderr.take() {
                outputs.push(tokio::spawn(pump(e, tx.clone(), Frame::Stderr)));
            }
            Input::Pipe(p.child.stdin.take())
        }
    };
    let mut input_task = tokio::spawn(feed(FrameReader::new(rd), input));
    let status = tokio::select! {
        s = p.child.wait() => s.ok(),
        _ = &mut input_task => {
            // The client is gone: nobody to run for. Without a terminal runc copies the
            // process's output through pipes of its own and waits for them to close,
            // which a background child that inherited them delays: the helper goes too
            // (the orphan stays in the sandbox, under its limits, until it ends).
            p.files.kill_process();
            if tokio::time::timeout(Duration::from_secs(1), p.child.wait()).await.is_err() {
                let _ = p.child.kill().await;
            }
            None
        }
    };
    input_task.abort();
    for o in outputs {
        let abort = o.abort_handle();
        if tokio::time::timeout(DRAIN, o).await.is_err() {
            abort.abort();
        }
    }
    if let Some(s) = status {
        use std::os::unix::process::ExitStatusExt;
        let _ = tx.send(Frame::Exit(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))).await;
    }
    drop(tx);
    let _ = writer.await;
}

/// Where the client's input goes.
enum Input {
    Pty(Arc<Pty>),
    Pipe(Option<tokio::process::ChildStdin>),
}

/// Applies the client's frames until it closes the connection or breaks the protocol.
async fn feed<R: AsyncRead + Unpin>(mut frames: FrameReader<R>, mut input: Input) {
    while let Ok(Some(f)) = frames.next().await {
        match (f, &mut input) {
            // A terminal that is gone takes nothing more; reading goes on until the
            // client leaves.
            (Frame::Stdin(b), Input::Pty(p)) => drop(p.write_all(&b).await),
            (Frame::Stdin(b), Input::Pipe(w)) => {
                // A command that closed its stdin takes nothing more.
                let broken = match w {
                    Some(pipe) => pipe.write_all(&b).await.is_err(),
                    None => false,
                };
                if broken {
                    *w = None;
                }
            }
            (Frame::StdinEof, Input::Pipe(w)) => *w = None,
            (Frame::Resize { rows, cols }, Input::Pty(p)) => p.resize(rows, cols),
            // EOF on a terminal means nothing (the user types ^D); other frames are
            // the sandbox's to send, ignored if a client sends them.
            _ => {}
        }
    }
}

/// Copies a pipe into frames until it ends.
async fn pump(mut r: impl AsyncRead + Unpin, tx: mpsc::Sender<Frame>, make: fn(Vec<u8>) -> Frame) {
    let mut buf = vec![0u8; FRAME_MAX_PAYLOAD];
    while let Ok(n @ 1..) = r.read(&mut buf).await {
        if tx.send(make(buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
}

/// The master end of the PTY the runtime helper runs on, non-blocking under tokio's
/// reactor, and the helper's pid (told of resizes with SIGWINCH: it copies the size
/// into the sandbox's own PTY).
struct Pty(AsyncFd<std::fs::File>, Option<u32>);

impl Pty {
    fn new(fd: OwnedFd, runtime_pid: Option<u32>) -> std::io::Result<Pty> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        // `AsyncFd::new` is deprecated for inner values that may close their fd behind
        // the reactor's back; this File owns the fd for the AsyncFd's whole life.
        #[allow(deprecated)]
        let fd = AsyncFd::new(std::fs::File::from(fd))?;
        Ok(Pty(fd, runtime_pid))
    }

    /// Output until the terminal closes (EIO once every process holding it has exited).
    async fn pump_out(&self, tx: mpsc::Sender<Frame>) {
        let mut buf = vec![0u8; FRAME_MAX_PAYLOAD];
        loop {
            let Ok(mut guard) = self.0.readable().await else { return };
            match guard.try_io(|f| f.get_ref().read(&mut buf)) {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => {
                    if tx.send(Frame::Stdout(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut b: &[u8]) -> std::io::Result<()> {
        while !b.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|f| f.get_ref().write(b)) {
                Ok(Ok(n)) => b = &b[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        if let Err(e) = rustix::termios::tcsetwinsize(self.0.get_ref(), ws) {
            tracing::debug!(error = %e, "resize of a session's terminal failed");
        }
        if let Some(pid) = self.1.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGWINCH);
        }
    }
}
