//! Carriers: the bounded, self-cleaning path from a channel to one client.

use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use futures::future::{self, Either};
use futures::task::AtomicWaker;
use futures::{FutureExt, Sink, SinkExt, StreamExt};

use crate::queue::{self, TrySendError};
use crate::runtime::{Runtime, SpawnError};
use crate::Frame;

/// Identifies one carrier; unique within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CarrierId(u64);

impl CarrierId {
    /// A fresh identifier, never returned before in this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        CarrierId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for CarrierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "carrier#{}", self.0)
    }
}

/// What a channel does when a carrier's queue is full: a client that does
/// not read must never slow the publisher or the other clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Close the carrier and remove it from every channel (counted in
    /// [`ChannelStats::carriers_dropped`](crate::ChannelStats)). A client
    /// that missed events is better told by a closed socket, so it can
    /// reconnect and reload, than left silently out of date.
    #[default]
    DropCarrier,
    /// Skip this frame for this carrier only and keep the carrier (counted
    /// in [`Carrier::frames_dropped`] and
    /// [`ChannelStats::frames_dropped`](crate::ChannelStats)).
    DropFrame,
}

/// Settings of one carrier: plain data, set through the fields or the
/// builder methods of the same names.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch::{CarrierConfig, OverflowPolicy};
///
/// let config = CarrierConfig::default()
///     .capacity(64)
///     .overflow(OverflowPolicy::DropFrame)
///     .close_timeout(Duration::from_millis(200));
/// assert_eq!(config.capacity, 64);
/// assert_eq!(config.overflow, OverflowPolicy::DropFrame);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CarrierConfig {
    /// How many frames may wait for the sink (default 256; a capacity of 0
    /// acts as 1).
    pub capacity: usize,
    /// What to do when the queue is full (default
    /// [`OverflowPolicy::DropCarrier`]).
    pub overflow: OverflowPolicy,
    /// How long closing the sink (and writing what was queued, on a
    /// graceful close) may take before it is abandoned (default 1 s), so a
    /// stalled peer cannot keep a task alive.
    pub close_timeout: Duration,
}

impl Default for CarrierConfig {
    fn default() -> Self {
        CarrierConfig {
            capacity: 256,
            overflow: OverflowPolicy::DropCarrier,
            close_timeout: Duration::from_secs(1),
        }
    }
}

impl CarrierConfig {
    /// Sets [`CarrierConfig::capacity`].
    pub fn capacity(mut self, frames: usize) -> Self {
        self.capacity = frames;
        self
    }

    /// Sets [`CarrierConfig::overflow`].
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// Sets [`CarrierConfig::close_timeout`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }
}

/// Why a carrier closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`Carrier::close`] was called.
    Closed,
    /// Its queue overflowed under [`OverflowPolicy::DropCarrier`].
    Overflow,
    /// The sink returned an error (the socket died); the message says which.
    SinkError(String),
    /// The peer (client) closed the connection.
    PeerClosed,
    /// The connection was refused for what the peer sent or did not send
    /// (garbage, oversized message, no answer to pings), or let go by the
    /// server (1001, going away; 1011, the application failed): a
    /// websocket status code and the reason sent with it.
    Rejected(u16, String),
    /// The application closed the connection
    /// ([`SocketHandle::close`](crate::SocketHandle::close)) with this code
    /// and reason.
    Application(u16, String),
    /// The connection failed under the socket (reset, ended without a close
    /// frame): nobody is left to tell.
    ConnectionLost(String),
}

impl CloseReason {
    /// The close frame to send for this reason, if the peer can still be
    /// told anything.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        match self {
            CloseReason::Closed => Some((close_code::NORMAL, String::new())),
            CloseReason::Overflow => Some((
                close_code::POLICY,
                "too slow: events were not read in time".into(),
            )),
            CloseReason::Rejected(code, reason) | CloseReason::Application(code, reason) => {
                Some((*code, fit_close_reason(reason)))
            }
            CloseReason::SinkError(_)
            | CloseReason::PeerClosed
            | CloseReason::ConnectionLost(_) => None,
        }
    }
}

/// Cuts `reason` to what a close frame can carry, on a character boundary.
fn fit_close_reason(reason: &str) -> String {
    let mut end = reason.len().min(close_code::MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Closed => f.write_str("closed by the application"),
            CloseReason::Overflow => f.write_str("dropped: its queue was full (a slow client)"),
            CloseReason::SinkError(e) => write!(f, "its sink failed: {e}"),
            CloseReason::PeerClosed => f.write_str("closed by the peer"),
            CloseReason::Rejected(code, reason) => write!(f, "rejected with code {code}: {reason}"),
            CloseReason::Application(code, reason) => {
                write!(f, "closed by the application with code {code}: {reason}")
            }
            CloseReason::ConnectionLost(why) => write!(f, "the connection was lost: {why}"),
        }
    }
}

/// What a carrier's writer puts on its sink: event frames, and for sockets
/// the control messages a websocket needs (keep-alive pings, a close frame
/// with a code). Sinks built with [`Carrier::new`] see only frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// An encoded event.
    Frame(Frame),
    /// A keep-alive ping.
    Ping,
    /// A close frame: status code and reason, sent once before the sink is
    /// closed.
    Close(u16, String),
}

/// Websocket status codes used when a carrier closes.
pub mod close_code {
    /// The application closed the connection.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (channel stopped, shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// The peer sent a kind of data that is not accepted.
    pub const UNSUPPORTED: u16 = 1003;
    /// The peer violated the application's policy (malformed control
    /// message, too slow to keep up).
    pub const POLICY: u16 = 1008;
    /// The peer sent text that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The peer sent a message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server (the application) failed.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Longest reason a close frame can carry, in bytes (125 minus the code).
    pub const MAX_REASON: usize = 123;

    /// Whether `code` may be sent in a close frame (RFC 6455, 7.4): the
    /// defined codes an endpoint may send (1000-1003, 1007-1014) and the
    /// ranges for libraries and applications (3000-4999). 1004 is
    /// reserved; 1005, 1006 and 1015 must never be sent.
    ///
    /// ```
    /// use tbone_dispatch::close_code::{is_sendable, NORMAL};
    ///
    /// assert!(is_sendable(NORMAL));
    /// assert!(is_sendable(4000));
    /// assert!(!is_sendable(1005));
    /// assert!(!is_sendable(999));
    /// ```
    pub fn is_sendable(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Closes its carrier when dropped: see [`Carrier::presence_guard`].
#[must_use = "the carrier closes when the guard is dropped"]
pub struct PresenceGuard {
    // Weak: the guard must not keep a carrier that is gone alive.
    shared: Weak<dyn Closable>,
}

impl fmt::Debug for PresenceGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresenceGuard").finish_non_exhaustive()
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.close_as(CloseReason::PeerClosed);
        }
    }
}

/// A carrier's shared state, whatever its runtime.
trait Closable: Send + Sync {
    fn close_as(&self, reason: CloseReason);
}

impl<R: Runtime> Closable for Shared<R> {
    fn close_as(&self, reason: CloseReason) {
        self.close(reason);
    }
}

/// A channel that can forget a carrier; carriers hold these weakly so that
/// closing one removes it everywhere without keeping channels alive.
pub(crate) trait Membership: Send + Sync {
    fn forget(&self, id: CarrierId);
}

#[derive(Default)]
struct CloseFlag {
    closed: AtomicBool,
    /// Set (before the reason is announced) when the frames already queued
    /// must still be written before the close frame.
    drain: AtomicBool,
    reason: Mutex<Option<CloseReason>>,
    pump: AtomicWaker,
    waiters: Mutex<Vec<Waker>>,
    /// Set when the writer has ended (its sink closed, or abandoned).
    finished: AtomicBool,
    finish_waiters: Mutex<Vec<Waker>>,
    /// Frames written and flushed to the sink so far.
    written: AtomicU64,
    flush_waiters: Mutex<Vec<Waker>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing user-supplied runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CloseFlag {
    /// First half of closing: from now on the carrier refuses frames and
    /// joins. Returns false if it was already closed.
    fn mark(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Second half: publish the reason and wake the writer and every
    /// `closed()` waiter. Done last, so that a waiter never observes the
    /// carrier still subscribed somewhere.
    fn announce(&self, reason: CloseReason) {
        *lock(&self.reason) = Some(reason);
        self.pump.wake();
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for waker in waiters {
            waker.wake();
        }
    }

    fn is_set(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn drains(&self) -> bool {
        self.drain.load(Ordering::Acquire)
    }

    fn reason(&self) -> Option<CloseReason> {
        lock(&self.reason).clone()
    }

    // The pump's view: a single waiter, so an AtomicWaker suffices. It waits
    // for the announced reason, not the flag: the close frame it sends on
    // the way out needs that reason.
    fn wait_pump(&self) -> impl Future<Output = ()> + Unpin + '_ {
        future::poll_fn(move |cx| {
            if self.is_announced() {
                return Poll::Ready(());
            }
            self.pump.register(cx.waker());
            if self.is_announced() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn is_announced(&self) -> bool {
        lock(&self.reason).is_some()
    }

    fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut *lock(&self.finish_waiters));
        let flushes = std::mem::take(&mut *lock(&self.flush_waiters));
        for waker in waiters.into_iter().chain(flushes) {
            waker.wake();
        }
    }

    /// Counts `frames` as written and flushed, and wakes whoever waits for
    /// that (a channel's stop); nobody usually does, so no wake then.
    fn wrote(&self, frames: u64) {
        if frames == 0 {
            return;
        }
        self.written.fetch_add(frames, Ordering::AcqRel);
        let waiters = std::mem::take(&mut *lock(&self.flush_waiters));
        for waker in waiters {
            waker.wake();
        }
    }
}

/// Ready with what `done` says, or registers the task among `waiters` (once)
/// and looks again, so that a wake between the two looks is not missed.
fn wait_for<T>(
    cx: &mut std::task::Context<'_>,
    waiters: &Mutex<Vec<Waker>>,
    done: impl Fn() -> Option<T>,
) -> Poll<T> {
    if let Some(value) = done() {
        return Poll::Ready(value);
    }
    {
        let mut waiters = lock(waiters);
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            // Nearly always one waiter, for a connection's life.
            if waiters.is_empty() {
                waiters.reserve_exact(1);
            }
            waiters.push(cx.waker().clone());
        }
    }
    match done() {
        Some(value) => Poll::Ready(value),
        None => Poll::Pending,
    }
}

/// Marks the writer finished when it ends, or when its task is dropped
/// (a runtime shutting down).
struct FinishOnDrop(Arc<CloseFlag>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

struct Shared<R: Runtime> {
    id: CarrierId,
    // The runtime its writer runs on, for what the carrier starts later.
    runtime: R,
    close_timeout: Duration,
    tx: queue::Sender<Outgoing>,
    overflow: OverflowPolicy,
    flag: Arc<CloseFlag>,
    memberships: Mutex<Vec<Weak<dyn Membership>>>,
    queued: AtomicU64,
    dropped: AtomicU64,
}

/// What happened when a channel offered a frame to a carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    FrameDropped,
    CarrierDropped,
    Gone,
}

/// The path from channels to one client: a bounded queue in front of any
/// [`futures::Sink`] of [`Frame`]s, drained by its own task.
///
/// A carrier is the spec's `Carrier`: the abstraction over a websocket (or
/// SSE stream, or test buffer) that channels deliver to. Publishing only ever
/// puts a shared frame into the carrier's queue; a slow client fills its own
/// queue and is then handled by its [`OverflowPolicy`], never slowing anyone
/// else. When the sink fails (the socket died) or the carrier is closed, it
/// removes itself from every event of every channel it was subscribed to.
///
/// Cloning a `Carrier` gives another handle to the same carrier. When the
/// last handle is dropped (the application's and the channels'), the queue is
/// drained into the sink and the sink is closed.
///
/// ```
/// use futures::StreamExt;
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{Carrier, CarrierConfig, CloseReason, Frame};
///
/// let runtime = ManualRuntime::new();
/// // Any Sink<Frame> works: here the sending half of a futures channel
/// // stands in for a websocket.
/// let (socket, mut client) = futures::channel::mpsc::unbounded::<Frame>();
/// let carrier = Carrier::new(&runtime, socket, CarrierConfig::default().capacity(64)).unwrap();
///
/// carrier.close();
/// assert_eq!(runtime.run(carrier.closed()), Some(CloseReason::Closed));
/// // Closing the carrier closed its sink: the client sees the end.
/// assert_eq!(runtime.run(client.next()), Some(None));
/// ```
pub struct Carrier<R: Runtime> {
    shared: Arc<Shared<R>>,
}

impl<R: Runtime> Clone for Carrier<R> {
    fn clone(&self) -> Self {
        Carrier {
            shared: self.shared.clone(),
        }
    }
}

impl<R: Runtime> fmt::Debug for Carrier<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carrier")
            .field("id", &self.shared.id)
            .field("closed", &self.shared.flag.is_set())
            .finish()
    }
}

impl<R: Runtime + Default> Carrier<R> {
    /// [`Carrier::new`] on the default runtime of `R`, with the default
    /// configuration.
    pub fn from_sink<S>(sink: S) -> Result<Self, SpawnError>
    where
        S: Sink<Frame> + Send + Unpin + 'static,
        S::Error: fmt::Display,
    {
        Self::new(&R::default(), sink, CarrierConfig::default())
    }
}

impl<R: Runtime> Carrier<R> {
    /// Wraps `sink` in a carrier and starts its writer task on `runtime`.
    ///
    /// Fails only if the runtime cannot spawn (for tokio: called outside a
    /// runtime).
    pub fn new<S>(runtime: &R, sink: S, config: CarrierConfig) -> Result<Self, SpawnError>
    where
        S: Sink<Frame> + Send + Unpin + 'static,
        S::Error: fmt::Display,
    {
        Self::with_control(runtime, FramesOnly(sink), config)
    }

    /// A carrier over a sink that also takes control messages
    /// ([`Outgoing::Ping`], [`Outgoing::Close`]): how websocket carriers
    /// send keep-alive pings and close codes through the same writer as the
    /// frames.
    pub fn with_control<S>(runtime: &R, sink: S, config: CarrierConfig) -> Result<Self, SpawnError>
    where
        S: Sink<Outgoing> + Send + Unpin + 'static,
        S::Error: fmt::Display,
    {
        Self::start(runtime, sink, config, false)
    }

    /// A socket's carrier, whose sink arrives after its handshake: the
    /// writer takes it as soon as it is there (see `pump`).
    pub(crate) fn for_socket<S>(
        runtime: &R,
        sink: S,
        config: CarrierConfig,
    ) -> Result<Self, SpawnError>
    where
        S: Sink<Outgoing> + Send + Unpin + 'static,
        S::Error: fmt::Display,
    {
        Self::start(runtime, sink, config, true)
    }

    fn start<S>(
        runtime: &R,
        sink: S,
        config: CarrierConfig,
        prime: bool,
    ) -> Result<Self, SpawnError>
    where
        S: Sink<Outgoing> + Send + Unpin + 'static,
        S::Error: fmt::Display,
    {
        let (tx, rx) = queue::bounded(config.capacity.max(1));
        let flag = Arc::new(CloseFlag::default());
        let shared = Arc::new(Shared {
            id: CarrierId::next(),
            runtime: runtime.clone(),
            close_timeout: config.close_timeout,
            tx,
            overflow: config.overflow,
            flag: flag.clone(),
            memberships: Mutex::new(Vec::new()),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let writer = pump(
            Arc::downgrade(&shared),
            flag,
            rx,
            sink,
            runtime.clone(),
            config.close_timeout,
            prime,
        );
        runtime.spawn(writer)?;
        Ok(Carrier { shared })
    }

    /// The runtime this carrier's writer runs on.
    pub fn runtime(&self) -> &R {
        &self.shared.runtime
    }

    /// This carrier's identifier.
    pub fn id(&self) -> CarrierId {
        self.shared.id
    }

    /// Closes the carrier: it leaves every channel, its queue is abandoned
    /// and its sink is closed. Idempotent.
    pub fn close(&self) {
        self.shared.close(CloseReason::Closed);
    }

    /// Closes the carrier for `reason` (a socket sends the matching close
    /// frame). Idempotent: the first reason wins.
    pub fn close_for(&self, reason: CloseReason) {
        self.shared.close(reason);
    }

    /// Closes the carrier for `reason` like [`Carrier::close_for`], except
    /// that the frames already queued are still written, then the close
    /// frame: how a server shutting down lets its clients have what they
    /// were sent. The carrier leaves every channel at once, so nothing new
    /// is queued; writing the rest is bounded by the close timeout.
    /// Idempotent: the first reason wins.
    pub fn close_after_queued(&self, reason: CloseReason) {
        self.shared.close_with(reason, true);
    }

    /// Queues a keep-alive ping behind the frames already queued. Returns
    /// false if the queue is full or the carrier closed: a client that far
    /// behind is the overflow policy's business, not the ping's.
    pub fn ping(&self) -> bool {
        !self.shared.flag.is_set() && self.shared.tx.try_send(Outgoing::Ping).is_ok()
    }

    /// Queues one frame for this carrier alone (a reply to its client),
    /// under the same overflow policy as channel deliveries. Returns whether
    /// it was queued.
    pub fn send_frame(&self, frame: Frame) -> bool {
        self.offer(frame) == Offer::Queued
    }

    /// Whether the carrier is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.flag.is_set()
    }

    /// Why the carrier closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.flag.reason()
    }

    /// Completes when the carrier closes (for any reason), with the reason.
    /// A websocket handler can await this beside its read loop.
    pub fn closed(&self) -> impl Future<Output = CloseReason> + Send + 'static {
        let flag = self.shared.flag.clone();
        future::poll_fn(move |cx| wait_for(cx, &flag.waiters, || flag.reason()))
    }

    /// A guard that closes this carrier, as [`CloseReason::PeerClosed`],
    /// when it is dropped: for a custom carrier, give it to whatever the
    /// client's presence lives in (an SSE response body, which the HTTP
    /// server drops when its client goes away), so that the carrier leaves
    /// its channels then, instead of at its next write.
    ///
    /// ```
    /// use tbone_dispatch::testing::ManualRuntime;
    /// use tbone_dispatch::{Carrier, CarrierConfig, CloseReason, Frame};
    ///
    /// let runtime = ManualRuntime::new();
    /// let (sink, _client) = futures::channel::mpsc::unbounded::<Frame>();
    /// let carrier = Carrier::new(&runtime, sink, CarrierConfig::default()).unwrap();
    /// let presence = carrier.presence_guard();
    /// drop(presence); // the client went away
    /// assert_eq!(carrier.close_reason(), Some(CloseReason::PeerClosed));
    /// ```
    pub fn presence_guard(&self) -> PresenceGuard {
        PresenceGuard {
            shared: Arc::downgrade(&self.shared) as Weak<dyn Closable>,
        }
    }

    /// Completes when the carrier's writer has ended: closed, its last
    /// frames and close frame written (or abandoned after the close
    /// timeout), its sink closed. A server waits on it to know that a
    /// client was told goodbye.
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let flag = self.shared.flag.clone();
        future::poll_fn(move |cx| {
            wait_for(cx, &flag.finish_waiters, || {
                flag.finished.load(Ordering::Acquire).then_some(())
            })
        })
    }

    /// Completes once every frame queued so far has been written and
    /// flushed to the sink, or the writer has ended (a closed carrier
    /// writes nothing more). [`Channel::stop`](crate::Channel::stop) waits
    /// on it for each of its carriers, so that a runtime dropped right
    /// after a stop loses none of the frames it delivered.
    ///
    /// ```
    /// use tbone_dispatch::testing::ManualRuntime;
    /// use tbone_dispatch::{Carrier, CarrierConfig, Frame};
    /// use futures::FutureExt;
    ///
    /// let runtime = ManualRuntime::new();
    /// let (sink, _client) = futures::channel::mpsc::unbounded::<Frame>();
    /// let carrier = Carrier::new(&runtime, sink, CarrierConfig::default()).unwrap();
    /// assert!(carrier.send_frame(Frame::from("{}")));
    /// let written = carrier.flushed();
    /// runtime.run_until_stalled();
    /// assert!(written.now_or_never().is_some());
    /// ```
    pub fn flushed(&self) -> impl Future<Output = ()> + Send + 'static {
        let flag = self.shared.flag.clone();
        let target = self.shared.queued.load(Ordering::Acquire);
        future::poll_fn(move |cx| {
            wait_for(cx, &flag.flush_waiters, || {
                (flag.written.load(Ordering::Acquire) >= target
                    || flag.finished.load(Ordering::Acquire))
                .then_some(())
            })
        })
    }

    /// How long this carrier's writer may take over its last frames.
    pub(crate) fn close_timeout(&self) -> Duration {
        self.shared.close_timeout
    }

    /// Frames accepted into the queue so far.
    pub fn frames_queued(&self) -> u64 {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Frames skipped under [`OverflowPolicy::DropFrame`].
    pub fn frames_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn offer(&self, frame: Frame) -> Offer {
        self.offer_run(std::slice::from_ref(&frame)).1
    }

    /// Queues `frames` in order under one lock of the queue. Returns how
    /// many were queued, and the outcome: `Queued` when all were,
    /// `FrameDropped` when some did not fit (`DropFrame`: the rest are
    /// skipped and counted), `CarrierDropped` or `Gone` otherwise.
    /// Queues what a resuming client missed, past the queue's capacity (the
    /// history bounds it): a replay larger than the queue must not drop
    /// the client it is meant to catch up. Returns whether the carrier is
    /// still open.
    pub(crate) fn replay(&self, frames: &mut dyn Iterator<Item = Frame>) -> bool {
        let shared = &self.shared;
        if shared.flag.is_set() {
            return false;
        }
        let queued = shared
            .tx
            .send_past_capacity(&mut frames.map(Outgoing::Frame)) as u64;
        shared.queued.fetch_add(queued, Ordering::Relaxed);
        !shared.tx.is_closed()
    }

    pub(crate) fn offer_run(&self, frames: &[Frame]) -> (u64, Offer) {
        let shared = &self.shared;
        if shared.flag.is_set() {
            return (0, Offer::Gone);
        }
        let mut items = frames.iter().map(|frame| Outgoing::Frame(frame.clone()));
        let (queued, refused) = shared.tx.try_send_all(&mut items);
        let queued = queued as u64;
        if queued > 0 {
            shared.queued.fetch_add(queued, Ordering::Relaxed);
        }
        let outcome = match refused {
            None => Offer::Queued,
            Some(TrySendError::Full(_)) => match shared.overflow {
                OverflowPolicy::DropFrame => {
                    let skipped = frames.len() as u64 - queued;
                    shared.dropped.fetch_add(skipped, Ordering::Relaxed);
                    Offer::FrameDropped
                }
                OverflowPolicy::DropCarrier => {
                    tracing::debug!(carrier = %shared.id, "carrier queue full: dropping the carrier");
                    shared.close(CloseReason::Overflow);
                    Offer::CarrierDropped
                }
            },
            Some(TrySendError::Closed(_)) => {
                shared.close(CloseReason::SinkError("the writer task ended".into()));
                Offer::Gone
            }
        };
        (queued, outcome)
    }

    /// Records that a channel holds this carrier, so closing removes it
    /// there. Returns false if the carrier is already closed.
    pub(crate) fn join(&self, channel: Weak<dyn Membership>) -> bool {
        {
            let mut memberships = lock(&self.shared.memberships);
            let known = memberships
                .iter()
                .any(|m| std::ptr::addr_eq(m.as_ptr(), channel.as_ptr()));
            if !known {
                memberships.retain(|m| m.strong_count() > 0);
                // Most carriers join one channel, for their whole life.
                if memberships.is_empty() {
                    memberships.reserve_exact(1);
                }
                memberships.push(channel);
            }
        }
        // A close racing with the join above may have missed this channel.
        !self.shared.flag.is_set()
    }
}

impl<R: Runtime> Shared<R> {
    fn close(&self, reason: CloseReason) {
        self.close_with(reason, false);
    }

    fn close_with(&self, reason: CloseReason, drain: bool) {
        if !self.flag.mark() {
            return;
        }
        if drain {
            self.flag.drain.store(true, Ordering::Release);
        }
        let memberships = std::mem::take(&mut *lock(&self.memberships));
        for channel in memberships.iter().filter_map(Weak::upgrade) {
            channel.forget(self.id);
        }
        self.flag.announce(reason);
    }
}

async fn pump<R, S>(
    shared: Weak<Shared<R>>,
    flag: Arc<CloseFlag>,
    mut rx: queue::Receiver<Outgoing>,
    mut sink: S,
    runtime: R,
    close_timeout: Duration,
    prime: bool,
) where
    R: Runtime,
    S: Sink<Outgoing> + Send + Unpin + 'static,
    S::Error: fmt::Display,
{
    let _finish = FinishOnDrop(flag.clone());
    // For a close after what was queued: the time left to write it.
    let (mut drain_limit, mut drain_expired) = (None, false);
    // A socket's sink arrives after its handshake: take it as soon as it is
    // there, so that what handed it over is freed instead of living beside
    // an idle connection until its first frame.
    let primed = if prime {
        let ready = future::poll_fn(|cx| Pin::new(&mut sink).poll_ready(cx))
            .map(|ready| ready.map_err(|error| error.to_string()));
        match future::select(pin!(ready), flag.wait_pump()).await {
            Either::Left((Ok(()), _)) => None,
            Either::Left((Err(error), _)) => Some(Some(CloseReason::SinkError(error))),
            Either::Right(_) => Some(None),
        }
    } else {
        None
    };
    let failure = if let Some(ended) = primed {
        ended
    } else {
        loop {
            let item = match future::select(rx.next(), flag.wait_pump()).await {
                Either::Left((Some(item), _)) => item,
                // Every handle is gone (queue drained) or the carrier was closed.
                Either::Left((None, _)) | Either::Right(_) => break None,
            };
            // Write what is already queued before one flush: fewer syscalls
            // under bursts, same latency when idle.
            let write = async {
                let mut frames = u64::from(matches!(item, Outgoing::Frame(_)));
                sink.feed(item).await?;
                while let Some(Some(item)) = rx.next().now_or_never() {
                    frames += u64::from(matches!(item, Outgoing::Frame(_)));
                    sink.feed(item).await?;
                }
                sink.flush().await?;
                flag.wrote(frames);
                Ok::<(), S::Error>(())
            }
            // As text: the sink's error type need not be `Send`.
            .map(|written| written.map_err(|error| error.to_string()));
            match future::select(pin!(write), flag.wait_pump()).await {
                Either::Left((Ok(()), _)) => {}
                Either::Left((Err(error), _)) => break Some(CloseReason::SinkError(error)),
                Either::Right((_, write)) => {
                    if !flag.drains() {
                        break None;
                    }
                    // Closed after what was queued: the write in progress holds
                    // some of it, so it finishes; the rest follows, all within
                    // one close timeout.
                    let mut limit = runtime.sleep(close_timeout).boxed();
                    match future::select(write, &mut limit).await {
                        Either::Left((Ok(()), _)) => drain_limit = Some(limit),
                        Either::Left((Err(error), _)) => break Some(CloseReason::SinkError(error)),
                        Either::Right(_) => drain_expired = true,
                    }
                    break None;
                }
            }
        }
    };
    let failed = failure.is_some();
    if let Some(reason) = failure {
        tracing::debug!(%reason, "carrier sink failed");
        match shared.upgrade() {
            Some(shared) => shared.close(reason),
            None => {
                if flag.mark() {
                    flag.announce(reason);
                }
            }
        }
    }
    // Boxed: the way out's futures would otherwise be part of every idle
    // carrier's writer task, for its whole life.
    Box::pin(async move {
        if !failed && flag.drains() && !drain_expired {
            // Bounded: a peer that stopped reading must not keep this task alive.
            let limit = drain_limit.unwrap_or_else(|| runtime.sleep(close_timeout).boxed());
            let rest = pin!(write_queued(&mut rx, &mut sink));
            match future::select(rest, limit).await {
                Either::Left((Ok(()), _)) => {}
                Either::Left((Err(error), _)) => {
                    tracing::debug!(%error, "carrier sink failed while writing its last frames");
                }
                Either::Right(_) => drain_expired = true,
            }
        }
        if drain_expired {
            tracing::debug!("carrier closing: the frames still queued took too long to write");
        }
        // Bounded: a peer that stopped reading must not keep this task alive.
        let goodbye = async {
            if let Some((code, reason)) = flag.reason().and_then(|r| r.close_frame()) {
                let _ = sink.send(Outgoing::Close(code, reason)).await;
            }
            let _ = sink.close().await;
        };
        let _ = future::select(pin!(goodbye), pin!(runtime.sleep(close_timeout))).await;
    })
    .await;
}

/// Writes what is left in the queue of a closed carrier, and flushes. The
/// queue only empties now (a closed carrier takes nothing new), but a
/// stream may report `Pending` while it still holds items (tokio's
/// cooperative budget does), so an empty poll is trusted only after
/// yielding to the executor once.
async fn write_queued<Q, S>(rx: &mut Q, sink: &mut S) -> Result<(), S::Error>
where
    Q: futures::Stream<Item = Outgoing> + Unpin,
    S: Sink<Outgoing> + Unpin,
{
    let mut yielded = false;
    loop {
        match rx.next().now_or_never() {
            Some(Some(item)) => {
                sink.feed(item).await?;
                yielded = false;
            }
            Some(None) => break,
            None if !yielded => {
                crate::channel::yield_now().await;
                yielded = true;
            }
            None => break,
        }
    }
    sink.flush().await
}

/// Adapts a sink of frames to the writer, which also emits control
/// messages: those mean nothing to a plain frame sink and are dropped.
struct FramesOnly<S>(S);

impl<S: Sink<Frame> + Unpin> Sink<Outgoing> for FramesOnly<S> {
    type Error = S::Error;

    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), S::Error>> {
        std::pin::Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: std::pin::Pin<&mut Self>, item: Outgoing) -> Result<(), S::Error> {
        match item {
            Outgoing::Frame(frame) => std::pin::Pin::new(&mut self.0).start_send(frame),
            Outgoing::Ping | Outgoing::Close(..) => Ok(()),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), S::Error>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), S::Error>> {
        std::pin::Pin::new(&mut self.0).poll_close(cx)
    }
}
