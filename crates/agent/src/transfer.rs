//! Host-to-host transfers, both halves (see `hangar_types::transfer`): the hub tells
//! the target what to expect and the source what to send; the source streams straight
//! to the target's endpoint over mutual TLS with its host certificate.
//!
//! Routes on the agent's endpoint:
//! - hub only: `POST /v1/transfers/expect` (target), `POST /v1/transfers/send` (source),
//!   `GET /v1/transfers/{id}` (either: progress), `DELETE /v1/transfers/{id}` (either:
//!   stop it and remove what it staged; idempotent);
//! - source agent only: `POST /v1/transfers/{id}/stream`: the stream, accepted once,
//!   before the ticket's expiry, from a certificate the hub named, with the secret.
//!
//! The target receives a volume's snapshots into its staging dir,
//! `<pool>/transfers/<volume>/<snapshot>`, where an incremental one finds its parent.
//! A snapshot counts as received only when the end frame's byte count and SHA-256
//! match what arrived, `btrfs receive` succeeded and the subvolume is sealed
//! (read-only, which `btrfs receive` makes it only at the end); anything else removes
//! it. A killed agent can leave an unsealed one: [`Transfers::sweep`] removes those at
//! start (a transfer never survives its agent: the hub's poll sees it gone and fails
//! it). Sealed staged snapshots stay until the hub makes the volume from one
//! ([`Transfers::adopt`]) or drops them ([`Transfers::discard`]).

use crate::drivers::volume::VolumeDriver;
use crate::identity::AgentPaths;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use hangar_tls::serve::PeerInfo;
use hangar_tls::PeerPins;
use hangar_types::transfer::{rate, Checksum, Frame, FrameDecoder, Piece, CHECKSUM_HEADER, StagedAdopt, TransferExpect, TransferId, TransferObject, TransferReceipt, TransferSend, TransferState, TransferStatus, FRAME_MAX, SECRET_HEADER};
use hangar_types::{ApiError, ErrorCode, SnapshotId, VolumeId};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stream that moves no byte for this long has failed, on either side (a cut
/// network would otherwise hold both for the TCP retransmission timeout, minutes).
pub const IDLE_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// A stream's running digest, by its [`Checksum`].
enum StreamHash {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl StreamHash {
    fn new(c: Checksum) -> StreamHash {
        match c {
            Checksum::Sha256 => StreamHash::Sha256(Sha256::new()),
            Checksum::Blake3 => StreamHash::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            StreamHash::Sha256(h) => h.update(b),
            StreamHash::Blake3(h) => {
                h.update(b);
            }
        }
    }

    fn finalize(self) -> [u8; 32] {
        match self {
            StreamHash::Sha256(h) => h.finalize().into(),
            StreamHash::Blake3(h) => h.finalize().into(),
        }
    }
}

/// Frames read ahead of the connection (each up to [`FRAME_MAX`]).
const FRAMES_IN_FLIGHT: usize = 4;

/// A transfer this agent takes part in.
struct Entry {
    status: TransferStatus,
    started: Instant,
    /// Target: what the hub said to expect, until the stream comes (then taken).
    expect: Option<TransferExpect>,
    /// Source: the sending task; target: set to stop the receive.
    task: Option<tokio::task::AbortHandle>,
    cancelled: Arc<std::sync::atomic::AtomicBool>,
    /// Set once the status is final, for long-polls of it.
    done: tokio::sync::watch::Sender<bool>,
}

/// Both halves of this host's transfers; cheap to clone.
#[derive(Clone)]
pub struct Transfers {
    volumes: Arc<dyn VolumeDriver>,
    paths: AgentPaths,
    hub_fingerprint: String,
    pins: Arc<PeerPins>,
    entries: Arc<Mutex<HashMap<TransferId, Entry>>>,
}

/// Why a transfer request was refused: `{code, message}` with the code's status.
pub struct TransferError(ApiError);

impl IntoResponse for TransferError {
    fn into_response(self) -> Response {
        (StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(self.0)).into_response()
    }
}

fn err(code: ErrorCode, m: impl Into<String>) -> TransferError {
    TransferError(ApiError::new(code, m.into()))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Transfers {
    pub fn new(volumes: Arc<dyn VolumeDriver>, paths: AgentPaths, hub_fingerprint: String) -> Transfers {
        Transfers { volumes, paths, hub_fingerprint, pins: Default::default(), entries: Default::default() }
    }

    /// The client certificates the endpoint accepts for expected transfers
    /// (`hangar_tls::server_config_swappable_with_peers`).
    pub fn peer_pins(&self) -> Arc<PeerPins> {
        self.pins.clone()
    }

    /// Removes every unsealed staged snapshot: at start nothing of this agent's is
    /// receiving them any more (a transfer does not outlive its agent).
    pub async fn sweep(&self) {
        let Some(dir) = self.volumes.transfer_dir() else { return };
        for vol in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            for snap in std::fs::read_dir(vol.path()).into_iter().flatten().flatten() {
                let p = snap.path();
                if self.volumes.is_sealed(&p).await.unwrap_or(false) {
                    continue;
                }
                if let Err(e) = self.volumes.remove_staged(&p).await {
                    tracing::warn!(error = %e, path = %p.display(), "cannot remove a cut-off transfer");
                }
            }
        }
    }

    /// The snapshots staged for `volume` (sealed ones: complete and checked).
    pub async fn staged(&self, volume: &VolumeId) -> Vec<SnapshotId> {
        let Ok(dir) = self.staging(volume) else { return vec![] };
        let mut v = vec![];
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let sealed = self.volumes.is_sealed(&e.path()).await.unwrap_or(false);
            if let (true, Ok(id)) = (sealed, e.file_name().to_string_lossy().parse()) {
                v.push(id);
            }
        }
        v.sort();
        v
    }

    /// Makes `volume` from its staged snapshot `snapshot` (a writable snapshot of it,
    /// limited to `size_mib`), then drops the staging. Already made (a retry after a
    /// lost answer): Ok, if nothing is staged any more or the volume exists.
    pub async fn adopt(&self, volume: &VolumeId, snapshot: &SnapshotId, size_mib: u64) -> Result<(), TransferError> {
        let dir = self.staging(volume).map_err(|m| err(ErrorCode::InvalidArgument, m))?;
        let staged = dir.join(snapshot);
        let exists = self.volumes.exists(volume).await.map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        if !exists {
            if !self.volumes.is_sealed(&staged).await.unwrap_or(false) {
                return Err(err(ErrorCode::NotFound, format!("no complete snapshot {volume}/{snapshot} is staged here")));
            }
            hangar_types::failpoint::hit("transfer-target-adopt");
            self.volumes.adopt_staged(volume, &staged, size_mib).await.map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        }
        // The user's snapshots the move carried become the volume's snapshots; the
        // move's own (`mv-`) go with the staging.
        for s in self.staged(volume).await.into_iter().filter(|s| !s.as_str().starts_with(hangar_types::snapshots::MOVE_PREFIX)) {
            self.volumes.adopt_staged_snapshot(volume, &dir.join(&s), &s).await.map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        }
        self.discard(volume).await
    }

    /// Drops everything staged for `volume`. Ok if nothing is.
    pub async fn discard(&self, volume: &VolumeId) -> Result<(), TransferError> {
        let dir = self.staging(volume).map_err(|m| err(ErrorCode::InvalidArgument, m))?;
        self.volumes.remove_staged(&dir).await.map_err(|e| err(ErrorCode::Internal, e.to_string()))
    }

    fn with<R>(&self, id: &TransferId, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id).map(f)
    }

    /// Adds `n` bytes to a transfer's progress (never down) and refreshes its rate.
    fn progress(&self, id: &TransferId, n: u64) {
        self.with(id, |e| {
            e.status.bytes += n;
            e.status.elapsed_ms = e.started.elapsed().as_millis() as u64;
            e.status.rate_bps = rate(e.status.bytes, e.status.elapsed_ms);
        });
    }

    fn finish(&self, id: &TransferId, r: Result<String, String>) {
        self.with(id, |e| {
            e.status.elapsed_ms = e.started.elapsed().as_millis() as u64;
            e.status.rate_bps = rate(e.status.bytes, e.status.elapsed_ms);
            e.task = None;
            match r {
                Ok(sha) => {
                    e.status.state = TransferState::Done;
                    e.status.sha256 = Some(sha);
                }
                Err(m) => {
                    e.status.state = TransferState::Failed;
                    e.status.error = Some(m);
                }
            }
            e.done.send_replace(true);
        });
    }

    fn staging(&self, volume: &VolumeId) -> Result<PathBuf, String> {
        self.volumes.transfer_dir().map(|d| d.join(volume)).ok_or_else(|| format!("the {} volume driver cannot receive transfers (btrfs can)", self.volumes.name()))
    }

    /// Target: accept one stream for `x`.
    pub fn expect(&self, x: TransferExpect) -> Result<TransferStatus, TransferError> {
        match &x.object {
            TransferObject::VolumeSnapshot { volume, .. } => drop(self.staging(volume).map_err(|m| err(ErrorCode::InvalidArgument, m))?),
            TransferObject::Files { to, .. } => crate::copy::expect_files(self.volumes.as_ref(), to).map_err(|e| err(e.code(), e.to_string()))?,
        }
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = m.get(&x.id) {
            return Err(err(ErrorCode::Conflict, format!("transfer {} is known here already ({:?})", x.id, e.status.state)));
        }
        for f in &x.source_fingerprints {
            self.pins.add(f);
        }
        // What this target verifies: the hub picks the source's checksum from it.
        let status = TransferStatus { checksums: vec![Checksum::Blake3, Checksum::Sha256], ..TransferStatus::new(x.id, TransferState::Expected) };
        m.insert(x.id, Entry { status: status.clone(), started: Instant::now(), expect: Some(x), task: None, cancelled: Default::default(), done: tokio::sync::watch::channel(false).0 });
        Ok(status)
    }

    /// Source: start streaming `s` to its target; progress through [`Transfers::status`].
    pub fn send(&self, s: TransferSend) -> Result<TransferStatus, TransferError> {
        let source = match &s.object {
            TransferObject::Files { from, recursive, .. } => {
                crate::copy::check_source(self.volumes.as_ref(), from, *recursive).map_err(|e| err(e.code(), e.to_string()))?;
                None
            }
            o => Some(self.source_paths(o).map_err(|m| err(ErrorCode::NotFound, m))?),
        };
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(&s.id) {
            return Err(err(ErrorCode::Conflict, format!("transfer {} is known here already", s.id)));
        }
        let status = TransferStatus::new(s.id, TransferState::Running);
        let me = self.clone();
        let id = s.id;
        let task = tokio::spawn(async move {
            let r = match source {
                Some(source) => me.send_stream(&s, source).await,
                None => me.send_files(&s).await,
            };
            if let Err(e) = &r {
                tracing::warn!(transfer = %id, error = %e, "transfer failed on the source");
            }
            me.finish(&id, r);
        });
        m.insert(id, Entry { status: status.clone(), started: Instant::now(), expect: None, task: Some(task.abort_handle()), cancelled: Default::default(), done: tokio::sync::watch::channel(false).0 });
        Ok(status)
    }

    pub fn status(&self, id: &TransferId) -> Option<TransferStatus> {
        self.with(id, |e| {
            let mut s = e.status.clone();
            if !s.state.is_final() {
                s.elapsed_ms = e.started.elapsed().as_millis() as u64;
            }
            s
        })
    }

    /// Stops a transfer (the sending task; a receive stops at its next frame and removes
    /// what it wrote) and drops its ticket. Done objects stay where they were put.
    pub async fn forget(&self, id: &TransferId) -> Result<(), TransferError> {
        let gone = self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(e) = gone {
            if let Some(t) = e.task {
                t.abort();
            }
            e.cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(x) = e.expect {
                for f in &x.source_fingerprints {
                    self.pins.remove(f);
                }
            }
        }
        Ok(())
    }

    /// The snapshot (and parent) a send reads, which must exist.
    fn source_paths(&self, o: &TransferObject) -> Result<(PathBuf, Option<PathBuf>), String> {
        match o {
            TransferObject::VolumeSnapshot { volume, snapshot, parent } => {
                let dir = self.volumes.snapshot_dir(volume).ok_or_else(|| format!("the {} volume driver cannot send transfers (btrfs can)", self.volumes.name()))?;
                let found = |s: &hangar_types::SnapshotId| {
                    let p = dir.join(s);
                    if p.is_dir() {
                        Ok(p)
                    } else {
                        Err(format!("no snapshot {volume}/{s} on this host"))
                    }
                };
                Ok((found(snapshot)?, parent.as_ref().map(found).transpose()?))
            }
            TransferObject::Files { .. } => Err("files are sent as a tar stream, not a snapshot".into()),
        }
    }

    /// `btrfs send` into frames, POSTed to the target; the target's receipt must match
    /// what was sent. Returns the SHA-256 (hex).
    async fn send_stream(&self, s: &TransferSend, (snap, parent): (PathBuf, Option<PathBuf>)) -> Result<String, String> {
        let mut cmd = tokio::process::Command::new("btrfs");
        cmd.arg("send").arg("-q");
        if let Some(p) = &parent {
            cmd.arg("-p").arg(p);
        }
        let mut child = cmd
            .arg(&snap)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run btrfs send: {e}"))?;
        let mut out = child.stdout.take().ok_or("btrfs send has no stdout")?;
        widen_pipe(&out);
        let mut errout = child.stderr.take().ok_or("btrfs send has no stderr")?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(FRAMES_IN_FLIGHT);
        let me = self.clone();
        let (id, checksum) = (s.id, s.checksum);
        // Reads the tool's output into frames; an error ends the body, so the target
        // never sees an end frame and keeps nothing.
        let producer = tokio::spawn(async move {
            let mut hash = StreamHash::new(checksum);
            let mut total = 0u64;
            loop {
                // Read into the bytes after a data frame's header: the frame goes out as
                // read, no copy.
                let mut frame = Vec::with_capacity(5 + FRAME_MAX);
                frame.extend_from_slice(&Frame::data_header(0));
                let n = match out.read_buf(&mut frame).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return Err("cannot read btrfs send's output".to_string());
                    }
                };
                frame[..5].copy_from_slice(&Frame::data_header(n));
                hash.update(&frame[5..]);
                total += n as u64;
                hangar_types::failpoint::hit("transfer-source-sending");
                if tx.send(Ok(frame)).await.is_err() {
                    return Err("the target stopped reading".to_string());
                }
                me.progress(&id, n as u64);
            }
            let status = child.wait().await.map_err(|e| e.to_string())?;
            if !status.success() {
                let mut e = String::new();
                let _ = errout.read_to_string(&mut e).await;
                let _ = tx.send(Err(std::io::Error::other("btrfs send failed"))).await;
                return Err(format!("btrfs send failed: {}", e.trim()));
            }
            let digest = hash.finalize();
            let _ = tx.send(Ok(Frame::End { bytes: total, digest }.encode())).await;
            Ok((total, checksum.show(&digest)))
        });
        self.deliver(s, rx, producer).await
    }

    /// Posts the frames `rx` carries to the target and checks its receipt against what
    /// `producer` says it sent. Returns the SHA-256 (hex).
    async fn deliver(&self, s: &TransferSend, rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>, producer: tokio::task::JoinHandle<Result<(u64, String), String>>) -> Result<String, String> {
        let body = axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|x| (x, rx)) }));
        // A cut network leaves a TCP write or read waiting for many minutes: a stream
        // that stops moving fails here (and the target's side of it there) instead.
        let posted = tokio::select! {
            r = self.post_stream(s, body) => r,
            stalled = self.stalled(&s.id) => Err(stalled),
        };
        let receipt = match posted {
            Ok(r) => r,
            Err(e) => {
                producer.abort();
                return Err(e);
            }
        };
        let sent = producer.await.map_err(|e| e.to_string())?;
        let (bytes, sha) = sent?;
        if receipt.bytes != bytes || receipt.sha256 != sha {
            return Err(format!("the target received {} bytes with digest {}, {bytes} bytes with {sha} were sent", receipt.bytes, receipt.sha256));
        }
        Ok(sha)
    }

    /// Resolves once transfer `id`'s bytes have not moved for [`IDLE_MAX`].
    async fn stalled(&self, id: &TransferId) -> String {
        let (mut last, mut since) = (0u64, Instant::now());
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let bytes = self.with(id, |e| e.status.bytes).unwrap_or(0);
            if bytes != last {
                (last, since) = (bytes, Instant::now());
            } else if since.elapsed() >= IDLE_MAX {
                return format!("no byte went out for {} s after {bytes}: the stream to the target is cut", IDLE_MAX.as_secs());
            }
        }
    }

    /// Target: writes the data frames of `body` into `sink` (`what` names it in errors)
    /// up to the end frame, which must check: byte count and SHA-256 of the data.
    async fn pump_frames<W: tokio::io::AsyncWrite + Unpin>(&self, x: &TransferExpect, body: Incoming, cancelled: &std::sync::atomic::AtomicBool, sink: &mut W, what: &str) -> Result<TransferReceipt, String> {
        let Incoming { body, checksum } = body;
        let mut hash = StreamHash::new(checksum);
        let mut total = 0u64;
        let mut frames = FrameDecoder::default();
        let mut stream = body.into_data_stream();
        let mut end = None;
        let mut idle = std::time::Duration::ZERO;
        // Read to the body's end, past the end frame: an answer to a body left unread
        // closes the connection under the sender's last write (a broken pipe instead of
        // the receipt); the decoder refuses any byte after the end frame.
        loop {
            if cancelled.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("the transfer was stopped".into());
            }
            let Ok(next) = tokio::time::timeout(std::time::Duration::from_secs(1), stream.next()).await else {
                idle += std::time::Duration::from_secs(1);
                if idle >= IDLE_MAX {
                    return Err(format!("nothing arrived for {} s after {total} bytes: the stream is cut", IDLE_MAX.as_secs()));
                }
                continue;
            };
            idle = std::time::Duration::ZERO;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| format!("the stream was cut after {total} bytes: {e}"))?;
            let mut input = &chunk[..];
            while let Some(piece) = frames.next(&mut input)? {
                match piece {
                    Piece::Data(d) => {
                        hash.update(d);
                        total += d.len() as u64;
                        hangar_types::failpoint::hit("transfer-target-receiving");
                        sink.write_all(d).await.map_err(|e| format!("{what} stopped reading: {e}"))?;
                        self.progress(&x.id, d.len() as u64);
                    }
                    Piece::End { bytes, digest } => end = Some((bytes, digest)),
                }
            }
        }
        let Some((bytes, sha)) = end else {
            return Err(format!("the stream ended after {total} bytes without its end frame"));
        };
        let got = hash.finalize();
        if bytes != total || sha != got {
            return Err(format!("the stream does not check: {total} bytes with {} arrived, {bytes} with {} were sent", checksum.show(&got), checksum.show(&sha)));
        }
        Ok(TransferReceipt { bytes: total, sha256: checksum.show(&got) })
    }

    /// One POST of the stream to the target's endpoint, as this host (its current
    /// certificate, read now: it may have been renewed), accepting only the target's
    /// certificates the hub named.
    async fn post_stream(&self, s: &TransferSend, body: axum::body::Body) -> Result<TransferReceipt, String> {
        let (_, _, cert_pem, key_pem) = self.paths.load().map_err(|e| format!("cannot read this host's certificate: {e}"))?;
        let mut tls = hangar_tls::pinned_client_config(s.target_fingerprints.clone(), Some((&cert_pem, &key_pem))).map_err(|e| e.to_string())?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let uri: axum::http::Uri = s.target_endpoint.parse().map_err(|e| format!("target endpoint '{}': {e}", s.target_endpoint))?;
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(443);
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| format!("target endpoint '{}': {e}", s.target_endpoint))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await
        };
        let io = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
            .await
            .map_err(|_| format!("the target at {} did not answer within 10 s", s.target_endpoint))?
            .map_err(|e| format!("cannot reach the target at {}: {e}", s.target_endpoint))?;
        // The connection is driven here, not on a task of its own: when this future is
        // dropped (a stalled stream), the connection and the body go with it.
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|e| format!("the connection to {} failed: {e}", s.target_endpoint))?;
        let request = |what: &str, body: axum::body::Body| {
            axum::http::Request::post(format!("/v1/transfers/{}/{what}", s.id))
                .header(axum::http::header::HOST, format!("{host}:{port}"))
                .header(SECRET_HEADER, &s.secret)
                .header(CHECKSUM_HEADER, s.checksum.as_str())
                .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
                .body(body)
                .map_err(|e| e.to_string())
        };
        let exchange = async {
            answer::<serde_json::Value>(hangar_tls::forward::send_on(&mut sender, request("check", axum::body::Body::empty())?).await.map_err(|(e, _)| e), &s.target_endpoint).await?;
            answer(hangar_tls::forward::send_on(&mut sender, request("stream", body)?).await.map_err(|(e, _)| e), &s.target_endpoint).await
        };
        tokio::pin!(exchange);
        tokio::pin!(conn);
        // When the request fails, the connection's own error says more, unless the target
        // answered with a refusal: a refused client certificate (TLS 1.3 refuses it after
        // the client's side of the handshake ended) fails the request as "not ready" or a
        // broken pipe while the connection's error names the alert.
        let ended = |e: String, c: Option<hyper::Error>| match c {
            Some(c) if !e.contains("the target refused") => format!("the connection to {} ended: {}", s.target_endpoint, with_cause(&c)),
            _ => e,
        };
        tokio::select! {
            r = &mut exchange => match r {
                Err(e) => Err(ended(e, tokio::time::timeout(std::time::Duration::from_secs(2), &mut conn).await.ok().and_then(Result::err))),
                ok => ok,
            },
            // A target that refuses the stream answers and closes while the body is still
            // going out: its answer may be read already.
            r = &mut conn => match tokio::time::timeout(std::time::Duration::from_secs(2), exchange).await {
                Ok(Err(e)) => Err(ended(e, r.err())),
                Ok(answered) => answered,
                Err(_) => Err(format!("the connection to {} ended: {}", s.target_endpoint, r.err().map(|e| with_cause(&e)).unwrap_or_default())),
            },
        }
    }

    /// Target: checks the stream's ticket and the caller; with `take`, uses the ticket
    /// up (the stream follows).
    fn accept(&self, id: TransferId, peer: &PeerInfo, secret: Option<&str>, take: bool) -> Result<Option<TransferExpect>, TransferError> {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.get_mut(&id).ok_or_else(|| err(ErrorCode::NotFound, format!("no transfer {id} is expected here")))?;
        let Some(x) = e.expect.as_ref() else {
            return Err(err(ErrorCode::Conflict, format!("transfer {id} was used already: a ticket is good for one stream")));
        };
        let from_source = peer.fingerprint.as_ref().is_some_and(|f| x.source_fingerprints.contains(f));
        if !from_source {
            return Err(err(ErrorCode::Forbidden, format!("transfer {id} comes from another host")));
        }
        let secret_ok = secret.is_some_and(|s| hex::encode(Sha256::digest(s.as_bytes())) == x.secret_sha256);
        if !secret_ok {
            return Err(err(ErrorCode::Forbidden, format!("transfer {id}: wrong or missing secret")));
        }
        if now_unix() > x.expires_unix {
            return Err(err(ErrorCode::Forbidden, format!("the ticket of transfer {id} expired")));
        }
        if !take {
            return Ok(None);
        }
        let x = e.expect.take().expect("checked above");
        for f in &x.source_fingerprints {
            self.pins.remove(f);
        }
        e.status.state = TransferState::Running;
        e.started = Instant::now();
        Ok(Some(x))
    }

    /// Target: the staging dir and the path snapshot `volume/snapshot` is received at,
    /// refused if a complete copy of it is staged here already.
    async fn receive_dest(&self, volume: &VolumeId, snapshot: &SnapshotId) -> Result<(PathBuf, PathBuf), String> {
        let dir = self.staging(volume)?;
        let dest = dir.join(snapshot);
        if dest.exists() && self.volumes.is_sealed(&dest).await.unwrap_or(false) {
            return Err(format!("snapshot {volume}/{snapshot} is staged here already"));
        }
        Ok((dir, dest))
    }

    /// Target: what the stream of `id` would be refused for before its first byte
    /// (besides its ticket): said to the sender's `check`, since an answer to a body
    /// still being sent is lost when the connection closes.
    async fn precheck(&self, id: &TransferId) -> Result<(), TransferError> {
        let object = self.with(id, |e| e.expect.as_ref().map(|x| x.object.clone())).flatten();
        if let Some(TransferObject::VolumeSnapshot { volume, snapshot, .. }) = object {
            self.receive_dest(&volume, &snapshot).await.map_err(|m| err(ErrorCode::Conflict, m))?;
        }
        Ok(())
    }

    async fn receive(&self, x: &TransferExpect, body: Incoming) -> Result<TransferReceipt, String> {
        let (volume, snapshot) = match &x.object {
            TransferObject::VolumeSnapshot { volume, snapshot, .. } => (volume, snapshot),
            TransferObject::Files { .. } => return self.receive_files(x, body).await,
        };
        let (dir, dest) = self.receive_dest(volume, snapshot).await?;
        if dest.exists() {
            // What a receive cut off by a kill left.
            self.volumes.remove_staged(&dest).await.map_err(|e| e.to_string())?;
        }
        let cancelled = self.with(&x.id, |e| e.cancelled.clone()).ok_or("the transfer was forgotten")?;
        let mut r = self.receive_into(x, &dir, body, &cancelled).await;
        if r.is_ok() && !self.volumes.is_sealed(&dest).await.unwrap_or(false) {
            r = Err(format!("the stream held no complete snapshot named {snapshot}"));
        }
        if (r.is_err() || cancelled.load(std::sync::atomic::Ordering::SeqCst))
            && let Err(e) = self.volumes.remove_staged(&dest).await
        {
            tracing::warn!(transfer = %x.id, error = %e, "cannot remove what a failed transfer received");
        }
        r
    }

    async fn receive_into(&self, x: &TransferExpect, dir: &std::path::Path, body: Incoming, cancelled: &std::sync::atomic::AtomicBool) -> Result<TransferReceipt, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot make the staging dir {}: {e}", dir.display()))?;
        // `-e`: stop at the stream's end command rather than at EOF.
        let mut child = tokio::process::Command::new("btrfs")
            .arg("receive")
            .arg("-e")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run btrfs receive: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("btrfs receive has no stdin")?;
        widen_pipe(&stdin);
        let receipt = self.pump_frames(x, body, cancelled, &mut stdin, "btrfs receive").await?;
        drop(stdin);
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("btrfs receive failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        hangar_types::failpoint::hit("transfer-target-received");
        Ok(receipt)
    }

    /// `hangar cp` across hosts, source side: the path as a tar stream (`copy::send_tar`)
    /// in data frames, then the end frame; the target's receipt must match.
    async fn send_files(&self, s: &TransferSend) -> Result<String, String> {
        let TransferObject::Files { from, recursive, .. } = &s.object else { return Err("not a files transfer".into()) };
        let root = self.volumes.path(&VolumeId::from(&from.sandbox));
        let (rel, recursive, ids) = (PathBuf::from(&from.path), *recursive, hangar_types::idmap::IdRange::at(from.uid_base));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(FRAMES_IN_FLIGHT);
        let checksum = s.checksum;
        let w = FrameWriter { tx: tx.clone(), hash: StreamHash::new(checksum), total: 0, transfers: self.clone(), id: s.id };
        let producer = tokio::task::spawn_blocking(move || {
            let mut buffered = std::io::BufWriter::with_capacity(256 << 10, w);
            let sent = crate::copy::send_tar(&root, &rel, recursive, ids, &mut buffered).map_err(|e| e.to_string());
            let w = buffered.into_inner().map_err(|e| e.to_string());
            match (sent, w) {
                (Ok(()), Ok(w)) => {
                    let digest = w.hash.finalize();
                    let _ = tx.blocking_send(Ok(Frame::End { bytes: w.total, digest }.encode()));
                    Ok((w.total, checksum.show(&digest)))
                }
                // An error ends the body: the target never sees an end frame, keeps nothing.
                (Err(e), _) | (_, Err(e)) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.clone())));
                    Err(e)
                }
            }
        });
        self.deliver(s, rx, producer).await
    }

    /// `hangar cp` across hosts, target side: data frames feed `copy::receive_tar`,
    /// which stages the files and puts them in place only once the end frame checked.
    async fn receive_files(&self, x: &TransferExpect, body: Incoming) -> Result<TransferReceipt, String> {
        let TransferObject::Files { to, recursive, .. } = &x.object else { return Err("not a files transfer".into()) };
        let root = self.volumes.path(&VolumeId::from(&to.sandbox));
        let (rel, recursive, ids) = (PathBuf::from(&to.path), *recursive, hangar_types::idmap::IdRange::at(to.uid_base));
        let cancelled = self.with(&x.id, |e| e.cancelled.clone()).ok_or("the transfer was forgotten")?;
        // A pipe between the frames and the blocking tar reader.
        let (mut pipe, out) = tokio::io::duplex(1 << 20);
        let chunks = futures_util::stream::unfold(out, |mut out| async move {
            let mut b = vec![0u8; 256 << 10];
            match out.read(&mut b).await {
                Ok(0) => None,
                Ok(n) => {
                    b.truncate(n);
                    Some((Ok(bytes::Bytes::from(b)), out))
                }
                Err(e) => Some((Err(e), out)),
            }
        });
        let reader = hangar_client::files::ChannelReader::spawn(Box::pin(chunks));
        let (commit_tx, commit_rx) = std::sync::mpsc::channel::<bool>();
        let job = tokio::task::spawn_blocking(move || crate::copy::receive_tar(&root, &rel, recursive, ids, reader, move || commit_rx.recv().unwrap_or(false)));
        let pumped = self.pump_frames(x, body, &cancelled, &mut pipe, "the files' writer").await;
        drop(pipe);
        let _ = commit_tx.send(pumped.is_ok() && !cancelled.load(std::sync::atomic::Ordering::SeqCst));
        let written = job.await.map_err(|e| e.to_string())?;
        let receipt = match (pumped, written) {
            (Ok(r), Ok(_)) => r,
            (Ok(_), Err(e)) => return Err(e.to_string()),
            (Err(e), Ok(_)) => return Err(e),
            (Err(e), Err(w)) => return Err(format!("{e} ({w})")),
        };
        hangar_types::failpoint::hit("transfer-target-received");
        Ok(receipt)
    }

    fn check_hub(&self, peer: &PeerInfo) -> Result<(), TransferError> {
        if peer.fingerprint.as_deref() == Some(self.hub_fingerprint.as_str()) {
            return Ok(());
        }
        Err(err(ErrorCode::Unauthenticated, "only the hub may call this endpoint"))
    }
}

/// An error and its innermost cause: hyper's own messages ("connection error") hide
/// it (a refused certificate).
fn with_cause(e: &dyn std::error::Error) -> String {
    let mut inner = e.source();
    while let Some(next) = inner.and_then(std::error::Error::source) {
        inner = Some(next);
    }
    match inner {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Widens the pipe to or from a stream's tool to [`FRAME_MAX`]: one system call moves
/// a frame's worth instead of the default 64 KiB (the kernel may refuse: then it stays).
fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(pipe, FRAME_MAX) {
        tracing::debug!(error = %e, "cannot widen a transfer's pipe");
    }
}

/// The target's answer to one request, its `{code, message}` refusal as the error.
async fn answer<T: serde::de::DeserializeOwned>(r: Result<axum::http::Response<axum::body::Body>, hangar_tls::forward::ForwardError>, endpoint: &str) -> Result<T, String> {
    let resp = r.map_err(|e| format!("the stream to {endpoint} failed: {}", with_cause(&e)))?;
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.map_err(|e| format!("the target's answer was cut: {e}"))?;
    if !status.is_success() {
        let m = serde_json::from_slice::<ApiError>(&body).map(|e| e.message).unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(format!("the target refused the stream ({status}): {m}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the target's answer: {e}"))
}

pub fn router(t: Transfers) -> Router {
    Router::new()
        .route("/v1/transfers/expect", post(expect))
        .route("/v1/transfers/send", post(send))
        .route("/v1/transfers/{id}", get(status).delete(forget))
        .route("/v1/transfers/{id}/stream", post(stream))
        .route("/v1/transfers/{id}/check", post(check))
        .route("/v1/transfers/staged/{volume}", get(staged).delete(discard))
        .route("/v1/transfers/staged/{volume}/adopt", post(adopt))
        .with_state(t)
}

fn transfer_id(id: &str) -> Result<TransferId, TransferError> {
    id.parse().map_err(|_| err(ErrorCode::InvalidArgument, format!("'{id}' is not a transfer id")))
}

async fn expect(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Json(x): Json<TransferExpect>) -> Result<Json<TransferStatus>, TransferError> {
    t.check_hub(&peer)?;
    Ok(Json(t.expect(x)?))
}

async fn send(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Json(s): Json<TransferSend>) -> Result<Json<TransferStatus>, TransferError> {
    t.check_hub(&peer)?;
    Ok(Json(t.send(s)?))
}

async fn status(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, axum::extract::Query(w): axum::extract::Query<crate::endpoint::LongPoll>) -> Result<Json<TransferStatus>, TransferError> {
    t.check_hub(&peer)?;
    let id = transfer_id(&id)?;
    let done = t.with(&id, |e| e.done.subscribe()).ok_or_else(|| err(ErrorCode::NotFound, format!("no transfer {id} here")))?;
    w.until(done).await;
    t.status(&id).map(Json).ok_or_else(|| err(ErrorCode::NotFound, format!("no transfer {id} here")))
}

async fn forget(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, TransferError> {
    t.check_hub(&peer)?;
    t.forget(&transfer_id(&id)?).await?;
    Ok(Json(serde_json::json!({})))
}

fn volume_id(v: &str) -> Result<VolumeId, TransferError> {
    v.parse().map_err(|e: hangar_types::IdError| err(ErrorCode::InvalidArgument, e.to_string()))
}

async fn staged(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Path(v): Path<String>) -> Result<Json<Vec<SnapshotId>>, TransferError> {
    t.check_hub(&peer)?;
    Ok(Json(t.staged(&volume_id(&v)?).await))
}

async fn discard(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Path(v): Path<String>) -> Result<Json<serde_json::Value>, TransferError> {
    t.check_hub(&peer)?;
    t.discard(&volume_id(&v)?).await?;
    Ok(Json(serde_json::json!({})))
}

async fn adopt(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Path(v): Path<String>, Json(a): Json<StagedAdopt>) -> Result<Json<serde_json::Value>, TransferError> {
    t.check_hub(&peer)?;
    t.adopt(&volume_id(&v)?, &a.snapshot, a.size_mib).await?;
    Ok(Json(serde_json::json!({})))
}

/// What the stream would be told, without using the ticket: a sender learns why it is
/// refused before it streams (an answer to a request whose body is still being sent is
/// lost when the connection closes).
async fn check(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, headers: axum::http::HeaderMap) -> Result<Json<serde_json::Value>, TransferError> {
    let id = transfer_id(&id)?;
    t.accept(id, &peer, headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok()), false)?;
    t.precheck(&id).await?;
    Ok(Json(serde_json::json!({})))
}

async fn stream(State(t): State<Transfers>, Extension(peer): Extension<PeerInfo>, Path(id): Path<String>, req: axum::extract::Request) -> Result<Json<TransferReceipt>, TransferError> {
    let id = transfer_id(&id)?;
    let secret = req.headers().get(SECRET_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    // Sources before BLAKE3 name no checksum: theirs is SHA-256.
    let checksum = match req.headers().get(CHECKSUM_HEADER).map(|v| v.to_str().map_err(|e| e.to_string()).and_then(Checksum::parse)) {
        None => Checksum::Sha256,
        Some(Ok(c)) => c,
        Some(Err(m)) => return Err(err(ErrorCode::InvalidArgument, format!("{CHECKSUM_HEADER}: {m}"))),
    };
    let x = t.accept(id, &peer, secret.as_deref(), true)?.expect("taken");
    let r = t.receive(&x, Incoming { body: req.into_body(), checksum }).await;
    t.finish(&id, r.as_ref().map(|r| r.sha256.clone()).map_err(Clone::clone));
    match r {
        Ok(receipt) => Ok(Json(receipt)),
        Err(m) => {
            tracing::warn!(transfer = %id, error = %m, "transfer failed on the target");
            Err(err(ErrorCode::InvalidArgument, m))
        }
    }
}

/// A stream's body as the target receives it, with the checksum its sender named.
struct Incoming {
    body: axum::body::Body,
    checksum: Checksum,
}

/// The source side's writer of a files transfer: each write is a data frame, hashed and
/// counted (buffered above, so frames are large).
struct FrameWriter {
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    hash: StreamHash,
    total: u64,
    transfers: Transfers,
    id: TransferId,
}

impl std::io::Write for FrameWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let b = &b[..b.len().min(FRAME_MAX)];
        if b.is_empty() {
            return Ok(0);
        }
        self.hash.update(b);
        self.total += b.len() as u64;
        hangar_types::failpoint::hit("transfer-source-sending");
        let mut frame = Vec::with_capacity(5 + b.len());
        frame.extend_from_slice(&Frame::data_header(b.len()));
        frame.extend_from_slice(b);
        self.tx.blocking_send(Ok(frame)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the target stopped reading"))?;
        self.transfers.progress(&self.id, b.len() as u64);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
