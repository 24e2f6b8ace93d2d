//! The model of the protocol: what one served connection does with each
//! message, event and tick, what its client receives, and how it ends.

use std::collections::BTreeSet;

use async_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use async_tungstenite::tungstenite::Error as WsError;
use serde_json::Value;
use tbone_dispatch::{close_code, CloseReason, OverflowPolicy, DEFAULT_MAX_EVENT_NAME};

use super::authorized;
use super::control::{parse_control, Control};

/// One message from the client, as the serving loop sees it.
#[derive(Clone, Debug)]
pub(crate) enum Msg {
    Text(String),
    Binary(usize),
    /// A ping or pong.
    Alive,
    Close,
    /// A read error, made from the websocket library's own error values.
    Fails(ReadFailure),
}

/// The read errors tungstenite reports for bad input.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ReadFailure {
    NotUtf8,
    TooLong,
    ReservedBits,
    Unmasked,
    FragmentedControl,
    ControlTooBig,
    UnknownOpcode,
    StrayContinuation,
    ResetWithoutClose,
    Io,
}

impl ReadFailure {
    pub(super) fn error(self) -> WsError {
        match self {
            ReadFailure::NotUtf8 => WsError::Utf8("invalid utf-8 sequence of 1 bytes".into()),
            ReadFailure::TooLong => WsError::Capacity(CapacityError::MessageTooLong {
                size: 70_000,
                max_size: 65_536,
            }),
            ReadFailure::ReservedBits => WsError::Protocol(ProtocolError::NonZeroReservedBits),
            ReadFailure::Unmasked => WsError::Protocol(ProtocolError::UnmaskedFrameFromClient),
            ReadFailure::FragmentedControl => {
                WsError::Protocol(ProtocolError::FragmentedControlFrame)
            }
            ReadFailure::ControlTooBig => WsError::Protocol(ProtocolError::ControlFrameTooBig),
            ReadFailure::UnknownOpcode => WsError::Protocol(ProtocolError::UnknownDataFrameType(3)),
            ReadFailure::StrayContinuation => {
                WsError::Protocol(ProtocolError::UnexpectedContinueFrame)
            }
            ReadFailure::ResetWithoutClose => {
                WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            }
            ReadFailure::Io => WsError::Io(std::io::ErrorKind::ConnectionReset.into()),
        }
    }

    /// How the connection ends: with the close code RFC 6455 (section
    /// 7.4.1) asks for: 1007 for text that is not UTF-8, 1009 for a message
    /// over the limit, 1002 for any other broken framing (an oversized
    /// control frame included: section 5.5 makes it a protocol error, not a
    /// message too big); lost, without a close frame, when the connection
    /// itself failed (an IO error, or the peer ending the TCP connection
    /// without a close frame: nobody is left to send one to).
    pub(crate) fn end(self) -> End {
        match self {
            ReadFailure::NotUtf8 => End::Code(close_code::INVALID_PAYLOAD),
            ReadFailure::TooLong => End::Code(close_code::TOO_BIG),
            ReadFailure::Io | ReadFailure::ResetWithoutClose => End::Lost,
            _ => End::Code(close_code::PROTOCOL),
        }
    }
}

/// How the model expects a connection to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The client closed or went away.
    Peer,
    /// The server rejected it with this close code.
    Code(u16),
    /// Its sink failed.
    Sink,
    /// Its queue overflowed.
    Overflow,
    /// The connection failed under the socket (no close frame).
    Lost,
}

impl End {
    /// Whether `reason`, as `serve_socket` returned it, is this end.
    pub(crate) fn matches(&self, reason: &CloseReason) -> bool {
        match (self, reason) {
            (End::Peer, CloseReason::PeerClosed)
            | (End::Sink, CloseReason::SinkError(_))
            | (End::Overflow, CloseReason::Overflow)
            | (End::Lost, CloseReason::ConnectionLost(_)) => true,
            (End::Code(code), CloseReason::Rejected(got, _)) => code == got,
            _ => false,
        }
    }
}

/// What a client receives, simplified for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    Event(String, u64),
    Error,
    Ping,
    Close(u16),
}

/// How the client's side of the socket behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SinkKind {
    /// Takes everything at once.
    Reading,
    /// Takes this many items, then fails (the connection broke).
    FailAfter(usize),
    /// Never takes anything (a client that stopped reading).
    Stalled,
}

/// The model of one served connection.
pub(crate) struct ConnModel {
    control: bool,
    sink: SinkKind,
    capacity: usize,
    overflow: OverflowPolicy,
    /// Events it is subscribed to.
    pub(crate) subs: BTreeSet<String>,
    heard: bool,
    /// Items its sink took (or, stalled, holds in the queue).
    taken: usize,
    /// How it ended, once it has.
    pub(crate) end: Option<End>,
    /// What its client received, in order.
    pub(crate) out: Vec<Out>,
}

impl ConnModel {
    /// A connection subscribed to the authorized events of `initial`.
    pub(crate) fn new(
        control: bool,
        initial: &[String],
        sink: SinkKind,
        capacity: usize,
        overflow: OverflowPolicy,
    ) -> Self {
        ConnModel {
            control,
            sink,
            capacity: capacity.max(1),
            overflow,
            subs: initial.iter().filter(|e| authorized(e)).cloned().collect(),
            heard: true,
            taken: 0,
            end: None,
            out: Vec::new(),
        }
    }

    pub(crate) fn alive(&self) -> bool {
        self.end.is_none()
    }

    fn finish(&mut self, end: End) {
        if !self.alive() {
            return;
        }
        let code = match end {
            End::Code(code) => Some(code),
            End::Overflow => Some(close_code::POLICY),
            End::Peer | End::Sink | End::Lost => None,
        };
        self.end = Some(end);
        if let Some(code) = code {
            self.emit(Out::Close(code));
        }
    }

    /// The carrier hands `item` to its writer.
    fn emit(&mut self, item: Out) {
        let closing = matches!(item, Out::Close(_));
        match self.sink {
            SinkKind::Reading => self.out.push(item),
            SinkKind::FailAfter(n) if self.taken < n => {
                self.taken += 1;
                self.out.push(item);
            }
            // The close frame is sent on the way out, its failure ignored.
            SinkKind::FailAfter(_) if closing => {}
            SinkKind::FailAfter(_) => self.end = Some(End::Sink),
            SinkKind::Stalled if closing => {}
            // The queue's capacity: a socket's writer waits for its sink
            // to be ready before it takes anything (it takes the socket's
            // write half as soon as it is attached), and this one never is.
            SinkKind::Stalled if self.taken < self.capacity => self.taken += 1,
            SinkKind::Stalled => match (item, self.overflow) {
                (Out::Ping, _) | (_, OverflowPolicy::DropFrame) => {}
                _ => self.finish(End::Overflow),
            },
        }
    }

    /// The client sends `msg`.
    pub(crate) fn message(&mut self, msg: &Msg) {
        if !self.alive() {
            return;
        }
        self.heard = true;
        match msg {
            Msg::Close => self.finish(End::Peer),
            Msg::Alive => {}
            Msg::Binary(_) => self.finish(End::Code(close_code::UNSUPPORTED)),
            Msg::Fails(failure) => self.finish(failure.end()),
            Msg::Text(_) if !self.control => {}
            Msg::Text(text) => match parse_control(text) {
                None => self.finish(End::Code(close_code::POLICY)),
                Some(Control::OtherChannel | Control::Resume) => self.emit(Out::Error),
                Some(Control::Subscribe(event)) if !authorized(&event) => self.emit(Out::Error),
                Some(Control::Subscribe(event)) if event.len() > DEFAULT_MAX_EVENT_NAME => {
                    self.emit(Out::Error)
                }
                Some(Control::Subscribe(event)) => {
                    self.subs.insert(event);
                }
                Some(Control::Unsubscribe(event)) => {
                    self.subs.remove(&event);
                }
            },
        }
    }

    /// Event `name` is published with data `seq`.
    pub(crate) fn publish(&mut self, name: &str, seq: u64) {
        if self.alive() && self.subs.contains(name) {
            self.emit(Out::Event(name.to_string(), seq));
        }
    }

    /// One keep-alive interval passes.
    pub(crate) fn tick(&mut self) {
        if !self.alive() {
            return;
        }
        if !self.heard {
            self.finish(End::Code(close_code::GOING_AWAY));
            return;
        }
        self.heard = false;
        self.emit(Out::Ping);
    }

    /// The client's stream ends.
    pub(crate) fn stream_ends(&mut self) {
        self.finish(End::Peer);
    }
}

/// A frame sent to a client, simplified; fails on anything that is not a
/// TBone event or error frame of valid JSON.
pub(crate) fn simplify_frame(text: &str) -> Result<Out, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("frame is not JSON ({e}): {text}"))?;
    match value["type"].as_str() {
        Some("event") => {
            let name = value["payload"]["name"]
                .as_str()
                .ok_or_else(|| format!("event frame without a name: {text}"))?;
            Ok(Out::Event(
                name.to_string(),
                value["payload"]["data"].as_u64().unwrap_or(u64::MAX),
            ))
        }
        Some("error") if value["payload"]["message"].is_string() => Ok(Out::Error),
        _ => Err(format!("frame of unknown shape: {text}")),
    }
}
