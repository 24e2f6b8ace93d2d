//! TBone's full-duplex protocol: REST-like requests over the socket that
//! carries the events, each answered to its client only.
//!
//! A client sends
//! `{"type":"request","key":<id>,"method":"GET","href":"/api/entries/?limit=10","args":{..},"headers":{..},"body":{..}}`
//! and receives `{"type":"response","key":<id>,"status":200,"payload":<answer>}`
//! in order with its events. [`Multiplexer`] is the ready
//! [`MessageHandler`] that speaks it, over any [`Routes`] (the axum
//! integration of `tbone-dispatch-tokio` routes through the application's
//! own `axum::Router`). A malformed request is answered 400, a route the
//! router does not know 404 (the router's answer), a failing route 500; the
//! socket stays open after each. `ping` and `echo` messages are accepted
//! and ignored, and the text `close` closes the socket, as in TBone.
//!
//! ```
//! use tbone_dispatch::multiplexer::{Multiplexer, Request, Response, Routes};
//! use tbone_dispatch::{SocketHandle, SocketOptions};
//!
//! /// One resource, `/api/time/`.
//! struct Api;
//!
//! impl Routes for Api {
//!     async fn route(&self, request: Request, _socket: SocketHandle) -> Response {
//!         match (request.method(), request.path()) {
//!             ("GET", "/api/time/") => Response::ok(serde_json::json!({"now": 42})),
//!             _ => Response::not_found(),
//!         }
//!     }
//! }
//!
//! let options = SocketOptions::new(["resource_create"]).on_message(Multiplexer::new(Api));
//! # let _ = options;
//! ```

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::socket::{ClientMessage, HandlerError, MessageHandler, SocketHandle};
use crate::Frame;

/// One request from the client.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    key: Value,
    method: String,
    href: String,
    args: Map<String, Value>,
    headers: Map<String, Value>,
    body: Option<Value>,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    key: Option<Value>,
    method: Option<String>,
    href: Option<String>,
    #[serde(default)]
    args: Option<Map<String, Value>>,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    body: Option<Value>,
}

/// What one text message is, to the multiplexer.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A request to route.
    Request(Box<Request>),
    /// A message TBone accepts and ignores (`ping`, `echo`).
    Ignored,
    /// The text `close`: the client ends the session.
    Close,
    /// Not a valid request: answer 400 with this key (`null` if it had
    /// none) and reason.
    Malformed {
        /// The request's key, if it could be read.
        key: Value,
        /// What is wrong.
        reason: String,
    },
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Reads one text message of TBone's protocol.
///
/// ```
/// use tbone_dispatch::multiplexer::{parse, Message};
///
/// let Message::Request(request) = parse(r#"{"type":"request","key":"k1","method":"get","href":"/api/entries/?limit=2","args":{"offset":4}}"#) else {
///     panic!("a request");
/// };
/// assert_eq!(request.method(), "GET");
/// assert_eq!(request.path(), "/api/entries/");
/// assert_eq!(request.uri(), "/api/entries/?limit=2&offset=4");
/// assert!(matches!(parse("not json"), Message::Malformed { .. }));
/// assert_eq!(parse(r#"{"type":"ping"}"#), Message::Ignored);
/// ```
pub fn parse(text: &str) -> Message {
    if text.trim() == "close" {
        return Message::Close;
    }
    let wire: Wire = match serde_json::from_str(text) {
        Ok(wire) => wire,
        Err(error) => {
            return Message::Malformed {
                key: Value::Null,
                reason: format!("not a request message: {error}"),
            }
        }
    };
    let key = wire.key.clone().unwrap_or(Value::Null);
    let malformed = |reason: &str| Message::Malformed {
        key: key.clone(),
        reason: reason.to_string(),
    };
    match wire.kind.as_str() {
        "request" => {}
        "ping" | "echo" => return Message::Ignored,
        other => return malformed(&format!("unknown message type `{other}`")),
    }
    if wire.key.is_none() {
        return malformed("a request needs a `key` to answer with");
    }
    let method = wire.method.unwrap_or_default().to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return malformed("`method` must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS");
    }
    let href = wire.href.unwrap_or_default();
    if !href.starts_with('/') {
        return malformed("`href` must be a path starting with `/`");
    }
    Message::Request(Box::new(Request {
        key,
        method,
        href,
        args: wire.args.unwrap_or_default(),
        headers: wire.headers.unwrap_or_default(),
        body: wire.body.filter(|body| !body.is_null()),
    }))
}

impl Request {
    /// A request (for tests, or to build one by hand).
    pub fn new(key: Value, method: &str, href: &str) -> Self {
        Request {
            key,
            method: method.to_ascii_uppercase(),
            href: href.to_string(),
            args: Map::new(),
            headers: Map::new(),
            body: None,
        }
    }

    /// With this JSON body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// The client's correlation key, any JSON value.
    pub fn key(&self) -> &Value {
        &self.key
    }

    /// The method, in upper case.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The `href` as sent.
    pub fn href(&self) -> &str {
        &self.href
    }

    /// The path of `href`, without its query.
    pub fn path(&self) -> &str {
        self.href.split('?').next().unwrap_or_default()
    }

    /// `args`, TBone's request arguments.
    pub fn args(&self) -> &Map<String, Value> {
        &self.args
    }

    /// The headers the client sent in the message.
    pub fn headers(&self) -> impl Iterator<Item = (&str, String)> {
        self.headers.iter().map(|(name, value)| {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (name.as_str(), value)
        })
    }

    /// The body, if any (`null` counts as none).
    pub fn body(&self) -> Option<&Value> {
        self.body.as_ref()
    }

    /// `href` with `args` added to its query string (percent-encoded):
    /// what an HTTP router is asked for.
    pub fn uri(&self) -> String {
        let mut uri = self.href.clone();
        for (name, value) in &self.args {
            let values: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for value in values {
                uri.push(if uri.contains('?') { '&' } else { '?' });
                encode_component(&mut uri, name);
                uri.push('=');
                match value {
                    Value::String(text) => encode_component(&mut uri, text),
                    other => encode_component(&mut uri, &other.to_string()),
                }
            }
        }
        uri
    }
}

fn encode_component(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// The answer to one request: a status and a JSON payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The HTTP-like status.
    pub status: u16,
    /// The resource's answer (on error, its message).
    pub payload: Value,
}

impl Response {
    /// A response with this status and payload.
    pub fn new(status: u16, payload: Value) -> Self {
        Response { status, payload }
    }

    /// 200 with `payload`.
    pub fn ok(payload: Value) -> Self {
        Self::new(200, payload)
    }

    /// An error: `status` with `message` as the payload, as TBone answers.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, Value::String(message.into()))
    }

    /// 404: no such route.
    pub fn not_found() -> Self {
        Self::error(404, "no such resource")
    }

    /// The frame that carries this response for request `key`:
    /// `{"type":"response","key":..,"status":..,"payload":..}`.
    pub fn frame(&self, key: &Value) -> Frame {
        let mut text = String::from(r#"{"type":"response","key":"#);
        text.push_str(&key.to_string());
        text.push_str(r#","status":"#);
        text.push_str(&self.status.to_string());
        text.push_str(r#","payload":"#);
        text.push_str(&self.payload.to_string());
        text.push('}');
        Frame::from(text)
    }
}

/// Answers requests: the application's resources, as the multiplexer sees
/// them. Answer [`Response::not_found`] for a route you do not know; a
/// panic is answered 500.
pub trait Routes: Send + Sync + 'static {
    /// Answers `request` from the client of `socket`.
    fn route(
        &self,
        request: Request,
        socket: SocketHandle,
    ) -> impl Future<Output = Response> + Send;
}

/// The [`MessageHandler`] that speaks TBone's request/response protocol
/// over `R`: see the [module documentation](self).
pub struct Multiplexer<R> {
    router: Arc<R>,
}

impl<R> Clone for Multiplexer<R> {
    fn clone(&self) -> Self {
        Multiplexer {
            router: self.router.clone(),
        }
    }
}

impl<R: Routes> Multiplexer<R> {
    /// A multiplexer routing every request to `router`.
    pub fn new(router: R) -> Self {
        Multiplexer {
            router: Arc::new(router),
        }
    }
}

impl<R: Routes> MessageHandler for Multiplexer<R> {
    async fn handle(
        &self,
        message: ClientMessage,
        socket: SocketHandle,
    ) -> Result<(), HandlerError> {
        let request = match message {
            ClientMessage::Text(text) => match parse(&text) {
                Message::Request(request) => *request,
                Message::Ignored => return Ok(()),
                Message::Close => {
                    socket.close(crate::close_code::NORMAL, "");
                    return Ok(());
                }
                Message::Malformed { key, reason } => {
                    answer(&socket, &key, &Response::error(400, reason));
                    return Ok(());
                }
            },
            ClientMessage::Binary(_) => {
                let response = Response::error(400, "requests are text messages, not binary");
                answer(&socket, &Value::Null, &response);
                return Ok(());
            }
        };
        let key = request.key.clone();
        let routed = AssertUnwindSafe(self.router.route(request, socket.clone()))
            .catch_unwind()
            .await;
        let response = routed.unwrap_or_else(|_| {
            tracing::error!("a socket request's route panicked: answered 500");
            Response::error(500, "the route failed")
        });
        answer(&socket, &key, &response);
        Ok(())
    }
}

fn answer(socket: &SocketHandle, key: &Value, response: &Response) {
    if let Err(error) = socket.send(response.frame(key)) {
        tracing::debug!(%error, "cannot answer a socket request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_their_mistakes() {
        let Message::Request(request) = parse(
            r#"{"type":"request","key":7,"method":"PATCH","href":"/a/1/","headers":{"x-n":1},"body":{"t":"x"}}"#,
        ) else {
            panic!("a request");
        };
        assert_eq!(request.key(), &Value::from(7));
        assert_eq!(request.body(), Some(&serde_json::json!({"t": "x"})));
        assert_eq!(
            request.headers().collect::<Vec<_>>(),
            [("x-n", "1".to_string())]
        );
        for (text, key) in [
            (
                r#"{"type":"request","method":"GET","href":"/"}"#,
                Value::Null,
            ),
            (
                r#"{"type":"request","key":"a","method":"BREW","href":"/"}"#,
                Value::from("a"),
            ),
            (
                r#"{"type":"request","key":"b","method":"GET","href":"x"}"#,
                Value::from("b"),
            ),
            (r#"{"type":"other","key":"c"}"#, Value::from("c")),
            (r#"{"key":"d"}"#, Value::Null),
        ] {
            match parse(text) {
                Message::Malformed { key: got, .. } => assert_eq!(got, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(parse("close"), Message::Close);
        assert_eq!(parse(r#"{"type":"echo","x":1}"#), Message::Ignored);
    }

    #[test]
    fn args_join_the_query() {
        let mut request = Request::new(Value::Null, "get", "/x/");
        request.args.insert("q".into(), Value::from("a b&c"));
        request.args.insert("n".into(), Value::from(vec![1, 2]));
        // Whatever the map's order (serde_json's `preserve_order` may be on).
        let uri = request.uri();
        let (path, query) = uri.split_once('?').unwrap();
        let mut pairs: Vec<&str> = query.split('&').collect();
        pairs.sort_unstable();
        assert_eq!((path, pairs), ("/x/", vec!["n=1", "n=2", "q=a%20b%26c"]));
        assert_eq!(
            Response::error(404, "no").frame(&Value::from("k")).as_str(),
            r#"{"type":"response","key":"k","status":404,"payload":"no"}"#
        );
    }
}
