//! Host-to-host transfers: the documents the hub and two agents exchange to move one
//! object (a volume snapshot today) from a source agent straight to a target agent over
//! mutual TLS, and the frames of the stream between the two agents.
//!
//! The hub issues a [`TransferTicket`] for exactly one transfer: source, target, object,
//! expiry, and a random secret. The target is told what to expect ([`TransferExpect`]:
//! the ticket's id, the secret's SHA-256, the source's certificate fingerprints, the
//! object), the source what to send and where ([`TransferSend`]); the target accepts
//! one stream for the ticket, from a peer presenting one of those certificates, with
//! the secret, before the expiry, once. The stream is [`Frame`]s: data, then one end
//! frame with the byte count and the SHA-256 of the data, which the target checks
//! before it keeps anything (a cut connection never ends with one).

use crate::{HostId, SnapshotId, VolumeId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Identifies one transfer (and its ticket). A UUID, so always safe as a file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferId(pub Uuid);

impl TransferId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for TransferId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TransferId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// What one transfer carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransferObject {
    /// A read-only snapshot of a volume (`btrfs send`, incremental from `parent` when
    /// given, which the target must hold already). The target receives it into a
    /// staging dir of the transfer, checks it, and only then puts it among the
    /// volume's snapshots under the same name.
    VolumeSnapshot { volume: VolumeId, snapshot: SnapshotId, parent: Option<SnapshotId> },
    /// `hangar cp` across hosts: a path of one volume (a tar stream, see
    /// [`crate::files`]) written at a path of another. The target stages what arrives
    /// and puts it in place only once the end frame checks.
    Files { from: crate::files::AgentCopyEnd, to: crate::files::AgentCopyEnd, recursive: bool },
}

impl fmt::Display for TransferObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferObject::VolumeSnapshot { volume, snapshot, parent: None } => write!(f, "snapshot {volume}/{snapshot}"),
            TransferObject::VolumeSnapshot { volume, snapshot, parent: Some(p) } => write!(f, "snapshot {volume}/{snapshot} (from {p})"),
            TransferObject::Files { from, to, .. } => write!(f, "files {}:{} to {}:{}", from.sandbox, from.path, to.sandbox, to.path),
        }
    }
}

/// How long a ticket is good for by default: the target accepts its stream only before
/// then (the stream itself may take longer once accepted).
pub const TICKET_TTL_SECS: i64 = 120;

/// One transfer, as the hub issued it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferTicket {
    pub id: TransferId,
    pub source: HostId,
    pub target: HostId,
    pub object: TransferObject,
    /// Unix seconds after which the target refuses the stream.
    pub expires_unix: i64,
}

/// Hub → target agent: accept one stream for this ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferExpect {
    pub id: TransferId,
    pub object: TransferObject,
    /// SHA-256 (hex) of the ticket's secret: the target never holds the secret itself.
    pub secret_sha256: String,
    /// The source host's certificate fingerprints (current, and a renewed one not yet
    /// used): the only client certificates the stream may come with.
    pub source_fingerprints: Vec<String>,
    pub expires_unix: i64,
}

/// Hub → source agent: send the object to the target's endpoint with the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct TransferSend {
    pub id: TransferId,
    pub object: TransferObject,
    /// The target agent's endpoint (`https://addr:port`).
    pub target_endpoint: String,
    /// The target host's certificate fingerprints: the only server certificates the
    /// source accepts there.
    pub target_fingerprints: Vec<String>,
    pub secret: String,
}

impl fmt::Debug for TransferSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("TransferSend").field("id", &self.id).field("object", &self.object).field("target_endpoint", &self.target_endpoint).finish_non_exhaustive()
    }
}

/// The header the secret travels in, source → target.
pub const SECRET_HEADER: &str = "x-hangar-transfer-secret";

/// Where a transfer is, on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Target: told to expect it, no stream yet.
    Expected,
    Running,
    /// Done and checked: on the target, the object is in place.
    Done,
    Failed,
}

impl TransferState {
    pub fn is_final(self) -> bool {
        matches!(self, TransferState::Done | TransferState::Failed)
    }
}

/// A transfer's progress as one agent sees it (`GET /v1/transfers/{id}` on either).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferStatus {
    pub id: TransferId,
    pub state: TransferState,
    /// Data bytes sent (source) or received (target) so far; never goes down.
    pub bytes: u64,
    /// Bytes a second since the stream started.
    pub rate_bps: u64,
    pub elapsed_ms: u64,
    /// SHA-256 (hex) of the whole stream's data, once done.
    pub sha256: Option<String>,
    pub error: Option<String>,
}

impl TransferStatus {
    pub fn new(id: TransferId, state: TransferState) -> TransferStatus {
        TransferStatus { id, state, bytes: 0, rate_bps: 0, elapsed_ms: 0, sha256: None, error: None }
    }
}

/// What the target answers the source's stream with once it has checked it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReceipt {
    pub bytes: u64,
    pub sha256: String,
}

/// Hub → target agent: make the volume from its staged snapshot (the last of a move).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedAdopt {
    pub snapshot: SnapshotId,
    /// The volume's size limit.
    pub size_mib: u64,
}

/// The largest data frame.
pub const FRAME_MAX: usize = 1 << 20;

/// One frame of a transfer stream: a kind byte, a u32 big-endian length, the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data(Vec<u8>),
    /// Last: the number of data bytes and the SHA-256 of all of them.
    End { bytes: u64, sha256: [u8; 32] },
}

const KIND_DATA: u8 = 1;
const KIND_END: u8 = 2;

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Data(d) => (KIND_DATA, d.clone()),
            Frame::End { bytes, sha256 } => (KIND_END, bytes.to_be_bytes().iter().chain(sha256.iter()).copied().collect()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// The first whole frame in `buf` and its encoded length; `Ok(None)` if `buf` holds
    /// only part of one.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > FRAME_MAX {
            return Err(format!("a frame of {len} bytes is over the limit of {FRAME_MAX}"));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        let payload = &buf[5..5 + len];
        let frame = match buf[0] {
            KIND_DATA => Frame::Data(payload.to_vec()),
            KIND_END if len == 40 => {
                let bytes = u64::from_be_bytes(payload[..8].try_into().map_err(|_| "short end frame")?);
                let sha256: [u8; 32] = payload[8..].try_into().map_err(|_| "short end frame")?;
                Frame::End { bytes, sha256 }
            }
            k => return Err(format!("unknown frame kind {k} (length {len})")),
        };
        Ok(Some((frame, 5 + len)))
    }
}

/// Bytes a second over `elapsed_ms`.
pub fn rate(bytes: u64, elapsed_ms: u64) -> u64 {
    bytes.saturating_mul(1000) / elapsed_ms.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_partial_input_waits() {
        let frames = [Frame::Data(b"hello".to_vec()), Frame::Data(vec![]), Frame::End { bytes: 5, sha256: [7; 32] }];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut at = 0;
        let mut got = vec![];
        while at < wire.len() {
            // Every prefix shorter than the next frame is "not yet".
            let (f, n) = Frame::decode(&wire[at..]).unwrap().unwrap();
            for cut in 0..n {
                assert_eq!(Frame::decode(&wire[at..at + cut]).unwrap(), None);
            }
            got.push(f);
            at += n;
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(Frame::decode(&[9, 0, 0, 0, 0]).is_err());
        assert!(Frame::decode(&[KIND_END, 0, 0, 0, 1, 0]).is_err());
        let huge = ((FRAME_MAX + 1) as u32).to_be_bytes();
        assert!(Frame::decode(&[KIND_DATA, huge[0], huge[1], huge[2], huge[3]]).is_err());
    }

    #[test]
    fn objects_name_what_they_carry() {
        let o = TransferObject::VolumeSnapshot { volume: "v1".parse().unwrap(), snapshot: "s2".parse().unwrap(), parent: Some("s1".parse().unwrap()) };
        assert_eq!(o.to_string(), "snapshot v1/s2 (from s1)");
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["kind"], "volume_snapshot");
        assert_eq!(serde_json::from_value::<TransferObject>(json).unwrap(), o);
        assert_eq!(rate(1000, 500), 2000);
        assert_eq!(rate(1, 0), 1000);
    }
}
