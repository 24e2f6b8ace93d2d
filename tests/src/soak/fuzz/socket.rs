//! Part 1: scripts of client messages fed to the core's `serve_socket`
//! over in-memory halves (read errors made from tungstenite's own error
//! values, mapped by the websocket glue's `read_error` as a served socket's
//! are), on a [`ManualRuntime`], so that every step ends
//! in a quiescent state and the outcome can be compared with a model of
//! the protocol: how each connection ends (close reason and code), every
//! item its client receives (event frames, error frames, pings, the close
//! frame), and the channel's subscription table after every step. A
//! well-behaved carrier subscribed throughout must get every event, and
//! no task may outlive the case.
//!
//! The model is also the oracle of the TCP part ([`super::wire`]).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use async_tungstenite::tungstenite::Error as WsError;
use futures::channel::mpsc;
use futures::Sink;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestCaseResult};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::websocket::read_error;
use tbone_dispatch::{
    close_code, serve_socket, Authorizer, Carrier, CarrierConfig, Channel, ChannelBuilder,
    CloseReason, ConnectRequest, Frame, Incoming, MemoryBackend, Outgoing, OverflowPolicy,
    ReadError, Refusal, Runtime, SocketOptions, DEFAULT_MAX_EVENT_NAME,
};

use super::{ensure, run_cases, runner, shorten};
use crate::soak::{Profile, Row};

/// The keep-alive interval of the served sockets; one `Tick` step moves the
/// manual clock by exactly this much.
const PING: Duration = Duration::from_secs(10);
/// How long a carrier may take to close its sink (a stalled one never
/// does).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The authorization rule of every fuzzed server: `admin_*` is refused.
pub(crate) fn authorized(event: &str) -> bool {
    !event.starts_with("admin_")
}

/// The authorization hook of every fuzzed server: anyone may connect,
/// [`authorized`] events only.
pub(crate) struct FuzzAuthorizer;

impl Authorizer for FuzzAuthorizer {
    type Client = ();

    async fn connect(&self, _request: &ConnectRequest) -> Result<(), Refusal> {
        Ok(())
    }

    async fn allow(&self, _client: &(), _channel: &str, event: &str) -> bool {
        authorized(event)
    }
}

/// Event names the channel publishes during a case (the well-behaved
/// carrier is subscribed to every one): short, unicode, empty, refused by
/// the hook, and exactly at the length limit.
pub(crate) fn published_names() -> Vec<String> {
    let mut names: Vec<String> = ["e0", "e1", "e2", "admin_e", "ünï ✓", ""]
        .into_iter()
        .map(String::from)
        .collect();
    names.push("x".repeat(DEFAULT_MAX_EVENT_NAME));
    names
}

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
    fn error(self) -> WsError {
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

/// A control message, as the server must understand it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    Subscribe(String),
    Unsubscribe(String),
    /// Names a channel the socket is not served on (fuzzed sockets are
    /// served on one channel, whose name no generated message spells).
    OtherChannel,
}

/// The top level of a JSON text, with an object's entries in order and
/// duplicates kept (a duplicated field makes a control message malformed).
enum Shape {
    Object(Vec<(String, Value)>),
    Array,
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Shape::Object(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Shape::Array)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
        }
        deserializer.deserialize_any(ShapeVisitor)
    }
}

/// The oracle for control messages: `{"action":"subscribe"|"unsubscribe",
/// "event":"<name>"}` with an optional `"channel":"<name>"|null`, fields in
/// any order, no other or repeated field. A JSON object only: serde's
/// array spelling of the struct (`["subscribe","<name>"]`) is not a control
/// message. Serde's other spelling of the action is accepted as the server
/// accepts it: a map `{"subscribe":null}`.
pub(crate) fn parse_control(text: &str) -> Option<Control> {
    fn action(value: &Value) -> Option<bool> {
        match value {
            Value::String(s) if s == "subscribe" => Some(true),
            Value::String(s) if s == "unsubscribe" => Some(false),
            Value::Object(map) if map.len() == 1 => {
                let (name, content) = map.iter().next()?;
                if content.is_null() {
                    action(&Value::String(name.clone()))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
    let (subscribe, event, channel) = match serde_json::from_str::<Shape>(text).ok()? {
        Shape::Object(entries) => {
            let known = ["action", "event", "channel"];
            if entries.iter().any(|(k, _)| !known.contains(&k.as_str())) {
                return None;
            }
            let field = |name: &str| {
                let mut found = entries.iter().filter(|(k, _)| k == name);
                let first = found.next();
                match (first, found.next()) {
                    (Some((_, value)), None) => Ok(Some(value)),
                    (None, _) => Ok(None),
                    (Some(_), Some(_)) => Err(()),
                }
            };
            let channel = match field("channel").ok()? {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) => Some(name.clone()),
                Some(_) => return None,
            };
            (
                action(field("action").ok()??)?,
                field("event").ok()??.as_str()?.to_string(),
                channel,
            )
        }
        Shape::Array | Shape::Other => return None,
    };
    Some(match (channel, subscribe) {
        (Some(_), _) => Control::OtherChannel,
        (None, true) => Control::Subscribe(event),
        (None, false) => Control::Unsubscribe(event),
    })
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
                Some(Control::OtherChannel) => self.emit(Out::Error),
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

// ---------------------------------------------------------------------
// Strategies, shared with the TCP part.

/// Event names a client asks for: mostly ones the channel publishes, some
/// refused, too long, or arbitrary.
pub(crate) fn event_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(published_names()),
        1 => Just("y".repeat(DEFAULT_MAX_EVENT_NAME + 1)),
        1 => Just("admin_secret".to_string()),
        2 => "\\PC{0,12}",
        1 => any::<String>(),
    ]
}

/// A well-formed control message, spelled in several ways, sometimes
/// with a `channel` (null: the default one; or one not served).
pub(crate) fn control_message() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["subscribe", "unsubscribe"]),
        event_name(),
        any::<bool>(),
        prop::sample::select(vec!["", " ", "\n\t "]),
        prop::sample::select(vec![
            "",
            "",
            "",
            "",
            r#","channel":null"#,
            r#","channel":"elsewhere""#,
        ]),
    )
        .prop_map(|(action, event, swapped, ws, channel)| {
            let event = serde_json::to_string(&event).unwrap_or_default();
            if swapped {
                format!("{ws}{{{ws}\"event\"{ws}:{ws}{event},\"action\":\"{action}\"{channel}{ws}}}{ws}")
            } else {
                format!("{{\"action\":{ws}\"{action}\",{ws}\"event\":{event}{channel}}}")
            }
        })
}

/// Text close to a control message: one mistake, or another serde
/// spelling.
fn near_miss() -> impl Strategy<Value = String> {
    (control_message(), 0usize..14, any::<prop::sample::Index>()).prop_map(|(valid, how, at)| {
        let cut = |text: &str| {
            let mut end = at.index(text.len().max(1));
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_string()
        };
        match how {
            0 => valid.replacen("\"action\"", "\"Action\"", 1),
            1 => valid.replacen("subscribe\"", "Subscribe\"", 1),
            2 => cut(&valid),
            3 => format!("{valid}x"),
            4 => match valid.rfind('}') {
                Some(i) => format!("{},\"extra\":1{}", &valid[..i], &valid[i..]),
                None => valid,
            },
            5 => format!("[{valid}]"),
            6 => r#"{"action":"subscribe"}"#.to_string(),
            7 => r#"{"event":"e0"}"#.to_string(),
            8 => r#"{"action":"subscribe","event":1}"#.to_string(),
            9 => r#"{"action":"subscribe","event":null}"#.to_string(),
            10 => r#"["subscribe","e0"]"#.to_string(),
            11 => r#"{"action":{"unsubscribe":null},"event":"e1"}"#.to_string(),
            12 => r#"{"action":"subscribe","event":"e1","event":"e2"}"#.to_string(),
            _ => "{}".to_string(),
        }
    })
}

/// Any text a client may send.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => control_message(),
        3 => near_miss(),
        2 => any::<String>(),
        1 => "[\\[\\]{}\":, actionevntsubcr0-9]{0,40}",
    ]
}

fn read_failure() -> impl Strategy<Value = ReadFailure> {
    prop::sample::select(vec![
        ReadFailure::NotUtf8,
        ReadFailure::TooLong,
        ReadFailure::ReservedBits,
        ReadFailure::Unmasked,
        ReadFailure::FragmentedControl,
        ReadFailure::ControlTooBig,
        ReadFailure::UnknownOpcode,
        ReadFailure::StrayContinuation,
        ReadFailure::ResetWithoutClose,
        ReadFailure::Io,
    ])
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        10 => text().prop_map(Msg::Text),
        2 => Just(Msg::Alive),
        1 => (0usize..100).prop_map(Msg::Binary),
        1 => Just(Msg::Close),
        1 => read_failure().prop_map(Msg::Fails),
    ]
}

/// One connection of a case.
#[derive(Clone, Debug)]
pub(crate) struct ConnSpec {
    control: bool,
    initial: Vec<String>,
    capacity: usize,
    overflow: OverflowPolicy,
    sink: SinkKind,
    /// At the end of the script: stay silent until the pings give up
    /// (true) or go away (false).
    silent_at_end: bool,
}

/// One step of a script.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// Connection `n % connections` receives a message.
    Send(usize, Msg),
    /// Connection `n % connections`'s stream ends.
    End(usize),
    /// The channel publishes event `published_names()[n]`.
    Publish(usize),
    /// One ping interval passes.
    Tick,
}

/// A case: connections served at once, and a script.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    conns: Vec<ConnSpec>,
    steps: Vec<Step>,
}

fn conn_spec() -> impl Strategy<Value = ConnSpec> {
    let initial: Vec<String> = ["e0", "e1", "e2", "admin_e", "ünï ✓", ""]
        .into_iter()
        .map(String::from)
        .collect();
    (
        prop::bool::weighted(0.8),
        prop::sample::subsequence(initial, 0..=4),
        1usize..6,
        prop::sample::select(vec![OverflowPolicy::DropCarrier, OverflowPolicy::DropFrame]),
        prop_oneof![
            6 => Just(SinkKind::Reading),
            2 => (0usize..6).prop_map(SinkKind::FailAfter),
            2 => Just(SinkKind::Stalled),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(control, initial, capacity, overflow, sink, silent_at_end)| ConnSpec {
                control,
                initial,
                capacity,
                overflow,
                sink,
                silent_at_end,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0usize..3, msg()).prop_map(|(n, m)| Step::Send(n, m)),
        4 => (0..published_names().len()).prop_map(Step::Publish),
        2 => Just(Step::Tick),
        1 => (0usize..3).prop_map(Step::End),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(conn_spec(), 1..=3),
        prop::collection::vec(step(), 0..40),
    )
        .prop_map(|(conns, steps)| Case { conns, steps })
}

// ---------------------------------------------------------------------
// The client's half of the socket.

#[derive(Default)]
struct Recorded {
    items: Vec<Outgoing>,
    closed: bool,
}

/// The server's sink: records what it is given, per its [`SinkKind`].
struct ClientSink {
    kind: SinkKind,
    taken: usize,
    record: Arc<Mutex<Recorded>>,
}

impl ClientSink {
    fn record(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink<Outgoing> for ClientSink {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        // A stalled client is never ready; nothing will wake the writer,
        // which must give up on its own (close timeout).
        match self.kind {
            SinkKind::Stalled => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), String> {
        if let SinkKind::FailAfter(n) = self.kind {
            if self.taken >= n {
                return Err("the client's connection broke".into());
            }
        }
        self.taken += 1;
        self.record().items.push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        match self.kind {
            SinkKind::Stalled => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        if self.kind == SinkKind::Stalled {
            return Poll::Pending;
        }
        self.record().closed = true;
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------
// Running a case.

#[derive(Default)]
struct Tally {
    cases: u64,
    connections: u64,
    messages: u64,
    texts: u64,
    publishes: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    rejected: u64,
    ends: std::collections::BTreeMap<String, u64>,
}

type Mem = Channel<MemoryBackend, ManualRuntime>;

struct Live {
    model: ConnModel,
    spec: ConnSpec,
    input: Option<mpsc::UnboundedSender<Result<Incoming, ReadError>>>,
    record: Arc<Mutex<Recorded>>,
    result: Arc<Mutex<Option<CloseReason>>>,
}

impl Live {
    fn result(&self) -> Option<CloseReason> {
        self.result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

static NEXT_CHANNEL: AtomicU64 = AtomicU64::new(0);

fn fail(what: impl fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// Checks that each connection ended exactly when and how the model says,
/// and that the table holds exactly the model's subscriptions.
fn verify(at: &str, channel: &Mem, good_subs: usize, live: &[Live]) -> TestCaseResult {
    for (i, conn) in live.iter().enumerate() {
        let real = conn.result();
        match (&conn.model.end, &real) {
            (None, None) => {}
            (Some(end), Some(reason)) => ensure(end.matches(reason), || {
                format!("{at}: connection {i} ended with {reason:?}, the model says {end:?}")
            })?,
            (end, reason) => {
                return Err(fail(format!(
                    "{at}: connection {i} ended: {reason:?}, the model says {end:?}"
                )))
            }
        }
    }
    let alive = live.iter().filter(|c| c.model.alive());
    let subscriptions = good_subs + alive.clone().map(|c| c.model.subs.len()).sum::<usize>();
    let carriers = 1 + alive.filter(|c| !c.model.subs.is_empty()).count();
    ensure(
        channel.subscription_count() == subscriptions && channel.carrier_count() == carriers,
        || {
            format!(
                "{at}: the table holds {} subscriptions of {} carriers, the model {subscriptions} of {carriers}",
                channel.subscription_count(),
                channel.carrier_count()
            )
        },
    )
}

fn run_case(case: &Case, tally: &RefCell<Tally>) -> TestCaseResult {
    let runtime = ManualRuntime::new();
    let name = format!(
        "soak/fuzz/core/{}",
        NEXT_CHANNEL.fetch_add(1, Ordering::Relaxed)
    );
    let channel: Mem = ChannelBuilder::new(name)
        .open(runtime.clone(), MemoryBackend::new)
        .map_err(fail)?;
    channel.kickoff().map_err(fail)?;
    let names = published_names();
    let (good_sink, mut good_client) = mpsc::unbounded::<Frame>();
    let good =
        Carrier::new(&runtime, good_sink, CarrierConfig::default().capacity(1024)).map_err(fail)?;
    for event in &names {
        channel.subscribe(event, &good).map_err(fail)?;
    }

    let mut live = Vec::new();
    for spec in &case.conns {
        let (input, stream) = mpsc::unbounded();
        let record = Arc::new(Mutex::new(Recorded::default()));
        let result = Arc::new(Mutex::new(None));
        let sink = ClientSink {
            kind: spec.sink,
            taken: 0,
            record: record.clone(),
        };
        let options = SocketOptions::new(spec.initial.clone())
            .control_messages(spec.control)
            .authorize(FuzzAuthorizer)
            .ping_interval(PING)
            .carrier(
                CarrierConfig::default()
                    .capacity(spec.capacity)
                    .overflow(spec.overflow)
                    .close_timeout(CLOSE_TIMEOUT),
            );
        let task = {
            let (channel, result) = (channel.clone(), result.clone());
            async move {
                let reason = serve_socket(&channel, sink, stream, options).await;
                *result.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            }
        };
        runtime.spawn(task).map_err(fail)?;
        live.push(Live {
            model: ConnModel::new(
                spec.control,
                &spec.initial,
                spec.sink,
                spec.capacity,
                spec.overflow,
            ),
            spec: spec.clone(),
            input: Some(input),
            record,
            result,
        });
    }
    runtime.run_until_stalled();
    verify("after connecting", &channel, names.len(), &live)?;

    let mut published = Vec::new();
    let n = live.len();
    let tick = |live: &mut Vec<Live>| {
        for conn in live.iter_mut() {
            conn.model.tick();
        }
        runtime.advance(PING);
    };
    for (i, step) in case.steps.iter().enumerate() {
        match step {
            Step::Send(c, msg) => {
                let conn = &mut live[c % n];
                conn.model.message(msg);
                let item = match msg {
                    Msg::Text(text) => Ok(Incoming::Text(text.clone())),
                    Msg::Binary(len) => Ok(Incoming::Binary(vec![0u8; *len].into())),
                    Msg::Alive => Ok(Incoming::Alive),
                    Msg::Close => Ok(Incoming::Close),
                    Msg::Fails(failure) => Err(read_error(failure.error())),
                };
                if let Some(input) = &conn.input {
                    // Refused once the server stopped reading: as a socket.
                    let _ = input.unbounded_send(item);
                }
                runtime.run_until_stalled();
            }
            Step::End(c) => {
                let conn = &mut live[c % n];
                conn.model.stream_ends();
                conn.input = None;
                runtime.run_until_stalled();
            }
            Step::Publish(e) => {
                let seq = published.len() as u64;
                let event = &names[*e];
                for conn in live.iter_mut() {
                    conn.model.publish(event, seq);
                }
                match runtime.run(channel.publish(event, &seq)) {
                    Some(Ok(())) => published.push((event.clone(), seq)),
                    other => return Err(fail(format!("step {i}: publish gave {other:?}"))),
                }
                runtime.run_until_stalled();
            }
            Step::Tick => tick(&mut live),
        }
        verify(
            &format!("after step {i} ({})", shorten(&format!("{step:?}"), 120)),
            &channel,
            names.len(),
            &live,
        )?;
    }

    // The clients still connected leave, or fall silent until the pings
    // give up on them.
    for conn in live.iter_mut().filter(|c| !c.spec.silent_at_end) {
        conn.model.stream_ends();
        conn.input = None;
    }
    runtime.run_until_stalled();
    verify("after the clients left", &channel, names.len(), &live)?;
    tick(&mut live);
    tick(&mut live);
    verify(
        "after two silent ping intervals",
        &channel,
        names.len(),
        &live,
    )?;
    // Writers stuck on a stalled client give up after the close timeout.
    runtime.advance(CLOSE_TIMEOUT);

    for (i, conn) in live.iter().enumerate() {
        let record = conn.record.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.spec.sink == SinkKind::Stalled {
            continue;
        }
        let mut received = Vec::new();
        for item in &record.items {
            received.push(match item {
                Outgoing::Frame(frame) => simplify_frame(frame.as_str()).map_err(fail)?,
                Outgoing::Ping => Out::Ping,
                Outgoing::Close(code, reason) => {
                    ensure(reason.len() <= close_code::MAX_REASON, || {
                        format!("connection {i}: close reason of {} bytes", reason.len())
                    })?;
                    Out::Close(*code)
                }
            });
        }
        ensure(received == conn.model.out, || {
            format!(
                "connection {i} ({:?}) received {received:?}, the model says {:?}",
                conn.spec.sink, conn.model.out
            )
        })?;
        ensure(record.closed, || {
            format!("connection {i}: the server never closed its sink")
        })?;
    }

    let mut got = Vec::new();
    while let Ok(frame) = good_client.try_recv() {
        match simplify_frame(frame.as_str()).map_err(fail)? {
            Out::Event(name, seq) => got.push((name, seq)),
            other => return Err(fail(format!("the good carrier received {other:?}"))),
        }
    }
    {
        let mut tally = tally.borrow_mut();
        tally.cases += 1;
        tally.connections += live.len() as u64;
        for step in &case.steps {
            if let Step::Send(_, msg) = step {
                tally.messages += 1;
                tally.texts += u64::from(matches!(msg, Msg::Text(_)));
            }
        }
        tally.publishes += published.len() as u64;
        let delivered = got.iter().filter(|e| published.contains(e)).count() as u64;
        tally.delivered += delivered;
        tally.lost += published.len() as u64 - delivered.min(published.len() as u64);
        tally.duplicates += (got.len() as u64).saturating_sub(delivered);
        for conn in &live {
            let end = match &conn.model.end {
                Some(End::Code(code)) => {
                    if *code != close_code::GOING_AWAY {
                        tally.rejected += 1;
                    }
                    format!("closed {code}")
                }
                Some(other) => format!("{other:?}"),
                None => "open".to_string(),
            };
            *tally.ends.entry(end).or_default() += 1;
        }
    }
    ensure(got == published, || {
        format!("the well-behaved carrier received {got:?}, published {published:?}")
    })?;
    ensure(runtime.task_count() == 2, || {
        format!(
            "{} tasks alive after every connection ended (expected 2: the channel's consumer and the good carrier's writer)",
            runtime.task_count()
        )
    })?;
    let stopped = runtime.run(channel.stop());
    drop(good);
    drop(live);
    runtime.run_until_stalled();
    ensure(stopped.is_some() && runtime.task_count() == 0, || {
        format!(
            "{} tasks alive after the channel stopped",
            runtime.task_count()
        )
    })
}

/// Runs this part; returns its load for the row.
pub fn run(profile: Profile, seed: u64, row: &mut Row) -> String {
    let cases = profile.pick(2_000, 100_000);
    let tally = RefCell::new(Tally::default());
    let mut runner = runner(seed, 1, cases, 2_000);
    run_cases(&mut runner, &case(), "core sockets", row, |case| {
        run_case(&case, &tally)
    });
    let tally = tally.into_inner();
    row.check(
        tally.cases >= u64::from(cases),
        format!("core sockets: only {} of {cases} cases ran", tally.cases),
    );
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
    row.note(format!(
        "core serve_socket: {} scripts, {} connections, {} client messages ({} text/control messages), {} events to a well-behaved carrier; connections ended {}",
        tally.cases,
        tally.connections,
        tally.messages,
        tally.texts,
        tally.publishes,
        ends.join(", ")
    ));
    format!(
        "{} core socket scripts ({} messages)",
        tally.cases, tally.messages
    )
}
