//! The socket driver (`serve_socket`, `socket::Connection`) on a
//! `ManualRuntime`, over in-memory halves: the client is a pair of futures
//! channels, time moves only with `advance`. No executor, no IO.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::{Future, Stream, StreamExt};
use tbone_dispatch::socket::{Connection, LAST_POSITION};
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::{
    close_code, serve_socket, Authorizer, Channel, ChannelBuilder, Channels, ClientMessage,
    CloseReason, ConnectRequest, Frame, HandlerError, Incoming, Limits, MemoryBackend, Outgoing,
    PositionedEnvelope, ReadError, Refusal, Runtime, SocketHandle, SocketOptions,
};

type Memory = Channel<MemoryBackend, ManualRuntime>;
type Items = mpsc::UnboundedSender<Result<Incoming, ReadError>>;
type Sink = mpsc::UnboundedSender<Outgoing>;

/// A running channel; names are process-wide, so each test has its own.
fn channel(runtime: &ManualRuntime, name: &str) -> Memory {
    let channel = ChannelBuilder::new(format!("driver-tests-{name}"))
        .open(runtime.clone(), MemoryBackend::new)
        .unwrap();
    channel.kickoff().unwrap();
    channel
}

/// The client's stream, counting the messages the driver took from it.
struct Counted {
    inner: mpsc::UnboundedReceiver<Result<Incoming, ReadError>>,
    taken: Arc<AtomicUsize>,
}

impl Stream for Counted {
    type Item = Result<Incoming, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(_)) = polled {
            self.taken.fetch_add(1, Ordering::SeqCst);
        }
        polled
    }
}

/// One served socket, seen from its client.
struct Client {
    runtime: ManualRuntime,
    incoming: Items,
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
    taken: Arc<AtomicUsize>,
    /// Why the connection ended, once it has.
    ended: Arc<Mutex<Option<CloseReason>>>,
}

impl Client {
    /// Serves a socket with `serve` (given the halves) as a task on
    /// `runtime`, and runs it until it waits.
    fn serve<F>(runtime: &ManualRuntime, serve: impl FnOnce(Sink, Counted) -> F) -> Client
    where
        F: Future<Output = CloseReason> + Send + 'static,
    {
        let (sink, outgoing) = mpsc::unbounded();
        let (incoming, stream) = mpsc::unbounded();
        let taken = Arc::new(AtomicUsize::new(0));
        let served = serve(
            sink,
            Counted {
                inner: stream,
                taken: taken.clone(),
            },
        );
        let ended = Arc::new(Mutex::new(None));
        let reason = ended.clone();
        runtime
            .spawn(async move {
                let why = served.await;
                *reason.lock().unwrap() = Some(why);
            })
            .unwrap();
        runtime.run_until_stalled();
        Client {
            runtime: runtime.clone(),
            incoming,
            outgoing,
            taken,
            ended,
        }
    }

    fn send(&self, message: Incoming) {
        self.incoming.unbounded_send(Ok(message)).unwrap();
        self.runtime.run_until_stalled();
    }

    fn text(&self, text: &str) {
        self.send(Incoming::Text(text.into()));
    }

    /// Everything the client received since the last call.
    fn received(&mut self) -> Vec<Outgoing> {
        self.runtime.run_until_stalled();
        let mut out = Vec::new();
        while let Ok(item) = self.outgoing.try_recv() {
            out.push(item);
        }
        out
    }

    /// The text of every frame received since the last call (pings and
    /// the close frame left out).
    fn frames(&mut self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter_map(|item| match item {
                Outgoing::Frame(frame) => Some(frame.as_str().to_string()),
                _ => None,
            })
            .collect()
    }

    fn ended(&self) -> Option<CloseReason> {
        self.runtime.run_until_stalled();
        self.ended.lock().unwrap().clone()
    }

    fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }
}

fn serve(
    runtime: &ManualRuntime,
    channels: impl Into<Channels<ManualRuntime>>,
    options: SocketOptions,
) -> Client {
    let channels = channels.into();
    Client::serve(runtime, move |sink, stream| {
        serve_socket(channels, sink, stream, options)
    })
}

fn event(name: &str, data: impl std::fmt::Display) -> String {
    format!(r#"{{"type":"event","payload":{{"name":"{name}","data":{data}}}}}"#)
}

fn frame(text: &str) -> Outgoing {
    Outgoing::Frame(Frame::from(text.to_string()))
}

fn error_frame(message: &str) -> String {
    format!(r#"{{"type":"error","payload":{{"message":"{message}"}}}}"#)
}

fn publish(runtime: &ManualRuntime, channel: &Memory, event: &str, data: i64) {
    runtime.run(channel.publish(event, &data)).unwrap().unwrap();
    runtime.run_until_stalled();
}

async fn echo(message: ClientMessage, socket: SocketHandle) -> Result<(), HandlerError> {
    match message {
        ClientMessage::Text(text) => socket.send(format!("echo: {text}"))?,
        ClientMessage::Binary(bytes) => socket.send(format!("{} bytes", bytes.len()))?,
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The application's handler.

#[test]
fn an_echoing_handler_replies_in_order_with_the_events() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "echo");
    let mut client = serve(&rt, &ch, SocketOptions::new(["e"]).on_message(echo));
    assert_eq!(ch.subscriber_count("e"), 1);

    client.text("a");
    publish(&rt, &ch, "e", 1);
    client.send(Incoming::Binary(Bytes::from_static(b"\x00\x01\x02")));
    publish(&rt, &ch, "e", 2);
    client.text("b");
    assert_eq!(
        client.frames(),
        [
            "echo: a".to_string(),
            event("e", 1),
            "3 bytes".into(),
            event("e", 2),
            "echo: b".into(),
        ]
    );
    assert_eq!(client.ended(), None, "still serving");

    client.send(Incoming::Close);
    assert_eq!(client.ended(), Some(CloseReason::PeerClosed));
    assert_eq!(
        client.received(),
        [],
        "the peer closed: no close frame back"
    );
    assert_eq!(ch.subscription_count(), 0);
}

#[test]
fn a_handler_error_closes_with_1011_after_its_replies() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "handler-error");
    let failing = |message: ClientMessage, socket: SocketHandle| async move {
        socket.send("working on it")?;
        match message.as_text() {
            Some("fail") => Err(HandlerError::from("the database is down")),
            _ => Ok(()),
        }
    };
    let mut client = serve(&rt, &ch, SocketOptions::new(["e"]).on_message(failing));
    client.text("fine");
    client.text("fail");
    let reason = "the application failed: the database is down";
    assert_eq!(
        client.received(),
        [
            frame("working on it"),
            frame("working on it"),
            Outgoing::Close(close_code::INTERNAL_ERROR, reason.into()),
        ]
    );
    assert_eq!(
        client.ended(),
        Some(CloseReason::Rejected(
            close_code::INTERNAL_ERROR,
            reason.into()
        ))
    );
    assert_eq!(ch.subscription_count(), 0);
}

#[test]
fn a_handler_panic_closes_only_its_connection() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "handler-panic");
    let panicking = |message: ClientMessage, socket: SocketHandle| async move {
        if message.as_text() == Some("panic") {
            panic!("a bug in the application");
        }
        socket.send("ok")?;
        Ok::<(), HandlerError>(())
    };
    let options = SocketOptions::new(["e"]).on_message(panicking);
    let mut doomed = serve(&rt, &ch, options.clone());
    let mut other = serve(&rt, &ch, options.clone());
    assert_eq!(ch.subscriber_count("e"), 2);

    doomed.text("panic");
    assert_eq!(
        doomed.received(),
        [Outgoing::Close(
            close_code::INTERNAL_ERROR,
            "the application failed: its handler panicked".into()
        )]
    );
    assert!(matches!(
        doomed.ended(),
        Some(CloseReason::Rejected(close_code::INTERNAL_ERROR, _))
    ));

    // The other connection, the channel and the runtime carry on.
    assert_eq!(ch.subscriber_count("e"), 1);
    other.text("hello");
    publish(&rt, &ch, "e", 7);
    assert_eq!(other.frames(), ["ok".to_string(), event("e", 7)]);
    let mut late = serve(&rt, &ch, options);
    publish(&rt, &ch, "e", 8);
    assert_eq!(late.frames(), [event("e", 8)]);
    assert_eq!(other.frames(), [event("e", 8)]);

    other.send(Incoming::Close);
    late.send(Incoming::Close);
    // The closed client answers the server's close frame, which ends the
    // closing handshake the server waits for.
    doomed.send(Incoming::Close);
    rt.run_until_stalled();
    assert_eq!(rt.task_count(), 1, "only the channel's consumer is left");
}

/// After its close frame the server reads on until the client's close
/// frame (RFC 6455's closing handshake, so that the TCP connection is not
/// reset under the close frame), within the carrier's close timeout.
#[test]
fn the_server_waits_for_the_clients_close_within_the_close_timeout() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "closing-handshake");
    let options = SocketOptions::new(["e"])
        .control_messages(true)
        .carrier(tbone_dispatch::CarrierConfig::default().close_timeout(Duration::from_secs(1)));
    let mut client = serve(&rt, &ch, options);
    client.text("not a control message");
    assert!(matches!(
        client.received().as_slice(),
        [Outgoing::Close(close_code::POLICY, _)]
    ));
    assert!(client.ended().is_some(), "serve returns at once");
    assert_eq!(
        rt.task_count(),
        2,
        "the consumer, and the closing handshake"
    );
    rt.advance(Duration::from_millis(999));
    assert_eq!(rt.task_count(), 2, "still waiting for the client's close");
    rt.advance(Duration::from_millis(1));
    assert_eq!(rt.task_count(), 1, "given up after the close timeout");
}

/// A message the handler holds, and what lets it go.
type Gate = (String, oneshot::Sender<()>);

/// The handler waits for the test to let each message go.
#[derive(Clone, Default)]
struct Gates {
    waiting: Arc<Mutex<VecDeque<Gate>>>,
}

impl Gates {
    fn handler(&self) -> impl tbone_dispatch::MessageHandler {
        let waiting = self.waiting.clone();
        move |message: ClientMessage, socket: SocketHandle| {
            let (open, gate) = oneshot::channel();
            let text = message.as_text().unwrap_or_default().to_string();
            waiting.lock().unwrap().push_back((text.clone(), open));
            async move {
                let _ = gate.await;
                socket.send(format!("done: {text}"))?;
                Ok::<(), HandlerError>(())
            }
        }
    }

    /// The messages the handler holds, oldest first.
    fn held(&self) -> Vec<String> {
        let waiting = self.waiting.lock().unwrap();
        waiting.iter().map(|(text, _)| text.clone()).collect()
    }

    /// Lets the handler finish message `text`.
    fn open(&self, text: &str) {
        let mut waiting = self.waiting.lock().unwrap();
        let index = waiting.iter().position(|(t, _)| t == text).unwrap();
        let (_, gate) = waiting.remove(index).unwrap();
        gate.send(()).unwrap();
    }
}

#[test]
fn the_in_flight_limit_pauses_reading() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "in-flight");
    let gates = Gates::default();
    let options = SocketOptions::new(["e"])
        .on_message(gates.handler())
        .limits(Limits::default().max_in_flight(2));
    let mut client = serve(&rt, &ch, options);

    for text in ["1", "2", "3", "4"] {
        client.text(text);
    }
    assert_eq!(gates.held(), ["1", "2"], "two in flight");
    assert_eq!(client.taken(), 2, "the third message was not read");
    // Events still flow while the client's messages wait.
    publish(&rt, &ch, "e", 1);
    assert_eq!(client.frames(), [event("e", 1)]);

    gates.open("2");
    rt.run_until_stalled();
    assert_eq!(client.taken(), 3, "one finished: one more read");
    assert_eq!(gates.held(), ["1", "3"]);
    assert_eq!(client.frames(), ["done: 2"]);

    gates.open("1");
    gates.open("3");
    rt.run_until_stalled();
    assert_eq!(client.taken(), 4);
    gates.open("4");
    assert_eq!(client.frames(), ["done: 1", "done: 3", "done: 4"]);
    assert_eq!(client.ended(), None);
}

// ---------------------------------------------------------------------------
// Keep-alive.

#[test]
fn pings_every_interval_and_closes_an_unresponsive_client_with_1001() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "keepalive");
    let interval = Duration::from_secs(30);
    let mut client = serve(&rt, &ch, SocketOptions::new(["e"]).ping_interval(interval));

    rt.advance(interval - Duration::from_secs(1));
    assert_eq!(client.received(), []);
    rt.advance(Duration::from_secs(1));
    assert_eq!(client.received(), [Outgoing::Ping]);
    // The pong (async-tungstenite reports it as a message).
    client.send(Incoming::Alive);
    rt.advance(interval);
    assert_eq!(
        client.received(),
        [Outgoing::Ping],
        "answered: pinged again"
    );
    assert_eq!(client.ended(), None);

    // Silence.
    rt.advance(interval);
    let reason = CloseReason::Rejected(close_code::GOING_AWAY, "no answer to pings".into());
    assert_eq!(
        client.received(),
        [Outgoing::Close(
            close_code::GOING_AWAY,
            "no answer to pings".into()
        )]
    );
    assert_eq!(client.ended(), Some(reason));
    assert_eq!(ch.subscription_count(), 0);
}

/// The in-flight limit stopped reading, the client answered the ping, and
/// the handler finishes just as the next ping is due: the driver handles
/// the finished handler, then the timer, and only then reads the pong. The
/// session closed such a client (1001) before it remembered that it had
/// paused reading.
#[test]
fn a_pong_waiting_behind_a_busy_handler_is_not_silence() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "busy-pong");
    let interval = Duration::from_secs(30);
    let clock = rt.clone();
    let slow = move |_: ClientMessage, _: SocketHandle| {
        let clock = clock.clone();
        async move {
            clock.sleep(2 * interval).await;
            Ok::<(), HandlerError>(())
        }
    };
    let options = SocketOptions::new(["e"])
        .on_message(slow)
        .limits(Limits::default().max_in_flight(1))
        .ping_interval(interval);
    let mut client = serve(&rt, &ch, options);
    client.text("slow request");
    rt.advance(interval);
    assert_eq!(client.received(), [Outgoing::Ping]);
    client.send(Incoming::Alive);
    assert_eq!(client.taken(), 1, "the pong waits behind the handler");

    rt.advance(interval);
    assert_eq!(client.ended(), None, "the client answered the ping");
    assert_eq!(client.received(), [Outgoing::Ping]);
}

// ---------------------------------------------------------------------------
// Who may connect, and to what.

struct ByToken;

impl Authorizer for ByToken {
    type Client = String;

    async fn connect(&self, request: &ConnectRequest) -> Result<String, Refusal> {
        match request.header_value("authorization") {
            Some("Bearer ada") => Ok("ada".into()),
            Some(_) => Err(Refusal::forbidden("unknown token")),
            None => Err(Refusal::unauthorized("log in first")),
        }
    }

    async fn allow(&self, _user: &String, _channel: &str, event: &str) -> bool {
        !event.starts_with("admin_")
    }
}

#[test]
fn an_authorizer_refuses_the_connection_before_the_upgrade() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "authorize-connect");
    let options = SocketOptions::new(["e"]).authorize(ByToken);

    let anonymous = rt
        .run(Connection::open(
            &ch,
            options.clone(),
            ConnectRequest::new("/ws/"),
        ))
        .unwrap()
        .unwrap_err();
    assert_eq!(anonymous, Refusal::unauthorized("log in first"));
    assert_eq!(anonymous.status(), 401);

    let request = ConnectRequest::new("/ws/").header("Authorization", "Bearer eve");
    let stranger = rt
        .run(Connection::open(&ch, options, request))
        .unwrap()
        .unwrap_err();
    assert_eq!(stranger.status(), 403);
    assert_eq!(ch.subscription_count(), 0, "nothing was subscribed");
    rt.run_until_stalled();
    assert_eq!(rt.task_count(), 1, "no carrier was left behind");
}

#[test]
fn an_authorizer_refuses_one_event() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "authorize-allow");
    let whoami = |_: ClientMessage, socket: SocketHandle| async move {
        let user = socket.client::<String>().cloned().unwrap_or_default();
        socket.send(format!("you are {user}"))?;
        Ok::<(), HandlerError>(())
    };
    let options = SocketOptions::new(["e", "admin_audit"])
        .control_messages(true)
        .on_message(whoami)
        .authorize(ByToken);
    let request = ConnectRequest::new("/ws/").header("Authorization", "Bearer ada");
    let connection = rt
        .run(Connection::open(&ch, options, request))
        .unwrap()
        .unwrap();
    assert_eq!(ch.subscriber_count("e"), 1, "subscribed before the upgrade");
    assert_eq!(ch.subscriber_count("admin_audit"), 0, "left out silently");
    assert_eq!(
        connection.request().header_value("authorization"),
        Some("Bearer ada")
    );

    let mut client = Client::serve(&rt, move |sink, stream| connection.serve(sink, stream));
    client.text(r#"{"action":"subscribe","event":"admin_users"}"#);
    client.text(r#"{"action":"subscribe","event":"chat"}"#);
    client.text("who am I?");
    assert_eq!(
        client.frames(),
        [
            error_frame("not allowed to subscribe to `admin_users`"),
            "you are ada".to_string(),
        ]
    );
    assert_eq!(ch.subscriber_count("admin_users"), 0);
    assert_eq!(ch.subscriber_count("chat"), 1);
    publish(&rt, &ch, "admin_audit", 1);
    publish(&rt, &ch, "chat", 2);
    assert_eq!(client.frames(), [event("chat", 2)]);
    assert_eq!(
        client.ended(),
        None,
        "a refused event keeps the socket open"
    );
}

#[test]
fn a_foreign_origin_is_refused_with_403() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "origin");
    let from = |origin: &str| {
        ConnectRequest::new("/ws/")
            .header("Host", "app.example")
            .header("Origin", origin)
    };
    let foreign = rt
        .run(Connection::open(
            &ch,
            SocketOptions::new(["e"]),
            from("https://evil.example"),
        ))
        .unwrap()
        .unwrap_err();
    assert_eq!(foreign.status(), 403);
    assert_eq!(ch.subscription_count(), 0);

    let same = rt.run(Connection::open(
        &ch,
        SocketOptions::new(["e"]),
        from("https://app.example"),
    ));
    assert!(same.unwrap().is_ok(), "a page of this host");
    let listed = rt.run(Connection::open(
        &ch,
        SocketOptions::new(["e"]).allowed_origins(["https://evil.example"]),
        from("https://evil.example"),
    ));
    assert!(listed.unwrap().is_ok(), "an origin the server lists");
}

// ---------------------------------------------------------------------------
// Several channels, and the handle's own subscriptions.

#[test]
fn two_channels_and_a_control_message_naming_the_second() {
    let rt = ManualRuntime::new();
    let pubsub = channel(&rt, "two-pubsub");
    let chat = channel(&rt, "two-chat");
    let options = SocketOptions::new(["resource_create"])
        .events_on(chat.name(), ["presence"])
        .control_messages(true);
    let mut client = serve(&rt, Channels::from(&pubsub).and(&chat), options);
    assert_eq!(pubsub.subscriber_count("resource_create"), 1);
    assert_eq!(chat.subscriber_count("presence"), 1);

    client.text(&format!(
        r#"{{"action":"subscribe","event":"message","channel":"{}"}}"#,
        chat.name()
    ));
    assert_eq!(chat.subscriber_count("message"), 1);
    assert_eq!(pubsub.subscriber_count("message"), 0);
    // Without the channel's name the socket cannot tell which.
    client.text(r#"{"action":"subscribe","event":"message"}"#);
    assert_eq!(
        client.frames(),
        [error_frame(&format!(
            "name the channel: this socket serves {}, {}",
            pubsub.name(),
            chat.name()
        ))]
    );

    publish(&rt, &pubsub, "message", 1);
    publish(&rt, &chat, "message", 2);
    publish(&rt, &pubsub, "resource_create", 3);
    publish(&rt, &chat, "presence", 4);
    assert_eq!(
        client.frames(),
        [
            event("message", 2),
            event("resource_create", 3),
            event("presence", 4)
        ]
    );

    client.text(&format!(
        r#"{{"action":"unsubscribe","event":"message","channel":"{}"}}"#,
        chat.name()
    ));
    assert_eq!(chat.subscriber_count("message"), 0);
    client.send(Incoming::Close);
    assert_eq!(client.ended(), Some(CloseReason::PeerClosed));
    assert_eq!(pubsub.subscription_count() + chat.subscription_count(), 0);
}

#[test]
fn a_handler_subscribes_its_socket_on_a_channel_and_closes_it() {
    let rt = ManualRuntime::new();
    let pubsub = channel(&rt, "handle-pubsub");
    let chat = channel(&rt, "handle-chat");
    let chat_name = chat.name().to_string();
    let rooms = move |message: ClientMessage, socket: SocketHandle| {
        let chat = chat_name.clone();
        async move {
            match message.as_text().unwrap_or_default() {
                "leave" => {
                    socket.send("bye")?;
                    socket.close(4000, "left the room");
                }
                room => {
                    let added = socket.subscribe_on(&chat, room)?;
                    socket.send(format!("joined {room}: {added}"))?;
                }
            }
            Ok::<(), HandlerError>(())
        }
    };
    let options = SocketOptions::new(["e"]).on_message(rooms);
    let mut client = serve(&rt, Channels::from(&pubsub).and(&chat), options);

    client.text("lobby");
    client.text("lobby");
    assert_eq!(chat.subscriber_count("lobby"), 1);
    assert_eq!(pubsub.subscriber_count("lobby"), 0);
    publish(&rt, &chat, "lobby", 1);
    assert_eq!(
        client.frames(),
        [
            "joined lobby: true".to_string(),
            "joined lobby: false".into(),
            event("lobby", 1)
        ]
    );

    client.text("leave");
    assert_eq!(
        client.received(),
        [frame("bye"), Outgoing::Close(4000, "left the room".into())]
    );
    assert_eq!(
        client.ended(),
        Some(CloseReason::Application(4000, "left the room".into()))
    );
    assert_eq!(pubsub.subscription_count() + chat.subscription_count(), 0);
}

/// A message the handler holds when the client leaves is still handled to
/// the end (a request whose write happened still sends its signal); it
/// was dropped at its next await before (found in review).
#[test]
fn a_handler_still_running_when_the_client_leaves_finishes() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "finish-after-close");
    let finished = Arc::new(AtomicUsize::new(0));
    let gates = Gates::default();
    let handler = {
        let (inner, finished) = (Arc::new(gates.handler()), finished.clone());
        move |message: ClientMessage, socket: SocketHandle| {
            let (inner, finished) = (inner.clone(), finished.clone());
            async move {
                let outcome =
                    tbone_dispatch::MessageHandler::handle(&*inner, message, socket).await;
                finished.fetch_add(1, Ordering::SeqCst);
                // Its reply can no longer reach the client: that is fine.
                let _ = outcome;
                Ok::<(), HandlerError>(())
            }
        }
    };
    let client = serve(&rt, &ch, SocketOptions::new(["e"]).on_message(handler));
    client.text("write something");
    assert_eq!(gates.held(), ["write something"]);
    client.send(Incoming::Close);
    assert_eq!(client.ended(), Some(CloseReason::PeerClosed));
    gates.open("write something");
    rt.run_until_stalled();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the handler ran to its end"
    );
    assert_eq!(rt.task_count(), 1, "only the channel's consumer is left");
}

/// A server shutting down lets the handler's messages in flight finish, so
/// their replies reach the client before the 1001 close frame.
#[test]
fn shutting_down_waits_for_replies_in_flight() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "shutdown-replies");
    let gates = Gates::default();
    let (shut_down, shutting_down) = oneshot::channel::<()>();
    let options = SocketOptions::new(["e"])
        .on_message(gates.handler())
        .until(async move {
            let _ = shutting_down.await;
        });
    let mut client = serve(&rt, &ch, options);
    client.text("request");
    shut_down.send(()).unwrap();
    rt.run_until_stalled();
    assert_eq!(client.ended(), None, "waiting for the request in flight");
    gates.open("request");
    assert_eq!(
        client.received(),
        [
            frame("done: request"),
            Outgoing::Close(close_code::GOING_AWAY, "the server is shutting down".into())
        ]
    );
    assert!(client.ended().is_some());
}

/// A code a client would refuse (found in review: 1005 reached the wire)
/// becomes 1011, with a reason that says so.
#[test]
fn a_handler_closing_with_an_invalid_code_closes_with_1011() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "invalid-close-code");
    let closer = |_: ClientMessage, socket: SocketHandle| async move {
        socket.close(1005, "no status");
        Ok::<(), HandlerError>(())
    };
    let mut client = serve(&rt, &ch, SocketOptions::new(["e"]).on_message(closer));
    client.text("close please");
    assert_eq!(
        client.received(),
        [Outgoing::Close(
            close_code::INTERNAL_ERROR,
            "the application closed with the invalid code 1005".into()
        )]
    );
}

/// A connection whose carrier closed before its socket arrived, and whose
/// writer gave up waiting for it, still tells the client why (found in
/// review: the socket was dropped without a close frame).
#[test]
fn a_carrier_closed_before_its_socket_arrived_still_sends_the_close_frame() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "closed-before-attach");
    let options =
        SocketOptions::new(["e"]).carrier(tbone_dispatch::CarrierConfig::default().capacity(1));
    let connection = rt
        .run(Connection::open(&ch, options, ConnectRequest::new("/ws/")))
        .unwrap()
        .unwrap();
    // Two events for a queue of one, before the handshake completed: the
    // carrier is dropped as too slow, and its writer waits for its socket
    // no longer than the close timeout.
    publish(&rt, &ch, "e", 1);
    publish(&rt, &ch, "e", 2);
    assert!(connection.carrier().is_closed());
    rt.advance(Duration::from_secs(1));
    let mut client = Client::serve(&rt, move |sink, stream| connection.serve(sink, stream));
    assert_eq!(
        client.received(),
        [Outgoing::Close(
            close_code::POLICY,
            "too slow: events were not read in time".into()
        )]
    );
}

// ---------------------------------------------------------------------------
// Resuming after a reconnect.

/// A running channel whose frames carry their positions.
fn positioned(runtime: &ManualRuntime, name: &str) -> Memory {
    let channel = ChannelBuilder::new(format!("driver-tests-{name}"))
        .envelope(PositionedEnvelope)
        .open(runtime.clone(), MemoryBackend::new)
        .unwrap();
    channel.kickoff().unwrap();
    channel
}

/// A socket opened with the upgrade request for `target` (a path and
/// query) and served.
fn serve_at(
    runtime: &ManualRuntime,
    channels: impl Into<Channels<ManualRuntime>>,
    options: SocketOptions,
    target: &str,
) -> Client {
    let connection = runtime
        .run(Connection::open(
            channels,
            options,
            ConnectRequest::new(target),
        ))
        .unwrap()
        .unwrap();
    Client::serve(runtime, move |sink, stream| connection.serve(sink, stream))
}

/// The `data` and `position` of positioned event frames.
fn positioned_events(frames: &[String]) -> Vec<(i64, String)> {
    frames
        .iter()
        .map(|frame| {
            let value: serde_json::Value = serde_json::from_str(frame).unwrap();
            assert_eq!(value["type"], "event", "{frame}");
            let data = value["payload"]["data"].as_i64().unwrap();
            (data, value["position"].as_str().unwrap().to_string())
        })
        .collect()
}

fn data(events: &[(i64, String)]) -> Vec<i64> {
    events.iter().map(|(data, _)| *data).collect()
}

/// A client that saw 1 and 2, then left while 3, 4 and 5 were published:
/// returns the position of 2.
fn left_after_two(rt: &ManualRuntime, ch: &Memory) -> String {
    let mut first = serve(rt, ch, SocketOptions::new(["e"]));
    publish(rt, ch, "e", 1);
    publish(rt, ch, "e", 2);
    let seen = positioned_events(&first.frames());
    assert_eq!(data(&seen), [1, 2]);
    first.send(Incoming::Close);
    assert_eq!(first.ended(), Some(CloseReason::PeerClosed));
    for n in 3..=5 {
        publish(rt, ch, "e", n);
    }
    seen[1].1.clone()
}

#[test]
fn a_socket_resumes_after_the_position_in_its_query() {
    let rt = ManualRuntime::new();
    let ch = positioned(&rt, "resume-query");
    let last = left_after_two(&rt, &ch);

    let mut again = serve_at(
        &rt,
        &ch,
        SocketOptions::new(["e"]),
        &format!("/ws/?{LAST_POSITION}={last}"),
    );
    publish(&rt, &ch, "e", 6);
    let resumed = positioned_events(&again.frames());
    assert_eq!(data(&resumed), [3, 4, 5, 6], "the missed events, then live");
    // The positions go on from where the client stood.
    again.send(Incoming::Close);
    let mut later = serve_at(
        &rt,
        &ch,
        SocketOptions::new(["e"]),
        &format!("/ws/?{LAST_POSITION}={}", resumed[1].1),
    );
    assert_eq!(data(&positioned_events(&later.frames())), [5, 6]);
}

#[test]
fn a_resume_message_replays_before_any_live_event() {
    let rt = ManualRuntime::new();
    let ch = positioned(&rt, "resume-message");
    let last = left_after_two(&rt, &ch);
    let options = SocketOptions::new(["e"]).resume_message(true);

    let mut again = serve(&rt, &ch, options);
    assert_eq!(ch.subscriber_count("e"), 0, "held until the first message");
    // Published before the client said where it stands: replayed, in order.
    publish(&rt, &ch, "e", 6);
    assert_eq!(again.frames(), Vec::<String>::new());
    again.text(&format!(r#"{{"action":"resume","position":"{last}"}}"#));
    publish(&rt, &ch, "e", 7);
    assert_eq!(data(&positioned_events(&again.frames())), [3, 4, 5, 6, 7]);
    assert_eq!(again.ended(), None);
}

#[test]
fn a_first_message_that_is_not_a_resume_starts_live_and_reaches_the_handler() {
    let rt = ManualRuntime::new();
    let ch = positioned(&rt, "resume-other-first");
    let options = SocketOptions::new(["e"])
        .resume_message(true)
        .on_message(echo);
    let mut client = serve(&rt, &ch, options);
    publish(&rt, &ch, "e", 1);
    client.text("hello");
    publish(&rt, &ch, "e", 2);
    let frames = client.frames();
    assert_eq!(frames[0], "echo: hello", "{frames:?}");
    assert_eq!(data(&positioned_events(&frames[1..])), [2], "live only");
}

#[test]
fn a_socket_with_a_position_in_its_query_does_not_wait_for_a_resume_message() {
    let rt = ManualRuntime::new();
    let ch = positioned(&rt, "resume-query-and-message");
    let last = left_after_two(&rt, &ch);
    let options = SocketOptions::new(["e"])
        .resume_message(true)
        .control_messages(true);
    let mut again = serve_at(&rt, &ch, options, &format!("/ws/?{LAST_POSITION}={last}"));
    assert_eq!(ch.subscriber_count("e"), 1, "subscribed before the upgrade");
    assert_eq!(data(&positioned_events(&again.frames())), [3, 4, 5]);
    again.text(&format!(r#"{{"action":"resume","position":"{last}"}}"#));
    let frames = again.frames();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(frames[0].contains(r#""type":"error""#), "{frames:?}");
}

#[test]
fn an_unknown_position_gets_the_recovery_failed_frame_then_live_events() {
    let rt = ManualRuntime::new();
    let ch = positioned(&rt, "resume-unknown");
    left_after_two(&rt, &ch);
    for foreign in ["0-1", "not%20a%20position"] {
        let mut client = serve_at(
            &rt,
            &ch,
            SocketOptions::new(["e"]),
            &format!("/ws/?{LAST_POSITION}={foreign}"),
        );
        publish(&rt, &ch, "e", 9);
        let frames = client.frames();
        let failed: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        // A text that is not a position at all is not echoed.
        let sent = if foreign.contains("%20") { "" } else { foreign };
        assert_eq!(
            failed,
            serde_json::json!({"type": "recovery_failed", "position": sent})
        );
        assert_eq!(data(&positioned_events(&frames[1..])), [9]);
        client.send(Incoming::Close);
    }
}

#[test]
fn positions_are_per_channel_on_a_socket_of_two() {
    let rt = ManualRuntime::new();
    let pubsub = positioned(&rt, "resume-two-pubsub");
    let chat = positioned(&rt, "resume-two-chat");
    let options = SocketOptions::new(["e"]).events_on(chat.name(), ["m"]);
    let channels = Channels::from(&pubsub).and(&chat);
    let mut first = serve(&rt, channels.clone(), options.clone());
    publish(&rt, &pubsub, "e", 1);
    publish(&rt, &chat, "m", 10);
    let seen = positioned_events(&first.frames());
    first.send(Incoming::Close);
    publish(&rt, &pubsub, "e", 2);
    publish(&rt, &chat, "m", 11);

    // Only the chat's position given: the chat replays, pubsub starts live.
    let target = format!("/ws/?{LAST_POSITION}.{}={}", chat.name(), seen[1].1);
    let mut chat_only = serve_at(&rt, channels.clone(), options.clone(), &target);
    publish(&rt, &pubsub, "e", 3);
    assert_eq!(data(&positioned_events(&chat_only.frames())), [11, 3]);
    chat_only.send(Incoming::Close);

    // Both: `last_position` is the default (first) channel's.
    let target = format!(
        "/ws/?{LAST_POSITION}={}&{LAST_POSITION}.{}={}",
        seen[0].1,
        chat.name(),
        seen[1].1
    );
    let mut both = serve_at(&rt, channels.clone(), options.clone(), &target);
    let mut replayed = data(&positioned_events(&both.frames()));
    replayed.sort_unstable();
    assert_eq!(replayed, [2, 3, 11]);

    // A channel the socket does not serve: refused before the upgrade.
    let refused = rt
        .run(Connection::open(
            channels,
            options,
            ConnectRequest::new(&format!("/ws/?{LAST_POSITION}.elsewhere=1")),
        ))
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.status(), 400);
}
