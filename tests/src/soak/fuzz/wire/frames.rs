//! What a fuzzed client writes: well-framed sequences (valid or breaking
//! RFC 6455 on purpose) and raw bytes, encoded by hand.

use std::net::SocketAddr;

use crate::soak::fuzz::socket::{Msg, ReadFailure};

/// How a fuzzed client ends once its input is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Finish {
    /// Sends a close frame (1000) and waits for the server to end.
    CloseFrame,
    /// Shuts its side of the TCP connection down, still reading.
    Shutdown,
    /// Keeps the connection open and says nothing more.
    Silent,
}

/// Frames that break RFC 6455.
#[derive(Clone, Copy, Debug)]
pub(super) enum Violation {
    Unmasked,
    ReservedBits(u8),
    ReservedOpcode(u8),
    FragmentedPing,
    PingTooBig(usize),
    StrayContinuation,
    InterleavedText,
    OneByteClose,
    CloseReasonNotUtf8,
}

/// One thing a client writes, well framed unless it is a violation.
#[derive(Clone, Debug)]
pub(super) enum WireFrame {
    Text(String),
    /// A text message split into this many fragments.
    Fragmented(String, usize),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    NotUtf8(Vec<u8>),
    Oversized {
        text: bool,
        len: usize,
    },
    Violation(Violation),
}

/// One fuzzed connection.
#[derive(Clone, Debug)]
pub(super) enum WireConn {
    /// Bytes instead of (or mangling) the upgrade request.
    PreHandshake { bytes: Vec<u8>, finish: Finish },
    /// Arbitrary bytes after a good handshake.
    Raw { bytes: Vec<u8>, finish: Finish },
    /// Well-framed messages after a good handshake.
    Frames {
        frames: Vec<WireFrame>,
        finish: Finish,
    },
}

/// A case: connections made at once to one of the servers, while events
/// are published to the well-behaved client.
#[derive(Clone, Debug)]
pub(super) struct WireCase {
    pub(super) control: bool,
    pub(super) conns: Vec<WireConn>,
    pub(super) publishes: usize,
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame: `head` is the first byte (FIN, RSV bits, opcode).
pub(super) fn frame(head: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![head];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

pub(super) const FIN: u8 = 0x80;
const CONT: u8 = 0x0;
pub(super) const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
pub(super) const CLOSE: u8 = 0x8;
pub(super) const PING_OP: u8 = 0x9;
pub(super) const PONG: u8 = 0xA;

impl WireFrame {
    pub(super) fn bytes(&self) -> Vec<u8> {
        match self {
            WireFrame::Text(text) => frame(FIN | TEXT, true, text.as_bytes()),
            WireFrame::Fragmented(text, parts) => {
                let bytes = text.as_bytes();
                let step = bytes.len().div_ceil((*parts).max(1)).max(1);
                let chunks: Vec<&[u8]> = if bytes.is_empty() {
                    vec![&[]]
                } else {
                    bytes.chunks(step).collect()
                };
                let last = chunks.len() - 1;
                let mut out = Vec::new();
                for (i, chunk) in chunks.iter().enumerate() {
                    let opcode = if i == 0 { TEXT } else { CONT };
                    let fin = if i == last { FIN } else { 0 };
                    out.extend(frame(fin | opcode, true, chunk));
                }
                out
            }
            WireFrame::Binary(bytes) => frame(FIN | BINARY, true, bytes),
            WireFrame::Ping(bytes) => frame(FIN | PING_OP, true, bytes),
            WireFrame::Pong(bytes) => frame(FIN | PONG, true, bytes),
            WireFrame::Close(None) => frame(FIN | CLOSE, true, &[]),
            WireFrame::Close(Some((code, reason))) => {
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(reason.as_bytes());
                frame(FIN | CLOSE, true, &payload)
            }
            WireFrame::NotUtf8(bytes) => frame(FIN | TEXT, true, bytes),
            WireFrame::Oversized { text, len } => {
                let opcode = if *text { TEXT } else { BINARY };
                frame(FIN | opcode, true, &vec![b'a'; *len])
            }
            WireFrame::Violation(violation) => match violation {
                Violation::Unmasked => frame(FIN | TEXT, false, b"{}"),
                Violation::ReservedBits(bits) => frame(FIN | (bits & 0x7) << 4 | TEXT, true, b"x"),
                Violation::ReservedOpcode(op) => frame(FIN | (op & 0xf), true, b"x"),
                Violation::FragmentedPing => frame(PING_OP, true, b"p"),
                Violation::PingTooBig(len) => frame(FIN | PING_OP, true, &vec![b'p'; *len]),
                Violation::StrayContinuation => frame(FIN | CONT, true, b"x"),
                Violation::InterleavedText => {
                    let mut out = frame(TEXT, true, b"{\"act");
                    out.extend(frame(FIN | TEXT, true, b"x"));
                    out
                }
                Violation::OneByteClose => frame(FIN | CLOSE, true, &[0x03]),
                Violation::CloseReasonNotUtf8 => {
                    frame(FIN | CLOSE, true, &[0x03, 0xe8, 0xff, 0xfe])
                }
            },
        }
    }

    /// What the serving loop is handed for it.
    pub(super) fn msg(&self) -> Msg {
        match self {
            WireFrame::Text(text) | WireFrame::Fragmented(text, _) => Msg::Text(text.clone()),
            WireFrame::Binary(bytes) => Msg::Binary(bytes.len()),
            WireFrame::Ping(_) | WireFrame::Pong(_) => Msg::Alive,
            WireFrame::Close(_) => Msg::Close,
            WireFrame::NotUtf8(_) => Msg::Fails(ReadFailure::NotUtf8),
            WireFrame::Oversized { .. } => Msg::Fails(ReadFailure::TooLong),
            WireFrame::Violation(violation) => Msg::Fails(match violation {
                Violation::CloseReasonNotUtf8 => ReadFailure::NotUtf8,
                Violation::PingTooBig(_) => ReadFailure::ControlTooBig,
                Violation::FragmentedPing => ReadFailure::FragmentedControl,
                Violation::ReservedBits(_) => ReadFailure::ReservedBits,
                Violation::Unmasked => ReadFailure::Unmasked,
                Violation::ReservedOpcode(_) => ReadFailure::UnknownOpcode,
                _ => ReadFailure::StrayContinuation,
            }),
        }
    }
}

pub(super) fn upgrade_request(addr: SocketAddr) -> String {
    // RFC 6455's sample nonce.
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}
