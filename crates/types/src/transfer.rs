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
    /// How the stream is checked end to end: one the target said it verifies.
    #[serde(default)]
    pub checksum: Checksum,
}

/// How a stream's data is checked end to end: its end frame carries the digest, and
/// the stream's request names the algorithm in [`CHECKSUM_HEADER`] (absent: SHA-256,
/// what agents before BLAKE3 send). TLS protects each connection already; this checks
/// the whole stream, frames and order included, from the tool's output on the source
/// to the tool's input on the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksum {
    /// What every agent verifies.
    #[default]
    Sha256,
    /// Several times faster a core (SIMD); used when the target offers it.
    Blake3,
}

/// The stream request's header naming its [`Checksum`].
pub const CHECKSUM_HEADER: &str = "x-hangar-checksum";

impl Checksum {
    pub fn as_str(self) -> &'static str {
        match self {
            Checksum::Sha256 => "sha256",
            Checksum::Blake3 => "blake3",
        }
    }

    pub fn parse(s: &str) -> Result<Checksum, String> {
        match s {
            "sha256" => Ok(Checksum::Sha256),
            "blake3" => Ok(Checksum::Blake3),
            other => Err(format!("unknown checksum '{other}' (sha256 or blake3)")),
        }
    }

    /// A digest as transfers report it: SHA-256 as plain hex (as before BLAKE3), others
    /// prefixed with their name, so digests of two algorithms never compare equal.
    pub fn show(self, digest: &[u8; 32]) -> String {
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Checksum::Sha256 => hex,
            c => format!("{}:{hex}", c.as_str()),
        }
    }
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
    /// The digest of the whole stream's data, once done ([`Checksum::show`]: SHA-256
    /// as plain hex, else `blake3:` and hex).
    pub sha256: Option<String>,
    pub error: Option<String>,
    /// The checksums this agent verifies as a target (empty from agents before
    /// BLAKE3: SHA-256 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
}

impl TransferStatus {
    pub fn new(id: TransferId, state: TransferState) -> TransferStatus {
        TransferStatus { id, state, bytes: 0, rate_bps: 0, elapsed_ms: 0, sha256: None, error: None, checksums: vec![] }
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
    /// Last: the number of data bytes and the digest of all of them (by the stream's
    /// [`Checksum`]).
    End { bytes: u64, digest: [u8; 32] },
}

const KIND_DATA: u8 = 1;
const KIND_END: u8 = 2;

const HEADER: usize = 5;
const END_PAYLOAD: usize = 40;

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Data(d) => {
                let mut out = Vec::with_capacity(HEADER + d.len());
                out.extend_from_slice(&Frame::data_header(d.len()));
                out.extend_from_slice(d);
                out
            }
            Frame::End { bytes, digest } => {
                let mut out = Vec::with_capacity(HEADER + END_PAYLOAD);
                out.push(KIND_END);
                out.extend_from_slice(&(END_PAYLOAD as u32).to_be_bytes());
                out.extend_from_slice(&bytes.to_be_bytes());
                out.extend_from_slice(digest);
                out
            }
        }
    }

    /// The header of a data frame of `len` bytes: a sender that reads its data into the
    /// bytes after the header sends the frame without copying it.
    pub fn data_header(len: usize) -> [u8; HEADER] {
        let l = (len as u32).to_be_bytes();
        [KIND_DATA, l[0], l[1], l[2], l[3]]
    }
}

/// What a [`FrameDecoder`] finds in the bytes it is fed.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Some of a data frame's bytes, borrowed from the input: a frame split across
    /// inputs comes as several pieces.
    Data(&'a [u8]),
    End { bytes: u64, digest: [u8; 32] },
}

/// Where a [`FrameDecoder`] is in the stream.
#[derive(Debug)]
enum DecodeAt {
    Header { got: [u8; HEADER], n: usize },
    Data { left: usize },
    End { got: [u8; END_PAYLOAD], n: usize },
    Ended,
}

/// Reads a stream of frames as it arrives, in inputs of any size, handing out data
/// without copying it; nothing may follow the end frame.
#[derive(Debug)]
pub struct FrameDecoder(DecodeAt);

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder(DecodeAt::Header { got: [0; HEADER], n: 0 })
    }
}

impl FrameDecoder {
    /// The next piece at the front of `input`, which is advanced past it; `Ok(None)`
    /// once `input` is used up (a frame's rest comes with the next input).
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Piece<'a>>, String> {
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            match &mut self.0 {
                DecodeAt::Header { got, n } => {
                    let k = (HEADER - *n).min(input.len());
                    got[*n..*n + k].copy_from_slice(&input[..k]);
                    *n += k;
                    *input = &input[k..];
                    if *n < HEADER {
                        continue;
                    }
                    let len = u32::from_be_bytes([got[1], got[2], got[3], got[4]]) as usize;
                    if len > FRAME_MAX {
                        return Err(format!("a frame of {len} bytes is over the limit of {FRAME_MAX}"));
                    }
                    self.0 = match got[0] {
                        KIND_DATA if len == 0 => DecodeAt::Header { got: [0; HEADER], n: 0 },
                        KIND_DATA => DecodeAt::Data { left: len },
                        KIND_END if len == END_PAYLOAD => DecodeAt::End { got: [0; END_PAYLOAD], n: 0 },
                        KIND_END => return Err(format!("an end frame of {len} bytes ({END_PAYLOAD} expected)")),
                        k => return Err(format!("unknown frame kind {k} (length {len})")),
                    };
                }
                DecodeAt::Data { left } => {
                    let k = (*left).min(input.len());
                    let (piece, rest) = input.split_at(k);
                    *input = rest;
                    *left -= k;
                    if *left == 0 {
                        self.0 = DecodeAt::Header { got: [0; HEADER], n: 0 };
                    }
                    return Ok(Some(Piece::Data(piece)));
                }
                DecodeAt::End { got, n } => {
                    let k = (END_PAYLOAD - *n).min(input.len());
                    got[*n..*n + k].copy_from_slice(&input[..k]);
                    *n += k;
                    *input = &input[k..];
                    if *n < END_PAYLOAD {
                        continue;
                    }
                    let bytes = u64::from_be_bytes(got[..8].try_into().expect("8 bytes"));
                    let digest: [u8; 32] = got[8..].try_into().expect("32 bytes");
                    self.0 = DecodeAt::Ended;
                    return Ok(Some(Piece::End { bytes, digest }));
                }
                DecodeAt::Ended => return Err(format!("{} bytes came after the end frame", input.len())),
            }
        }
    }
}

/// Bytes a second over `elapsed_ms`.
pub fn rate(bytes: u64, elapsed_ms: u64) -> u64 {
    bytes.saturating_mul(1000) / elapsed_ms.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `input` decodes to, fed in inputs of `size` bytes, data pieces joined
    /// back into frames.
    fn decode_in(input: &[u8], size: usize) -> Result<Vec<Frame>, String> {
        let mut d = FrameDecoder::default();
        let mut out: Vec<Frame> = vec![];
        let mut data: Option<Vec<u8>> = None;
        for chunk in input.chunks(size.max(1)) {
            let mut rest = chunk;
            while let Some(p) = d.next(&mut rest)? {
                match p {
                    Piece::Data(b) => data.get_or_insert_with(Vec::new).extend_from_slice(b),
                    Piece::End { bytes, digest } => {
                        out.extend(data.take().map(Frame::Data));
                        out.push(Frame::End { bytes, digest });
                    }
                }
            }
        }
        out.extend(data.take().map(Frame::Data));
        Ok(out)
    }

    #[test]
    fn frames_round_trip_in_inputs_of_every_size() {
        let frames = [Frame::Data(b"hello".to_vec()), Frame::Data(vec![]), Frame::Data(b" world".to_vec()), Frame::End { bytes: 11, digest: [7; 32] }];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        // Data pieces come back joined (frame boundaries are not data).
        let want = vec![Frame::Data(b"hello world".to_vec()), Frame::End { bytes: 11, digest: [7; 32] }];
        for size in 1..=wire.len() {
            assert_eq!(decode_in(&wire, size).unwrap(), want, "inputs of {size} bytes");
        }
        assert_eq!(&Frame::Data(vec![1, 2]).encode()[..5], &Frame::data_header(2));
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(decode_in(&[9, 0, 0, 0, 0], 5).is_err());
        assert!(decode_in(&[KIND_END, 0, 0, 0, 1, 0], 6).is_err());
        let huge = ((FRAME_MAX + 1) as u32).to_be_bytes();
        assert!(decode_in(&[KIND_DATA, huge[0], huge[1], huge[2], huge[3]], 5).is_err());
        // Nothing after the end frame, in the same input or a later one.
        let mut wire = Frame::End { bytes: 0, digest: [0; 32] }.encode();
        wire.push(0);
        for size in [1, 7, wire.len()] {
            let e = decode_in(&wire, size).unwrap_err();
            assert!(e.contains("after the end frame"), "{e}");
        }
    }

    #[test]
    fn checksums_name_themselves_and_old_peers_mean_sha256() {
        let d = [0xab; 32];
        assert_eq!(Checksum::Sha256.show(&d), "ab".repeat(32));
        assert_eq!(Checksum::Blake3.show(&d), format!("blake3:{}", "ab".repeat(32)));
        for c in [Checksum::Sha256, Checksum::Blake3] {
            assert_eq!(Checksum::parse(c.as_str()), Ok(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert!(Checksum::parse("md5").unwrap_err().contains("md5"));
        // A send from a hub before BLAKE3, a status from an agent before it.
        let send: TransferSend = serde_json::from_value(serde_json::json!({"id": TransferId::new(), "object": {"kind": "volume_snapshot", "volume": "v1", "snapshot": "s1", "parent": null}, "target_endpoint": "https://x:1", "target_fingerprints": [], "secret": "s"})).unwrap();
        assert_eq!(send.checksum, Checksum::Sha256);
        let st: TransferStatus = serde_json::from_value(serde_json::json!({"id": TransferId::new(), "state": "expected", "bytes": 0, "rate_bps": 0, "elapsed_ms": 0, "sha256": null, "error": null})).unwrap();
        assert!(st.checksums.is_empty());
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
