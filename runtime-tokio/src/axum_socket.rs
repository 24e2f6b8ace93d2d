//! Sockets on axum (feature `axum`): TBone's Sanic/aiohttp carriers, for
//! axum, full-duplex.
//!
//! [`SocketUpgrade`] is the extractor (axum's `WebSocketUpgrade` plus the
//! upgrade request), [`SocketUpgrade::serve`] the whole handler: the origin
//! policy and the application's [`Authorizer`](tbone_dispatch::Authorizer)
//! decide before the upgrade (a refused client gets the HTTP status), the
//! socket is subscribed before the handshake response goes out, then it is
//! served until it closes. [`router_multiplexer`] answers TBone's requests
//! over the socket through the application's own `Router`, so every REST
//! route is reachable over the socket with no extra code.
//!
//! ```no_run
//! use axum::extract::State;
//! use axum::routing::get;
//! use axum::{Json, Router};
//! use tbone_dispatch_tokio::axum_socket::{router_multiplexer, SocketUpgrade};
//! use tbone_dispatch_tokio::{MemoryChannel, SocketOptions};
//!
//! #[derive(Clone)]
//! struct App {
//!     pubsub: MemoryChannel,
//!     api: Router,
//! }
//!
//! async fn events(ws: SocketUpgrade, State(app): State<App>) -> axum::response::Response {
//!     let options = SocketOptions::new(["resource_create", "resource_update", "resource_delete"])
//!         .on_message(router_multiplexer(app.api.clone()));
//!     ws.serve(&app.pubsub, options).await
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pubsub = MemoryChannel::named("pubsub")?;
//!     pubsub.kickoff()?;
//!     let api = Router::new().route("/api/time/", get(|| async { Json(42) }));
//!     let app = Router::new()
//!         .route("/ws/", get(events))
//!         .with_state(App { pubsub, api: api.clone() })
//!         .merge(api);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```

use std::future::Future;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::pin::pin;

use futures::future::{self, Either};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tbone_dispatch::multiplexer::{self, Multiplexer, Request, Routes};
use tbone_dispatch::socket::Connection;
use tbone_dispatch::Runtime as _;
use tbone_dispatch::{
    serve_socket, Channels, CloseReason, ConnectRequest, Incoming, Outgoing, ReadError, Refusal,
    SocketHandle, SocketOptions, READ_BUFFER_SIZE,
};
use tower::ServiceExt;

use crate::Tokio;

/// What the session needs to know of a message from the client.
pub fn incoming(message: Message) -> Incoming {
    match message {
        Message::Text(text) => Incoming::Text(text.as_str().to_owned()),
        Message::Binary(bytes) => Incoming::Binary(bytes),
        Message::Close(_) => Incoming::Close,
        Message::Ping(_) | Message::Pong(_) => Incoming::Alive,
    }
}

/// The message that carries `item` to the client; frames share their bytes.
pub fn outgoing(item: Outgoing) -> Message {
    match item {
        Outgoing::Frame(frame) => match Utf8Bytes::try_from(frame.into_bytes()) {
            Ok(text) => Message::Text(text),
            // A Frame is UTF-8 by construction; kept total anyway.
            Err(_) => Message::Text(Utf8Bytes::from_static("")),
        },
        Outgoing::Ping => Message::Ping(Default::default()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

/// The kind of a read error, from the tungstenite error inside axum's.
pub fn read_error(error: axum::Error) -> ReadError {
    use axum_tungstenite::Error as WsError;
    let inner = error.into_inner();
    match inner.downcast::<WsError>() {
        Ok(typed) => match *typed {
            WsError::Utf8(why) => ReadError::InvalidUtf8(why),
            WsError::Capacity(why) => ReadError::TooBig(why.to_string()),
            // The peer went away without a close frame: nobody to tell.
            WsError::Protocol(
                axum_tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => ReadError::ConnectionLost("closed without a closing handshake".into()),
            WsError::Protocol(why) => ReadError::Protocol(why.to_string()),
            WsError::Io(why) => ReadError::ConnectionLost(why.to_string()),
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                ReadError::ConnectionLost("the connection is closed".into())
            }
            other => ReadError::Protocol(other.to_string()),
        },
        // An axum that moved to another tungstenite: still a failed read.
        Err(other) => ReadError::Protocol(other.to_string()),
    }
}

/// The upgrade request as the core sees it.
pub fn connect_request(uri: &Uri, headers: &HeaderMap) -> ConnectRequest {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut request = ConnectRequest::new(target);
    for (name, value) in headers {
        request.push_header(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
    }
    request
}

/// The HTTP answer for a refused connection.
pub fn refusal_response(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    (status, refusal.reason().to_string()).into_response()
}

/// An axum extractor for a websocket request: axum's `WebSocketUpgrade`
/// and the upgrade request (path, query, headers, cookies) that the origin
/// policy and the authorizer judge. A request that is not a websocket
/// upgrade is rejected by axum's own rejection.
#[derive(Debug)]
pub struct SocketUpgrade {
    upgrade: WebSocketUpgrade,
    request: ConnectRequest,
}

impl<S: Send + Sync> FromRequestParts<S> for SocketUpgrade {
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let upgrade = WebSocketUpgrade::from_request_parts(parts, state).await?;
        let request = connect_request(&parts.uri, &parts.headers);
        Ok(SocketUpgrade { upgrade, request })
    }
}

impl SocketUpgrade {
    /// The upgrade request.
    pub fn request(&self) -> &ConnectRequest {
        &self.request
    }

    /// Answers the request: refused (origin policy, authorizer) with the
    /// refusal's HTTP status, or subscribed and upgraded, then served on
    /// `channels` until it closes, with the options' size limits and a
    /// [`READ_BUFFER_SIZE`] read buffer. The whole handler is this call.
    pub async fn serve(
        self,
        channels: impl Into<Channels<Tokio>>,
        options: SocketOptions,
    ) -> Response {
        match self.try_serve(channels, options).await {
            Ok(upgraded) => upgraded,
            Err(refusal) => refusal_response(&refusal),
        }
    }

    /// [`SocketUpgrade::serve`], with a refusal returned instead of
    /// answered: for an application that answers errors in its own format.
    pub async fn try_serve(
        self,
        channels: impl Into<Channels<Tokio>>,
        options: SocketOptions,
    ) -> Result<Response, Refusal> {
        let limits = options.handshake_limits();
        // The authorizer is the application's: bounded like the tungstenite
        // paths' handshake, so a stalled check cannot hold the request.
        let opening = Connection::open(channels, options, self.request);
        let timer = Tokio::default().sleep(limits.timeout());
        let connection = match future::select(pin!(opening), pin!(timer)).await {
            Either::Left((opened, _)) => opened?,
            Either::Right(_) => {
                return Err(Refusal::unavailable(format!(
                    "the connection was not authorized within {:?}",
                    limits.timeout()
                )))
            }
        };
        let max = limits.max_message_size();
        Ok(self
            .upgrade
            .read_buffer_size(READ_BUFFER_SIZE)
            .max_message_size(max)
            .max_frame_size(max)
            .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
            .on_upgrade(move |socket| async move {
                let reason = serve_connection(connection, socket).await;
                tracing::debug!(%reason, "websocket closed");
            }))
    }
}

fn serve_connection(
    connection: Connection<Tokio>,
    socket: WebSocket,
) -> impl Future<Output = CloseReason> {
    let (sink, stream) = halves(socket);
    connection.serve(sink, stream)
}

/// The socket's two halves, as the core's types.
#[allow(clippy::type_complexity)]
fn halves(
    socket: WebSocket,
) -> (
    impl futures::Sink<Outgoing, Error = axum::Error> + Send + Unpin + 'static,
    impl futures::Stream<Item = Result<Incoming, ReadError>> + Send + Unpin + 'static,
) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|item| futures::future::ready(Ok::<_, axum::Error>(outgoing(item))));
    let stream = stream.map(|message| message.map(incoming).map_err(read_error));
    (sink, stream)
}

/// Serves an upgraded axum socket on `channels` until it closes (no
/// upgrade request: prefer [`SocketUpgrade::serve`], which also checks the
/// origin and authorizes before the upgrade). Set the size limits on the
/// upgrade.
pub fn serve(
    socket: WebSocket,
    channels: impl Into<Channels<Tokio>>,
    options: SocketOptions,
) -> impl Future<Output = CloseReason> {
    let (sink, stream) = halves(socket);
    serve_socket(channels, sink, stream, options)
}

/// Headers a socket request takes from the upgrade request only, never
/// from the client's message: the host, the forwarding headers a proxy
/// sets, and hop-by-hop and framing headers.
const FROM_THE_CONNECTION: &[&str] = &[
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "proxy-authorization",
];

/// Largest response body read from the router for one request, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// TBone's requests answered by an axum `Router`: each request becomes an
/// HTTP request (method, `href` with `args` in the query, the message's
/// headers, the JSON body) to the router, so a route sees the same client
/// over the socket as over HTTP: the upgrade request's `Cookie` and
/// `Authorization` unless the message sets its own, and always its `Host`
/// and forwarding headers (`X-Forwarded-For`...: a message cannot set
/// those, nor hop-by-hop headers). The response's status is the answer's;
/// its JSON body is the payload (text if it is not JSON, `null` if empty).
/// TBone's response has no headers: the route's (`Location`, ...) are not
/// passed on. Only `router`'s own layers apply: those of the application
/// around it (logging, say) do not see socket requests.
#[derive(Clone, Debug)]
pub struct RouterRoutes {
    router: axum::Router,
}

impl RouterRoutes {
    /// Routes through `router` (with its state applied).
    pub fn new(router: axum::Router) -> Self {
        RouterRoutes { router }
    }
}

/// The [`Multiplexer`] over `router`: set it with
/// [`SocketOptions::on_message`].
pub fn router_multiplexer(router: axum::Router) -> Multiplexer<RouterRoutes> {
    Multiplexer::new(RouterRoutes::new(router))
}

impl Routes for RouterRoutes {
    async fn route(&self, request: Request, socket: SocketHandle) -> multiplexer::Response {
        let mut builder = axum::http::Request::builder()
            .method(request.method())
            .uri(request.uri());
        // What the client may not say about itself: the connection's own
        // headers (a proxy in front sets the forwarding ones over HTTP; over
        // the socket they come from the upgrade request, never the message).
        let own: Vec<(&str, String)> = request
            .headers()
            .filter(|(name, _)| {
                !FROM_THE_CONNECTION
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name))
            })
            .collect();
        for name in FROM_THE_CONNECTION {
            if let Some(value) = socket.request().header_value(name) {
                builder = builder.header(*name, value);
            }
        }
        for name in [header::COOKIE.as_str(), header::AUTHORIZATION.as_str()] {
            let overridden = own.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
            if let (false, Some(value)) = (overridden, socket.request().header_value(name)) {
                builder = builder.header(name, value);
            }
        }
        for (name, value) in &own {
            builder = builder.header(*name, value.as_str());
        }
        let body = match request.body() {
            Some(body) => {
                let typed = own
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(header::CONTENT_TYPE.as_str()));
                if !typed {
                    builder = builder.header(header::CONTENT_TYPE, "application/json");
                }
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let http_request = match builder.body(body) {
            Ok(http_request) => http_request,
            Err(error) => {
                return multiplexer::Response::error(400, format!("not a valid request: {error}"))
            }
        };
        let response = match self.router.clone().oneshot(http_request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        let bytes = match axum::body::to_bytes(response.into_body(), MAX_RESPONSE_BYTES).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "cannot read a route's response for a socket request");
                return multiplexer::Response::error(500, "the route's response could not be read");
            }
        };
        let payload = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        multiplexer::Response::new(status, payload)
    }
}
