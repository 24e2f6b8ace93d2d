//! Part 2: the tokio runtime crate's websocket server (`websocket::accept`
//! and `Accepted::serve`, as an application runs them) over real TCP,
//! against clients that write arbitrary bytes before or after the
//! handshake, or well-framed sequences of messages (control messages,
//! binary, pings, fragments, close frames, frames that break RFC 6455,
//! oversized ones), then close, shut their side down, or fall silent.
//!
//! Checks: no connection task panics; every connection ends within a
//! bound; a well-framed sequence ends the way the model of the protocol
//! (`socket::ConnModel`) says, and a rejection reaches the client
//! as a close frame with its code; frames sent to clients are TBone JSON;
//! afterwards the channel's table holds only the well-behaved client, which
//! received every event published meanwhile.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures::channel::mpsc;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestCaseResult};
use tbone_dispatch::{close_code, CloseReason, SocketOptions};
use tbone_dispatch_tokio::{websocket, MemoryChannel, Tokio};

use super::socket::{
    simplify_frame, text, ConnModel, End, FuzzAuthorizer, Msg, Out, ReadFailure, SinkKind,
};
use super::{ensure, run_cases, runner};
use crate::soak::{Profile, Row};
use crate::websocket::ClientIo;
use crate::TestRuntime;

/// Largest message the fuzzed servers accept.
const MAX_MESSAGE: usize = 1024;
/// Their keep-alive interval: a silent client is dropped within two.
const PING: Duration = Duration::from_millis(250);
/// Longest a fuzzed connection may take to end, from its first byte.
const BOUND: Duration = Duration::from_secs(5);
/// Events the well-behaved client is subscribed to.
const EVENTS: [&str; 2] = ["e0", "e1"];

/// How a fuzzed client ends once its input is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finish {
    /// Sends a close frame (1000) and waits for the server to end.
    CloseFrame,
    /// Shuts its side of the TCP connection down, still reading.
    Shutdown,
    /// Keeps the connection open and says nothing more.
    Silent,
}

/// Frames that break RFC 6455.
#[derive(Clone, Copy, Debug)]
enum Violation {
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
enum WireFrame {
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
enum WireConn {
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
struct WireCase {
    control: bool,
    conns: Vec<WireConn>,
    publishes: usize,
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame: `head` is the first byte (FIN, RSV bits, opcode).
fn frame(head: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
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

const FIN: u8 = 0x80;
const CONT: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING_OP: u8 = 0x9;
const PONG: u8 = 0xA;

impl WireFrame {
    fn bytes(&self) -> Vec<u8> {
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
    fn msg(&self) -> Msg {
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

fn upgrade_request(addr: SocketAddr) -> String {
    // RFC 6455's sample nonce.
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

// ---------------------------------------------------------------------
// Strategies.

fn finish() -> impl Strategy<Value = Finish> {
    prop_oneof![
        3 => Just(Finish::CloseFrame),
        3 => Just(Finish::Shutdown),
        2 => Just(Finish::Silent),
    ]
}

fn violation() -> impl Strategy<Value = Violation> {
    prop_oneof![
        Just(Violation::Unmasked),
        (1u8..8).prop_map(Violation::ReservedBits),
        prop::sample::select(vec![3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
            .prop_map(Violation::ReservedOpcode),
        Just(Violation::FragmentedPing),
        (126usize..300).prop_map(Violation::PingTooBig),
        Just(Violation::StrayContinuation),
        Just(Violation::InterleavedText),
        Just(Violation::OneByteClose),
        Just(Violation::CloseReasonNotUtf8),
    ]
}

fn not_utf8() -> impl Strategy<Value = Vec<u8>> {
    (
        "[a-z{}\":]{0,10}",
        prop::sample::select(vec![
            vec![0xffu8],
            vec![0xc3, 0x28],
            vec![0xe2, 0x82],
            vec![0xed, 0xa0, 0x80],
            vec![0xf5, 0x80, 0x80, 0x80],
        ]),
    )
        .prop_map(|(prefix, bad)| {
            let mut bytes = prefix.into_bytes();
            bytes.extend(bad);
            bytes
        })
}

fn close_frame() -> impl Strategy<Value = Option<(u16, String)>> {
    prop::option::of((
        prop::sample::select(vec![
            1000u16, 1001, 1003, 1008, 1011, 3000, 4999, 0, 999, 1004, 1005, 1006, 1015, 1016,
            2999, 5000, 65535,
        ]),
        "[a-z ]{0,40}",
    ))
}

fn wire_frame() -> impl Strategy<Value = WireFrame> {
    let small = || prop::collection::vec(any::<u8>(), 0..=125);
    prop_oneof![
        12 => text().prop_map(WireFrame::Text),
        2 => (text(), 2usize..4).prop_map(|(t, n)| WireFrame::Fragmented(t, n)),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(WireFrame::Binary),
        2 => small().prop_map(WireFrame::Ping),
        1 => small().prop_map(WireFrame::Pong),
        1 => close_frame().prop_map(WireFrame::Close),
        1 => not_utf8().prop_map(WireFrame::NotUtf8),
        1 => (any::<bool>(), MAX_MESSAGE + 1..MAX_MESSAGE * 3)
            .prop_map(|(text, len)| WireFrame::Oversized { text, len }),
        2 => violation().prop_map(WireFrame::Violation),
    ]
}

/// Bytes after the handshake: random, or frames then corrupted.
fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (
            prop::collection::vec(wire_frame(), 1..6),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            prop::option::of(any::<prop::sample::Index>()),
        )
            .prop_map(|(frames, flips, cut)| {
                let mut bytes: Vec<u8> = frames.iter().flat_map(WireFrame::bytes).collect();
                if !bytes.is_empty() {
                    for (at, byte) in flips {
                        let i = at.index(bytes.len());
                        bytes[i] ^= byte;
                    }
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                bytes
            }),
    ]
}

/// Bytes instead of the upgrade request: garbage, or the real request
/// with a byte changed or cut short.
fn pre_handshake_bytes() -> impl Strategy<Value = Vec<u8>> {
    let request = upgrade_request(
        "127.0.0.1:1"
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1))),
    );
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map({
            let request = request.clone();
            move |(at, byte)| {
                let mut bytes = request.clone().into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = byte;
                bytes
            }
        }),
        any::<prop::sample::Index>().prop_map(move |at| {
            let bytes = request.clone().into_bytes();
            bytes[..at.index(bytes.len())].to_vec()
        }),
        Just(b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        Just(b"POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec()),
    ]
}

fn wire_conn() -> impl Strategy<Value = WireConn> {
    prop_oneof![
        1 => (pre_handshake_bytes(), finish()).prop_map(|(bytes, finish)| WireConn::PreHandshake { bytes, finish }),
        2 => (raw_bytes(), finish()).prop_map(|(bytes, finish)| WireConn::Raw { bytes, finish }),
        5 => (prop::collection::vec(wire_frame(), 0..8), finish())
            .prop_map(|(frames, finish)| WireConn::Frames { frames, finish }),
    ]
}

fn wire_case() -> impl Strategy<Value = WireCase> {
    (
        prop::bool::weighted(0.75),
        prop::collection::vec(wire_conn(), 1..=4),
        0usize..4,
    )
        .prop_map(|(control, conns, publishes)| WireCase {
            control,
            conns,
            publishes,
        })
}

// ---------------------------------------------------------------------
// The server, and clients.

/// How the server ended one connection.
#[derive(Clone, Debug)]
enum Outcome {
    Served(CloseReason),
    Handshake(String),
    Panicked,
}

/// A websocket server on 127.0.0.1 for the fuzzed clients: the runtime
/// crate's `accept` and `serve`, one task per connection, reporting how
/// each one ended (a failed handshake included, which the suite's
/// `WsServer` treats as a test failure).
struct Server {
    addr: SocketAddr,
    reports: futures::lock::Mutex<mpsc::UnboundedReceiver<(SocketAddr, Outcome)>>,
    seen: RefCell<HashMap<SocketAddr, Outcome>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(channel: &MemoryChannel, options: SocketOptions) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (report, reports) = mpsc::unbounded();
        let channel = channel.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(%e, "accept failed");
                        continue;
                    }
                };
                let (channel, options, report) = (channel.clone(), options.clone(), report.clone());
                tokio::spawn(async move {
                    let serve = async {
                        match websocket::accept(tcp, &channel, options).await {
                            Ok(accepted) => Outcome::Served(accepted.serve().await),
                            Err(e) => Outcome::Handshake(e.to_string()),
                        }
                    };
                    let outcome = AssertUnwindSafe(serve)
                        .catch_unwind()
                        .await
                        .unwrap_or(Outcome::Panicked);
                    let _ = report.unbounded_send((peer, outcome));
                });
            }
        });
        Ok(Server {
            addr,
            reports: futures::lock::Mutex::new(reports),
            seen: RefCell::new(HashMap::new()),
            accept_loop,
        })
    }

    /// How the connection from `peer` ended, waiting up to `limit`.
    async fn outcome(&self, peer: SocketAddr, limit: Duration) -> Option<Outcome> {
        let wait = async {
            loop {
                if let Some(outcome) = self.seen.borrow_mut().remove(&peer) {
                    return Some(outcome);
                }
                let next = self.reports.lock().await.next().await;
                let (from, outcome) = next?;
                self.seen.borrow_mut().insert(from, outcome);
            }
        };
        tokio::time::timeout(limit, wait).await.ok().flatten()
    }
}

/// How a raw client's reading ended.
#[derive(Debug, PartialEq, Eq)]
enum ReadEnd {
    Eof,
    Reset,
}

/// Reads everything the server sends until the connection ends.
async fn read_all(reader: &mut futures::io::ReadHalf<ClientIo>) -> (Vec<u8>, ReadEnd) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) => return (bytes, ReadEnd::Eof),
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(_) => return (bytes, ReadEnd::Reset),
        }
    }
}

/// Frames a client received: `(opcode, payload)`s.
type Frames = Vec<(u8, Vec<u8>)>;

/// The server frames in `bytes`: `(opcode, payload)`s, and whether the
/// bytes end mid-frame.
fn parse_frames(mut bytes: &[u8]) -> Result<(Frames, bool), String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let Some(&[first, second]) = bytes.get(..2) else {
            return Ok((frames, true));
        };
        if second & 0x80 != 0 {
            return Err("a masked frame from the server".into());
        }
        let (len, header): (usize, usize) = match second & 0x7f {
            126 => match bytes.get(2..4) {
                Some(n) => (u16::from_be_bytes([n[0], n[1]]) as usize, 4),
                None => return Ok((frames, true)),
            },
            127 => match bytes.get(2..10) {
                Some(n) => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(n);
                    (
                        usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX),
                        10,
                    )
                }
                None => return Ok((frames, true)),
            },
            n => (n as usize, 2),
        };
        let Some(payload) = bytes.get(header..header.saturating_add(len)) else {
            return Ok((frames, true));
        };
        frames.push((first & 0x0f, payload.to_vec()));
        bytes = &bytes[header + len..];
    }
    Ok((frames, false))
}

/// What one fuzzed client saw.
struct Seen {
    peer: SocketAddr,
    handshake: bool,
    /// What the server sent after the handshake (for a client that did
    /// its own, everything).
    received: Vec<u8>,
    end: ReadEnd,
    bytes_sent: usize,
}

/// Reads the upgrade response byte by byte (nothing after it is taken).
async fn read_response(reader: &mut futures::io::ReadHalf<ClientIo>) -> Result<String, String> {
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        match reader.read(&mut byte).await {
            Ok(1) => response.push(byte[0]),
            Ok(_) => return Err("the connection ended during the handshake".into()),
            Err(e) => return Err(format!("reading the upgrade response: {e}")),
        }
        if response.len() > 4096 {
            return Err("an upgrade response over 4 KiB".into());
        }
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Connects, writes what `conn` says, finishes, and reads until the end.
async fn drive(addr: SocketAddr, conn: &WireConn) -> Result<Seen, String> {
    let (io, peer) = Tokio::connect_tcp(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut reader, mut writer) = io.split();
    let (bytes, finish, handshake) = match conn {
        WireConn::PreHandshake { bytes, finish } => (bytes.clone(), *finish, false),
        WireConn::Raw { bytes, finish } => (bytes.clone(), *finish, true),
        WireConn::Frames { frames, finish } => (
            frames.iter().flat_map(WireFrame::bytes).collect(),
            *finish,
            true,
        ),
    };
    let bytes_sent = bytes.len();
    if handshake {
        let request = upgrade_request(addr);
        writer
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing the upgrade request: {e}"))?;
        let response = read_response(&mut reader).await?;
        if !response.starts_with("HTTP/1.1 101") {
            return Err(format!("upgrade refused: {response}"));
        }
    }
    let write = async move {
        // The server may close before reading everything: a failed write
        // is the server's right.
        let _ = writer.write_all(&bytes).await;
        let _ = writer.flush().await;
        match finish {
            Finish::CloseFrame => {
                let _ = writer
                    .write_all(&frame(FIN | CLOSE, true, &1000u16.to_be_bytes()))
                    .await;
                let _ = writer.flush().await;
            }
            Finish::Shutdown => {
                let _ = writer.close().await;
            }
            Finish::Silent => {}
        }
        // Keeps the write half (and so the connection) open until reading
        // ends.
        writer
    };
    let ((received, end), _writer) = futures::join!(read_all(&mut reader), write);
    Ok(Seen {
        peer,
        handshake,
        received,
        end,
        bytes_sent,
    })
}

/// The close code of the first close frame the client received, if any.
fn first_close(frames: &[(u8, Vec<u8>)]) -> Option<Option<u16>> {
    frames
        .iter()
        .find(|(op, _)| *op == CLOSE)
        .map(|(_, payload)| {
            (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
        })
}

#[derive(Default)]
struct Tally {
    cases: u64,
    byte_streams: u64,
    pre_handshake: u64,
    framed: u64,
    frames: u64,
    texts: u64,
    bytes: u64,
    publishes: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    ends: BTreeMap<String, u64>,
    rejected: u64,
    /// Rejections whose close frame the client never got.
    close_lost: u64,
}

struct Part {
    channel: MemoryChannel,
    controlled: Server,
    plain: Server,
    good: futures::lock::Mutex<mpsc::UnboundedReceiver<String>>,
    published: RefCell<u64>,
    tally: RefCell<Tally>,
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

async fn run_wire_case(part: &Part, case: &WireCase) -> TestCaseResult {
    let server = if case.control {
        &part.controlled
    } else {
        &part.plain
    };
    let first = *part.published.borrow();
    let publish = async {
        for i in 0..case.publishes {
            let seq = first + i as u64;
            part.channel
                .publish(EVENTS[i % 2], &seq)
                .await
                .map_err(|e| fail(format!("publishing to the good client: {e}")))?;
        }
        Ok::<_, TestCaseError>(())
    };
    let clients = futures::future::join_all(case.conns.iter().map(|conn| async move {
        let driven = tokio::time::timeout(BOUND, drive(server.addr, conn)).await;
        match driven {
            Ok(seen) => seen,
            Err(_) => Err(format!(
                "the connection did not end within {BOUND:?} (a hang)"
            )),
        }
    }));
    let (published, seen) = futures::join!(publish, clients);
    published?;
    *part.published.borrow_mut() += case.publishes as u64;

    for (i, (conn, seen)) in case.conns.iter().zip(seen).enumerate() {
        let at = || format!("connection {i}");
        let seen = seen.map_err(|e| fail(format!("{}: {e}", at())))?;
        let outcome = server
            .outcome(seen.peer, BOUND)
            .await
            .ok_or_else(|| fail(format!("{}: the server never reported how it ended", at())))?;
        let reason = match (&outcome, seen.handshake) {
            (Outcome::Panicked, _) => return Err(fail(format!("{}: serving it panicked", at()))),
            (Outcome::Handshake(_), false) => None,
            (Outcome::Handshake(e), true) => {
                return Err(fail(format!("{}: a good handshake failed: {e}", at())))
            }
            (Outcome::Served(reason), _) => Some(reason.clone()),
        };
        // A client that did its own (possibly mangled, yet accepted)
        // handshake reads the upgrade response first.
        let mut stream = seen.received.as_slice();
        if !seen.handshake && reason.is_some() {
            let end = stream.windows(4).position(|w| w == b"\r\n\r\n");
            ensure(stream.starts_with(b"HTTP/1.1 101") && end.is_some(), || {
                format!("{}: served without an upgrade response", at())
            })?;
            stream = &stream[end.map_or(0, |e| e + 4)..];
        }
        let (frames, truncated) = if reason.is_some() {
            parse_frames(stream).map_err(|e| fail(format!("{}: the server sent {e}", at())))?
        } else {
            (Vec::new(), false)
        };
        ensure(!truncated || seen.end == ReadEnd::Reset, || {
            format!(
                "{}: the server's stream ended in the middle of a frame",
                at()
            )
        })?;
        let mut errors_seen = 0;
        for (op, payload) in &frames {
            match *op {
                TEXT => {
                    let text = std::str::from_utf8(payload)
                        .map_err(|_| fail(format!("{}: a text frame that is not UTF-8", at())))?;
                    if simplify_frame(text).map_err(|e| fail(format!("{}: {e}", at())))?
                        == Out::Error
                    {
                        errors_seen += 1;
                    }
                }
                PING_OP | PONG | CLOSE => {}
                other => return Err(fail(format!("{}: the server sent opcode {other}", at()))),
            }
        }
        // Whether the client sent nothing after what ended the connection:
        // only then is the close frame sure to arrive. With more input
        // unread, the server's socket closes with a reset, which destroys a
        // close frame still held back by Nagle's algorithm (for instance
        // right after the server answered a ping): see the row's notes.
        let mut quiet_after = false;
        if let WireConn::Frames { frames, finish } = conn {
            let mut model = ConnModel::new(
                case.control,
                &EVENTS.map(String::from),
                SinkKind::Reading,
                256,
                Default::default(),
            );
            for (n, frame) in frames.iter().enumerate() {
                model.message(&frame.msg());
                if !model.alive() {
                    // An oversized frame is refused on its header: its
                    // payload stays unread.
                    let whole = !matches!(frame, WireFrame::Oversized { .. });
                    quiet_after = whole && n + 1 == frames.len() && *finish == Finish::Silent;
                    break;
                }
            }
            match finish {
                Finish::CloseFrame => model.message(&Msg::Close),
                Finish::Shutdown => model.message(&Msg::Fails(ReadFailure::ResetWithoutClose)),
                Finish::Silent if model.alive() => {
                    model.tick();
                    model.tick();
                    quiet_after = true;
                }
                Finish::Silent => {}
            }
            let expected = model.end.clone().unwrap_or(End::Peer);
            let reason = reason.clone();
            ensure(reason.as_ref().is_some_and(|r| expected.matches(r)), || {
                format!(
                    "{}: ended with {reason:?}, the model says {expected:?}",
                    at()
                )
            })?;
            let errors_expected = model.out.iter().filter(|o| **o == Out::Error).count();
            ensure(errors_seen <= errors_expected, || {
                format!(
                    "{}: {errors_seen} error frames, the model says at most {errors_expected}",
                    at()
                )
            })?;
        }
        let close = first_close(&frames);
        if let Some(CloseReason::Rejected(code, message)) = &reason {
            ensure(close.is_none() || close == Some(Some(*code)), || {
                format!(
                    "{}: rejected with {code} ({message}), the client got close {close:?}",
                    at()
                )
            })?;
            ensure(!quiet_after || close == Some(Some(*code)), || {
                format!(
                    "{}: rejected with {code} ({message}) after its last input, yet the client got no close frame (read end {:?})",
                    at(),
                    seen.end
                )
            })?;
            if close.is_none() {
                part.tally.borrow_mut().close_lost += 1;
            }
        }
        let mut tally = part.tally.borrow_mut();
        tally.bytes += seen.bytes_sent as u64;
        match conn {
            WireConn::PreHandshake { .. } => tally.pre_handshake += 1,
            WireConn::Raw { .. } => tally.byte_streams += 1,
            WireConn::Frames { frames, .. } => {
                tally.framed += 1;
                tally.frames += frames.len() as u64;
                tally.texts += frames
                    .iter()
                    .filter(|f| matches!(f, WireFrame::Text(_) | WireFrame::Fragmented(..)))
                    .count() as u64;
            }
        }
        let end = match &reason {
            None => "handshake refused".to_string(),
            Some(CloseReason::Rejected(code, _)) => {
                if *code != close_code::GOING_AWAY {
                    tally.rejected += 1;
                }
                format!("closed {code}")
            }
            Some(other) => format!("{other:?}"),
        };
        if reason.is_none() {
            tally.rejected += 1;
        }
        *tally.ends.entry(end).or_default() += 1;
    }

    // The well-behaved client has every event of this case, in order
    // (events of an earlier case that failed before reading them are
    // skipped: cases are independent).
    let expected: Vec<u64> = (first..*part.published.borrow()).collect();
    let mut got = Vec::new();
    let arrived = tokio::time::timeout(BOUND, async {
        let mut good = part.good.lock().await;
        while got.len() < expected.len() {
            match good.next().await.map(|text| simplify_frame(&text)) {
                Some(Ok(Out::Event(_, seq))) if seq < first => {}
                Some(Ok(Out::Event(_, seq))) => got.push(seq),
                Some(other) => return Err(format!("the well-behaved client got {other:?}")),
                None => return Err("the well-behaved client's connection ended".to_string()),
            }
        }
        Ok(())
    })
    .await;
    {
        let mut tally = part.tally.borrow_mut();
        tally.cases += 1;
        tally.publishes += expected.len() as u64;
        let delivered = got.iter().filter(|s| expected.contains(s)).count() as u64;
        tally.delivered += delivered;
        tally.lost += expected.len() as u64 - delivered.min(expected.len() as u64);
        tally.duplicates += (got.len() as u64).saturating_sub(delivered);
    }
    ensure(arrived == Ok(Ok(())) && got == expected, || {
        format!("the well-behaved client got {got:?} of {expected:?} ({arrived:?})")
    })?;
    ensure(
        part.channel.subscription_count() == EVENTS.len() && part.channel.carrier_count() == 1,
        || {
            format!(
                "after the case the table holds {} subscriptions of {} carriers (expected only the well-behaved client: {} of 1)",
                part.channel.subscription_count(),
                part.channel.carrier_count(),
                EVENTS.len()
            )
        },
    )
}

async fn setup() -> Result<Part, String> {
    let channel = MemoryChannel::named("soak/fuzz/wire").map_err(|e| e.to_string())?;
    channel.kickoff().map_err(|e| e.to_string())?;
    let options = |control: bool| {
        SocketOptions::new(EVENTS)
            .control_messages(control)
            .authorize(FuzzAuthorizer)
            .ping_interval(PING)
            .handshake_timeout(PING)
            .max_message_size(MAX_MESSAGE)
    };
    let controlled = Server::start(&channel, options(true))
        .await
        .map_err(|e| e.to_string())?;
    let plain = Server::start(&channel, options(false))
        .await
        .map_err(|e| e.to_string())?;

    let (io, _) = Tokio::connect_tcp(controlled.addr)
        .await
        .map_err(|e| e.to_string())?;
    let (client, _) = async_tungstenite::client_async(format!("ws://{}/ws", controlled.addr), io)
        .await
        .map_err(|e| format!("the well-behaved client's handshake: {e}"))?;
    let (good_tx, good) = mpsc::unbounded();
    // Reading also answers the server's pings.
    tokio::spawn(async move {
        let mut client = client;
        while let Some(Ok(message)) = client.next().await {
            if let Message::Text(text) = message {
                if good_tx.unbounded_send(text.as_str().to_owned()).is_err() {
                    break;
                }
            }
        }
        let _ = client.close(None).await;
    });
    let deadline = tokio::time::Instant::now() + BOUND;
    while channel.carrier_count() < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Part {
        channel,
        controlled,
        plain,
        good: futures::lock::Mutex::new(good),
        published: RefCell::new(0),
        tally: RefCell::new(Tally::default()),
    })
}

/// Runs this part; returns its load for the row.
pub fn run(
    profile: Profile,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
    row: &mut Row,
) -> String {
    let cases = profile.pick(100, 2_000);
    let part = match runtime.block_on(setup()) {
        Ok(part) => part,
        Err(e) => {
            row.check(false, format!("websocket over TCP: setup failed: {e}"));
            return "websocket over TCP: not run".into();
        }
    };
    let mut runner = runner(seed, 2, cases, 256);
    run_cases(
        &mut runner,
        &wire_case(),
        "websocket over TCP",
        row,
        |case| runtime.block_on(run_wire_case(&part, &case)),
    );
    part.controlled.accept_loop.abort();
    part.plain.accept_loop.abort();
    runtime.block_on(part.channel.stop());
    let tally = part.tally.into_inner();
    row.published += tally.publishes;
    row.delivered += tally.delivered;
    row.lost += tally.lost;
    row.duplicates += tally.duplicates;
    row.errors += tally.rejected;
    let ends: Vec<String> = tally
        .ends
        .iter()
        .map(|(end, n)| format!("{end}: {n}"))
        .collect();
    let connections = tally.byte_streams + tally.pre_handshake + tally.framed;
    row.note(format!(
        "websocket over TCP: {} cases, {connections} connections: {} websocket byte streams, {} pre-handshake byte streams, {} framed sequences ({} frames, {} text/control messages), {} KiB written; {} events to a well-behaved client; connections ended {}",
        tally.cases,
        tally.byte_streams,
        tally.pre_handshake,
        tally.framed,
        tally.frames,
        tally.texts,
        tally.bytes / 1024,
        tally.publishes,
        ends.join(", ")
    ));
    if tally.close_lost > 0 {
        row.note(format!(
            "websocket over TCP: {} rejected connection(s) reached the client without their close frame (it saw a reset, or the end of the stream): each had sent more after the offending input, so the server closed its socket with input unread (a TCP reset) while Nagle's algorithm held the close frame back behind an unacknowledged frame, typically the pong to the client's ping. TCP_NODELAY on the accepted socket delivers it; a lingering close would too",
            tally.close_lost
        ));
    }
    format!("{connections} fuzzed TCP websocket connections")
}
