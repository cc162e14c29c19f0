//! Opening an interactive session: a POST with `Upgrade: hangar-session` whose body is
//! the [`SessionRequest`]; a refusal is an ordinary `{code, message}` answer, an
//! acceptance is `101 Switching Protocols`, after which the connection carries
//! [`Frame`]s both ways. Upgrades need HTTP/1.1, so each session has a client of its own
//! that offers only `http/1.1` in ALPN.

use crate::{ClientError, Result, Transport};
use hangar_types::session::{Frame, FrameError, SessionRequest, UPGRADE_PROTOCOL};
use hangar_types::ApiError;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use reqwest::Upgraded;

pub(crate) async fn open(t: &Transport, path: &str, req: &SessionRequest) -> Result<Upgraded> {
    let mut tls = t.tls.clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    let url = format!("{}{}", t.base, path);
    let mut r = http.post(&url).header("connection", "upgrade").header("upgrade", UPGRADE_PROTOCOL).json(req);
    if let Some(tok) = &t.token {
        r = r.bearer_auth(tok);
    }
    let resp = r.send().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
    let status = resp.status();
    if status == reqwest::StatusCode::SWITCHING_PROTOCOLS {
        return resp.upgrade().await.map_err(|source| ClientError::Transport { url, source });
    }
    let bytes = crate::read_capped(resp, &url, 1 << 20).await?;
    match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(e) => Err(ClientError::Api(e)),
        Err(_) => Err(ClientError::Decode { url, status: status.as_u16(), body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned() }),
    }
}

/// Reads [`Frame`]s off a byte stream.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader { inner, buf: Vec::with_capacity(16 * 1024) }
    }

    /// The next frame; None when the stream ended cleanly between frames.
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            match Frame::decode(&self.buf) {
                Ok(Some((f, n))) => {
                    self.buf.drain(..n);
                    return Ok(Some(f));
                }
                Ok(None) => {}
                Err(e) => return Err(invalid(e)),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "session ended in the middle of a frame"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn invalid(e: FrameError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// A task writing the frames sent to it, in order, then shutting the writer down when
/// every sender is gone (or at the first write error).
pub fn frame_writer<W: AsyncWrite + Unpin + Send + 'static>(mut w: W) -> (tokio::sync::mpsc::Sender<Frame>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(64);
    let task = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frame(&mut w, &f).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    (tx, task)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> std::io::Result<()> {
    w.write_all(&f.encode()).await?;
    w.flush().await
}

/// Splits data into frames of at most [`hangar_types::session::FRAME_MAX_PAYLOAD`] bytes.
pub async fn write_data<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8], make: fn(Vec<u8>) -> Frame) -> std::io::Result<()> {
    for part in data.chunks(hangar_types::session::FRAME_MAX_PAYLOAD) {
        w.write_all(&make(part.to_vec()).encode()).await?;
    }
    w.flush().await
}
