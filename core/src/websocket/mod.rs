//! Websockets over async-tungstenite, written once for every runtime
//! (feature `websocket`): generic over any `futures` byte stream and any
//! [`Runtime`]. Each runtime crate's `websocket` module offers the same
//! functions with its runtime (and, for tokio, its stream types) filled
//! in, so most applications call those.
//!
//! One connection, in one call ([`accept_and_serve`]), or in two
//! ([`accept`], then [`Accepted::serve`]):
//! 1. the upgrade request is read and checked: the [`OriginPolicy`](crate::OriginPolicy),
//!    then the application's [`Authorizer`](crate::Authorizer) — a refused
//!    client gets an HTTP 400, 401, 403... and no websocket;
//! 2. the socket's carrier is subscribed to its events (so every event
//!    published after the client got the handshake response reaches it);
//! 3. the handshake completes with the options' size limits, all of it
//!    within the handshake timeout;
//! 4. the [`Session`](crate::socket::Session) serves the socket until it
//!    closes.

mod head;

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use futures::future::{self, Either};
use futures::{AsyncRead, AsyncWrite, SinkExt, StreamExt};

pub use async_tungstenite;
pub use async_tungstenite::tungstenite;
pub use async_tungstenite::WebSocketStream;
pub use head::Rewind;

use crate::socket::{
    serve_socket, Channels, ConnectRequest, Connection, HandshakeLimits, Incoming, ReadError,
    Refusal, SocketOptions, READ_BUFFER_SIZE,
};
use crate::{Carrier, CloseReason, Outgoing, Runtime};

/// The websocket error of async-tungstenite, as the functions here return
/// it.
pub type Error = WsError;

/// Why a connection was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// Refused before the upgrade: the client was answered with this HTTP
    /// status (origin, authorization, malformed or oversized request).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The handshake did not complete within the handshake timeout.
    #[error("the websocket handshake did not complete within {0:?}")]
    TimedOut(Duration),
    /// Reading the request failed, or the client left.
    #[error("reading the upgrade request failed: {0}")]
    Io(#[from] std::io::Error),
    /// tungstenite refused the handshake.
    #[error("the websocket handshake failed: {0}")]
    Handshake(#[from] WsError),
}

/// What the session needs to know of a message from the client.
pub fn incoming(message: Message) -> Incoming {
    match message {
        Message::Text(text) => Incoming::Text(text.as_str().to_owned()),
        Message::Binary(bytes) => Incoming::Binary(bytes),
        Message::Close(_) => Incoming::Close,
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Alive,
    }
}

/// The message that carries `item` to the client. Frames become text
/// messages sharing the frame's bytes (no copy).
pub fn outgoing(item: Outgoing) -> Message {
    match item {
        Outgoing::Frame(frame) => match Utf8Bytes::try_from(frame.into_bytes()) {
            Ok(text) => Message::Text(text),
            // A Frame is UTF-8 by construction; kept total anyway.
            Err(_) => Message::Text(Utf8Bytes::from_static("")),
        },
        Outgoing::Ping => Message::Ping(Default::default()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
    }
}

/// The kind of a read error, from tungstenite's typed error.
pub fn read_error(error: WsError) -> ReadError {
    match error {
        WsError::Utf8(why) => ReadError::InvalidUtf8(why),
        WsError::Capacity(why) => ReadError::TooBig(why.to_string()),
        // The peer went away without a close frame: nobody to tell.
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            ReadError::ConnectionLost("closed without a closing handshake".into())
        }
        WsError::Protocol(why) => ReadError::Protocol(why.to_string()),
        WsError::AttackAttempt => ReadError::Protocol("an attack attempt".into()),
        WsError::Io(why) => ReadError::ConnectionLost(why.to_string()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            ReadError::ConnectionLost("the connection is closed".into())
        }
        other => ReadError::Protocol(other.to_string()),
    }
}

/// The websocket configuration enforcing `limits`, with a
/// [`READ_BUFFER_SIZE`] read buffer rather than tungstenite's 128 KiB.
pub fn config(limits: HandshakeLimits) -> WebSocketConfig {
    let max = limits.max_message_size();
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Runs `work` within `limit` on `runtime`'s clock.
async fn within<R: Runtime, F: Future<Output = Result<T, AcceptError>>, T>(
    runtime: &R,
    limit: Duration,
    work: F,
) -> Result<T, AcceptError> {
    match future::select(pin!(work), pin!(runtime.sleep(limit))).await {
        Either::Left((done, _)) => done,
        Either::Right(_) => Err(AcceptError::TimedOut(limit)),
    }
}

/// Completes a bare server handshake on `stream` with `limits` (size,
/// time): for a hand-written serving loop. No origin check, authorization
/// or subscription: see [`accept`] for those.
pub async fn handshake<R, S>(
    runtime: &R,
    stream: S,
    limits: HandshakeLimits,
) -> Result<WebSocketStream<S>, AcceptError>
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Boxed: the handshake's state then lives only while it runs.
    let accepting = Box::pin(async_tungstenite::accept_async_with_config(
        stream,
        Some(config(limits)),
    ));
    within(runtime, limits.timeout(), async {
        accepting.await.map_err(AcceptError::Handshake)
    })
    .await
}

/// A connection whose handshake completed: authorized, subscribed, ready
/// to [`serve`](Accepted::serve).
#[derive(Debug)]
pub struct Accepted<R: Runtime, S> {
    socket: WebSocketStream<Rewind<S>>,
    connection: Connection<R>,
}

impl<R: Runtime, S> Accepted<R, S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The upgrade request.
    pub fn request(&self) -> &ConnectRequest {
        self.connection.request()
    }

    /// The socket's carrier.
    pub fn carrier(&self) -> &Carrier<R> {
        self.connection.carrier()
    }

    /// Serves the socket until it closes; returns why. Dropping the future
    /// closes the connection.
    pub fn serve(self) -> impl Future<Output = CloseReason> {
        let (sink, stream) = halves(self.socket);
        self.connection.serve(sink, stream)
    }
}

/// Accepts a websocket on `stream` for `channels`: reads the upgrade
/// request, refuses it (with an HTTP status) if the origin policy or the
/// authorizer says so, subscribes the socket, completes the handshake with
/// the options' size limits, all within their handshake timeout.
pub async fn accept<R, S>(
    stream: S,
    channels: impl Into<Channels<R>>,
    options: SocketOptions,
) -> Result<Accepted<R, S>, AcceptError>
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let channels = channels.into();
    let runtime = channels.runtime().clone();
    let limits = options.handshake_limits();
    // Boxed: the handshake's state lives only while it runs, not in the
    // connection's future for as long as the connection lasts.
    let accepting = Box::pin(async move {
        let mut stream = stream;
        let head = head::read(&mut stream).await.map_err(|error| match error {
            head::HeadError::Io(error) => AcceptError::Io(error),
            head::HeadError::Answered(refusal) => AcceptError::Refused(refusal),
        })?;
        let connection = match Connection::open(channels, options, head.request.request).await {
            Ok(connection) => connection,
            Err(refusal) => {
                head::refuse(&mut stream, &refusal).await;
                return Err(AcceptError::Refused(refusal));
            }
        };
        let socket = async_tungstenite::accept_async_with_config(
            Rewind::new(head.bytes, stream),
            Some(config(limits)),
        )
        .await?;
        Ok(Accepted { socket, connection })
    });
    within(&runtime, limits.timeout(), accepting).await
}

/// The whole task of one connection: [`accept`], then serve until the
/// socket closes. Returns why it closed, or why it was not accepted.
///
/// Prefer it to calling the two in one `async` block: the connection's
/// future then keeps neither the handshake's state nor the byte stream and
/// options it started from, which on an idle connection is about a third
/// of its memory.
pub fn accept_and_serve<R, S>(
    stream: S,
    channels: impl Into<Channels<R>>,
    options: SocketOptions,
) -> impl Future<Output = Result<CloseReason, AcceptError>>
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let accepting = Box::pin(accept(stream, channels, options));
    async move {
        let serving = accepting.await?.serve();
        Ok(serving.await)
    }
}

/// Serves a websocket that is already upgraded (by [`handshake`] or by
/// another server) on `channels` until it closes: see
/// [`serve_socket`]. There is no upgrade request, so no origin check, and
/// an [`Authorizer`](crate::Authorizer) sees an empty request.
pub fn serve<R, S>(
    socket: WebSocketStream<S>,
    channels: impl Into<Channels<R>>,
    options: SocketOptions,
) -> impl Future<Output = CloseReason>
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = halves(socket);
    serve_socket(channels, sink, stream, options)
}

/// The socket's two halves, as the core's types.
#[allow(clippy::type_complexity)]
fn halves<S>(
    socket: WebSocketStream<S>,
) -> (
    impl futures::Sink<Outgoing, Error = WsError> + Send + Unpin + 'static,
    impl futures::Stream<Item = Result<Incoming, ReadError>> + Send + Unpin + 'static,
)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = socket.split();
    let sink = sink.with(|item| future::ready(Ok::<_, WsError>(outgoing(item))));
    let stream = stream.map(|message| message.map(incoming).map_err(read_error));
    (sink, stream)
}
