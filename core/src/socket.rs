//! Serving one client socket: subscribe it, read until it closes, clean up.
//! Written once over `futures` traits; the runtime crates map their
//! websocket types (async-tungstenite, axum) onto [`Incoming`] and
//! [`Outgoing`].

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, BoxFuture, Either, FutureExt, Shared};
use futures::{Sink, Stream, StreamExt};
use serde::Deserialize;

use crate::carrier::{close_code, CarrierConfig, CloseReason, Outgoing};
use crate::{Backend, Carrier, Channel, Runtime, SubscribeError};

/// A message from the client, as the serving loop needs to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (a control message, when enabled).
    Text(String),
    /// A binary message (refused), with its length.
    Binary(usize),
    /// A ping or pong: the client is alive.
    Alive,
    /// The client closed the connection.
    Close,
}

/// Decides whether a connection may receive an event: the application's
/// authorization hook.
pub type Authorize = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The websocket read buffer a served socket starts with, in bytes (the
/// runtime glue, the axum integration and the demo all configure it).
///
/// tungstenite allocates its read buffer up front, 128 KiB by default: on a
/// server with many idle connections that is nearly all of their memory.
/// Clients of a dispatch socket send little (pongs, control messages), and
/// a longer message only takes more reads, so the buffer starts small.
pub const READ_BUFFER_SIZE: usize = 256;

/// How a socket is served: which events it receives, whether the client
/// may change them, keep-alive and size limits.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch::SocketOptions;
///
/// let options = SocketOptions::new(["resource_create", "resource_update"])
///     .control_messages(true)                      // the client may (un)subscribe
///     .authorize(|event| !event.starts_with("admin_"))
///     .ping_interval(Duration::from_secs(20));
/// assert!(options.is_authorized("resource_delete"));
/// assert!(!options.is_authorized("admin_audit"));
/// ```
#[derive(Clone)]
pub struct SocketOptions {
    events: Vec<String>,
    control: bool,
    authorize: Option<Authorize>,
    ping_interval: Duration,
    carrier: CarrierConfig,
    max_message_size: usize,
    handshake_timeout: Duration,
    shutdown: Option<Shared<BoxFuture<'static, ()>>>,
}

impl fmt::Debug for SocketOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketOptions")
            .field("events", &self.events)
            .field("control", &self.control)
            .field("authorize", &self.authorize.is_some())
            .field("ping_interval", &self.ping_interval)
            .field("carrier", &self.carrier)
            .field("max_message_size", &self.max_message_size)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl SocketOptions {
    /// Serve these events. Control messages are off, pings every 30 s,
    /// incoming messages limited to 64 KiB, handshakes to 10 s.
    pub fn new<I, S>(events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SocketOptions {
            events: events.into_iter().map(Into::into).collect(),
            control: false,
            authorize: None,
            ping_interval: Duration::from_secs(30),
            carrier: CarrierConfig::default(),
            max_message_size: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            shutdown: None,
        }
    }

    /// Serve only until `shutdown` resolves, then close the socket with a
    /// close frame (1001, going away): how a server shuts down without
    /// cutting connections. The socket leaves its channels at once; the
    /// frames already queued for it are written before the close frame
    /// (within the carrier's close timeout).
    pub fn until(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(shutdown.boxed().shared());
        self
    }

    /// Let the client send `{"action":"subscribe","event":"<name>"}` and
    /// `{"action":"unsubscribe","event":"<name>"}` (default: off, and text
    /// from the client is ignored, as in TBone).
    pub fn control_messages(mut self, enabled: bool) -> Self {
        self.control = enabled;
        self
    }

    /// Only events for which `authorize` returns true are subscribed, at
    /// connect time or by control message.
    pub fn authorize(mut self, authorize: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.authorize = Some(Arc::new(authorize));
        self
    }

    /// How often to ping the client. A client that has said nothing (not
    /// even the pong) by the next ping is disconnected, so a dead peer is
    /// dropped within one to two intervals.
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
        self.max_message_size = bytes;
        self
    }

    /// How long a client may take to complete the websocket handshake
    /// (default 10 s); the runtime glue's `accept_stream` fails after it, so
    /// a client that connects and says nothing does not hold a task and a
    /// socket forever (after the handshake, pings take over).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The limit set with [`SocketOptions::handshake_timeout`].
    pub fn get_handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The limit set with [`SocketOptions::max_message_size`].
    pub fn get_max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Whether the hook allows `event`.
    pub fn is_authorized(&self, event: &str) -> bool {
        self.authorize.as_ref().is_none_or(|allow| allow(event))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    action: Action,
    event: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Subscribe,
    Unsubscribe,
}

fn error_frame(message: &str) -> crate::Frame {
    let mut text = String::from(r#"{"type":"error","payload":{"message":"#);
    crate::push_json_string(&mut text, message);
    text.push_str("}}");
    crate::Frame::from(text)
}

/// Serves one client socket on `channel` until it closes: the spec's
/// websocket handler (create carrier, subscribe, read loop, unsubscribe) in
/// one call. Returns why the connection ended.
///
/// `sink` and `stream` are the two halves of the socket, mapped onto
/// [`Outgoing`] and [`Incoming`] (the runtime crates do this for
/// async-tungstenite and axum). The loop:
/// - subscribes a carrier over `sink` to the authorized events of `options`;
/// - pings the client every `ping_interval` through the carrier and drops it
///   when it has not answered by the next ping;
/// - applies control messages when enabled; a malformed one closes the
///   connection with 1008, a binary message with 1003, a read error with
///   1002 (garbage), 1007 (text that is not UTF-8) or 1009 (oversized);
/// - when `channel` stops (or `options`' shutdown future resolves), writes
///   what the client was sent, then closes with 1001 (going away);
/// - on the way out closes the carrier, which leaves every channel.
///
/// The carrier is created and subscribed when this is called; the returned
/// future runs the read loop. Dropping the future before it ends closes the
/// carrier too, so a cancelled handler leaves no subscription behind.
//
// Not an `async fn`: its arguments would stay in the future for the whole
// connection (the socket half moved into the carrier included), and an idle
// connection's memory is mostly this future.
pub fn serve_socket<'a, B, R, Si, St, E>(
    runtime: &R,
    channel: &'a Channel<B, R>,
    sink: Si,
    stream: St,
    options: SocketOptions,
) -> impl Future<Output = CloseReason> + 'a
where
    B: Backend,
    R: Runtime,
    Si: Sink<Outgoing> + Send + Unpin + 'static,
    Si::Error: fmt::Display,
    St: Stream<Item = Result<Incoming, E>> + Unpin + 'a,
    E: fmt::Display,
{
    let setup = match Carrier::with_control(runtime, sink, options.carrier.clone()) {
        Ok(carrier) => options
            .events
            .iter()
            .filter(|e| options.is_authorized(e))
            .try_for_each(|event| channel.subscribe(event, &carrier).map(drop))
            .map_err(|error| refuse(&carrier, error))
            .map(|()| CloseOnDrop(carrier)),
        Err(error) => Err(CloseReason::SinkError(error.to_string())),
    };
    let runtime = runtime.clone();
    async move {
        let carrier = match setup {
            Ok(carrier) => carrier,
            Err(reason) => return reason,
        };
        let reason = read_loop(&runtime, channel, &carrier.0, stream, &options).await;
        carrier.0.close_for(reason.clone());
        carrier.0.close_reason().unwrap_or(reason)
    }
}

/// Closes the carrier when the serving future is dropped, finished or not
/// (closing twice keeps the first reason).
struct CloseOnDrop<R: Runtime>(Carrier<R>);

impl<R: Runtime> Drop for CloseOnDrop<R> {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn refuse<R: Runtime>(carrier: &Carrier<R>, error: SubscribeError) -> CloseReason {
    let reason = match error {
        SubscribeError::CarrierClosed { reason, .. } => reason,
        other => CloseReason::Rejected(close_code::GOING_AWAY, other.to_string()),
    };
    carrier.close_for(reason.clone());
    reason
}

async fn read_loop<B, R, St, E>(
    runtime: &R,
    channel: &Channel<B, R>,
    carrier: &Carrier<R>,
    mut stream: St,
    options: &SocketOptions,
) -> CloseReason
where
    B: Backend,
    R: Runtime,
    St: Stream<Item = Result<Incoming, E>> + Unpin,
    E: fmt::Display,
{
    let mut closed = pin!(carrier.closed());
    let shutdown = options.shutdown.clone();
    let mut shutdown = pin!(async move {
        match shutdown {
            Some(shutdown) => shutdown.await,
            None => future::pending().await,
        }
    });
    let mut stopped = pin!(channel.stopped());
    let mut heard = true;
    loop {
        let tick = pin!(runtime.sleep(options.ping_interval));
        let mut tick = tick;
        // Read until the next tick, unless the carrier closes first.
        let outcome = loop {
            let next = future::select(stream.next(), &mut tick);
            let ending = future::select(shutdown.as_mut(), stopped.as_mut());
            let ended = future::select(closed.as_mut(), ending);
            match future::select(next, ended).await {
                Either::Right((Either::Left((reason, _)), _)) => return reason,
                Either::Right((Either::Right((ending, _)), _)) => {
                    let why = match ending {
                        Either::Left(_) => "the server is shutting down",
                        Either::Right(_) => "the channel stopped",
                    };
                    let reason = CloseReason::Rejected(close_code::GOING_AWAY, why.into());
                    // Not the client's doing: what it was sent still
                    // reaches it, before the close frame.
                    carrier.close_after_queued(reason.clone());
                    return reason;
                }
                Either::Left((Either::Right(_), _)) => break None,
                Either::Left((Either::Left((message, _)), _)) => {
                    heard = true;
                    match message {
                        None | Some(Ok(Incoming::Close)) => return CloseReason::PeerClosed,
                        Some(Ok(Incoming::Alive)) => {}
                        Some(Ok(Incoming::Binary(_))) => {
                            break Some(CloseReason::Rejected(
                                close_code::UNSUPPORTED,
                                "binary messages are not accepted".into(),
                            ))
                        }
                        Some(Ok(Incoming::Text(text))) => {
                            if let Some(reason) = control(channel, carrier, options, &text) {
                                break Some(reason);
                            }
                        }
                        Some(Err(error)) => {
                            let error = error.to_string();
                            let code = read_error_code(&error);
                            break Some(CloseReason::Rejected(code, error));
                        }
                    }
                }
            }
        };
        if let Some(reason) = outcome {
            return reason;
        }
        // A tick: the client must have said something since the last one.
        if !heard {
            return CloseReason::Rejected(close_code::GOING_AWAY, "no answer to pings".into());
        }
        heard = false;
        carrier.ping();
    }
}

/// The close code for a read error. The glue hands over the runtime's own
/// error type, known here only by its message.
fn read_error_code(error: &str) -> u16 {
    let error = error.to_lowercase();
    if error.contains("utf-8") || error.contains("utf8") {
        close_code::INVALID_PAYLOAD
    } else if error.contains("control frame") {
        // RFC 6455 section 5.5: a control frame over 125 bytes (or
        // fragmented) breaks the protocol; it is no message over our limit.
        close_code::PROTOCOL
    } else if error.contains("too long") || error.contains("too big") || error.contains("size") {
        close_code::TOO_BIG
    } else {
        close_code::PROTOCOL
    }
}

/// Applies one text message. Returns a reason to close, if any.
fn control<B: Backend, R: Runtime>(
    channel: &Channel<B, R>,
    carrier: &Carrier<R>,
    options: &SocketOptions,
    text: &str,
) -> Option<CloseReason> {
    if !options.control {
        // TBone's handlers read and ignore what the client sends.
        return None;
    }
    let Ok(message) = serde_json::from_str::<Control>(text) else {
        return Some(CloseReason::Rejected(
            close_code::POLICY,
            r#"malformed control message; expected {"action":"subscribe"|"unsubscribe","event":"<name>"}"#.into(),
        ));
    };
    if !options.is_authorized(&message.event) {
        carrier.send_frame(error_frame(&format!(
            "not allowed to subscribe to `{}`",
            message.event
        )));
        return None;
    }
    match message.action {
        Action::Subscribe => match channel.subscribe(&message.event, carrier) {
            Ok(_) => None,
            Err(SubscribeError::EventNameTooLong { .. }) => {
                carrier.send_frame(error_frame("event name too long"));
                None
            }
            Err(error) => Some(CloseReason::Rejected(
                close_code::GOING_AWAY,
                error.to_string(),
            )),
        },
        Action::Unsubscribe => {
            channel.unsubscribe(&message.event, carrier);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_errors_map_to_rfc_6455_close_codes() {
        // tungstenite's messages. The control-frame case was found by the
        // soak suite's fuzzing: "too big" in it used to give 1009.
        for (error, code) in [
            ("UTF-8 encoding error: invalid utf-8 sequence", close_code::INVALID_PAYLOAD),
            ("Space limit exceeded: Message too long: 70000 > 65536", close_code::TOO_BIG),
            (
                "WebSocket protocol error: Control frame too big (payload must be 125 bytes or less)",
                close_code::PROTOCOL,
            ),
            ("WebSocket protocol error: Fragmented control frame", close_code::PROTOCOL),
            ("WebSocket protocol error: Reserved bits are non-zero", close_code::PROTOCOL),
            ("IO error: connection reset", close_code::PROTOCOL),
        ] {
            assert_eq!(read_error_code(error), code, "{error}");
        }
    }
}
