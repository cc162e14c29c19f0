//! File streams of `hangar cp` (tar, see `hangar_types::files`): the hub's and the
//! agents' calls, and the two bridges between a byte stream and the blocking
//! `Read`/`Write` the tar code runs on. Nothing here holds a whole file: a stream moves
//! in chunks through a channel of a few slots.

use crate::{read_capped, AgentClient, ClientError, HubClient, Result, Transport};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use hangar_types::files::{AgentCopy, AgentFilesQuery, CopyRequest, CopyResult, FilesQuery, FilesWritten, TAR_MEDIA_TYPE};
use hangar_types::{ApiError, SandboxId};
use std::pin::Pin;
use std::time::Duration;

/// A stream of bytes, ending in an error if the other side broke off.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// How many chunks may wait in a bridge: with 64 KiB writes, at most ~1 MiB in flight.
const SLOTS: usize = 16;
/// The longest a file stream may take end to end.
const STREAM_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A `Write` for a blocking thread whose bytes come out of the paired [`ByteStream`].
/// Dropping it ends the stream; [`ChannelWriter::fail`] ends it with an error, so the
/// reader can tell a cut stream from a complete one.
#[derive(Clone)]
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
}

/// A channel: what is written to the writer (on a blocking thread) is read from the stream.
pub fn byte_channel() -> (ChannelWriter, ByteStream) {
    let (tx, rx) = tokio::sync::mpsc::channel(SLOTS);
    // The stream ends at its first error: whatever a failed writer wrote after it (a tar
    // builder's trailer when it is dropped) must never make a cut stream look complete.
    let stream = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> = rx?;
        let item = rx.recv().await?;
        let next = if item.is_ok() { Some(rx) } else { None };
        Some((item, next))
    });
    (ChannelWriter { tx }, Box::pin(stream))
}

impl ChannelWriter {
    pub fn fail(&self, e: std::io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.tx.blocking_send(Ok(Bytes::copy_from_slice(buf))).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the stream's reader went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A blocking `Read` over a [`ByteStream`], pumped by a task of the current runtime.
/// A stream that ends in an error reads as that error, never as a clean end.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    chunk: Bytes,
}

impl ChannelReader {
    /// Must be called inside a tokio runtime; read it on a blocking thread.
    pub fn spawn(mut stream: ByteStream) -> ChannelReader {
        let (tx, rx) = tokio::sync::mpsc::channel(SLOTS);
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        ChannelReader { rx, chunk: Bytes::new() }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

fn body_of(stream: ByteStream) -> reqwest::Body {
    reqwest::Body::wrap_stream(stream)
}

fn into_stream(resp: reqwest::Response) -> ByteStream {
    Box::pin(resp.bytes_stream().map(|r| r.map_err(std::io::Error::other)))
}

fn files_query(path: &str, recursive: bool, base: Option<u32>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("path", path);
    q.append_pair("recursive", if recursive { "true" } else { "false" });
    if let Some(b) = base {
        q.append_pair("uid_base", &b.to_string());
    }
    q.finish()
}

impl Transport {
    /// Sends a request whose answer is a stream; a refusal (`{code, message}`) is an error.
    async fn stream_call(&self, method: reqwest::Method, path: &str, body: Option<reqwest::Body>, json: Option<serde_json::Value>) -> Result<reqwest::Response> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).timeout(STREAM_TIMEOUT);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, TAR_MEDIA_TYPE).body(b);
        }
        if let Some(j) = json {
            req = req.json(&j);
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = read_capped(resp, &url, 1 << 20).await?;
        Err(match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => ClientError::Api(e),
            Err(_) => ClientError::Decode { url, status, body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned() },
        })
    }

    async fn json_of<T: serde::de::DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let bytes = read_capped(resp, &url, 1 << 20).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url, status, body: e.to_string() })
    }
}

impl HubClient {
    /// A tar stream of `path` in the instance (a directory only with `recursive`).
    pub async fn files_download(&self, tenant: &str, name: &str, q: &FilesQuery) -> Result<ByteStream> {
        let path = format!("/v1/tenants/{tenant}/instances/{name}/files?{}", files_query(&q.path, q.recursive, None));
        Ok(into_stream(self.t.stream_call(reqwest::Method::GET, &path, None, None).await?))
    }

    /// Writes a tar stream into the instance at `path`.
    pub async fn files_upload(&self, tenant: &str, name: &str, q: &FilesQuery, tar: ByteStream) -> Result<FilesWritten> {
        let path = format!("/v1/tenants/{tenant}/instances/{name}/files?{}", files_query(&q.path, q.recursive, None));
        let resp = self.t.stream_call(reqwest::Method::PUT, &path, Some(body_of(tar)), None).await?;
        self.t.json_of(resp).await
    }

    /// Copies between two instances' volumes without the bytes passing through the client.
    pub async fn files_copy(&self, req: &CopyRequest) -> Result<CopyResult> {
        let body = serde_json::to_value(req).map_err(|e| ClientError::Setup(e.to_string()))?;
        let resp = self.t.stream_call(reqwest::Method::POST, "/v1/files/copy", None, Some(body)).await?;
        self.t.json_of(resp).await
    }
}

impl AgentClient {
    pub async fn files_read(&self, sandbox: &SandboxId, q: &AgentFilesQuery) -> Result<ByteStream> {
        let path = format!("/v1/sandboxes/{sandbox}/files?{}", files_query(&q.path, q.recursive, Some(q.uid_base)));
        Ok(into_stream(self.t.stream_call(reqwest::Method::GET, &path, None, None).await?))
    }

    pub async fn files_write(&self, sandbox: &SandboxId, q: &AgentFilesQuery, tar: ByteStream) -> Result<FilesWritten> {
        let path = format!("/v1/sandboxes/{sandbox}/files?{}", files_query(&q.path, q.recursive, Some(q.uid_base)));
        let resp = self.t.stream_call(reqwest::Method::PUT, &path, Some(body_of(tar)), None).await?;
        self.t.json_of(resp).await
    }

    pub async fn files_check(&self, sandbox: &SandboxId, q: &hangar_types::files::AgentFilesCheck) -> Result<hangar_types::files::FilesChecked> {
        let path = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("path", &q.path).append_pair("recursive", if q.recursive { "true" } else { "false" }).append_pair("uid_base", &q.uid_base.to_string());
            if let Some(t) = &q.top {
                query.append_pair("top", t).append_pair("top_dir", if q.top_dir { "true" } else { "false" });
            }
            format!("/v1/sandboxes/{sandbox}/files/check?{}", query.finish())
        };
        self.t.get(&path).await
    }

    pub async fn files_copy_local(&self, req: &AgentCopy) -> Result<FilesWritten> {
        let body = serde_json::to_value(req).map_err(|e| ClientError::Setup(e.to_string()))?;
        let resp = self.t.stream_call(reqwest::Method::POST, "/v1/copies", None, Some(body)).await?;
        self.t.json_of(resp).await
    }
}
