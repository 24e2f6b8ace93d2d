//! Full-duplex sockets (issue 10) against real clients over loopback: the
//! client's own messages handed to the application's handler and answered
//! on the socket that carries its events, TBone's request/response
//! multiplexer, several channels on one socket, and authorization with the
//! connection's context (before the upgrade, per event, limits), on each
//! runtime crate's `websocket::accept` and `Accepted::serve`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_tungstenite::tungstenite::Message;
use futures::SinkExt;
use serde_json::{json, Value};
use tbone_dispatch::multiplexer::{Multiplexer, Request, Response, Routes};
use tbone_dispatch::{
    close_code, Authorizer, Channels, ClientMessage, CloseReason, ConnectRequest, HandlerError,
    Limits, OriginPolicy, Refusal, SocketHandle, SocketOptions,
};

use crate::websocket::{
    assert_rejected, connect, connect_with, expect_close, next_text, open_running, publish,
    refused_status, tbone_frame, Client, WsServer,
};
use crate::{eventually, wait, TestRuntime};

// ---------------------------------------------------------------------
// Helpers, shared with the axum tests.

/// Sends one text message, within [`crate::WAIT`].
pub async fn send_text<R: TestRuntime>(client: &mut Client, text: &str) {
    wait::<R, _>(
        &format!("sending {text:?}"),
        client.send(Message::text(text)),
    )
    .await
    .unwrap_or_else(|e| panic!("[{}] sending {text:?}: {e}", R::name()));
}

/// Queues one text message without flushing, within [`crate::WAIT`].
async fn feed_text<R: TestRuntime>(client: &mut Client, text: &str) {
    wait::<R, _>("feeding a message", client.feed(Message::text(text)))
        .await
        .expect("feed");
}

/// Sends `value` as a JSON text message.
pub async fn send_json<R: TestRuntime>(client: &mut Client, value: &Value) {
    send_text::<R>(client, &value.to_string()).await;
}

/// The next text message, parsed as JSON.
pub async fn next_json<R: TestRuntime>(client: &mut Client, what: &str) -> Value {
    let text = next_text::<R>(client, what).await;
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("[{}] {what}: not JSON ({e}): {text}", R::name()))
}

/// The next message, which must be TBone's error frame
/// (`{"type":"error","payload":{"message":..}}`); returns its message.
pub async fn next_error<R: TestRuntime>(client: &mut Client, what: &str) -> String {
    let frame = next_json::<R>(client, what).await;
    assert_eq!(frame["type"], "error", "[{}] {what}: {frame}", R::name());
    frame["payload"]["message"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "[{}] {what}: error frame without a message: {frame}",
                R::name()
            )
        })
        .to_string()
}

/// Sends TBone's request message and waits for its response (the next
/// message, which must answer `key`): returns the status and payload.
pub async fn request<R: TestRuntime>(
    client: &mut Client,
    key: Value,
    method: &str,
    href: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut message = json!({"type": "request", "key": key, "method": method, "href": href});
    if let Some(body) = body {
        message["body"] = body;
    }
    send_json::<R>(client, &message).await;
    let what = format!("the response to {method} {href}");
    response::<R>(client, &key, &what).await
}

/// The next message, which must be a response to `key`: its status and
/// payload.
pub async fn response<R: TestRuntime>(
    client: &mut Client,
    key: &Value,
    what: &str,
) -> (u16, Value) {
    let frame = next_json::<R>(client, what).await;
    assert_eq!(frame["type"], "response", "[{}] {what}: {frame}", R::name());
    assert_eq!(
        &frame["key"],
        key,
        "[{}] {what}: the key of {frame}",
        R::name()
    );
    let status = frame["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or_else(|| {
            panic!(
                "[{}] {what}: a response without a status: {frame}",
                R::name()
            )
        });
    (status, frame["payload"].clone())
}

/// The application's handler of these tests: echoes text as `echo:<text>`
/// and binary as `binary:<its bytes>`; the text `fail` makes it return an
/// error, `panic` makes it panic.
pub async fn echo(message: ClientMessage, socket: SocketHandle) -> Result<(), HandlerError> {
    match message {
        ClientMessage::Text(text) => match text.as_str() {
            "fail" => Err("the handler refuses `fail`".into()),
            "panic" => crash("the handler panics on `panic` (as the test asks)"),
            _ => Ok(socket.send(format!("echo:{text}"))?),
        },
        ClientMessage::Binary(bytes) => Ok(socket.send(format!("binary:{:?}", bytes.to_vec()))?),
    }
}

/// Unwinds as a panic does, without the panic hook: with
/// `RUST_BACKTRACE=1`, the hook would print a backtrace, and symbolizing one
/// from this large test binary held a runtime worker for seconds on a
/// busy machine, stalling other tests' tasks past their timeouts.
fn crash(why: &'static str) -> ! {
    std::panic::resume_unwind(Box::new(why))
}

// ---------------------------------------------------------------------
// The application's messages.

/// Reads what `sent` brings: for each `i` in it, the event `e` published
/// with data `i` (a TBone frame) and the handler's reply to the message
/// `m<i>`, interleaved in any way. Asserts that the events came in publish
/// order and the replies in send order; returns every message in the
/// order received.
async fn events_and_replies<R: TestRuntime>(
    client: &mut Client,
    sent: std::ops::Range<usize>,
) -> Vec<String> {
    let n = 2 * sent.len();
    let (mut events, mut replies, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let text = next_text::<R>(client, &format!("message #{i} of {n}")).await;
        match text.strip_prefix("echo:") {
            Some(reply) => replies.push(reply.to_string()),
            None => events.push(text.clone()),
        }
        all.push(text);
    }
    let want_events: Vec<String> = sent
        .clone()
        .map(|i| tbone_frame("e", &i.to_string()))
        .collect();
    let want_replies: Vec<String> = sent.map(|i| format!("m{i}")).collect();
    assert_eq!(
        events,
        want_events,
        "[{}] events in publish order",
        R::name()
    );
    assert_eq!(
        replies,
        want_replies,
        "[{}] replies in send order",
        R::name()
    );
    all
}

/// A handler's replies reach its client in order with the events the
/// socket receives. Interleaved publishes and client messages: each event
/// is queued for the socket before the next message is sent, so its reply
/// arrives after it (both go through the socket's carrier, in order);
/// events arrive in publish order and replies in send order. Published and
/// sent flat out, each kind still arrives complete and in its own order.
pub async fn handler_replies_in_order_with_events<R: TestRuntime>() {
    const N: usize = 20;
    let channel = open_running::<R>("duplex-echo-order");
    let mut server = R::spawn_ws_server(&channel, SocketOptions::new(["e"]).on_message(echo));
    let (mut client, peer) = connect::<R>(server.addr).await;

    for i in 0..N {
        let queued = channel.stats().queued;
        publish::<R>(&channel, "e", &json!(i)).await;
        eventually::<R>("the event queued for the socket", || {
            channel.stats().queued > queued
        })
        .await;
        send_text::<R>(&mut client, &format!("m{i}")).await;
    }
    let all = events_and_replies::<R>(&mut client, 0..N).await;
    let at = |text: &str| all.iter().position(|t| t == text);
    for i in 0..N {
        assert!(
            at(&tbone_frame("e", &i.to_string())) < at(&format!("echo:m{i}")),
            "[{}] the reply to m{i} came before event {i}, which was queued first: {all:?}",
            R::name()
        );
    }

    // Flat out: publishes and messages interleaved without waiting.
    for i in N..2 * N {
        publish::<R>(&channel, "e", &json!(i)).await;
        feed_text::<R>(&mut client, &format!("m{i}")).await;
    }
    wait::<R, _>("flushing the messages", client.flush())
        .await
        .expect("flush");
    events_and_replies::<R>(&mut client, N..2 * N).await;
    assert!(!server.ended_so_far().contains(&peer));
}

/// A handler that fails (`trigger`: an error, or a panic) closes its own
/// connection with 1011, after the replies already queued; another
/// client of the same server keeps its events and replies.
async fn handler_failure_closes_only_its_connection<R: TestRuntime>(test: &str, trigger: &str) {
    let channel = open_running::<R>(test);
    let mut server = R::spawn_ws_server(&channel, SocketOptions::new(["e"]).on_message(echo));
    let (mut failing, failing_peer) = connect::<R>(server.addr).await;
    let (mut bystander, bystander_peer) = connect::<R>(server.addr).await;
    assert_eq!(channel.subscriber_count("e"), 2);

    send_text::<R>(&mut failing, "before").await;
    assert_eq!(
        next_text::<R>(&mut failing, "the echo").await,
        "echo:before"
    );
    send_text::<R>(&mut failing, trigger).await;
    let why = expect_close::<R>(&mut failing, close_code::INTERNAL_ERROR, trigger).await;
    assert!(
        why.contains("the application failed"),
        "close reason {why:?}"
    );
    let reason = server.reason_for::<R>(failing_peer, trigger).await;
    assert_rejected(&reason, close_code::INTERNAL_ERROR, trigger);
    eventually::<R>("the failed socket to leave", || {
        channel.subscriber_count("e") == 1
    })
    .await;

    publish::<R>(&channel, "e", &json!(1)).await;
    assert_eq!(
        next_text::<R>(&mut bystander, "the event").await,
        tbone_frame("e", "1")
    );
    send_text::<R>(&mut bystander, "after").await;
    assert_eq!(
        next_text::<R>(&mut bystander, "the echo").await,
        "echo:after"
    );
    assert!(!server.ended_so_far().contains(&bystander_peer));
}

/// A handler returning an error closes that connection with 1011; the
/// others are unaffected.
pub async fn handler_error_closes_only_its_connection_with_1011<R: TestRuntime>() {
    handler_failure_closes_only_its_connection::<R>("duplex-handler-error", "fail").await;
}

/// A handler that panics closes only its connection, with 1011; another
/// client keeps receiving events.
pub async fn handler_panic_closes_only_its_connection_with_1011<R: TestRuntime>() {
    handler_failure_closes_only_its_connection::<R>("duplex-handler-panic", "panic").await;
}

/// Binary messages reach the handler with their bytes (empty, every byte
/// value, longer than a small read buffer); text still does too, and the
/// connection stays open.
pub async fn binary_messages_reach_the_handler_with_their_bytes<R: TestRuntime>() {
    let channel = open_running::<R>("duplex-binary");
    let mut server = R::spawn_ws_server(&channel, SocketOptions::new(["e"]).on_message(echo));
    let (mut client, peer) = connect::<R>(server.addr).await;
    let every_byte: Vec<u8> = (0..=255).collect();
    let long: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    for bytes in [vec![], vec![0, 1, 2, 255], every_byte, long] {
        wait::<R, _>(
            "sending binary",
            client.send(Message::binary(bytes.clone())),
        )
        .await
        .expect("send");
        assert_eq!(
            next_text::<R>(&mut client, "the handler's answer").await,
            format!("binary:{bytes:?}"),
            "[{}] {} bytes",
            R::name(),
            bytes.len()
        );
    }
    send_text::<R>(&mut client, "text").await;
    assert_eq!(next_text::<R>(&mut client, "the echo").await, "echo:text");
    assert!(!server.ended_so_far().contains(&peer));
}

// ---------------------------------------------------------------------
// TBone's multiplexer.

/// An entries resource, as the multiplexer's routes: `/api/entries/`
/// (GET with an optional `limit` arg, POST `{"text"}`) and
/// `/api/entries/<id>/` (GET, PATCH `{"text"}`, DELETE); `/api/crash/`
/// panics.
#[derive(Default)]
struct EntryRoutes {
    entries: Mutex<(u64, BTreeMap<u64, String>)>,
}

impl EntryRoutes {
    fn entry(id: u64, text: &str) -> Value {
        json!({"id": id, "text": text})
    }

    fn text_of(request: &Request) -> Option<String> {
        request.body()?.get("text")?.as_str().map(String::from)
    }
}

impl Routes for EntryRoutes {
    async fn route(&self, request: Request, _socket: SocketHandle) -> Response {
        let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, entries) = &mut *guard;
        let path = request.path().to_string();
        if path == "/api/crash/" {
            drop(guard);
            crash("the route crashes (as the test asks)");
        }
        let Some(rest) = path.strip_prefix("/api/entries/") else {
            return Response::not_found();
        };
        if rest.is_empty() {
            return match request.method() {
                "GET" => {
                    let limit = request
                        .args()
                        .get("limit")
                        .and_then(Value::as_u64)
                        .map_or(usize::MAX, |l| l as usize);
                    let list: Vec<Value> = entries
                        .iter()
                        .take(limit)
                        .map(|(id, text)| Self::entry(*id, text))
                        .collect();
                    Response::ok(Value::from(list))
                }
                "POST" => match Self::text_of(&request) {
                    Some(text) => {
                        *next += 1;
                        entries.insert(*next, text.clone());
                        Response::new(201, Self::entry(*next, &text))
                    }
                    None => Response::error(400, "an entry needs a text"),
                },
                _ => Response::error(405, "method not allowed"),
            };
        }
        let Some(id) = rest.strip_suffix('/').and_then(|id| id.parse::<u64>().ok()) else {
            return Response::not_found();
        };
        match (request.method(), entries.get(&id).cloned()) {
            (_, None) => Response::not_found(),
            ("GET", Some(text)) => Response::ok(Self::entry(id, &text)),
            ("PATCH", Some(_)) => match Self::text_of(&request) {
                Some(text) => {
                    entries.insert(id, text.clone());
                    Response::ok(Self::entry(id, &text))
                }
                None => Response::error(400, "an entry needs a text"),
            },
            ("DELETE", Some(_)) => {
                entries.remove(&id);
                Response::new(204, Value::Null)
            }
            _ => Response::error(405, "method not allowed"),
        }
    }
}

/// The multiplexer answers TBone's requests over the socket: GET (with
/// args), POST, PATCH, DELETE on an entries resource; 404 for an unknown
/// route, 400 for a malformed request (not JSON, no key, a bad method),
/// 500 for a route that panics; the socket stays open after each, and the
/// text `close` closes it with 1000.
pub async fn multiplexer_answers_requests_over_the_socket<R: TestRuntime>() {
    let channel = open_running::<R>("duplex-multiplexer");
    let options = SocketOptions::new(["e"]).on_message(Multiplexer::new(EntryRoutes::default()));
    let mut server = R::spawn_ws_server(&channel, options);
    let (mut client, peer) = connect::<R>(server.addr).await;
    let c = &mut client;
    let list = "/api/entries/";

    assert_eq!(
        request::<R>(c, json!(1), "GET", list, None).await,
        (200, json!([]))
    );
    let first = Some(json!({"text": "first"}));
    assert_eq!(
        request::<R>(c, json!("k2"), "POST", list, first).await,
        (201, json!({"id": 1, "text": "first"}))
    );
    let second = Some(json!({"text": "second"}));
    assert_eq!(
        request::<R>(c, json!({"n": 3}), "post", list, second).await,
        (201, json!({"id": 2, "text": "second"}))
    );
    assert_eq!(
        request::<R>(c, json!(4), "GET", list, None).await,
        (
            200,
            json!([{"id": 1, "text": "first"}, {"id": 2, "text": "second"}])
        )
    );
    // TBone's args reach the route.
    send_json::<R>(
        c,
        &json!({"type": "request", "key": 5, "method": "GET", "href": list, "args": {"limit": 1}}),
    )
    .await;
    assert_eq!(
        response::<R>(c, &json!(5), "GET with args").await,
        (200, json!([{"id": 1, "text": "first"}]))
    );
    let edit = Some(json!({"text": "edited"}));
    assert_eq!(
        request::<R>(c, json!(6), "PATCH", "/api/entries/1/", edit).await,
        (200, json!({"id": 1, "text": "edited"}))
    );
    assert_eq!(
        request::<R>(c, json!(7), "DELETE", "/api/entries/2/", None).await,
        (204, Value::Null)
    );
    assert_eq!(
        request::<R>(c, json!(8), "GET", list, None).await,
        (200, json!([{"id": 1, "text": "edited"}]))
    );

    // Unknown routes: 404.
    let (status, _) = request::<R>(c, json!(9), "GET", "/api/nothing/", None).await;
    assert_eq!(status, 404);
    let gone = Some(json!({"text": "x"}));
    let (status, _) = request::<R>(c, json!(10), "PATCH", "/api/entries/2/", gone).await;
    assert_eq!(status, 404, "a deleted entry");

    // Malformed requests: 400, with the key when there is one.
    send_text::<R>(c, "not json").await;
    let (status, _) = response::<R>(c, &Value::Null, "a text that is not JSON").await;
    assert_eq!(status, 400);
    send_json::<R>(
        c,
        &json!({"type": "request", "method": "GET", "href": list}),
    )
    .await;
    let (status, _) = response::<R>(c, &Value::Null, "a request without a key").await;
    assert_eq!(status, 400);
    send_json::<R>(
        c,
        &json!({"type": "request", "key": 11, "method": "BREW", "href": list}),
    )
    .await;
    let (status, _) = response::<R>(c, &json!(11), "a request with a bad method").await;
    assert_eq!(status, 400);

    // A route that panics: 500.
    let (status, _) = request::<R>(c, json!(12), "GET", "/api/crash/", None).await;
    assert_eq!(status, 500);

    // Still open and answering.
    assert_eq!(
        request::<R>(c, json!(13), "GET", "/api/entries/1/", None).await,
        (200, json!({"id": 1, "text": "edited"}))
    );
    assert!(!server.ended_so_far().contains(&peer));

    send_text::<R>(c, "close").await;
    expect_close::<R>(c, close_code::NORMAL, "the client's `close`").await;
    let reason = server.reason_for::<R>(peer, "the closed socket").await;
    assert!(
        matches!(reason, CloseReason::Application(code, _) if code == close_code::NORMAL),
        "closed with {reason:?}"
    );
}

// ---------------------------------------------------------------------
// Several channels on one socket.

/// One socket served on two channels receives the events of both; control
/// messages name the channel they mean; one that names none (two are
/// served) or an unknown one gets an error frame and the socket stays.
pub async fn two_channels_on_one_socket<R: TestRuntime>() {
    let a = open_running::<R>("duplex-two-a");
    let b = open_running::<R>("duplex-two-b");
    let options = SocketOptions::new(["x"])
        .events_on(b.name(), ["y"])
        .control_messages(true);
    let mut server = R::spawn_ws_server(Channels::from(&a).and(&b), options);
    let (mut client, peer) = connect::<R>(server.addr).await;
    assert_eq!(
        (a.subscriber_count("x"), b.subscriber_count("y")),
        (1, 1),
        "[{}] subscribed to x of a and y of b",
        R::name()
    );
    assert_eq!((a.subscriber_count("y"), b.subscriber_count("x")), (0, 0));

    publish::<R>(&a, "x", &json!(1)).await;
    assert_eq!(
        next_text::<R>(&mut client, "x of a").await,
        tbone_frame("x", "1")
    );
    publish::<R>(&b, "y", &json!(2)).await;
    assert_eq!(
        next_text::<R>(&mut client, "y of b").await,
        tbone_frame("y", "2")
    );

    // Control messages naming each channel.
    let subscribe = json!({"action": "subscribe", "event": "z", "channel": b.name()});
    send_json::<R>(&mut client, &subscribe).await;
    eventually::<R>("z of b subscribed", || b.subscriber_count("z") == 1).await;
    assert_eq!(a.subscriber_count("z"), 0);
    publish::<R>(&b, "z", &json!(3)).await;
    assert_eq!(
        next_text::<R>(&mut client, "z of b").await,
        tbone_frame("z", "3")
    );
    let subscribe = json!({"action": "subscribe", "event": "z", "channel": a.name()});
    send_json::<R>(&mut client, &subscribe).await;
    eventually::<R>("z of a subscribed", || a.subscriber_count("z") == 1).await;
    publish::<R>(&a, "z", &json!(4)).await;
    assert_eq!(
        next_text::<R>(&mut client, "z of a").await,
        tbone_frame("z", "4")
    );

    // No channel named, with two served: an error frame.
    send_json::<R>(&mut client, &json!({"action": "subscribe", "event": "w"})).await;
    let error = next_error::<R>(&mut client, "the error for a missing channel").await;
    assert!(
        error.contains("name the channel") && error.contains(a.name()) && error.contains(b.name()),
        "error message {error:?}"
    );
    // An unknown channel: an error frame.
    let unknown = json!({"action": "subscribe", "event": "w", "channel": "nope"});
    send_json::<R>(&mut client, &unknown).await;
    let error = next_error::<R>(&mut client, "the error for an unknown channel").await;
    assert!(
        error.contains("no channel `nope`"),
        "error message {error:?}"
    );
    assert_eq!((a.subscriber_count("w"), b.subscriber_count("w")), (0, 0));

    // Unsubscribing names the channel too.
    let unsubscribe = json!({"action": "unsubscribe", "event": "y", "channel": b.name()});
    send_json::<R>(&mut client, &unsubscribe).await;
    eventually::<R>("y of b unsubscribed", || b.subscriber_count("y") == 0).await;
    publish::<R>(&b, "y", &json!(5)).await;
    publish::<R>(&a, "x", &json!(6)).await;
    assert_eq!(
        next_text::<R>(&mut client, "x of a, not y of b").await,
        tbone_frame("x", "6")
    );
    assert_eq!(a.subscriber_count("x"), 1);
    assert!(!server.ended_so_far().contains(&peer));
}

// ---------------------------------------------------------------------
// Authorization and limits.

/// Who a connection is, as [`BySession`] decided.
#[derive(Debug)]
pub struct User {
    /// Whether the client may receive `admin_*` events.
    pub admin: bool,
}

/// Sessions by cookie (`session=<token>`) or header
/// (`Authorization: Bearer <token>`): none is 401, an unknown one 403;
/// `admin_*` events are for admins only.
pub struct BySession;

impl Authorizer for BySession {
    type Client = User;

    async fn connect(&self, request: &ConnectRequest) -> Result<User, Refusal> {
        let token = request.cookie("session").or_else(|| {
            request
                .header_value("authorization")
                .and_then(|value| value.strip_prefix("Bearer "))
        });
        match token {
            None => Err(Refusal::unauthorized("log in first")),
            Some("user-token") => Ok(User { admin: false }),
            Some("admin-token") => Ok(User { admin: true }),
            Some(_) => Err(Refusal::forbidden("unknown session")),
        }
    }

    async fn allow(&self, user: &User, _channel: &str, event: &str) -> bool {
        user.admin || !event.starts_with("admin_")
    }
}

/// Asserts that a client with `headers` gets HTTP `status` before any
/// upgrade, that the server reports that refusal, and that nothing was
/// subscribed for it.
async fn assert_refused<R: TestRuntime>(
    server: &mut WsServer,
    headers: &[(&str, &str)],
    status: u16,
    what: &str,
) {
    let (got, peer) = refused_status::<R>(server.addr, headers).await;
    assert_eq!(got, status, "[{}] the HTTP status for {what}", R::name());
    let refusal = server.refusal_for::<R>(peer, what).await;
    assert_eq!(
        refusal.status(),
        status,
        "[{}] {what}: {refusal:?}",
        R::name()
    );
}

/// An authorizer that needs a cookie or a header refuses a client without
/// it with HTTP 401, and one with an unknown session with 403, before the
/// upgrade (the client's handshake fails with that status and nothing is
/// subscribed); a client with it is served.
pub async fn authorizer_refuses_before_the_upgrade<R: TestRuntime>() {
    let channel = open_running::<R>("duplex-auth-connect");
    let options = SocketOptions::new(["e"]).authorize(BySession);
    let mut server = R::spawn_ws_server(&channel, options);

    assert_refused::<R>(&mut server, &[], 401, "no credentials").await;
    let wrong = [("Cookie", "session=stolen")];
    assert_refused::<R>(&mut server, &wrong, 403, "an unknown session").await;
    let not_bearer = [("Authorization", "Basic dXNlcjpwdw==")];
    assert_refused::<R>(&mut server, &not_bearer, 401, "another scheme").await;
    assert_eq!(
        channel.carrier_count(),
        0,
        "refused clients are not subscribed"
    );

    let (mut by_cookie, _) =
        connect_with::<R>(server.addr, &[("Cookie", "theme=dark; session=user-token")]).await;
    let (mut by_header, _) =
        connect_with::<R>(server.addr, &[("Authorization", "Bearer user-token")]).await;
    assert_eq!(channel.subscriber_count("e"), 2);
    publish::<R>(&channel, "e", &json!(1)).await;
    for client in [&mut by_cookie, &mut by_header] {
        assert_eq!(next_text::<R>(client, "e").await, tbone_frame("e", "1"));
    }
}

/// The origin policy judges the `Origin` header before the upgrade: by
/// default a page of another host is refused with 403 (the page of this
/// host, and a client without `Origin`, are served); with
/// `allowed_origins`, only the listed origins are. The origin is checked
/// before the authorizer: a foreign page with valid credentials is refused.
pub async fn foreign_origin_is_refused_with_403<R: TestRuntime>() {
    let channel = open_running::<R>("duplex-origin");
    let mut server = R::spawn_ws_server(&channel, SocketOptions::new(["e"]).authorize(BySession));
    let session = ("Cookie", "session=user-token");
    let foreign = [("Origin", "https://evil.example"), session];
    assert_refused::<R>(&mut server, &foreign, 403, "a foreign origin").await;
    let own = format!("http://{}", server.addr);
    let (_same_host, _) =
        connect_with::<R>(server.addr, &[("Origin", own.as_str()), session]).await;
    let (_no_origin, _) = connect_with::<R>(server.addr, &[session]).await;
    assert_eq!(channel.subscriber_count("e"), 2);

    let options = SocketOptions::new(["e"]).allowed_origins(["https://app.example"]);
    assert_eq!(
        options.origin_policy(),
        &OriginPolicy::only(["https://app.example"])
    );
    let mut listed = R::spawn_ws_server(&channel, options);
    let (_app, _) = connect_with::<R>(listed.addr, &[("Origin", "https://app.example")]).await;
    let own = format!("http://{}", listed.addr);
    assert_refused::<R>(
        &mut listed,
        &[("Origin", own.as_str())],
        403,
        "an unlisted origin",
    )
    .await;
    assert_eq!(channel.subscriber_count("e"), 3);
}

/// The authorizer decides per event, knowing the client: an event of the
/// server's list it refuses is left out (not subscribed), a control
/// message asking for one gets an error frame; an admin gets both.
pub async fn authorizer_decides_per_event_and_client<R: TestRuntime>() {
    let channel = open_running::<R>("duplex-auth-events");
    let options = SocketOptions::new(["e", "admin_audit"])
        .control_messages(true)
        .authorize(BySession);
    let server = R::spawn_ws_server(&channel, options);
    let (mut user, _) = connect_with::<R>(server.addr, &[("Cookie", "session=user-token")]).await;
    assert_eq!(
        (
            channel.subscriber_count("e"),
            channel.subscriber_count("admin_audit")
        ),
        (1, 0),
        "[{}] a user is not subscribed to admin_audit",
        R::name()
    );
    let (mut admin, _) = connect_with::<R>(server.addr, &[("Cookie", "session=admin-token")]).await;
    assert_eq!(
        (
            channel.subscriber_count("e"),
            channel.subscriber_count("admin_audit")
        ),
        (2, 1)
    );

    let ask = json!({"action": "subscribe", "event": "admin_secrets"});
    send_json::<R>(&mut user, &ask).await;
    assert_eq!(
        next_error::<R>(&mut user, "the refusal").await,
        "not allowed to subscribe to `admin_secrets`"
    );
    send_json::<R>(&mut admin, &ask).await;
    eventually::<R>("the admin subscribed to admin_secrets", || {
        channel.subscriber_count("admin_secrets") == 1
    })
    .await;

    publish::<R>(&channel, "admin_audit", &json!(1)).await;
    publish::<R>(&channel, "admin_secrets", &json!(2)).await;
    publish::<R>(&channel, "e", &json!(3)).await;
    // One channel delivers in publish order: had the user been sent the
    // admin events, they would come first.
    assert_eq!(next_text::<R>(&mut user, "e").await, tbone_frame("e", "3"));
    for (event, data) in [("admin_audit", "1"), ("admin_secrets", "2"), ("e", "3")] {
        assert_eq!(
            next_text::<R>(&mut admin, event).await,
            tbone_frame(event, data)
        );
    }
}

/// Over `Limits::max_subscriptions` (subscriptions made by the client; the
/// server's own events and a repeated subscription do not count), the
/// connection is closed with 1008.
pub async fn subscription_limit_closes_with_1008<R: TestRuntime>() {
    let channel = open_running::<R>("duplex-subscription-limit");
    let options = SocketOptions::new(["y"])
        .control_messages(true)
        .limits(Limits::default().max_subscriptions(2));
    let mut server = R::spawn_ws_server(&channel, options);
    let (mut client, peer) = connect::<R>(server.addr).await;
    let subscribe = |event: &str| json!({"action": "subscribe", "event": event});
    for event in ["a", "b", "a"] {
        send_json::<R>(&mut client, &subscribe(event)).await;
    }
    let unsubscribe = json!({"action": "unsubscribe", "event": "b"});
    send_json::<R>(&mut client, &unsubscribe).await;
    send_json::<R>(&mut client, &subscribe("c")).await;
    eventually::<R>("a and c subscribed, b not", || {
        channel.subscriber_count("a") == 1
            && channel.subscriber_count("b") == 0
            && channel.subscriber_count("c") == 1
    })
    .await;
    assert!(!server.ended_so_far().contains(&peer));

    send_json::<R>(&mut client, &subscribe("d")).await;
    let why = expect_close::<R>(&mut client, close_code::POLICY, "a third subscription").await;
    assert!(
        why.contains("too many subscriptions"),
        "close reason {why:?}"
    );
    let reason = server.reason_for::<R>(peer, "the third subscription").await;
    assert_rejected(&reason, close_code::POLICY, "over the subscription limit");
    eventually::<R>("the socket to leave", || channel.subscription_count() == 0).await;
    assert_eq!(channel.subscriber_count("d"), 0);
}

/// Over `Limits::max_messages_per_second` (a token bucket: a burst of that
/// many, then that many per second), the connection is closed with 1008;
/// at the limit it is not.
pub async fn message_rate_limit_closes_with_1008<R: TestRuntime>() {
    const LIMIT: u32 = 5;
    let channel = open_running::<R>("duplex-rate-limit");
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let options = SocketOptions::new(["y"])
        .on_message(move |_message: ClientMessage, _socket: SocketHandle| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, HandlerError>(()) }
        })
        .limits(Limits::default().max_messages_per_second(Some(LIMIT)));
    let mut server = R::spawn_ws_server(&channel, options);
    let (mut client, peer) = connect::<R>(server.addr).await;

    // At the limit: a burst of that many is allowed.
    for i in 0..LIMIT {
        send_text::<R>(&mut client, &format!("m{i}")).await;
    }
    eventually::<R>("the messages handled", || {
        handled.load(Ordering::SeqCst) == LIMIT as usize
    })
    .await;
    assert!(!server.ended_so_far().contains(&peer));

    // Four times the limit in one write: over any T seconds at most
    // LIMIT + LIMIT·T get through, so this is over unless the server took
    // more than two seconds to read them.
    for i in 0..4 * LIMIT {
        feed_text::<R>(&mut client, &format!("n{i}")).await;
    }
    wait::<R, _>("flushing", client.flush())
        .await
        .expect("flush");
    let why = expect_close::<R>(&mut client, close_code::POLICY, "a flood of messages").await;
    assert!(why.contains("too many messages"), "close reason {why:?}");
    let reason = server.reason_for::<R>(peer, "the flood").await;
    assert_rejected(&reason, close_code::POLICY, "over the rate limit");
    eventually::<R>("the socket to leave", || channel.subscription_count() == 0).await;
}

/// An authorizer that lets everyone in and takes its time (on runtime
/// `R`'s timer) over each event, as a permission check in a database
/// would.
struct SlowAllow<R>(R);

impl<R: TestRuntime> Authorizer for SlowAllow<R> {
    type Client = ();

    async fn connect(&self, _request: &ConnectRequest) -> Result<(), Refusal> {
        Ok(())
    }

    async fn allow(&self, _client: &(), _channel: &str, _event: &str) -> bool {
        self.0.sleep(std::time::Duration::from_millis(20)).await;
        true
    }
}

/// A served socket is subscribed before its handshake response goes out,
/// even when authorizing its events takes a while: an event published as
/// soon as the client's handshake returns reaches it (no waiting for the
/// subscription), connection after connection.
pub async fn subscribed_before_the_handshake_response<R: TestRuntime>() {
    const CONNECTIONS: usize = 10;
    let channel = open_running::<R>("duplex-subscribed-first");
    let options = SocketOptions::new(["e"]).authorize(SlowAllow(R::default()));
    let server = R::spawn_ws_server(&channel, options);
    let mut clients: Vec<(Client, SocketAddr)> = Vec::new();
    for i in 0..CONNECTIONS {
        let (mut client, peer) = connect::<R>(server.addr).await;
        assert_eq!(
            channel.subscriber_count("e"),
            i + 1,
            "[{}] subscribed when the handshake returned",
            R::name()
        );
        publish::<R>(&channel, "e", &json!(i)).await;
        assert_eq!(
            next_text::<R>(&mut client, &format!("event {i}")).await,
            tbone_frame("e", &i.to_string())
        );
        clients.push((client, peer));
    }
    // The earlier clients got every later event too, in order.
    for (n, (client, _)) in clients.iter_mut().enumerate() {
        for i in n + 1..CONNECTIONS {
            assert_eq!(
                next_text::<R>(client, &format!("event {i} on client {n}")).await,
                tbone_frame("e", &i.to_string())
            );
        }
    }
}

/// Issue 10, item 8: a handler that publishes with
/// `Channel::publish_delivered` and then replies reaches its client after
/// the client's own copy of the event, every time (with `publish`, which
/// returns once the backend has the event, the reply could come first);
/// `publish_delivered` also says how many carriers took it.
pub async fn a_reply_after_publish_delivered_follows_the_event<R: TestRuntime>() {
    const N: usize = 20;
    let channel = open_running::<R>("duplex-reply-after-event");
    let announcer = {
        let channel = channel.clone();
        move |message: ClientMessage, socket: SocketHandle| {
            let channel = channel.clone();
            async move {
                let text = message.as_text().unwrap_or_default().to_string();
                let delivered = channel.publish_delivered("said", &text).await?;
                socket.send(format!("done:{text}:{}", delivered.carriers))?;
                Ok::<(), HandlerError>(())
            }
        }
    };
    let options = SocketOptions::new(["said"]).on_message(announcer);
    let server = R::spawn_ws_server(&channel, options);
    let (mut client, _) = connect::<R>(server.addr).await;
    let (mut other, _) = connect::<R>(server.addr).await;
    eventually::<R>("both sockets subscribed", || {
        channel.subscriber_count("said") == 2
    })
    .await;
    for i in 0..N {
        let text = format!("m{i}");
        send_text::<R>(&mut client, &text).await;
        let first = next_text::<R>(&mut client, &format!("the first answer to {text}")).await;
        assert_eq!(
            first,
            tbone_frame("said", &format!("\"{text}\"")),
            "[{}] the event comes before the reply",
            R::name()
        );
        let reply = next_text::<R>(&mut client, &format!("the reply to {text}")).await;
        assert_eq!(
            reply,
            format!("done:{text}:2"),
            "[{}] two carriers took it",
            R::name()
        );
        let seen = next_text::<R>(&mut other, &format!("{text} on the other socket")).await;
        assert_eq!(seen, tbone_frame("said", &format!("\"{text}\"")));
    }
}
