//! The socket session: every rule of serving one client socket, as a state
//! machine with no tasks, locks, timers or IO.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::control::{self, Control, Parsed};
use super::limits::{Limits, RateLimiter};
use super::options::SocketOptions;
use crate::carrier::{close_code, CloseReason};
use crate::{Frame, SubscribeError};

/// A message from the client, as the session needs to see it. The runtime
/// glue maps its websocket's messages onto this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message.
    Text(String),
    /// A binary message, with its bytes.
    Binary(Bytes),
    /// A ping or pong: the client is alive.
    Alive,
    /// The client closed the connection.
    Close,
}

/// Why reading from the client failed, as the websocket library reported
/// it (typed, so the close code does not depend on an error's wording).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A text message that is not UTF-8 (closes with 1007).
    #[error("text that is not UTF-8: {0}")]
    InvalidUtf8(String),
    /// A message or frame over the size limit (closes with 1009).
    #[error("message over the size limit: {0}")]
    TooBig(String),
    /// A violation of the websocket protocol (closes with 1002).
    #[error("websocket protocol error: {0}")]
    Protocol(String),
    /// The connection itself failed (reset, or its TCP connection ended
    /// without a close frame, which tungstenite reports as an error):
    /// nobody is left to send a close frame to.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
}

impl ReadError {
    /// The reason the connection ends with.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            ReadError::InvalidUtf8(_) => {
                CloseReason::Rejected(close_code::INVALID_PAYLOAD, self.to_string())
            }
            ReadError::TooBig(_) => CloseReason::Rejected(close_code::TOO_BIG, self.to_string()),
            ReadError::Protocol(_) => CloseReason::Rejected(close_code::PROTOCOL, self.to_string()),
            ReadError::ConnectionLost(why) => CloseReason::ConnectionLost(why.clone()),
        }
    }
}

/// A client message for the application's [`MessageHandler`](crate::MessageHandler).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// A text message (that is not a control message).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl ClientMessage {
    /// The message as text, if it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            ClientMessage::Text(text) => Some(text),
            ClientMessage::Binary(_) => None,
        }
    }
}

/// What the driver of a [`Session`] must do next, polled with
/// [`Session::poll_action`].
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Authorize `event` on channel number `channel` (an index into the
    /// served channels) for this client, subscribe the socket's carrier,
    /// and report with [`Session::subscribe_finished`]. Reading waits
    /// until then, so a client's control messages apply in order.
    Subscribe {
        /// Index of the channel.
        channel: usize,
        /// The event.
        event: String,
    },
    /// Subscribe the socket's own events (those its
    /// [`SocketOptions`] list), which a socket served with
    /// [`SocketOptions::resume_message`] holds back until the client's first
    /// message: with `resume`, those of channel number `resume.0` after
    /// the client's position `resume.1`
    /// ([`Channel::subscribe_after`](crate::Channel::subscribe_after)), the
    /// others live. Report with [`Session::events_subscribed`]. Reading
    /// waits until then, so the first message, if it was not the resume
    /// message, is handled after the events are subscribed.
    SubscribeEvents {
        /// Channel index and position of a `resume` message.
        resume: Option<(usize, String)>,
    },
    /// Unsubscribe the socket's carrier from `event` on channel `channel`.
    Unsubscribe {
        /// Index of the channel.
        channel: usize,
        /// The event.
        event: String,
    },
    /// Queue this frame for the client, behind its events (an error frame).
    Send(Frame),
    /// Queue a keep-alive ping behind the frames already queued.
    Ping,
    /// Hand this message to the application's handler, and report when it
    /// is done with [`Session::handler_finished`].
    Deliver(ClientMessage),
    /// Close the connection for `reason`. When `after_queued` is set, what
    /// was queued for the client is written first (the server is going
    /// away; the client did nothing wrong). The session is over.
    Close {
        /// Why; [`CloseReason::close_frame`] gives the code to send.
        reason: CloseReason,
        /// Whether queued frames are written before the close frame.
        after_queued: bool,
    },
}

/// How the driver's [`Action::Subscribe`] went.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubscribeOutcome {
    /// Subscribed (`true`), or already was (`false`).
    Subscribed(bool),
    /// The authorization hook refused the event.
    Refused,
    /// The channel refused the subscription.
    Failed(SubscribeError),
}

/// Where a socket's own events (those of its [`SocketOptions`]) stand.
#[derive(Debug, PartialEq, Eq)]
enum Events {
    /// Subscribed when the connection opened, or since.
    Subscribed,
    /// Held back until the client's first message, which may be a resume
    /// message ([`SocketOptions::resume_message`]).
    AwaitingFirstMessage,
    /// The driver is subscribing them; the first message, if it was not
    /// the resume message, is handled once it is done.
    Subscribing(Option<Box<Incoming>>),
}

/// How the application's handler finished one message.
#[derive(Debug)]
pub enum HandlerOutcome {
    /// Handled.
    Done,
    /// The handler returned an error (closes with 1011).
    Failed(String),
    /// The handler panicked (closes with 1011).
    Panicked,
}

/// Serving one client socket, as a state machine in the manner of
/// quinn-proto's `Connection`: it owns no task, lock, timer or socket. The
/// driver feeds it what the client sent ([`Session::handle_message`],
/// [`Session::handle_read_error`]) and the time ([`Session::handle_timeout`]
/// when [`Session::poll_timeout`] is due), reports what it did
/// ([`Session::subscribe_finished`], [`Session::handler_finished`]), and
/// carries out the [`Action`]s it polls. [`serve_socket`](crate::serve_socket)
/// is that driver on a [`Runtime`](crate::Runtime); this type is what to test
/// (no runtime needed) or to drive yourself.
///
/// Its rules:
/// - keep-alive: a ping every `ping_interval`; a client that said nothing
///   (not even the pong) by the next one is closed with 1001, unless the
///   session itself was not reading (the application was busy);
/// - control messages (when enabled) subscribe and unsubscribe, with the
///   channel named where several are served; a malformed one closes with
///   1008, an unknown channel or event that cannot be subscribed gets an
///   error frame;
/// - with [`SocketOptions::resume_message`], the socket's own events wait
///   for the client's first message (pings and pongs aside): a resume
///   message, `{"action":"resume","position":"<position>"}` (with
///   `"channel"` where several are served), subscribes them after that
///   position on its channel and live on the others; any other first
///   message subscribes them live and is then handled as usual. A resume
///   message at any other time (with control messages on) gets an error
///   frame;
/// - other messages go to the application's handler, at most
///   [`Limits::in_flight`] at a time (reading pauses at the limit); without
///   a handler, text is ignored (as in TBone) and binary closes with 1003;
/// - over [`Limits::subscriptions`] or [`Limits::messages_per_second`] (a
///   token bucket: bursts of that many, that many per second on average): 1008;
/// - read errors close with the code of their kind ([`ReadError`]); a
///   handler error or panic closes with 1011.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tbone_dispatch::socket::{Action, Session, SubscribeOutcome};
/// use tbone_dispatch::{CloseReason, Incoming, SocketOptions};
///
/// let options = SocketOptions::new(["resource_create"])
///     .control_messages(true)
///     .ping_interval(Duration::from_secs(30));
/// let start = Instant::now();
/// let mut session = Session::new(&options, vec!["pubsub".into()].into(), start);
///
/// session.handle_message(start, Incoming::Text(r#"{"action":"subscribe","event":"chat"}"#.into()));
/// assert_eq!(session.poll_action(), Some(Action::Subscribe { channel: 0, event: "chat".into() }));
/// assert!(!session.wants_read()); // until the subscription is done
/// session.subscribe_finished(SubscribeOutcome::Subscribed(true));
/// assert!(session.wants_read());
///
/// // Thirty seconds of silence: a ping. Thirty more: closed as unresponsive.
/// let due = session.poll_timeout().unwrap();
/// assert_eq!(due, start + Duration::from_secs(30));
/// session.handle_timeout(due);
/// assert_eq!(session.poll_action(), Some(Action::Ping));
/// session.handle_timeout(due + Duration::from_secs(30));
/// assert!(matches!(
///     session.poll_action(),
///     Some(Action::Close { reason: CloseReason::Rejected(1001, _), .. })
/// ));
/// assert!(session.is_closed());
/// ```
#[derive(Debug)]
pub struct Session {
    control: bool,
    handler: bool,
    ping_interval: Duration,
    limits: Limits,
    channels: Arc<[Arc<str>]>,
    next_ping: Option<Instant>,
    heard: bool,
    /// Reading paused (a subscription, the in-flight limit) at some point
    /// since the last ping: the client's silence may be the session's.
    paused: bool,
    /// Subscriptions the client made (channel index, event).
    subscriptions: HashSet<(usize, Box<str>)>,
    /// The subscription the driver is working on.
    pending: Option<(usize, Box<str>)>,
    /// Where the socket's own events stand.
    events: Events,
    in_flight: usize,
    /// The server is going away: why, and until when the handler's
    /// messages in flight may finish.
    going_away: Option<(String, Instant)>,
    close_timeout: Duration,
    rate: RateLimiter,
    actions: VecDeque<Action>,
    closed: Option<CloseReason>,
}

impl Session {
    /// A session for a socket served with `options` on the channels named
    /// `channels` (in the order [`Action`]s index them), starting at `now`.
    pub fn new(options: &SocketOptions, channels: Arc<[Arc<str>]>, now: Instant) -> Self {
        let ping_interval = options.keepalive();
        Session {
            control: options.has_control_messages(),
            handler: options.has_handler(),
            ping_interval,
            limits: options.socket_limits(),
            channels,
            next_ping: (!ping_interval.is_zero()).then(|| now + ping_interval),
            heard: true,
            paused: false,
            subscriptions: HashSet::new(),
            pending: None,
            events: if options.has_resume_message() {
                Events::AwaitingFirstMessage
            } else {
                Events::Subscribed
            },
            in_flight: 0,
            going_away: None,
            close_timeout: options.carrier_config().close_timeout,
            rate: RateLimiter::new(now),
            actions: VecDeque::new(),
            closed: None,
        }
    }

    /// Whether the driver should read the next client message now: not
    /// while a subscription is being made, nor while the handler has
    /// [`Limits::in_flight`] messages, nor once the session is closed.
    pub fn wants_read(&self) -> bool {
        self.closed.is_none() && self.going_away.is_none() && self.reading()
    }

    /// Reading is not paused by the session's own work: a subscription,
    /// the socket's events, the in-flight limit.
    fn reading(&self) -> bool {
        self.pending.is_none()
            && !matches!(self.events, Events::Subscribing(_))
            && self.in_flight < self.limits.in_flight()
    }

    /// When [`Session::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        match &self.going_away {
            Some((_, deadline)) => Some(*deadline),
            None => self.next_ping,
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the session is over (its [`Action::Close`] was emitted).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the session is over, once it is.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    /// Messages handed to the handler and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Subscriptions the client holds through control messages (a pending
    /// one included).
    pub fn client_subscriptions(&self) -> usize {
        let pending_new = self
            .pending
            .as_ref()
            .is_some_and(|pending| !self.subscriptions.contains(pending));
        self.subscriptions.len() + usize::from(pending_new)
    }

    /// The client sent `message` at `now`. A driver calls it only while
    /// [`Session::wants_read`] holds (a close from the client excepted):
    /// the session's limits and its one pending subscription rely on it.
    pub fn handle_message(&mut self, now: Instant, message: Incoming) {
        if self.closed.is_some() {
            return;
        }
        self.heard = true;
        if message == Incoming::Close {
            return self.close(CloseReason::PeerClosed, false);
        }
        if !self.rate.admit(now, self.limits.messages_per_second()) {
            let limit = self.limits.messages_per_second().unwrap_or(0);
            return self.reject(
                close_code::POLICY,
                format!("too many messages: the limit is {limit} per second"),
            );
        }
        if self.events == Events::AwaitingFirstMessage && message != Incoming::Alive {
            return self.first_message(message);
        }
        self.dispatch(message);
    }

    /// The client's first message on a socket whose events wait for it.
    fn first_message(&mut self, message: Incoming) {
        let resume = match &message {
            Incoming::Text(text) => match control::parse(text) {
                Parsed::Control(Control::Resume { position, channel }) => Some((position, channel)),
                _ => None,
            },
            _ => None,
        };
        let (held, resume) = match resume {
            None => (Some(Box::new(message)), None),
            Some((position, channel)) => match self.channel_index(channel.as_deref()) {
                Ok(index) => (None, position.map(|position| (index, position))),
                Err(error) => {
                    // Still waiting: the client may name a served channel.
                    self.actions
                        .push_back(Action::Send(control::error_frame(&error)));
                    return;
                }
            },
        };
        self.events = Events::Subscribing(held);
        self.paused = true;
        self.actions.push_back(Action::SubscribeEvents { resume });
    }

    fn dispatch(&mut self, message: Incoming) {
        match message {
            Incoming::Alive | Incoming::Close => {}
            Incoming::Binary(bytes) => {
                if self.handler {
                    self.deliver(ClientMessage::Binary(bytes));
                } else {
                    self.reject(
                        close_code::UNSUPPORTED,
                        "binary messages are not accepted".into(),
                    );
                }
            }
            Incoming::Text(text) => self.text(text),
        }
    }

    fn text(&mut self, text: String) {
        if !self.control {
            // Without a handler, TBone's handlers read and ignore what the
            // client sends.
            if self.handler {
                self.deliver(ClientMessage::Text(text));
            }
            return;
        }
        match control::parse(&text) {
            Parsed::Control(message) => self.apply(message),
            Parsed::Other if self.handler => self.deliver(ClientMessage::Text(text)),
            Parsed::Malformed | Parsed::Other => {
                self.reject(close_code::POLICY, control::EXPECTED.into())
            }
        }
    }

    fn deliver(&mut self, message: ClientMessage) {
        self.in_flight += 1;
        if self.in_flight >= self.limits.in_flight() {
            self.paused = true;
        }
        self.actions.push_back(Action::Deliver(message));
    }

    fn apply(&mut self, message: Control) {
        let (subscribe, event, channel) = match message {
            Control::Subscribe { event, channel } => (true, event, channel),
            Control::Unsubscribe { event, channel } => (false, event, channel),
            Control::Resume { .. } => {
                let why = "a resume message comes first, on a socket served with resume \
                           messages; give the position in the `last_position` query parameter \
                           instead";
                self.actions
                    .push_back(Action::Send(control::error_frame(why)));
                return;
            }
        };
        let channel = match self.channel_index(channel.as_deref()) {
            Ok(index) => index,
            Err(error) => {
                self.actions
                    .push_back(Action::Send(control::error_frame(&error)));
                return;
            }
        };
        let key = (channel, Box::<str>::from(event.as_str()));
        if !subscribe {
            self.subscriptions.remove(&key);
            self.actions
                .push_back(Action::Unsubscribe { channel, event });
            return;
        }
        if !self.subscriptions.contains(&key)
            && self.subscriptions.len() >= self.limits.subscriptions()
        {
            let limit = self.limits.subscriptions();
            return self.reject(
                close_code::POLICY,
                format!("too many subscriptions: the limit is {limit}"),
            );
        }
        self.pending = Some(key);
        self.paused = true;
        self.actions.push_back(Action::Subscribe { channel, event });
    }

    fn channel_index(&self, name: Option<&str>) -> Result<usize, String> {
        match name {
            None if self.channels.len() == 1 => Ok(0),
            None => Err(format!(
                "name the channel: this socket serves {}",
                self.channel_list()
            )),
            Some(name) => self
                .channels
                .iter()
                .position(|c| &**c == name)
                .ok_or_else(|| {
                    format!(
                        "no channel `{name}` on this socket; it serves {}",
                        self.channel_list()
                    )
                }),
        }
    }

    fn channel_list(&self) -> String {
        let names: Vec<&str> = self.channels.iter().map(|c| &**c).collect();
        names.join(", ")
    }

    /// Reading from the client failed.
    pub fn handle_read_error(&mut self, error: ReadError) {
        self.close(error.close_reason(), false);
    }

    /// The client's stream ended (with no error: the websocket library
    /// already handled the client's close).
    pub fn handle_end_of_stream(&mut self) {
        self.close(CloseReason::PeerClosed, false);
    }

    /// Time passed: call when [`Session::poll_timeout`] is due (earlier
    /// calls do nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if let Some((why, deadline)) = &self.going_away {
            if now >= *deadline {
                let why = why.clone();
                self.close(CloseReason::Rejected(close_code::GOING_AWAY, why), true);
            }
            return;
        }
        let Some(due) = self.next_ping else {
            return;
        };
        if now < due {
            return;
        }
        // Silence is the client's fault only if we read all along: a pong
        // may wait unread behind a subscription or a busy handler.
        let reading = self.reading();
        if !self.heard && !self.paused && reading {
            return self.close(
                CloseReason::Rejected(close_code::GOING_AWAY, "no answer to pings".into()),
                false,
            );
        }
        self.heard = false;
        self.paused = !reading;
        self.next_ping = Some(now + self.ping_interval);
        self.actions.push_back(Action::Ping);
    }

    /// The driver finished the pending [`Action::Subscribe`].
    pub fn subscribe_finished(&mut self, outcome: SubscribeOutcome) {
        let Some((channel, event)) = self.pending.take() else {
            return;
        };
        if self.closed.is_some() {
            return;
        }
        let refused = |why: String| Action::Send(control::error_frame(&why));
        match outcome {
            SubscribeOutcome::Subscribed(_) => {
                self.subscriptions.insert((channel, event));
            }
            SubscribeOutcome::Refused => self
                .actions
                .push_back(refused(format!("not allowed to subscribe to `{event}`"))),
            SubscribeOutcome::Failed(SubscribeError::EventNameTooLong { .. }) => self
                .actions
                .push_back(refused("event name too long".into())),
            SubscribeOutcome::Failed(SubscribeError::CarrierClosed { reason, .. }) => {
                self.close(reason, false)
            }
            SubscribeOutcome::Failed(error) => self.close(
                CloseReason::Rejected(close_code::GOING_AWAY, error.to_string()),
                true,
            ),
        }
    }

    /// The driver finished the [`Action::SubscribeEvents`]. On success the
    /// first message, if it was not the resume message, is handled now.
    pub fn events_subscribed(&mut self, outcome: Result<(), SubscribeError>) {
        let Events::Subscribing(held) = &mut self.events else {
            return;
        };
        let held = held.take();
        self.events = Events::Subscribed;
        if self.closed.is_some() {
            return;
        }
        match outcome {
            Ok(()) => {
                if let Some(message) = held {
                    self.dispatch(*message);
                }
            }
            Err(SubscribeError::CarrierClosed { reason, .. }) => self.close(reason, false),
            Err(error @ SubscribeError::Stopped { .. }) => self.close(
                CloseReason::Rejected(close_code::GOING_AWAY, error.to_string()),
                true,
            ),
            // The options name what the channels refuse: the server's
            // mistake, not the client's.
            Err(error) => self.close(
                CloseReason::Rejected(
                    close_code::INTERNAL_ERROR,
                    format!("the server is misconfigured: {error}"),
                ),
                true,
            ),
        }
    }

    /// The handler finished one delivered message.
    pub fn handler_finished(&mut self, outcome: HandlerOutcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let why = match outcome {
            HandlerOutcome::Done => {
                if self.in_flight == 0 {
                    if let Some((why, _)) = self.going_away.take() {
                        self.close(CloseReason::Rejected(close_code::GOING_AWAY, why), true);
                    }
                }
                return;
            }
            HandlerOutcome::Failed(error) => format!("the application failed: {error}"),
            HandlerOutcome::Panicked => "the application failed: its handler panicked".into(),
        };
        self.close(CloseReason::Rejected(close_code::INTERNAL_ERROR, why), true);
    }

    /// The server is going away (shutdown, a channel stopped) at `now`:
    /// reading stops, the handler's messages in flight may finish (within
    /// the carrier's close timeout) so their replies reach the client, then
    /// the session closes with 1001 after what the client was sent.
    pub fn go_away(&mut self, now: Instant, why: impl Into<String>) {
        if self.closed.is_some() || self.going_away.is_some() {
            return;
        }
        let why = why.into();
        if self.in_flight == 0 {
            return self.close(CloseReason::Rejected(close_code::GOING_AWAY, why), true);
        }
        self.going_away = Some((why, now + self.close_timeout));
    }

    /// The connection ended for `reason` outside the session's view (the
    /// carrier closed: overflow, application close, sink failure).
    pub fn handle_carrier_closed(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.actions.clear();
            self.closed = Some(reason);
        }
    }

    fn reject(&mut self, code: u16, why: String) {
        self.close(CloseReason::Rejected(code, why), false);
    }

    fn close(&mut self, reason: CloseReason, after_queued: bool) {
        if self.closed.is_some() {
            return;
        }
        // Nothing queued before the close matters any more, except frames
        // already meant for the client.
        self.actions
            .retain(|action| matches!(action, Action::Send(_)));
        self.actions.push_back(Action::Close {
            reason: reason.clone(),
            after_queued,
        });
        self.closed = Some(reason);
    }
}
