//! The application's side of a full-duplex socket: a handler for what the
//! client sends, and a handle to answer it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Serialize;

use super::authorize::ConnectRequest;
use super::session::ClientMessage;
use crate::{CarrierId, Frame, SubscribeError};

/// The error a [`MessageHandler`] may return: any error. It closes that
/// connection with 1011 (internal error) and is logged.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What the application does with each message its client sends (text
/// that is not a control message, and binary): set with
/// [`SocketOptions::on_message`](crate::SocketOptions::on_message).
///
/// Messages of one socket are handled concurrently, at most
/// [`Limits::in_flight`](crate::Limits::in_flight) at a time; the socket is
/// not read while that many are in flight. An error closes the connection
/// with 1011, and so does a panic, which stays within that connection.
/// When the server goes away (shutdown, a channel stopped), the messages
/// in flight finish first, so their replies reach the client before the
/// close frame; when the connection ends otherwise, they still run to
/// their end (a write that happened still sends its signal), but their
/// replies go nowhere. Either way they get the carrier's close timeout.
///
/// Any `Fn(ClientMessage, SocketHandle) -> impl Future<Output = Result<(), E>>`
/// is a handler:
///
/// ```
/// use tbone_dispatch::{ClientMessage, HandlerError, SocketHandle, SocketOptions};
///
/// // Echoes every text message back, in order with the socket's events.
/// async fn echo(message: ClientMessage, socket: SocketHandle) -> Result<(), HandlerError> {
///     if let ClientMessage::Text(text) = message {
///         socket.send(text)?;
///     }
///     Ok(())
/// }
///
/// let options = SocketOptions::new(["resource_create"]).on_message(echo);
/// # let _ = options;
/// ```
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles one message from the client of `socket`.
    fn handle(
        &self,
        message: ClientMessage,
        socket: SocketHandle,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<F, Fut, E> MessageHandler for F
where
    F: Fn(ClientMessage, SocketHandle) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<HandlerError>,
{
    fn handle(
        &self,
        message: ClientMessage,
        socket: SocketHandle,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(message, socket).map(|handled| handled.map_err(Into::into))
    }
}

/// [`MessageHandler`] with its type erased, as the options keep it.
pub(crate) trait DynHandler: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        message: ClientMessage,
        socket: SocketHandle,
    ) -> BoxFuture<'static, Result<(), HandlerError>>;
}

impl<H: MessageHandler> DynHandler for H {
    fn call(
        self: Arc<Self>,
        message: ClientMessage,
        socket: SocketHandle,
    ) -> BoxFuture<'static, Result<(), HandlerError>> {
        async move { self.handle(message, socket).await }.boxed()
    }
}

/// A frame could not be sent to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed.
    #[error("the socket is closed")]
    Closed,
    /// The client is too far behind: its queue is full, and the carrier's
    /// overflow policy dropped the frame (or the connection).
    #[error("the client is not reading: its queue is full")]
    Overflow,
    /// The value could not be encoded as JSON.
    #[error("cannot encode the message as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What a [`SocketHandle`] does, implemented by the driver over its
/// runtime's carrier and channels.
pub(crate) trait SocketOps: Send + Sync + 'static {
    fn send(&self, frame: Frame) -> Result<(), SendError>;
    fn subscribe(&self, channel: Option<&str>, event: &str) -> Result<bool, SubscribeError>;
    fn unsubscribe(&self, channel: Option<&str>, event: &str) -> Result<bool, SubscribeError>;
    fn close(&self, code: u16, reason: String);
    fn is_closed(&self) -> bool;
    fn request(&self) -> &ConnectRequest;
    fn client(&self) -> Option<&(dyn Any + Send + Sync)>;
    fn id(&self) -> CarrierId;
}

/// One served socket, as the application's [`MessageHandler`] sees it:
/// reply to this client (in order with the events it receives, through its
/// carrier), subscribe or unsubscribe it, close it. Cheap to clone; it may
/// outlive the handler call (to answer later), and does nothing once the
/// socket has closed.
#[derive(Clone)]
pub struct SocketHandle {
    ops: Arc<dyn SocketOps>,
}

impl fmt::Debug for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketHandle")
            .field("id", &self.ops.id())
            .field("closed", &self.ops.is_closed())
            .finish()
    }
}

impl SocketHandle {
    pub(crate) fn new(ops: Arc<dyn SocketOps>) -> Self {
        SocketHandle { ops }
    }

    /// Queues `frame` (text) for this client, behind the events already
    /// queued for it, under its carrier's overflow policy.
    pub fn send(&self, frame: impl Into<Frame>) -> Result<(), SendError> {
        self.ops.send(frame.into())
    }

    /// [`SocketHandle::send`] of `value` encoded as JSON.
    pub fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        let text = serde_json::to_string(value)?;
        self.send(text)
    }

    /// Subscribes this socket to `event` of the first channel it serves.
    /// Returns false if it already was. The application is trusted: no
    /// authorization hook or limit applies.
    pub fn subscribe(&self, event: &str) -> Result<bool, SubscribeError> {
        self.ops.subscribe(None, event)
    }

    /// Subscribes this socket to `event` of the served channel called
    /// `channel`.
    pub fn subscribe_on(&self, channel: &str, event: &str) -> Result<bool, SubscribeError> {
        self.ops.subscribe(Some(channel), event)
    }

    /// Unsubscribes this socket from `event` of the first channel it
    /// serves. Returns whether it was subscribed.
    pub fn unsubscribe(&self, event: &str) -> Result<bool, SubscribeError> {
        self.ops.unsubscribe(None, event)
    }

    /// Unsubscribes this socket from `event` of the served channel called
    /// `channel`.
    pub fn unsubscribe_on(&self, channel: &str, event: &str) -> Result<bool, SubscribeError> {
        self.ops.unsubscribe(Some(channel), event)
    }

    /// Closes the connection with websocket status `code` and `reason`,
    /// after what was already queued for the client. The socket leaves
    /// every channel at once. A code that cannot be sent
    /// ([`close_code::is_sendable`](crate::close_code::is_sendable)) becomes
    /// 1011, with a reason that says so.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        self.ops.close(code, reason.into());
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.ops.is_closed()
    }

    /// The upgrade request of this connection (path, query, headers,
    /// cookies); an empty request for a socket served without one.
    pub fn request(&self) -> &ConnectRequest {
        self.ops.request()
    }

    /// What the [`Authorizer`](crate::Authorizer) decided about this
    /// client, if one is set and its `Client` type is `T`.
    pub fn client<T: Any>(&self) -> Option<&T> {
        self.ops.client()?.downcast_ref()
    }

    /// The identity of this socket's carrier.
    pub fn id(&self) -> CarrierId {
        self.ops.id()
    }
}
