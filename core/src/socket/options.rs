//! How a socket is served: events, control messages, the application's
//! handler and authorization, keep-alive and limits.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};

use super::authorize::{Authorizer, DynAuthorizer, OriginPolicy};
use super::handler::{DynHandler, MessageHandler};
use super::limits::Limits;
use crate::carrier::CarrierConfig;

/// The websocket read buffer a served socket starts with, in bytes (the
/// runtime glue, the axum integration and the demo all configure it).
///
/// tungstenite allocates its read buffer up front, 128 KiB by default: on a
/// server with many idle connections that is nearly all of their memory.
/// Clients of a dispatch socket send little (pongs, control messages,
/// requests), and a longer message only takes more reads, so the buffer
/// starts small.
pub const READ_BUFFER_SIZE: usize = 256;

/// The limits of a websocket handshake: what
/// [`SocketOptions::handshake_limits`] gives the runtime glue, or a
/// hand-written accept loop.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch::{HandshakeLimits, SocketOptions};
///
/// let options = SocketOptions::new(["e"]).max_message_size(4096);
/// assert_eq!(options.handshake_limits().max_message_size(), 4096);
/// assert_eq!(HandshakeLimits::default().timeout(), Duration::from_secs(10));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    max_message_size: usize,
    timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_message_size: 64 * 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

impl HandshakeLimits {
    /// Largest message (and frame) accepted from the client, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// How long the handshake (with authorization) may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// One event a socket is subscribed to when it connects.
#[derive(Clone, Debug)]
pub(crate) struct InitialEvent {
    /// The channel's name; `None` for the default (first) channel.
    pub(crate) channel: Option<Arc<str>>,
    pub(crate) event: String,
}

/// How a socket is served: which events it receives, whether the client
/// may change them, what the application does with the client's messages,
/// who may connect, keep-alive and limits.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch::{ClientMessage, HandlerError, Limits, SocketHandle, SocketOptions};
///
/// async fn echo(message: ClientMessage, socket: SocketHandle) -> Result<(), HandlerError> {
///     if let Some(text) = message.as_text() {
///         socket.send(text.to_string())?;
///     }
///     Ok(())
/// }
///
/// let options = SocketOptions::new(["resource_create", "resource_update"])
///     .events_on("chat", ["message"])                 // a second channel
///     .control_messages(true)                         // the client may (un)subscribe
///     .on_message(echo)                               // everything else goes here
///     .limits(Limits::default().max_subscriptions(16))
///     .ping_interval(Duration::from_secs(20));
/// assert!(options.has_handler());
/// ```
#[derive(Clone)]
pub struct SocketOptions {
    events: Vec<InitialEvent>,
    control: bool,
    resume: bool,
    authorizer: Option<Arc<dyn DynAuthorizer>>,
    handler: Option<Arc<dyn DynHandler>>,
    origins: OriginPolicy,
    ping_interval: Duration,
    carrier: CarrierConfig,
    handshake: HandshakeLimits,
    limits: Limits,
    shutdown: Option<Shared<BoxFuture<'static, ()>>>,
}

impl fmt::Debug for SocketOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketOptions")
            .field("events", &self.events)
            .field("control", &self.control)
            .field("resume", &self.resume)
            .field("authorizer", &self.authorizer.is_some())
            .field("handler", &self.handler.is_some())
            .field("origins", &self.origins)
            .field("ping_interval", &self.ping_interval)
            .field("carrier", &self.carrier)
            .field("handshake", &self.handshake)
            .field("limits", &self.limits)
            .finish()
    }
}

impl SocketOptions {
    /// Serve these events of the default (first) channel. Control messages
    /// are off, no handler (text is ignored, binary refused), pages of
    /// other hosts refused ([`OriginPolicy::SameHost`]), pings every 30 s,
    /// messages limited to 64 KiB, handshakes to 10 s, [`Limits::default`].
    pub fn new<I, S>(events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SocketOptions {
            events: events
                .into_iter()
                .map(|event| InitialEvent {
                    channel: None,
                    event: event.into(),
                })
                .collect(),
            control: false,
            resume: false,
            authorizer: None,
            handler: None,
            origins: OriginPolicy::SameHost,
            ping_interval: Duration::from_secs(30),
            carrier: CarrierConfig::default(),
            handshake: HandshakeLimits::default(),
            limits: Limits::default(),
            shutdown: None,
        }
    }

    /// Also serve these events of the channel called `channel` (one of the
    /// [`Channels`](crate::Channels) the socket is served on).
    pub fn events_on<I, S>(mut self, channel: &str, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let channel: Arc<str> = Arc::from(channel);
        self.events
            .extend(events.into_iter().map(|event| InitialEvent {
                channel: Some(channel.clone()),
                event: event.into(),
            }));
        self
    }

    /// Serve only until `shutdown` resolves, then close the socket with a
    /// close frame (1001, going away): how a server shuts down without
    /// cutting connections. Reading stops; the application's messages in
    /// flight finish (within the carrier's close timeout); the frames
    /// queued for the socket, their replies included, are written before
    /// the close frame (within the close timeout again).
    pub fn until(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(shutdown.boxed().shared());
        self
    }

    /// Let the client send `{"action":"subscribe","event":"<name>"}` and
    /// `{"action":"unsubscribe","event":"<name>"}`, with `"channel":"<name>"`
    /// where the socket serves several channels (default: off).
    pub fn control_messages(mut self, enabled: bool) -> Self {
        self.control = enabled;
        self
    }

    /// Let the client say where it resumes in its first message,
    /// `{"action":"resume","position":"<position>"}` (with
    /// `"channel":"<name>"` where the socket serves several channels; a
    /// message without `position` starts live), instead of in the
    /// [`LAST_POSITION`](crate::socket::LAST_POSITION) query parameter
    /// (default: off). For clients that cannot choose their URL.
    ///
    /// The socket's events are then subscribed when the first message
    /// arrives, not before the handshake response: a client receives
    /// nothing until it has sent something (the resume message, or any
    /// other, which is then handled as usual). A client that connects with
    /// the query parameter (even empty) is subscribed at once, as without
    /// this option.
    pub fn resume_message(mut self, enabled: bool) -> Self {
        self.resume = enabled;
        self
    }

    /// The application's handler for every client message that is not a
    /// control message (see [`MessageHandler`]).
    pub fn on_message(mut self, handler: impl MessageHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// The application's authorization hook (see [`Authorizer`]): who may
    /// connect, and to which events.
    pub fn authorize(mut self, authorizer: impl Authorizer) -> Self {
        self.authorizer = Some(Arc::new(authorizer));
        self
    }

    /// Which web pages may open a socket (default
    /// [`OriginPolicy::SameHost`]).
    pub fn origins(mut self, policy: OriginPolicy) -> Self {
        self.origins = policy;
        self
    }

    /// Only pages of these origins (`scheme://host[:port]`) may open a
    /// socket: [`OriginPolicy::only`].
    pub fn allowed_origins<I, S>(self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.origins(OriginPolicy::only(origins))
    }

    /// How often to ping the client (`Duration::ZERO`: never). A client
    /// that has said nothing (not even the pong) by the next ping is
    /// disconnected, so a dead peer is dropped within one to two intervals.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// The socket's carrier (queue capacity, overflow policy).
    pub fn carrier(mut self, config: CarrierConfig) -> Self {
        self.carrier = config;
        self
    }

    /// Largest message (and frame) accepted from the client, in bytes; the
    /// runtime glue configures the websocket with it.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.handshake.max_message_size = bytes;
        self
    }

    /// How long a client may take to complete the websocket handshake,
    /// authorization included (default 10 s), so a client that connects
    /// and says nothing does not hold a task and a socket forever (after
    /// the handshake, pings take over).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake.timeout = timeout;
        self
    }

    /// What one client may ask of the server (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The handshake's limits (size, time).
    pub fn handshake_limits(&self) -> HandshakeLimits {
        self.handshake
    }

    /// The per-connection limits.
    pub fn socket_limits(&self) -> Limits {
        self.limits
    }

    /// The keep-alive interval.
    pub fn keepalive(&self) -> Duration {
        self.ping_interval
    }

    /// The carrier's settings.
    pub fn carrier_config(&self) -> &CarrierConfig {
        &self.carrier
    }

    /// Whether control messages are on.
    pub fn has_control_messages(&self) -> bool {
        self.control
    }

    /// Whether the socket's events wait for the client's first message,
    /// which may say where it resumes ([`SocketOptions::resume_message`]).
    pub fn has_resume_message(&self) -> bool {
        self.resume
    }

    /// Whether a message handler is set.
    pub fn has_handler(&self) -> bool {
        self.handler.is_some()
    }

    /// The origin policy.
    pub fn origin_policy(&self) -> &OriginPolicy {
        &self.origins
    }

    pub(crate) fn initial_events(&self) -> &[InitialEvent] {
        &self.events
    }

    pub(crate) fn authorizer(&self) -> Option<&Arc<dyn DynAuthorizer>> {
        self.authorizer.as_ref()
    }

    pub(crate) fn handler(&self) -> Option<&Arc<dyn DynHandler>> {
        self.handler.as_ref()
    }

    pub(crate) fn shutdown(&self) -> Option<&Shared<BoxFuture<'static, ()>>> {
        self.shutdown.as_ref()
    }
}
