//! Interactive sessions: what a session asks for ([`SessionRequest`]) and the frames that
//! carry its bytes once the HTTP connection is upgraded. One format end to end: the CLI's
//! `instance exec -it` and the hub's SSH gateway speak it to the hub or the agent, and
//! the hub only splices bytes between the client and the agent.
//!
//! A frame is a kind byte, a big-endian u32 payload length and the payload
//! ([`FRAME_MAX_PAYLOAD`] at most). Client to sandbox: [`FrameKind::Stdin`],
//! [`FrameKind::StdinEof`], [`FrameKind::Resize`]. Sandbox to client:
//! [`FrameKind::Stdout`], [`FrameKind::Stderr`] (never with a PTY), [`FrameKind::Error`]
//! (why the session ended without a status) and [`FrameKind::Exit`], always last.

use crate::api::ExecRequest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The protocol name in the `Upgrade` header of a session request.
pub const UPGRADE_PROTOCOL: &str = "hangar-session";

/// The largest payload one frame may carry.
pub const FRAME_MAX_PAYLOAD: usize = 64 * 1024;

/// What one session runs, and whether with a terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Added to the sandbox's environment (never put on a command line).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run with a PTY (stdout and stderr are then one stream).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's first size, rows and columns (with `tty`).
    #[serde(default)]
    pub rows: u16,
    #[serde(default)]
    pub cols: u16,
}

impl SessionRequest {
    /// The same checks as an exec (command, NUL bytes, env names). Names the field.
    pub fn validate(&self) -> Result<(), String> {
        ExecRequest { command: self.command.clone(), env: self.env.clone(), timeout_secs: None }.validate(u64::MAX)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    StdinEof = 3,
    /// Payload: rows and columns, two big-endian u16.
    Resize = 4,
    /// Payload: the exit status, a big-endian i32 (128 + signal if killed).
    Exit = 5,
    /// Payload: a UTF-8 message.
    Error = 6,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::StdinEof,
            4 => FrameKind::Resize,
            5 => FrameKind::Exit,
            6 => FrameKind::Error,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    StdinEof,
    Resize { rows: u16, cols: u16 },
    Exit(i32),
    Error(String),
}

/// Why bytes are not a frame; the connection is then closed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown session frame kind {0}")]
    Kind(u8),
    #[error("session frame of {0} bytes is over the limit of {FRAME_MAX_PAYLOAD}")]
    TooLong(usize),
    #[error("malformed {0:?} session frame")]
    Malformed(FrameKind),
}

impl Frame {
    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (FrameKind, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Stdin(b) => (FrameKind::Stdin, b.into()),
            Frame::Stdout(b) => (FrameKind::Stdout, b.into()),
            Frame::Stderr(b) => (FrameKind::Stderr, b.into()),
            Frame::StdinEof => (FrameKind::StdinEof, (&[][..]).into()),
            Frame::Resize { rows, cols } => (FrameKind::Resize, [rows.to_be_bytes(), cols.to_be_bytes()].concat().into()),
            Frame::Exit(code) => (FrameKind::Exit, code.to_be_bytes().to_vec().into()),
            Frame::Error(m) => (FrameKind::Error, m.as_bytes().into()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind as u8);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// The first frame in `buf` and how many bytes it took, or None if `buf` holds only
    /// part of one.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(&k) = buf.first() else { return Ok(None) };
        let kind = FrameKind::from_u8(k).ok_or(FrameError::Kind(k))?;
        if buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > FRAME_MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        let Some(p) = buf.get(5..5 + len) else { return Ok(None) };
        let frame = match kind {
            FrameKind::Stdin => Frame::Stdin(p.to_vec()),
            FrameKind::Stdout => Frame::Stdout(p.to_vec()),
            FrameKind::Stderr => Frame::Stderr(p.to_vec()),
            FrameKind::StdinEof => Frame::StdinEof,
            FrameKind::Resize => match p {
                [a, b, c, d] => Frame::Resize { rows: u16::from_be_bytes([*a, *b]), cols: u16::from_be_bytes([*c, *d]) },
                _ => return Err(FrameError::Malformed(kind)),
            },
            FrameKind::Exit => match p {
                [a, b, c, d] => Frame::Exit(i32::from_be_bytes([*a, *b, *c, *d])),
                _ => return Err(FrameError::Malformed(kind)),
            },
            FrameKind::Error => Frame::Error(String::from_utf8_lossy(p).into_owned()),
        };
        Ok(Some((frame, 5 + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let frames = [
            Frame::Stdin(b"ls\n".to_vec()),
            Frame::Stdout(vec![0; 300]),
            Frame::Stderr(vec![]),
            Frame::StdinEof,
            Frame::Resize { rows: 40, cols: 132 },
            Frame::Exit(-9),
            Frame::Error("instance is stopped".into()),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for cut in 0..wire.len() {
            // Decoding a prefix never invents a frame it has not seen whole.
            let mut got = vec![];
            let mut at = 0;
            while let Some((f, n)) = Frame::decode(&wire[at..cut]).unwrap() {
                got.push(f);
                at += n;
            }
            assert!(got.len() <= frames.len());
            assert_eq!(got, frames[..got.len()]);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(Frame::decode(&[9, 0, 0, 0, 0]), Err(FrameError::Kind(9)));
        assert_eq!(Frame::decode(&[1, 0, 1, 0, 1]), Err(FrameError::TooLong(65537)));
        assert_eq!(Frame::decode(&[5, 0, 0, 0, 2, 1, 2]), Err(FrameError::Malformed(FrameKind::Exit)));
        assert_eq!(Frame::decode(&[4, 0, 0, 0, 1, 1]), Err(FrameError::Malformed(FrameKind::Resize)));
    }

    #[test]
    fn requests_are_checked_like_execs() {
        let ok = SessionRequest { command: vec!["sh".into()], env: BTreeMap::new(), tty: true, rows: 24, cols: 80 };
        assert!(ok.validate().is_ok());
        assert!(SessionRequest { command: vec![], ..ok.clone() }.validate().unwrap_err().contains("command"));
        let bad_env = SessionRequest { env: [("A=B".to_string(), "x".to_string())].into(), ..ok };
        assert!(bad_env.validate().unwrap_err().contains("env"));
    }
}
