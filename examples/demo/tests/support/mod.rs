//! Shared test helpers: unique names, in-process servers, a tiny HTTP/1.1
//! client, websocket clients and bounded waits.

#![allow(dead_code)]
// each test file uses a different subset
// Test helpers: a failed expectation here is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_tungstenite::tokio::{connect_async, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tbone_dispatch_demo::{serve, AppState, MemoryState};
use tbone_dispatch_tokio::dispatch::Channel;
use tbone_dispatch_tokio::{Backend, Tokio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// Waits that involve MongoDB (SecantusDB is slow).
pub const MONGO_WAIT: Duration = Duration::from_secs(30);

/// A name no other test in this process (or a recent run) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The MongoDB server to test against. Without one the test fails: it
/// never skips.
pub fn mongodb_uri() -> String {
    match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => uri,
        _ => panic!(
            "MONGODB_URI is not set: run scripts/test (it starts a MongoDB-compatible \
             test server) or set MONGODB_URI=mongodb://HOST:PORT"
        ),
    }
}

/// The `_id` of an entry returned by the API.
pub fn id(entry: &Value) -> String {
    entry["_id"].as_str().expect("an _id").to_string()
}

/// An in-memory state on a channel of its own.
pub fn memory_state() -> MemoryState {
    MemoryState::memory(&unique("demo-test")).expect("memory state")
}

// ---- requests through the router (no network) -----------------------------

/// A response, with its body as JSON (`Value::Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts this is a JSON error with `status` and returns its message.
    pub fn error(&self, status: StatusCode) -> &str {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..]),
            "errors are JSON: {self:?}"
        );
        self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {self:?}"))
    }
}

/// Sends `method path` with `body` (as `application/json` when given) to
/// the router.
pub async fn call(app: &Router, method: Method, path: &str, body: Option<&str>) -> Reply {
    let content_type = body.map(|_| "application/json");
    call_with(app, method, path, content_type, body).await
}

/// Like [`call`], with an explicit content type.
pub async fn call_with(
    app: &Router,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Body::from(body.unwrap_or("").to_string()))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Reply {
        status,
        headers,
        body,
    }
}

// ---- a server on a loopback port ------------------------------------------

/// A demo server running in this process on 127.0.0.1:0.
pub struct Running<B: Backend> {
    pub addr: SocketAddr,
    pub state: AppState<B>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Serves `state` on a fresh loopback port.
pub async fn start<B: Backend>(state: AppState<B>) -> Running<B> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        state,
        stop: Some(stop),
        task,
    }
}

impl<B: Backend> Running<B> {
    /// Shuts the server down and waits (bounded) until it has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task does not panic");
        served.expect("the server ends without error");
        assert!(self.state.channel().is_stopped());
    }
}

/// An HTTP/1.1 response read off the wire.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A minimal HTTP/1.1 client: one request per connection
/// (`Connection: close`), JSON bodies, reads to the end.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> HttpReply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8(raw).expect("UTF-8 response")
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the HTTP exchange finishes in time");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_string(),
    }
}

// ---- websockets ------------------------------------------------------------

/// A websocket client connected to the demo's `/ws/`.
pub type Socket = WebSocketStream<ConnectStream>;

/// Connects a websocket client to `addr`'s `/ws/`.
pub async fn connect(addr: SocketAddr) -> Socket {
    let (socket, _response) = tokio::time::timeout(WAIT, connect_async(format!("ws://{addr}/ws/")))
        .await
        .expect("the websocket connects in time")
        .expect("the websocket connects");
    socket
}

/// Waits (bounded) until `count` carriers are subscribed to every resource
/// event of `channel`: the server subscribes a socket just after the
/// handshake, so a test writes only once this holds.
pub async fn subscribed<B: Backend>(channel: &Channel<B, Tokio>, count: usize) {
    let all = || {
        ["resource_create", "resource_update", "resource_delete"]
            .iter()
            .all(|event| channel.subscriber_count(event) == count)
    };
    tokio::time::timeout(WAIT, async {
        while !all() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "expected {count} subscribers per event, have {}",
            channel.subscriber_count("resource_create")
        )
    });
}

/// The next text frame about entry `id`, within `wait`, without its
/// position ([`without_position`]). Frames about other entries are
/// skipped: model signals are process-wide, so other tests' writes reach
/// this test's channel too.
pub async fn frame_for(socket: &mut Socket, id: &str, wait: Duration) -> String {
    let read = async {
        loop {
            let message = socket
                .next()
                .await
                .expect("the socket stays open")
                .expect("a websocket message");
            let Message::Text(text) = message else {
                continue;
            };
            let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
            if frame["payload"]["data"]["_id"] == id {
                return without_position(&text);
            }
        }
    };
    tokio::time::timeout(wait, read)
        .await
        .unwrap_or_else(|_| panic!("no frame about {id} within {wait:?}"))
}

/// A demo event frame (`PositionedEnvelope`'s) as TBone's: its
/// `"position"`, which must be there, taken out.
pub fn without_position(frame: &str) -> String {
    let at = frame
        .rfind(r#","position":""#)
        .unwrap_or_else(|| panic!("an event frame without its position: {frame}"));
    assert!(
        frame.ends_with("\"}") && frame.len() > at + r#","position":""#.len() + 2,
        "the position ends the frame: {frame}"
    );
    format!("{}}}", &frame[..at])
}

/// TBone's frame for event `name` about entry `id`.
pub fn expected_frame(name: &str, id: &str, author: &str, text: &str) -> String {
    format!(
        r#"{{"type":"event","payload":{{"name":"{name}","data":{{"_id":"{id}","author":"{author}","text":"{text}"}}}}}}"#
    )
}

// ---- TBone's requests over the socket --------------------------------------

/// Connects to `addr`'s `/ws/` with `origin` as the `Origin` header (as a
/// browser sends it), or returns the handshake's error (a refusal is
/// `Error::Http` with the server's status and body).
pub async fn connect_from(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<Socket, async_tungstenite::tungstenite::Error> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    use async_tungstenite::tungstenite::http::HeaderValue;
    let mut request = format!("ws://{addr}/ws/")
        .into_client_request()
        .expect("a websocket request");
    if let Some(origin) = origin {
        let origin = HeaderValue::from_str(origin).expect("an origin header");
        request.headers_mut().insert("origin", origin);
    }
    tokio::time::timeout(WAIT, connect_async(request))
        .await
        .expect("the websocket handshake finishes in time")
        .map(|(socket, _response)| socket)
}

/// A websocket client of the demo that speaks TBone's request/response
/// protocol: what it reads while looking for one frame (responses, events)
/// is kept for later, so no frame is lost to the order of the waits.
pub struct Client {
    pub socket: Socket,
    backlog: Vec<(Value, String)>,
}

impl Client {
    /// Connects to `addr`'s `/ws/`.
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::from(connect(addr).await)
    }

    /// Sends one text message as is.
    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::text(text))
            .await
            .expect("the socket takes the message");
    }

    /// Sends one binary message.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.socket
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("the socket takes the message");
    }

    /// Sends TBone's request message (`body` left out when `None`).
    pub async fn send_request(
        &mut self,
        key: Value,
        method: &str,
        href: &str,
        body: Option<Value>,
    ) {
        let mut message =
            serde_json::json!({"type": "request", "key": key, "method": method, "href": href});
        if let Some(body) = body {
            message["body"] = body;
        }
        self.send_text(&message.to_string()).await;
    }

    /// Sends a request and returns its response frame, as JSON.
    pub async fn request(
        &mut self,
        key: Value,
        method: &str,
        href: &str,
        body: Option<Value>,
    ) -> Value {
        self.send_request(key.clone(), method, href, body).await;
        let (frame, _) = self.response_for(&key).await;
        frame
    }

    /// The response to the request with `key`, as JSON and as received.
    pub async fn response_for(&mut self, key: &Value) -> (Value, String) {
        self.first(|frame| frame["type"] == "response" && frame["key"] == *key)
            .await
    }

    /// The next response, whatever its key: nothing answered in between.
    pub async fn next_response(&mut self) -> Value {
        self.first(|frame| frame["type"] == "response").await.0
    }

    /// The next event about entry `id`, as received but without its
    /// position ([`without_position`]; events about other entries may come
    /// from other tests: model signals are process-wide).
    pub async fn event_for(&mut self, id: &str) -> String {
        let (_, text) = self
            .first(|frame| frame["type"] == "event" && frame["payload"]["data"]["_id"] == id)
            .await;
        without_position(&text)
    }

    /// The first frame (kept or read within [`WAIT`]) that `wanted` accepts;
    /// fails if the socket closes or errs.
    async fn first(&mut self, wanted: impl Fn(&Value) -> bool) -> (Value, String) {
        if let Some(at) = self.backlog.iter().position(|(frame, _)| wanted(frame)) {
            return self.backlog.remove(at);
        }
        let read = async {
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .expect("the socket stays open")
                    .expect("a websocket message");
                let text = match message {
                    Message::Text(text) => text.to_string(),
                    Message::Close(frame) => panic!("the server closed the socket: {frame:?}"),
                    _ => continue,
                };
                let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                if wanted(&frame) {
                    return (frame, text);
                }
                self.backlog.push((frame, text));
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("the expected frame did not come within {WAIT:?}"))
    }
}

impl From<Socket> for Client {
    fn from(socket: Socket) -> Client {
        Client {
            socket,
            backlog: Vec::new(),
        }
    }
}
