//! Driving a [`Session`] on a [`Runtime`]: the one place where a served
//! socket meets tasks, timers and its carrier.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::{self, BoxFuture, Either, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};

use super::authorize::{Client, ConnectRequest, DynAuthorizer, Refusal};
use super::channels::{Channels, Stopped};
use super::handler::{DynHandler, SendError, SocketHandle, SocketOps};
use super::late_sink::{BoxSink, ErrInto, LateSink, SinkFailure};
use super::options::{InitialEvent, SocketOptions};
use super::resume;
use super::session::{
    Action, ClientMessage, HandlerOutcome, Incoming, ReadError, Session, SubscribeOutcome,
};
use crate::carrier::{close_code, CloseReason, Outgoing};
use crate::observe::SocketConnected;
use crate::{Carrier, CarrierId, Frame, Runtime, SubscribeError};

/// Most client messages read in one go before the connection's task lets
/// others run.
const READS_PER_POLL: usize = 64;

/// A socket connection that is authorized and subscribed, waiting for its
/// websocket: [`Connection::open`] runs before the upgrade (so a refused
/// client gets an HTTP status, and every event published after the
/// handshake response reaches the client), [`Connection::serve`] after it.
///
/// The runtime glue (`websocket::accept` of each runtime crate, the axum
/// integration) does both; use this type to serve sockets of another
/// websocket library.
///
/// ```
/// use futures::channel::mpsc;
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::socket::Connection;
/// use tbone_dispatch::{ChannelBuilder, ConnectRequest, Incoming, MemoryBackend, Outgoing, ReadError, SocketOptions};
///
/// let runtime = ManualRuntime::new();
/// let pubsub = ChannelBuilder::new("doc-connection").open(runtime.clone(), MemoryBackend::new).unwrap();
/// pubsub.kickoff().unwrap();
///
/// let request = ConnectRequest::new("/ws/").header("Origin", "https://evil.example").header("Host", "app.example");
/// let refused = runtime.run(Connection::open(&pubsub, SocketOptions::new(["e"]), request)).unwrap();
/// assert_eq!(refused.unwrap_err().status(), 403);
///
/// let connection = runtime.run(Connection::open(&pubsub, SocketOptions::new(["e"]), ConnectRequest::new("/ws/"))).unwrap().unwrap();
/// assert_eq!(pubsub.subscriber_count("e"), 1); // before any socket exists
/// let (sink, _client) = mpsc::unbounded::<Outgoing>();
/// let (_incoming, stream) = mpsc::unbounded::<Result<Incoming, ReadError>>();
/// let _serving = connection.serve(sink, stream);
/// ```
pub struct Connection<R: Runtime> {
    carrier: CloseOnDrop<R>,
    attach: futures::channel::oneshot::Sender<BoxSink>,
    channels: Channels<R>,
    options: SocketOptions,
    client: Option<Client>,
    request: ConnectRequest,
}

impl<R: Runtime> fmt::Debug for Connection<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("carrier", &self.carrier.0)
            .field("channels", &self.channels)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Connection<R> {
    /// Decides whether the client of `request` may connect (the origin
    /// policy, then the authorization hook) and subscribes a new carrier to
    /// the events of `options` it may receive: after the positions the
    /// client gave in the [`LAST_POSITION`](super::LAST_POSITION) query
    /// parameter, if any; at its first message instead with
    /// [`SocketOptions::resume_message`] and no position in the query. The
    /// carrier holds frames until [`Connection::serve`] gives it the
    /// socket. A [`Refusal`] is the HTTP answer to send instead of
    /// upgrading.
    pub async fn open(
        channels: impl Into<Channels<R>>,
        options: SocketOptions,
        request: ConnectRequest,
    ) -> Result<Self, Refusal> {
        let channels = channels.into();
        options.origin_policy().check(&request)?;
        let client = match options.authorizer() {
            Some(authorizer) => Some(authorizer.connect(&request).await?),
            None => None,
        };
        let (attach, sink) = LateSink::new();
        let carrier =
            Carrier::for_socket(channels.runtime(), sink, options.carrier_config().clone())
                .map_err(|error| {
                    Refusal::unavailable(format!("cannot serve the socket: {error}"))
                })?;
        let carrier = CloseOnDrop(carrier);
        let positions = resume::positions(&request, &channels.shared_names())?;
        // A client that resumes in its first message is subscribed when it
        // arrives (`Action::SubscribeEvents`); one that gave its position
        // in the URL (even an empty one) is subscribed now and sends no
        // such message.
        let options = if positions.is_none() && options.has_resume_message() {
            options
        } else {
            let positions = positions.unwrap_or_default();
            let check = options.authorizer().zip(client.as_ref());
            let subscribed = resume::subscribe_events(
                &channels,
                options.initial_events(),
                check,
                &carrier.0,
                &positions,
            );
            subscribed.await.map_err(|error| match error {
                SubscribeError::Stopped { .. } => Refusal::unavailable(error.to_string()),
                SubscribeError::UnknownChannel { .. } => {
                    tracing::error!(%error, "socket options name a channel the socket is not served on");
                    Refusal::new(500, "the server is misconfigured")
                }
                other => {
                    tracing::error!(error = %other, "cannot subscribe a socket");
                    Refusal::new(500, other.to_string())
                }
            })?;
            options.resume_message(false)
        };
        Ok(Connection {
            carrier,
            attach,
            channels,
            options,
            client,
            request,
        })
    }

    /// The connection's carrier: where its events (and replies) queue.
    pub fn carrier(&self) -> &Carrier<R> {
        &self.carrier.0
    }

    /// The upgrade request it was opened with.
    pub fn request(&self) -> &ConnectRequest {
        &self.request
    }

    /// Serves the socket whose halves are `sink` and `stream` until it
    /// closes, and returns why. The carrier starts writing to `sink` (the
    /// frames it held first); `stream` is read by the [`Session`].
    /// Dropping the returned future closes the connection.
    //
    // Not an `async fn`: its arguments would stay in the future for the
    // whole connection, and an idle connection's memory is mostly this
    // future.
    pub fn serve<Si, St>(self, sink: Si, stream: St) -> impl Future<Output = CloseReason>
    where
        Si: Sink<Outgoing> + Send + Unpin + 'static,
        Si::Error: Into<SinkFailure>,
        St: Stream<Item = Result<Incoming, ReadError>> + Unpin + Send + 'static,
    {
        let Connection {
            carrier,
            attach,
            channels,
            options,
            client,
            request,
        } = self;
        let sink: BoxSink = Box::pin(ErrInto(sink));
        let runtime = channels.runtime().clone();
        if let Err(sink) = attach.send(sink) {
            // The carrier closed before its socket arrived (a channel
            // stopped during the handshake) and its writer gave up waiting:
            // the client still gets the close frame.
            let reason = carrier.0.close_reason().unwrap_or(CloseReason::Closed);
            let limit = options.carrier_config().close_timeout;
            let goodbye = {
                let runtime = runtime.clone();
                async move { refuse_upgraded(sink, &reason, &runtime, limit).await }
            };
            if let Err(error) = runtime.spawn(goodbye) {
                tracing::debug!(%error, "cannot send a close frame");
            }
        }
        let session = Session::new(&options, channels.shared_names(), runtime.now());
        // Boxed, and only while the session waits for them: an idle
        // connection pays one pointer.
        let held_events = options
            .has_resume_message()
            .then(|| Box::from(options.initial_events()));
        let handler = options.handler().cloned();
        let handle = handler.as_ref().map(|_| {
            SocketHandle::new(Arc::new(HandleOps {
                carrier: carrier.0.clone(),
                channels: channels.clone(),
                request,
                client: client.clone(),
            }))
        });
        let going_away = Some(GoingAway::new(&channels, &options));
        let close_timeout = options.carrier_config().close_timeout;
        let driver = Driver {
            close_timeout,
            session,
            carrier,
            channels,
            authorizer: options.authorizer().cloned(),
            client,
            handler: handler.zip(handle),
            held_events,
            runtime,
            _connected: SocketConnected::count(),
        };
        driver.run(stream, going_away)
    }
}

/// Resolves with why the server is letting the socket go: its shutdown
/// future, or one of its channels stopping. Polled in place by the driver
/// (no box of its own: it lives as long as the connection).
struct GoingAway {
    shutdown: Option<Shared<BoxFuture<'static, ()>>>,
    stopped: Stopped,
}

impl GoingAway {
    fn new<R: Runtime>(channels: &Channels<R>, options: &SocketOptions) -> Self {
        GoingAway {
            shutdown: options.shutdown().cloned(),
            stopped: channels.stopped(),
        }
    }

    fn poll<R: Runtime>(&mut self, cx: &mut Context<'_>, channels: &Channels<R>) -> Poll<String> {
        if let Some(shutdown) = &mut self.shutdown {
            if shutdown.poll_unpin(cx).is_ready() {
                return Poll::Ready("the server is shutting down".into());
            }
        }
        self.stopped
            .poll_unpin(cx)
            .map(|index| format!("the channel `{}` stopped", channels.name(index)))
    }
}

/// Closes the carrier when dropped, served or not (closing twice keeps the
/// first reason): a connection that never got its socket leaves every
/// channel.
struct CloseOnDrop<R: Runtime>(Carrier<R>);

impl<R: Runtime> Drop for CloseOnDrop<R> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The futures of the subscriptions a driver is making: the client's
/// (`Action::Subscribe`), the socket's own events (`Action::SubscribeEvents`).
type Subscribing<'a> = (
    &'a mut Option<BoxFuture<'static, SubscribeOutcome>>,
    &'a mut Option<BoxFuture<'static, Result<(), SubscribeError>>>,
);

struct Driver<R: Runtime> {
    close_timeout: std::time::Duration,
    session: Session,
    carrier: CloseOnDrop<R>,
    channels: Channels<R>,
    authorizer: Option<Arc<dyn DynAuthorizer>>,
    client: Option<Client>,
    handler: Option<(Arc<dyn DynHandler>, SocketHandle)>,
    /// The socket's own events, while the session holds them back until
    /// the client's first message.
    held_events: Option<Box<[InitialEvent]>>,
    runtime: R,
    // Counted as connected while the driver lives (nothing without the
    // `metrics` feature).
    _connected: SocketConnected,
}

impl<R: Runtime> Driver<R> {
    // Not an `async fn`: it would keep its arguments twice (as arguments,
    // and as the locals it moves them to) for the connection's whole life,
    // 408 bytes per idle connection (BENCHMARKS.md).
    #[allow(clippy::manual_async_fn)]
    fn run<St>(
        mut self,
        mut stream: St,
        mut going_away: Option<GoingAway>,
    ) -> impl Future<Output = CloseReason>
    where
        St: Stream<Item = Result<Incoming, ReadError>> + Unpin + Send + 'static,
    {
        async move {
            let mut closed = pin!(self.carrier.0.closed());
            let mut timer: Option<(Instant, BoxFuture<'static, ()>)> = None;
            let mut subscribing: Option<BoxFuture<'static, SubscribeOutcome>> = None;
            let mut subscribing_events: Option<BoxFuture<'static, Result<(), SubscribeError>>> =
                None;
            // Made on the first message: an idle socket should not pay for it.
            let mut handlers: Option<FuturesUnordered<BoxFuture<'static, HandlerOutcome>>> = None;
            future::poll_fn(|cx| {
                let mut reads = 0;
                loop {
                    while let Some(action) = self.session.poll_action() {
                        let pending = (&mut subscribing, &mut subscribing_events);
                        self.perform(action, pending, &mut handlers);
                    }
                    if self.session.is_closed() {
                        return Poll::Ready(());
                    }
                    if let Poll::Ready(reason) = closed.as_mut().poll(cx) {
                        self.session.handle_carrier_closed(reason);
                        continue;
                    }
                    if let Some(Poll::Ready(why)) =
                        going_away.as_mut().map(|g| g.poll(cx, &self.channels))
                    {
                        // Once: the session now waits for its handlers.
                        going_away = None;
                        self.session.go_away(self.runtime.now(), why);
                        continue;
                    }
                    if let Some(Poll::Ready(outcome)) =
                        subscribing.as_mut().map(|s| s.poll_unpin(cx))
                    {
                        subscribing = None;
                        self.session.subscribe_finished(outcome);
                        continue;
                    }
                    if let Some(Poll::Ready(outcome)) =
                        subscribing_events.as_mut().map(|s| s.poll_unpin(cx))
                    {
                        subscribing_events = None;
                        self.session.events_subscribed(outcome);
                        continue;
                    }
                    if let Some(running) = handlers.as_mut().filter(|h| !h.is_empty()) {
                        if let Poll::Ready(Some(outcome)) = running.poll_next_unpin(cx) {
                            self.session.handler_finished(outcome);
                            continue;
                        }
                    }
                    match self.session.poll_timeout() {
                        None => timer = None,
                        Some(due) => {
                            if timer.as_ref().is_none_or(|(at, _)| *at != due) {
                                let wait = due.saturating_duration_since(self.runtime.now());
                                timer = Some((due, self.runtime.sleep(wait).boxed()));
                            }
                            if let Some((_, sleep)) = timer.as_mut() {
                                if sleep.poll_unpin(cx).is_ready() {
                                    timer = None;
                                    // The runtime's timer says `due` has come.
                                    self.session.handle_timeout(self.runtime.now().max(due));
                                    continue;
                                }
                            }
                        }
                    }
                    if self.session.wants_read() {
                        if reads == READS_PER_POLL {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        match stream.poll_next_unpin(cx) {
                            Poll::Ready(Some(Ok(message))) => {
                                reads += 1;
                                self.session.handle_message(self.runtime.now(), message);
                                continue;
                            }
                            Poll::Ready(Some(Err(error))) => {
                                self.session.handle_read_error(error);
                                continue;
                            }
                            Poll::Ready(None) => {
                                self.session.handle_end_of_stream();
                                continue;
                            }
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
            })
            .await;
            let reason = self
                .session
                .close_reason()
                .cloned()
                .unwrap_or(CloseReason::Closed);
            let reason = self.carrier.0.close_reason().unwrap_or(reason);
            // What is left to do after the close happens off the
            // connection's task: the closing handshake, when we sent a
            // close frame, and the handler's messages still in flight (a
            // request whose write happened must still send its signal;
            // its reply can no longer reach the client).
            let limit = self.close_timeout;
            let closing = reason
                .close_frame()
                .map(|_| closing_handshake(&self.carrier.0, stream, &self.runtime, limit));
            let running = handlers.filter(|running| !running.is_empty());
            if closing.is_some() || running.is_some() {
                let finishing = running.map(|running| finish(running, &self.runtime, limit));
                let after = async move {
                    let closing = async move {
                        if let Some(closing) = closing {
                            closing.await;
                        }
                    };
                    let finishing = async move {
                        if let Some(finishing) = finishing {
                            finishing.await;
                        }
                    };
                    future::join(closing, finishing).await;
                };
                if let Err(error) = self.runtime.spawn(after) {
                    tracing::debug!(%error, "cannot finish the connection's work after its close");
                }
            }
            reason
        }
    }

    /// Carries out one action; `subscribing` holds the driver's
    /// subscription in progress (a client's, the socket's own events).
    fn perform(
        &mut self,
        action: Action,
        subscribing: Subscribing<'_>,
        handlers: &mut Option<FuturesUnordered<BoxFuture<'static, HandlerOutcome>>>,
    ) {
        let carrier = &self.carrier.0;
        match action {
            Action::Subscribe { channel, event } => {
                *subscribing.0 = Some(self.subscribe(channel, event));
            }
            Action::Unsubscribe { channel, event } => {
                self.channels.unsubscribe(channel, &event, carrier);
            }
            Action::Send(frame) => {
                carrier.send_frame(frame);
            }
            Action::Ping => {
                carrier.ping();
            }
            Action::Deliver(message) => match &self.handler {
                Some((handler, socket)) => handlers
                    .get_or_insert_with(FuturesUnordered::new)
                    .push(handle(handler, message, socket)),
                // The session delivers only when a handler is set.
                None => self.session.handler_finished(HandlerOutcome::Done),
            },
            Action::SubscribeEvents { resume } => {
                *subscribing.1 = Some(self.subscribe_events(resume));
            }
            Action::Close {
                reason,
                after_queued,
            } => {
                if after_queued {
                    carrier.close_after_queued(reason);
                } else {
                    carrier.close_for(reason);
                }
            }
        }
    }

    /// Subscribes the socket's own events, which the session held back
    /// until the client's first message: after `resume`'s position on its
    /// channel, live on the others.
    fn subscribe_events(
        &mut self,
        resume: Option<(usize, String)>,
    ) -> BoxFuture<'static, Result<(), SubscribeError>> {
        let held = self.held_events.take().unwrap_or_default();
        let channels = self.channels.clone();
        let carrier = self.carrier.0.clone();
        let authorizer = self.authorizer.clone();
        let client = self.client.clone();
        async move {
            let positions: Vec<(usize, String)> = resume.into_iter().collect();
            let check = authorizer.as_ref().zip(client.as_ref());
            resume::subscribe_events(&channels, &held, check, &carrier, &positions).await
        }
        .boxed()
    }

    /// Authorizes (if a hook is set) and subscribes, off the session.
    fn subscribe(&self, channel: usize, event: String) -> BoxFuture<'static, SubscribeOutcome> {
        let channels = self.channels.clone();
        let carrier = self.carrier.0.clone();
        let check = self.authorizer.clone().zip(self.client.clone());
        async move {
            if let Some((authorizer, client)) = check {
                let names = channels.shared_names();
                let name = names.get(channel).map_or("", |n| &**n);
                if !authorizer.allow(&*client, name, &event).await {
                    return SubscribeOutcome::Refused;
                }
            }
            match channels.subscribe(channel, &event, &carrier) {
                Ok(added) => SubscribeOutcome::Subscribed(added),
                Err(error) => SubscribeOutcome::Failed(error),
            }
        }
        .boxed()
    }
}

/// Lets the handler's messages still in flight when the connection closed
/// finish, within `limit`.
fn finish<R: Runtime>(
    mut running: FuturesUnordered<BoxFuture<'static, HandlerOutcome>>,
    runtime: &R,
    limit: std::time::Duration,
) -> impl Future<Output = ()> + Send + 'static {
    let runtime = runtime.clone();
    async move {
        let limit = runtime.sleep(limit);
        let all = async move { while running.next().await.is_some() {} };
        if let Either::Right(_) = future::select(pin!(all), pin!(limit)).await {
            tracing::warn!("a socket's message handlers did not finish within the close timeout after it closed: dropped");
        }
    }
}

/// The closing handshake (RFC 6455, 7.1.1), for a socket whose carrier
/// was closed with a close frame: once the carrier's writer has sent it,
/// read (and drop) what the client still sends until its close frame or
/// the end of the stream, within `limit` (the carrier's close timeout).
/// Dropping the read half with unread data in it would reset the TCP
/// connection, and the client could lose the close frame and its code;
/// reading before the frame is out would let the websocket library answer
/// a client's close first.
///
/// [`Connection::serve`] does it by itself; a hand-written serving loop
/// closes the same way: [`Carrier::close_after_queued`] (or
/// [`Carrier::close_for`]), then spawn this with the socket's read half.
///
/// ```
/// use std::time::Duration;
/// use futures::channel::mpsc;
/// use tbone_dispatch::socket::closing_handshake;
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{close_code, Carrier, CarrierConfig, CloseReason, Incoming, Outgoing, ReadError};
///
/// let runtime = ManualRuntime::new();
/// let (sink, mut client) = mpsc::unbounded::<Outgoing>();
/// let (incoming, stream) = mpsc::unbounded::<Result<Incoming, ReadError>>();
/// let carrier = Carrier::with_control(&runtime, sink, CarrierConfig::default()).unwrap();
/// carrier.close_after_queued(CloseReason::Application(close_code::NORMAL, "bye".into()));
/// let mut closing = Box::pin(closing_handshake(&carrier, stream, &runtime, Duration::from_secs(1)));
/// assert!(runtime.run_for(closing.as_mut()).is_none(), "waiting for the client's close");
/// assert_eq!(runtime.run(client.next()), Some(Some(Outgoing::Close(1000, "bye".into()))));
/// incoming.unbounded_send(Ok(Incoming::Close)).unwrap();
/// assert!(runtime.run_for(closing.as_mut()).is_some());
/// # use futures::StreamExt;
/// ```
pub fn closing_handshake<R, St>(
    carrier: &Carrier<R>,
    mut stream: St,
    runtime: &R,
    limit: std::time::Duration,
) -> impl Future<Output = ()> + Send + 'static
where
    R: Runtime,
    St: Stream<Item = Result<Incoming, ReadError>> + Unpin + Send + 'static,
{
    let written = carrier.finished();
    let runtime = runtime.clone();
    async move {
        let limit = runtime.sleep(limit);
        let drained = async move {
            written.await;
            while let Some(Ok(message)) = stream.next().await {
                if message == Incoming::Close {
                    break;
                }
            }
        };
        let _ = future::select(pin!(drained), pin!(limit)).await;
    }
}

/// Runs the handler on one message; an error or a panic ends only this
/// connection.
fn handle(
    handler: &Arc<dyn DynHandler>,
    message: ClientMessage,
    socket: &SocketHandle,
) -> BoxFuture<'static, HandlerOutcome> {
    let handled = handler.clone().call(message, socket.clone());
    AssertUnwindSafe(handled)
        .catch_unwind()
        .map(|outcome| match outcome {
            Ok(Ok(())) => HandlerOutcome::Done,
            Ok(Err(error)) => {
                tracing::warn!(%error, "socket message handler failed: closing the connection");
                HandlerOutcome::Failed(error.to_string())
            }
            Err(_) => {
                tracing::error!("socket message handler panicked: closing the connection");
                HandlerOutcome::Panicked
            }
        })
        .boxed()
}

/// What a [`SocketHandle`] does, over this runtime's carrier and channels.
struct HandleOps<R: Runtime> {
    carrier: Carrier<R>,
    channels: Channels<R>,
    request: ConnectRequest,
    client: Option<Client>,
}

impl<R: Runtime> SocketOps for HandleOps<R> {
    fn send(&self, frame: Frame) -> Result<(), SendError> {
        if self.carrier.is_closed() {
            return Err(SendError::Closed);
        }
        if self.carrier.send_frame(frame) {
            Ok(())
        } else {
            Err(SendError::Overflow)
        }
    }

    fn subscribe(&self, channel: Option<&str>, event: &str) -> Result<bool, SubscribeError> {
        let index = self.channels.index(channel)?;
        self.channels.subscribe(index, event, &self.carrier)
    }

    fn unsubscribe(&self, channel: Option<&str>, event: &str) -> Result<bool, SubscribeError> {
        let index = self.channels.index(channel)?;
        Ok(self.channels.unsubscribe(index, event, &self.carrier))
    }

    fn close(&self, code: u16, reason: String) {
        let reason = if close_code::is_sendable(code) {
            CloseReason::Application(code, reason)
        } else {
            // A code the client would refuse (1005, 1006...) fails its side
            // of the connection with a protocol error: say what happened.
            tracing::warn!(
                code,
                "the application closed a socket with a code that cannot be sent: 1011 instead"
            );
            CloseReason::Application(
                close_code::INTERNAL_ERROR,
                format!("the application closed with the invalid code {code}"),
            )
        };
        self.carrier.close_after_queued(reason);
    }

    fn is_closed(&self) -> bool {
        self.carrier.is_closed()
    }

    fn request(&self) -> &ConnectRequest {
        &self.request
    }

    fn client(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.client.as_deref()
    }

    fn id(&self) -> CarrierId {
        self.carrier.id()
    }
}

/// Serves one client socket on `channels` until it closes: the
/// specification's websocket handler (create a carrier, subscribe, read
/// loop, unsubscribe) in one call, for a socket that is already upgraded
/// (so no upgrade request: the origin policy has nothing to check, and an
/// [`Authorizer`](crate::Authorizer) sees an empty [`ConnectRequest`]).
/// Returns why the connection ended.
///
/// `sink` and `stream` are the socket's halves, mapped onto [`Outgoing`]
/// and [`Incoming`]. The [`Session`] decides everything else: keep-alive,
/// control messages, the application's handler, limits and close codes.
/// Dropping the returned future closes the connection, which leaves every
/// channel.
///
/// ```
/// use futures::channel::mpsc;
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{serve_socket, ChannelBuilder, CloseReason, Incoming, MemoryBackend, Outgoing, ReadError, SocketOptions};
///
/// let runtime = ManualRuntime::new();
/// let pubsub = ChannelBuilder::new("doc-serve-socket").open(runtime.clone(), MemoryBackend::new).unwrap();
/// pubsub.kickoff().unwrap();
/// let (sink, _client) = mpsc::unbounded::<Outgoing>();
/// let (incoming, stream) = mpsc::unbounded::<Result<Incoming, ReadError>>();
/// let mut served = Box::pin(serve_socket(&pubsub, sink, stream, SocketOptions::new(["e"])));
/// assert!(runtime.run_for(served.as_mut()).is_none()); // serving
/// assert_eq!(pubsub.subscriber_count("e"), 1);
/// incoming.unbounded_send(Ok(Incoming::Close)).unwrap();
/// assert_eq!(runtime.run_for(served.as_mut()), Some(CloseReason::PeerClosed));
/// assert_eq!(pubsub.subscriber_count("e"), 0);
/// ```
pub fn serve_socket<R, Si, St>(
    channels: impl Into<Channels<R>>,
    sink: Si,
    stream: St,
    options: SocketOptions,
) -> impl Future<Output = CloseReason>
where
    R: Runtime,
    Si: Sink<Outgoing> + Send + Unpin + 'static,
    Si::Error: Into<SinkFailure>,
    St: Stream<Item = Result<Incoming, ReadError>> + Unpin + Send + 'static,
{
    let channels = channels.into();
    let runtime = channels.runtime().clone();
    let close_timeout = options.carrier_config().close_timeout;
    // Boxed: what opening needs lives only while it runs.
    let opening = Box::pin(Connection::open(
        channels,
        options,
        ConnectRequest::default(),
    ));
    async move {
        match opening.await {
            Ok(connection) => connection.serve(sink, stream).await,
            Err(refusal) => {
                let reason = CloseReason::Rejected(refusal.close_code(), refusal.reason().into());
                refuse_upgraded(sink, &reason, &runtime, close_timeout).await;
                reason
            }
        }
    }
}

/// Sends a refused, already upgraded socket its close frame (bounded).
async fn refuse_upgraded<R: Runtime, Si: Sink<Outgoing> + Unpin>(
    mut sink: Si,
    reason: &CloseReason,
    runtime: &R,
    limit: std::time::Duration,
) {
    let goodbye = async {
        if let Some((code, why)) = reason.close_frame() {
            let _ = sink.send(Outgoing::Close(code, why)).await;
        }
        let _ = sink.close().await;
    };
    let _ = future::select(pin!(goodbye), pin!(runtime.sleep(limit))).await;
}
