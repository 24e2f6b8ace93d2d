//! Channels: named publish/subscribe of events to carriers.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either, Shared};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tracing::Instrument;

use crate::backend::{Backend, Event, EventStream};
use crate::carrier::{Carrier, CarrierId, Membership, Offer};
use crate::envelope::{Envelope, TBoneEnvelope};
use crate::error::{ChannelError, PublishError, SubscribeError};
use crate::frame::Frame;
use crate::history::{History, HistoryLimits, Recorded};
use crate::memory::MemoryBackend;
use crate::observe::ChannelMetrics;
use crate::payload::{Payload, DEFAULT_MAX_PAYLOAD};
use crate::position::{Position, Sequence};
use crate::registry;
use crate::runtime::Runtime;
use crate::stored::{missed_from_store, Stored};
use crate::subscriptions::Subscriptions;

/// Default limit on event names, in bytes.
pub const DEFAULT_MAX_EVENT_NAME: usize = 256;

/// Options for opening a channel. The options of the call that creates a
/// channel win: opening an existing channel by name returns it unchanged.
///
/// ```
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{ChannelBuilder, MemoryBackend, TBoneEnvelope};
///
/// let runtime = ManualRuntime::new();
/// let channel = ChannelBuilder::new("doc-builder")
///     .envelope(TBoneEnvelope)
///     .max_payload_bytes(64 * 1024)
///     .open(runtime, MemoryBackend::new)
///     .unwrap();
/// assert_eq!(channel.name(), "doc-builder");
/// ```
pub struct ChannelBuilder {
    name: String,
    envelope: Arc<dyn Envelope>,
    envelope_type: &'static str,
    max_event_name: usize,
    max_payload: usize,
    backend_settings: String,
    history: HistoryLimits,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("name", &self.name)
            .field("max_event_name", &self.max_event_name)
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

impl ChannelBuilder {
    /// Options for the channel called `name`, all at their defaults.
    pub fn new(name: impl Into<String>) -> Self {
        ChannelBuilder {
            name: name.into(),
            envelope: Arc::new(TBoneEnvelope),
            envelope_type: std::any::type_name::<TBoneEnvelope>(),
            max_event_name: DEFAULT_MAX_EVENT_NAME,
            max_payload: DEFAULT_MAX_PAYLOAD,
            backend_settings: String::new(),
            history: HistoryLimits::default(),
        }
    }

    /// How many recent events the channel keeps for clients that resume
    /// after a reconnect (default [`HistoryLimits::default`]: 1 000 events,
    /// 1 MiB, 5 minutes; [`HistoryLimits::off`] keeps none). See
    /// [`Channel::subscribe_after`].
    pub fn history(mut self, limits: HistoryLimits) -> Self {
        self.history = limits;
        self
    }

    /// The envelope that turns events into frames (default
    /// [`TBoneEnvelope`]).
    pub fn envelope<E: Envelope>(mut self, envelope: E) -> Self {
        self.envelope = Arc::new(envelope);
        self.envelope_type = std::any::type_name::<E>();
        self
    }

    /// Describes what the backend is made from (a database, its options),
    /// for backends whose constructor takes arguments: opening the name
    /// again with other settings is then
    /// [`ChannelError::SettingsMismatch`] instead of silently the channel
    /// opened first. (The MongoDB builder sets it, naming the database and
    /// collection but not the cluster.) The rest of the settings compared
    /// are the envelope's type (not its own fields) and the limits; a
    /// [`MemoryBackend`]'s capacity is not.
    pub fn backend_settings(mut self, settings: impl Into<String>) -> Self {
        self.backend_settings = settings.into();
        self
    }

    /// Longest accepted event name in bytes (default 256).
    pub fn max_event_name_bytes(mut self, max: usize) -> Self {
        self.max_event_name = max;
        self
    }

    /// Largest accepted event data, encoded, in bytes (default 1 MiB).
    pub fn max_payload_bytes(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }

    /// Returns the channel called `name` of this backend and runtime type,
    /// creating it (with `backend`, called only then) if this process has
    /// none. Fails if a channel of that name exists with another backend or
    /// runtime type.
    pub fn open<B: Backend, R: Runtime>(
        self,
        runtime: R,
        backend: impl FnOnce(&R) -> B,
    ) -> Result<Channel<B, R>, ChannelError> {
        let ChannelBuilder {
            name,
            envelope,
            envelope_type,
            max_event_name,
            max_payload,
            backend_settings,
            history,
        } = self;
        let type_name = std::any::type_name::<Channel<B, R>>();
        let settings = format!(
            "envelope {envelope_type}, event names up to {max_event_name} bytes, data up to {max_payload} bytes, history {history:?}{}{backend_settings}",
            if backend_settings.is_empty() { "" } else { ", " },
        );
        let registered = registry::Registration {
            name: &name,
            type_name,
            settings: &settings,
        };
        let inner = registry::get_or_create(registered, Inner::is_orphaned, Inner::retire, || {
            let backend = backend(&runtime);
            let (stop_trigger, stop_requested) = oneshot::channel();
            Arc::new_cyclic(|me| Inner {
                name: Arc::from(name.as_str()),
                backend,
                runtime,
                envelope,
                max_event_name,
                max_payload,
                me: me.clone(),
                subscriptions: Mutex::new(Subscriptions::new()),
                stats: Counters::default(),
                metrics: ChannelMetrics::new(&name),
                history: Mutex::new(History::new(history)),
                sequence: history.is_on().then(|| Mutex::new(Sequence::new())),
                last_delivered: Mutex::new(None),
                consumer: Mutex::new(Consumer::Idle),
                warned_idle: AtomicBool::new(false),
                orphaned: AtomicBool::new(false),
                stop_trigger: Mutex::new(Some(stop_trigger)),
                stop_requested: stop_requested.shared(),
            })
        })?;
        Ok(Channel { inner })
    }
}

/// What [`Channel::resume`] (or [`Channel::subscribe_after`]) could give
/// a resuming client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resumed {
    /// Every event it missed was queued for it (possibly none).
    Replayed {
        /// How many.
        events: usize,
    },
    /// What it missed could not be told (its position is not in the
    /// history, nor in the backend's store): it was sent the envelope's
    /// `recovery_failed` frame and should reload.
    Failed,
}

/// How far one event went on this instance: see
/// [`Channel::publish_delivered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivered {
    /// Local carriers whose queue took the event's frame.
    pub carriers: usize,
}

/// Counters of one channel instance, read with [`Channel::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Events this instance handed to its backend successfully.
    pub published: u64,
    /// Events the consumer received from the backend.
    pub received: u64,
    /// Frames the envelope encoded: at most one per received event (none
    /// for an event without local subscribers), plus one per event the
    /// history replays to resuming clients (the first replay encodes it,
    /// later ones reuse its frame while the byte limit leaves room), plus
    /// one per event read from the backend's store for a resuming client.
    pub encoded: u64,
    /// Frames put into carrier queues.
    pub queued: u64,
    /// Received events that had no local subscriber.
    pub unrouted: u64,
    /// Frames skipped for a full carrier under `OverflowPolicy::DropFrame`.
    pub frames_dropped: u64,
    /// Carriers closed because their queue overflowed.
    pub carriers_dropped: u64,
    /// Closed carriers found during delivery and removed.
    pub carriers_removed: u64,
}

/// What a channel's history holds now, read with [`Channel::history_stats`]:
/// for monitoring, and to check that it stays within its limits.
///
/// ```
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{ChannelBuilder, HistoryLimits, MemoryBackend};
///
/// let runtime = ManualRuntime::new();
/// let channel = ChannelBuilder::new("doc-history-stats")
///     .history(HistoryLimits::default().events(2))
///     .open(runtime.clone(), MemoryBackend::new)
///     .unwrap();
/// channel.kickoff().unwrap();
/// for n in 0..5 {
///     runtime.run(channel.publish("tick", &n)).unwrap().unwrap();
/// }
/// runtime.run(channel.flush()).unwrap();
/// let history = channel.history_stats();
/// assert_eq!((history.events, history.limits.events), (2, 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryStats {
    /// Events kept.
    pub events: usize,
    /// Bytes kept: event data, and frames kept for replays (see
    /// [`HistoryLimits::bytes`]).
    pub bytes: usize,
    /// The limits it keeps to.
    pub limits: HistoryLimits,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    encoded: AtomicU64,
    queued: AtomicU64,
    unrouted: AtomicU64,
    frames_dropped: AtomicU64,
    carriers_dropped: AtomicU64,
    carriers_removed: AtomicU64,
}

enum Consumer {
    Idle,
    Running {
        stop: oneshot::Sender<()>,
        done: Shared<oneshot::Receiver<()>>,
        flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
    },
    Stopped {
        done: Option<Shared<oneshot::Receiver<()>>>,
    },
}

struct Inner<B: Backend, R: Runtime> {
    name: Arc<str>,
    backend: B,
    runtime: R,
    envelope: Arc<dyn Envelope>,
    max_event_name: usize,
    max_payload: usize,
    me: Weak<Inner<B, R>>,
    subscriptions: Mutex<Subscriptions<Carrier<R>>>,
    stats: Counters,
    metrics: ChannelMetrics,
    /// Recent events for resuming clients. Locked inside `subscriptions`
    /// (never the other way round): recording a run and taking its
    /// subscribers is one step, as is replaying and subscribing.
    history: Mutex<History>,
    /// Positions for events whose backend gives none (consumer only),
    /// numbered only while the channel keeps a history (nothing else needs
    /// them): also says, without a lock, whether it keeps one.
    sequence: Option<Mutex<Sequence>>,
    /// The position of the last event with a backend position delivered,
    /// for resuming from what the backend stores
    /// ([`Channel::resume`]). Set and read inside `subscriptions`.
    last_delivered: Mutex<Option<Position>>,
    consumer: Mutex<Consumer>,
    warned_idle: AtomicBool,
    /// Set when the registry replaced this instance because its consumer
    /// died with its runtime.
    orphaned: AtomicBool,
    /// Fired by `stop`; sockets served on the channel wait on it.
    stop_trigger: Mutex<Option<oneshot::Sender<()>>>,
    stop_requested: Shared<oneshot::Receiver<()>>,
}

/// How often [`Channel::resume`] reads the backend's store again while
/// this instance has not caught up with a client's position, and the
/// first wait (doubled each time).
const RESUME_RETRIES: usize = 5;
const RESUME_RETRY: Duration = Duration::from_millis(50);

/// Why a closed carrier cannot be subscribed.
fn closed<R: Runtime>(carrier: &Carrier<R>) -> SubscribeError {
    SubscribeError::CarrierClosed {
        carrier: carrier.id(),
        reason: carrier.close_reason().unwrap_or(crate::CloseReason::Closed),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only table operations and state swaps run under channel locks; none
    // can leave them half-done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A named publish/subscribe hub that delivers events to carriers: the
/// spec's `Channel`.
///
/// Channels are singletons by name within a process: opening `pubsub` twice
/// returns the same instance, so any component can open the channel it needs
/// instead of having it injected. The backend `B` decides how events travel
/// ([`MemoryBackend`] in process, `MongoBackend` across instances, or your
/// own [`Backend`]); `R` is the runtime. The runtime crates export aliases,
/// e.g. `tbone_dispatch_tokio::MemoryChannel`.
///
/// The life of an event: [`publish`](Channel::publish) validates and
/// encodes the data as JSON once and hands it to the backend; the channel's
/// consumer (started by [`kickoff`](Channel::kickoff)) receives it, encodes
/// the frame once with the channel's [`Envelope`], and puts the shared frame
/// into the queue of each carrier subscribed to that event. Publishing never
/// waits for a carrier.
///
/// ```
/// use futures::StreamExt;
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{Carrier, CarrierConfig, ChannelBuilder, Frame, MemoryBackend};
///
/// let runtime = ManualRuntime::new();
/// let channel = ChannelBuilder::new("doc-channel").open(runtime.clone(), MemoryBackend::new).unwrap();
///
/// let (socket, mut client) = futures::channel::mpsc::unbounded::<Frame>();
/// let carrier = Carrier::new(&runtime, socket, CarrierConfig::default()).unwrap();
/// channel.subscribe("resource_create", &carrier).unwrap();
/// channel.kickoff().unwrap();
///
/// runtime.run(channel.publish("resource_create", &serde_json::json!({"id": 1}))).unwrap().unwrap();
/// let frame = runtime.run(client.next()).unwrap().unwrap();
/// assert_eq!(
///     frame.as_str(),
///     r#"{"type":"event","payload":{"name":"resource_create","data":{"id":1}}}"#
/// );
/// ```
pub struct Channel<B: Backend, R: Runtime> {
    inner: Arc<Inner<B, R>>,
}

impl<B: Backend, R: Runtime> Clone for Channel<B, R> {
    fn clone(&self) -> Self {
        Channel {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend, R: Runtime> fmt::Debug for Channel<B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.inner.name)
            .field("subscriptions", &self.subscription_count())
            .finish_non_exhaustive()
    }
}

impl<B: Backend, R: Runtime> PartialEq for Channel<B, R> {
    /// Two handles are equal when they are the same channel instance.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<R: Runtime + Default> Channel<MemoryBackend, R> {
    /// The in-memory channel called `name` (the spec's
    /// `MemoryChannel(name=...)`), created with default options if needed.
    ///
    /// One instance per name and process: tests that each run their own
    /// runtime (`#[tokio::test]`) and run in parallel share it, and when
    /// the runtime that kicked it off ends, its consumer ends too. Give
    /// each such test its own channel name. (Run one after another, each
    /// test gets a fresh instance: a name whose consumer died with its
    /// runtime is replaced.)
    pub fn named(name: &str) -> Result<Self, ChannelError> {
        ChannelBuilder::new(name).open(R::default(), MemoryBackend::new)
    }
}

impl<B: Backend, R: Runtime> Channel<B, R> {
    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The runtime the channel's consumer (and the carriers of the sockets
    /// served on it) run on.
    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    /// The channel's backend.
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    /// Subscribes `carrier` to `event`: the spec's
    /// `Channel.subscribe(event, subscriber)`. Returns false if it already
    /// was. One carrier may be subscribed to many events of many channels.
    pub fn subscribe(&self, event: &str, carrier: &Carrier<R>) -> Result<bool, SubscribeError> {
        let inner = &self.inner;
        inner.check_subscribable(&[event])?;
        if carrier.is_closed() {
            return Err(closed(carrier));
        }
        let added =
            inner.edit_subscriptions(|table| table.subscribe(event, carrier.id(), carrier.clone()));
        inner.join(carrier)?;
        Ok(added)
    }

    /// Subscribes `carrier` to `events` for a client that reconnects and
    /// last saw the event at position `after` (as its frame or its SSE `id:`
    /// line said): the carrier first receives, in order, every event of
    /// `events` the channel delivered after that one, then the live events,
    /// with no gap and no duplicate between the two.
    ///
    /// When `after` is not in the channel's history (older than what it
    /// keeps, from another epoch or process, or not a position at all), the
    /// carrier receives the envelope's
    /// [`recovery_failed`](crate::Envelope::recovery_failed) frame instead,
    /// so the client knows to reload, and is subscribed all the same: a
    /// gap is never silent. What is replayed may exceed the carrier's
    /// queue capacity (the history's limits bound it).
    ///
    /// ```
    /// use tbone_dispatch::testing::ManualRuntime;
    /// use tbone_dispatch::{Carrier, CarrierConfig, ChannelBuilder, Frame, MemoryBackend, PositionedEnvelope, Resumed};
    ///
    /// let runtime = ManualRuntime::new();
    /// let channel = ChannelBuilder::new("doc-subscribe-after")
    ///     .envelope(PositionedEnvelope)
    ///     .open(runtime.clone(), MemoryBackend::new)
    ///     .unwrap();
    /// channel.kickoff().unwrap();
    /// let (sink, mut client) = futures::channel::mpsc::unbounded::<Frame>();
    /// let first = Carrier::new(&runtime, sink, CarrierConfig::default()).unwrap();
    /// channel.subscribe("tick", &first).unwrap();
    /// runtime.run(channel.publish("tick", &1)).unwrap().unwrap();
    /// runtime.run_until_stalled();
    /// let frame: serde_json::Value =
    ///     serde_json::from_str(client.try_recv().unwrap().as_str()).unwrap();
    /// let seen = frame["position"].as_str().unwrap().to_string();
    /// first.close(); // the client goes away...
    /// runtime.run(channel.publish("tick", &2)).unwrap().unwrap();
    /// runtime.run_until_stalled();
    ///
    /// // ... and comes back with the position of the last event it saw.
    /// let (sink, mut client) = futures::channel::mpsc::unbounded::<Frame>();
    /// let again = Carrier::new(&runtime, sink, CarrierConfig::default()).unwrap();
    /// let resumed = channel.subscribe_after(&["tick"], &again, &seen).unwrap();
    /// assert_eq!(resumed, Resumed::Replayed { events: 1 });
    /// runtime.run_until_stalled();
    /// assert!(client.try_recv().unwrap().as_str().contains(r#""data":2"#));
    /// ```
    pub fn subscribe_after(
        &self,
        events: &[&str],
        carrier: &Carrier<R>,
        after: &str,
    ) -> Result<Resumed, SubscribeError> {
        // `join_after` checks that `events` may be subscribed.
        let inner = &self.inner;
        let position = Position::new(after).ok();
        if let Some(position) = &position {
            if let Some(resumed) = inner.join_from_history(events, carrier, position)? {
                return Ok(resumed);
            }
        }
        inner.join_failed(events, carrier, position.as_ref())
    }

    /// Subscribes `carrier` to `events` for a client that reconnects and
    /// last saw the event at position `after`, like
    /// [`subscribe_after`](Channel::subscribe_after), and when `after` is
    /// not in the channel's history, from what the backend still stores
    /// ([`Backend::stored_after`]): a MongoChannel reads the events the
    /// client missed from its capped collection (a RedisChannel from its
    /// stream), so a client resumes on an instance that started after it
    /// left, or whose history is shorter than the collection.
    ///
    /// The store and the live stream must meet exactly: the channel needs
    /// to know where the events it delivered since the store was read
    /// continue, which its history tells. When it cannot tell yet (this
    /// instance has not delivered the client's position: it came from a
    /// faster instance; or, with the history off, events were delivered
    /// while the store was read), it reads the store again, waiting a
    /// little longer each time (50 ms doubling, five times), so that the
    /// client receives nothing twice and misses nothing. After that, or
    /// when the backend does not store `after` (overwritten, never stored,
    /// more than [`MAX_STORED_REPLAY`](crate::MAX_STORED_REPLAY) events
    /// ago) or cannot be read, the client is told that recovery failed, as
    /// with `subscribe_after`. Backends without a store answer at once.
    /// Keep a history, even a short one, on busy channels whose clients
    /// resume.
    ///
    /// ```
    /// use tbone_dispatch::testing::ManualRuntime;
    /// use tbone_dispatch::{Carrier, CarrierConfig, ChannelBuilder, Frame, MemoryBackend, Resumed};
    ///
    /// let runtime = ManualRuntime::new();
    /// let channel = ChannelBuilder::new("doc-resume").open(runtime.clone(), MemoryBackend::new).unwrap();
    /// channel.kickoff().unwrap();
    /// let (sink, _client) = futures::channel::mpsc::unbounded::<Frame>();
    /// let carrier = Carrier::new(&runtime, sink, CarrierConfig::default()).unwrap();
    /// // MemoryBackend stores nothing beyond the history: a position from
    /// // elsewhere cannot be recovered, and the client is told so.
    /// let resumed = runtime.run(channel.resume(&["tick"], &carrier, "0-1")).unwrap().unwrap();
    /// assert_eq!(resumed, Resumed::Failed);
    /// ```
    pub async fn resume(
        &self,
        events: &[&str],
        carrier: &Carrier<R>,
        after: &str,
    ) -> Result<Resumed, SubscribeError> {
        let inner = &self.inner;
        inner.check_subscribable(events)?;
        let Ok(position) = Position::new(after) else {
            return inner.join_failed(events, carrier, None);
        };
        let mut delay = RESUME_RETRY;
        for attempt in 0..=RESUME_RETRIES {
            if let Some(resumed) = inner.join_from_history(events, carrier, &position)? {
                return Ok(resumed);
            }
            if attempt == RESUME_RETRIES {
                break;
            }
            if carrier.is_closed() {
                return Err(closed(carrier));
            }
            match inner.backend.stored_after(&position).await {
                Ok(Some(stored)) => {
                    let frames = inner.encode_stored(&stored, events);
                    let joined = inner.join_after(events, carrier, |history, last, now| {
                        missed_from_store(
                            &stored,
                            &frames,
                            last,
                            history,
                            now,
                            |key| events.contains(&key),
                            |recorded| inner.encode_recorded(recorded),
                        )
                    })?;
                    if let Some(resumed) = joined {
                        return Ok(resumed);
                    }
                    tracing::debug!(channel = %inner.name, %position, "this instance has not caught up with a resuming client's position; reading the store again");
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(channel = %inner.name, %position, %error, "cannot read what the backend stores after a resuming client's position; telling it that recovery failed");
                    break;
                }
            }
            inner.runtime.sleep(delay).await;
            delay *= 2;
        }
        inner.join_failed(events, carrier, Some(&position))
    }

    /// Unsubscribes `carrier` from `event`. Returns whether it was
    /// subscribed. Carriers are matched by identity, so this works with any
    /// clone of the carrier that was subscribed.
    pub fn unsubscribe(&self, event: &str, carrier: &Carrier<R>) -> bool {
        self.inner
            .edit_subscriptions(|table| table.unsubscribe(event, carrier.id()))
    }

    /// Removes `carrier` from every event of this channel (what a websocket
    /// handler does on close; [`Carrier::close`] does it for every channel).
    /// Returns how many subscriptions it had here.
    pub fn unsubscribe_all(&self, carrier: &Carrier<R>) -> usize {
        self.inner
            .edit_subscriptions(|table| table.remove_carrier(carrier.id()))
    }

    /// How many carriers are subscribed to `event`.
    pub fn subscriber_count(&self, event: &str) -> usize {
        lock(&self.inner.subscriptions).subscribers(event).len()
    }

    /// Total (event, carrier) subscriptions of this channel.
    pub fn subscription_count(&self) -> usize {
        lock(&self.inner.subscriptions).subscription_count()
    }

    /// Distinct carriers subscribed to at least one event.
    pub fn carrier_count(&self) -> usize {
        lock(&self.inner.subscriptions).carrier_count()
    }

    /// The channel's counters.
    pub fn stats(&self) -> ChannelStats {
        let c = &self.inner.stats;
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ChannelStats {
            published: read(&c.published),
            received: read(&c.received),
            encoded: read(&c.encoded),
            queued: read(&c.queued),
            unrouted: read(&c.unrouted),
            frames_dropped: read(&c.frames_dropped),
            carriers_dropped: read(&c.carriers_dropped),
            carriers_removed: read(&c.carriers_removed),
        }
    }

    /// What the channel's history holds now (events and bytes kept, and
    /// its limits). Read-only: events older than the age limit leave it
    /// at the next delivery or resume.
    pub fn history_stats(&self) -> HistoryStats {
        let history = lock(&self.inner.history);
        HistoryStats {
            events: history.len(),
            bytes: history.bytes(),
            limits: history.limits(),
        }
    }

    /// Publishes event `event` with `data` to every subscriber, on every
    /// instance sharing the backend: the spec's `Channel.publish(key, data)`.
    ///
    /// `data` is anything [`Serialize`]; pass `&()` for TBone's `data=None`
    /// (it becomes `null`). The data is validated and encoded here, before
    /// anything is sent: NaN, non-string map keys, excessive depth or size
    /// make this return [`PublishError::Payload`] and nothing is published.
    /// The returned future resolves once the backend has accepted the event.
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> impl Future<Output = Result<(), PublishError>> + Send + '_ {
        let prepared = self.prepare(event, data);
        async move { self.publish_event(prepared?).await }
    }

    /// Publishes like [`Channel::publish`], and resolves only once this
    /// instance's consumer has put the event into its local subscribers'
    /// queues, with how many took it. A reply sent to a client after this
    /// returns reaches it after the event (both go through its carrier's
    /// queue, in order), which [`Channel::publish`] alone does not promise:
    /// it returns when the backend has accepted the event.
    ///
    /// For a database backend, the event is delivered when this instance
    /// reads it back. Fails with [`PublishError::NotDelivered`] (after
    /// publishing) when the channel is not running (not kicked off yet, or
    /// stopped before delivering), or when its backend does not carry
    /// receipts.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use tbone_dispatch::testing::ManualRuntime;
    /// use tbone_dispatch::{Carrier, CarrierConfig, ChannelBuilder, Frame, MemoryBackend};
    ///
    /// let runtime = ManualRuntime::new();
    /// let channel = ChannelBuilder::new("doc-publish-delivered").open(runtime.clone(), MemoryBackend::new).unwrap();
    /// channel.kickoff().unwrap();
    /// let (socket, _client) = futures::channel::mpsc::unbounded::<Frame>();
    /// let carrier = Carrier::new(&runtime, socket, CarrierConfig::default()).unwrap();
    /// channel.subscribe("resource_create", &carrier).unwrap();
    ///
    /// let delivered = runtime.run(channel.publish_delivered("resource_create", &1)).unwrap().unwrap();
    /// assert_eq!(delivered.carriers, 1);
    /// assert_eq!(carrier.frames_queued(), 1); // in the queue before any reply
    /// ```
    pub fn publish_delivered<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> impl Future<Output = Result<Delivered, PublishError>> + Send + '_ {
        let prepared = self.prepare(event, data);
        async move { self.publish_event_delivered(prepared?).await }
    }

    /// [`Channel::publish_delivered`] for an already encoded event.
    pub async fn publish_event_delivered(&self, event: Event) -> Result<Delivered, PublishError> {
        let key = event.key().to_string();
        let waiting = self.publish_with_receipt(event).await?;
        self.delivered(waiting, key).await
    }

    /// Publishes `event` with a receipt when the consumer runs (a receipt
    /// on a channel not kicked off would wait for the kickoff). Returns the
    /// publisher's side of the receipt, if one was attached.
    async fn publish_with_receipt(
        &self,
        event: Event,
    ) -> Result<Option<oneshot::Receiver<usize>>, PublishError> {
        let running = matches!(*lock(&self.inner.consumer), Consumer::Running { .. });
        if !running {
            self.publish_event(event).await?;
            return Ok(None);
        }
        let (receipt, delivered) = crate::backend::Receipt::pair();
        self.publish_event(event.with_receipt(receipt)).await?;
        Ok(Some(delivered))
    }

    async fn delivered(
        &self,
        waiting: Option<oneshot::Receiver<usize>>,
        key: String,
    ) -> Result<Delivered, PublishError> {
        let not_delivered = || PublishError::NotDelivered {
            channel: self.inner.name.to_string(),
            event: key.clone(),
        };
        match waiting {
            Some(delivered) => delivered
                .await
                .map(|carriers| Delivered { carriers })
                .map_err(|_| not_delivered()),
            None => Err(not_delivered()),
        }
    }

    /// Publishes `event` and waits up to `limit` for this instance to
    /// deliver it: how the model's resource events make a write's reply
    /// follow its event, without letting a stalled consumer hold the write.
    /// Only the publish itself can fail.
    pub(crate) async fn publish_event_then_wait(
        &self,
        event: Event,
        limit: std::time::Duration,
    ) -> Result<(), PublishError> {
        if limit.is_zero() {
            return self.publish_event(event).await;
        }
        let key = event.key().to_string();
        let waiting = self.publish_with_receipt(event).await?;
        let delivered = std::pin::pin!(self.delivered(waiting, key));
        let timer = std::pin::pin!(self.inner.runtime.sleep(limit));
        if let Either::Right(_) = future::select(delivered, timer).await {
            tracing::debug!(channel = %self.inner.name, ?limit, "event published, not delivered within the limit");
        }
        Ok(())
    }

    /// Publishes an already encoded event (for example one relayed from
    /// elsewhere). See [`Channel::publish`].
    pub async fn publish_event(&self, event: Event) -> Result<(), PublishError> {
        let inner = &self.inner;
        let stopped = |event: &Event| PublishError::Stopped {
            channel: inner.name.to_string(),
            event: event.key().to_string(),
        };
        match &*lock(&inner.consumer) {
            Consumer::Stopped { .. } => return Err(stopped(&event)),
            Consumer::Idle if !inner.warned_idle.swap(true, Ordering::Relaxed) => {
                tracing::warn!(channel = %inner.name, "publishing to a channel that was not kicked off: events wait until kickoff()");
            }
            _ => {}
        }
        let key = event.key().to_string();
        #[cfg(feature = "metrics")]
        let event = inner.metrics.stamp(event, &inner.runtime);
        let span = tracing::trace_span!("publish", channel = %inner.name, event = %key);
        match inner.backend.publish(event).instrument(span).await {
            Ok(()) => {
                inner.stats.published.fetch_add(1, Ordering::Relaxed);
                inner.metrics.published();
                Ok(())
            }
            Err(crate::BackendError::Closed) => Err(PublishError::Stopped {
                channel: inner.name.to_string(),
                event: key,
            }),
            Err(source) => Err(PublishError::Backend {
                channel: inner.name.to_string(),
                event: key,
                source,
            }),
        }
    }

    fn prepare<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<Event, PublishError> {
        if event.len() > self.inner.max_event_name {
            return Err(PublishError::EventNameTooLong {
                len: event.len(),
                max: self.inner.max_event_name,
            });
        }
        let data = Payload::encode_with_limit(data, self.inner.max_payload).map_err(|source| {
            PublishError::Payload {
                event: event.to_string(),
                source,
            }
        })?;
        Ok(Event::new(event, data))
    }

    /// Starts consuming the backend's events and delivering them to local
    /// subscribers: the spec's `kickoff`. Idempotent while running. The
    /// consumer runs on the channel's runtime until [`Channel::stop`]; if
    /// that runtime shuts down first, this fails with
    /// [`ChannelError::ConsumerGone`], and opening the name again gives a
    /// fresh channel.
    pub fn kickoff(&self) -> Result<(), ChannelError> {
        let inner = &self.inner;
        if inner.is_orphaned() {
            return Err(ChannelError::ConsumerGone {
                channel: inner.name.to_string(),
            });
        }
        let mut consumer = lock(&inner.consumer);
        match &*consumer {
            Consumer::Running { .. } => return Ok(()),
            Consumer::Stopped { .. } => {
                return Err(ChannelError::Stopped {
                    channel: inner.name.to_string(),
                })
            }
            Consumer::Idle => {}
        }
        let events = inner
            .backend
            .consume()
            .map_err(|source| ChannelError::Backend {
                channel: inner.name.to_string(),
                source,
            })?;
        let (stop, stopped) = oneshot::channel();
        let (finished, done) = oneshot::channel();
        let (flush, flushes) = mpsc::unbounded();
        inner
            .runtime
            .spawn(consume(inner.clone(), events, stopped, flushes, finished))?;
        *consumer = Consumer::Running {
            stop,
            done: done.shared(),
            flush,
        };
        Ok(())
    }

    /// Delivers the events the backend already holds locally, as
    /// [`Channel::stop`] does, without stopping: for a memory channel,
    /// every event whose publish returned before this call is in its
    /// subscribers' queues when this resolves. A server shutting down
    /// flushes before closing its sockets, so that they still get what was
    /// acknowledged. (For a MongoDB channel, "held locally" means read from
    /// the collection already.) Resolves at once when the channel is not
    /// running.
    pub fn flush(&self) -> impl Future<Output = ()> + Send + 'static {
        let flushed = match &*lock(&self.inner.consumer) {
            Consumer::Running { flush, .. } => {
                let (flushed, done) = oneshot::channel();
                flush.unbounded_send(flushed).ok().map(|()| done)
            }
            Consumer::Idle | Consumer::Stopped { .. } => None,
        };
        async move {
            if let Some(done) = flushed {
                // An error means the consumer ended: nothing left to flush.
                let _ = done.await;
            }
        }
    }

    /// Stops the channel cleanly: events already accepted by the backend and
    /// waiting in it locally are delivered, the consumer task ends, the
    /// backend is closed, every subscription is dropped (carriers stay open:
    /// they may serve other channels; sockets served on this channel with
    /// [`serve_socket`](crate::serve_socket) close with 1001 after what they
    /// were sent, see [`Channel::stopped`]) and the name is freed, so opening it
    /// again creates a new channel. Later publishes and subscribes on this
    /// instance fail with a `Stopped` error. Resolves when the consumer has
    /// ended and every carrier subscribed at that moment has written what
    /// it was given ([`Carrier::flushed`]), or its close timeout passed.
    pub fn stop(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        let done = {
            let mut consumer = lock(&inner.consumer);
            match std::mem::replace(&mut *consumer, Consumer::Stopped { done: None }) {
                Consumer::Running { stop, done, .. } => {
                    let _ = stop.send(());
                    *consumer = Consumer::Stopped {
                        done: Some(done.clone()),
                    };
                    Some(done)
                }
                Consumer::Stopped { done } => {
                    *consumer = Consumer::Stopped { done: done.clone() };
                    done
                }
                Consumer::Idle => None,
            }
        };
        registry::remove(&inner.name, &inner);
        if let Some(trigger) = lock(&inner.stop_trigger).take() {
            let _ = trigger.send(());
        }
        async move {
            if let Some(done) = done {
                let _ = done.await;
            }
            // What the consumer delivered last sits in carrier queues: wait
            // for the writers to write it (each within its close timeout, as
            // a peer that stopped reading must not hold the stop), so a
            // runtime dropped right after the stop loses none of it.
            let carriers = lock(&inner.subscriptions).carriers();
            let runtime = inner.runtime.clone();
            future::join_all(carriers.into_iter().map(|(_, carrier)| {
                let limit = runtime.sleep(carrier.close_timeout());
                let flushed = carrier.flushed();
                async move {
                    future::select(std::pin::pin!(flushed), std::pin::pin!(limit)).await;
                }
            }))
            .await;
            inner.edit_subscriptions(Subscriptions::clear);
        }
    }

    /// Resolves once [`Channel::stop`] has been called on this channel and
    /// its consumer has delivered its last events (at once for a channel
    /// that never ran). Each socket served on the channel waits on it to
    /// close itself (1001, going away) after what it was sent.
    ///
    /// ```
    /// use tbone_dispatch::testing::ManualRuntime;
    /// use tbone_dispatch::{ChannelBuilder, MemoryBackend};
    ///
    /// let runtime = ManualRuntime::new();
    /// let channel = ChannelBuilder::new("doc-stopped").open(runtime.clone(), MemoryBackend::new).unwrap();
    /// channel.kickoff().unwrap();
    /// let stopped = channel.stopped();
    /// runtime.run(channel.stop()).unwrap();
    /// runtime.run(stopped).unwrap();
    /// ```
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        let requested = self.inner.stop_requested.clone();
        async move {
            // The trigger lives in `inner`, which this future holds: an
            // error here is impossible, and would mean "stopped" anyway.
            let _ = requested.await;
            let done = match &*lock(&inner.consumer) {
                Consumer::Stopped { done } => done.clone(),
                _ => None,
            };
            if let Some(done) = done {
                let _ = done.await;
            }
        }
    }

    /// Whether the channel was stopped, or its consumer ended with its
    /// runtime.
    pub fn is_stopped(&self) -> bool {
        matches!(*lock(&self.inner.consumer), Consumer::Stopped { .. }) || self.inner.is_orphaned()
    }
}

impl<B: Backend, R: Runtime> Inner<B, R> {
    /// Whether the consumer task is gone without a stop: dropped with its
    /// runtime, so nothing will deliver this channel's events again.
    fn is_orphaned(&self) -> bool {
        if self.orphaned.load(Ordering::Acquire) {
            return true;
        }
        match &*lock(&self.consumer) {
            Consumer::Running { done, .. } => {
                matches!(done.clone().now_or_never(), Some(Err(_)))
            }
            Consumer::Idle | Consumer::Stopped { .. } => false,
        }
    }

    /// Marks an orphaned channel stopped, so its handles say so and the
    /// sockets served on it close.
    fn retire(&self) {
        self.orphaned.store(true, Ordering::Release);
        *lock(&self.consumer) = Consumer::Stopped { done: None };
        if let Some(trigger) = lock(&self.stop_trigger).take() {
            let _ = trigger.send(());
        }
        self.edit_subscriptions(Subscriptions::clear);
    }

    /// Replays to `carrier` the frames `missed` finds, under the lock that
    /// orders deliveries and subscriptions (given the channel's history and
    /// the last backend position it delivered), then subscribes it to
    /// `events`, so that replay and live stream meet with no gap and no
    /// duplicate. `Ok(None)`, subscribing nothing, when `missed` finds
    /// nothing it can vouch for.
    fn join_after(
        &self,
        events: &[&str],
        carrier: &Carrier<R>,
        missed: impl FnOnce(&mut History, Option<&Position>, Instant) -> Option<Vec<Frame>>,
    ) -> Result<Option<Resumed>, SubscribeError> {
        // Checked again here: `resume` awaits the backend's store, while
        // the channel may stop.
        self.check_subscribable(events)?;
        let resumed = {
            let mut table = lock(&self.subscriptions);
            let mut history = lock(&self.history);
            let last = lock(&self.last_delivered).clone();
            let Some(mut frames) = missed(&mut history, last.as_ref(), self.runtime.now()) else {
                return Ok(None);
            };
            drop(history);
            let resumed = Resumed::Replayed {
                events: frames.len(),
            };
            if !carrier.replay(&mut frames.drain(..)) {
                return Err(closed(carrier));
            }
            for event in events {
                table.subscribe(event, carrier.id(), carrier.clone());
            }
            self.metrics.subscriptions(table.subscription_count());
            resumed
        };
        self.join(carrier)?;
        Ok(Some(resumed))
    }

    /// [`join_after`](Inner::join_after) with what the history holds after
    /// `position`.
    fn join_from_history(
        &self,
        events: &[&str],
        carrier: &Carrier<R>,
        position: &Position,
    ) -> Result<Option<Resumed>, SubscribeError> {
        self.join_after(events, carrier, |history, _, now| {
            history.replay(
                position,
                now,
                |key| events.contains(&key),
                |recorded| self.encode_recorded(recorded),
            )
        })
    }

    /// The frame of an event of the history, encoded again as it was
    /// delivered.
    fn encode_recorded(&self, recorded: &Recorded<'_>) -> Frame {
        self.stats.encoded.fetch_add(1, Ordering::Relaxed);
        self.envelope
            .encode_event(recorded.key(), &recorded.data(), recorded.position())
    }

    /// Subscribes `carrier` to `events` after the envelope's
    /// `recovery_failed` frame: its client's position cannot be resumed.
    fn join_failed(
        &self,
        events: &[&str],
        carrier: &Carrier<R>,
        position: Option<&Position>,
    ) -> Result<Resumed, SubscribeError> {
        // Echoed only when it is a position: client input of any length or
        // content never reaches other frames.
        let echoed = position.map_or("", Position::as_str);
        let failed = self.envelope.recovery_failed(echoed).into_recovery_failed();
        self.join_after(events, carrier, |_, _, _| Some(vec![failed]))?;
        Ok(Resumed::Failed)
    }

    /// The frames of the stored events a client wants (`None` for the
    /// others), as the live clients received them.
    fn encode_stored(&self, stored: &Stored, events: &[&str]) -> Vec<Option<Frame>> {
        let frames: Vec<Option<Frame>> = stored
            .events()
            .map(|(event, _)| {
                events
                    .contains(&event.key())
                    .then(|| self.encode(event, event.position()))
            })
            .collect();
        let encoded = frames.iter().flatten().count() as u64;
        self.stats.encoded.fetch_add(encoded, Ordering::Relaxed);
        frames
    }

    /// Whether `events` may be subscribed to here: names within the limit,
    /// the channel not stopped.
    fn check_subscribable(&self, events: &[&str]) -> Result<(), SubscribeError> {
        if let Some(event) = events.iter().find(|e| e.len() > self.max_event_name) {
            return Err(SubscribeError::EventNameTooLong {
                len: event.len(),
                max: self.max_event_name,
            });
        }
        if matches!(*lock(&self.consumer), Consumer::Stopped { .. }) {
            return Err(SubscribeError::Stopped {
                channel: self.name.to_string(),
            });
        }
        Ok(())
    }

    /// Records the channel in a just-subscribed carrier, so that closing it
    /// removes it here; undoes the subscription if the carrier closed
    /// meanwhile.
    fn join(&self, carrier: &Carrier<R>) -> Result<(), SubscribeError> {
        let membership: Weak<dyn Membership> = self.me.clone();
        if carrier.join(membership) {
            return Ok(());
        }
        self.edit_subscriptions(|table| table.remove_carrier(carrier.id()));
        Err(closed(carrier))
    }

    /// Changes the subscription table, keeping its gauge current.
    fn edit_subscriptions<T>(&self, edit: impl FnOnce(&mut Subscriptions<Carrier<R>>) -> T) -> T {
        let mut table = lock(&self.subscriptions);
        let outcome = edit(&mut table);
        self.metrics.subscriptions(table.subscription_count());
        outcome
    }

    /// Each event's position: its backend's, or the next of this channel's
    /// own numbering.
    fn positions(&self, run: &[Event]) -> Vec<Option<Position>> {
        let mut sequence = self.sequence.as_ref().map(lock);
        run.iter()
            .map(|event| {
                event
                    .position()
                    .cloned()
                    .or_else(|| sequence.as_mut().map(|sequence| sequence.next()))
            })
            .collect()
    }

    fn encode_run(&self, run: &[Event], positions: &[Option<Position>]) -> Vec<Frame> {
        self.stats
            .encoded
            .fetch_add(run.len() as u64, Ordering::Relaxed);
        run.iter()
            .zip(positions)
            .map(|(event, position)| self.encode(event, position.as_ref()))
            .collect()
    }

    /// One event's frame: with its position when it has one.
    fn encode(&self, event: &Event, position: Option<&Position>) -> Frame {
        match position {
            Some(position) => self
                .envelope
                .encode_event(event.key(), event.data(), position),
            None => self.envelope.encode(event.key(), event.data()),
        }
    }

    /// Remembers the run's last backend position as the last delivered
    /// (for [`Channel::resume`]); called under the subscriptions lock, in
    /// the same step as taking the run's subscribers. Channels that number
    /// their own events have none and skip the lock. (A backend gives
    /// positions to all its events or to none, so the last one tells.)
    fn note_delivered(&self, run: &[Event]) {
        if let Some(position) = run.last().and_then(Event::position) {
            *lock(&self.last_delivered) = Some(position.clone());
        }
    }

    fn deliver(&self, event: &Event) {
        self.deliver_run(std::slice::from_ref(event));
    }

    /// Delivers consecutive events of one key: each carrier gets the run's
    /// frames back to back, so its writer wakes once per run instead of
    /// once per event. (Woken per event while the consumer was still
    /// queueing a burst on the other core, writers took one frame per wake:
    /// fan-out to 10 000 carriers fell to a quarter of a broadcast channel's
    /// rate.) Events of one carrier stay in publish order: runs are
    /// delivered in order, and a run holds a single key.
    fn deliver_run(&self, run: &[Event]) {
        let Some(first) = run.first() else {
            return;
        };
        let _span =
            tracing::trace_span!("deliver", channel = %self.name, event = first.key(), events = run.len())
                .entered();
        let stats = &self.stats;
        let events = run.len() as u64;
        stats.received.fetch_add(events, Ordering::Relaxed);
        self.metrics.received(run);
        let receipts = run.iter().any(|event| event.receipt().is_some());
        // A channel that keeps a history numbers its events (or takes its
        // backend's positions) and records each, subscribers or not, in the
        // same step as taking the run's subscribers.
        let positions = self
            .sequence
            .is_some()
            .then(|| (self.positions(run), self.runtime.now()));
        let table = lock(&self.subscriptions);
        if let Some((positions, now)) = &positions {
            let recorded = positions
                .iter()
                .zip(run)
                .filter_map(|(position, event)| Some((position.as_ref()?, event.data())));
            lock(&self.history).record_run(&first.shared_key(), recorded, *now);
        }
        self.note_delivered(run);
        let targets = table.subscribers(first.key());
        drop(table);
        // Encoded only for subscribers: a replay encodes from the history.
        let frames = if targets.is_empty() {
            Vec::new()
        } else {
            let positions = match positions {
                Some((positions, _)) => positions,
                None => run.iter().map(|event| event.position().cloned()).collect(),
            };
            self.encode_run(run, &positions)
        };
        if targets.is_empty() {
            stats.unrouted.fetch_add(events, Ordering::Relaxed);
            if receipts {
                run.iter()
                    .filter_map(Event::receipt)
                    .for_each(|r| r.fulfil(0));
            }
            return;
        }
        let (mut queued, mut frames_dropped, mut carriers_dropped) = (0, 0, 0);
        let mut gone: Vec<CarrierId> = Vec::new();
        // For receipts: how many carriers took each event of the run (a
        // carrier takes a prefix of the run's frames).
        let mut reached = if receipts {
            vec![0; run.len()]
        } else {
            Vec::new()
        };
        for (id, carrier) in targets.iter() {
            let (taken, outcome) = carrier.offer_run(&frames);
            reached
                .iter_mut()
                .take(usize::try_from(taken).unwrap_or(usize::MAX))
                .for_each(|n| *n += 1);
            queued += taken;
            match outcome {
                Offer::Queued => {}
                Offer::FrameDropped => frames_dropped += frames.len() as u64 - taken,
                Offer::CarrierDropped => carriers_dropped += 1,
                Offer::Gone => gone.push(*id),
            }
        }
        stats.queued.fetch_add(queued, Ordering::Relaxed);
        self.metrics.delivered(queued);
        #[cfg(feature = "metrics")]
        self.metrics.latency(run, &self.runtime);
        for (event, carriers) in run.iter().zip(&reached) {
            if let Some(receipt) = event.receipt() {
                receipt.fulfil(*carriers);
            }
        }
        if frames_dropped > 0 {
            self.metrics.frames_dropped(frames_dropped);
            stats
                .frames_dropped
                .fetch_add(frames_dropped, Ordering::Relaxed);
        }
        if carriers_dropped > 0 {
            self.metrics.carriers_dropped(carriers_dropped);
            tracing::info!(channel = %self.name, carriers = carriers_dropped, "dropped slow carriers whose queue was full");
            stats
                .carriers_dropped
                .fetch_add(carriers_dropped, Ordering::Relaxed);
        }
        if !gone.is_empty() {
            self.edit_subscriptions(|table| {
                for id in &gone {
                    table.remove_carrier(*id);
                }
            });
            stats
                .carriers_removed
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
        }
    }

    /// Delivers `first` and whatever else the stream holds right now (up to
    /// [`MAX_RUN`] events), in runs of one key. Returns false if the stream
    /// ended meanwhile.
    fn deliver_available(&self, first: Event, events: &mut EventStream) -> bool {
        let mut batch = vec![first];
        let mut open = true;
        while batch.len() < MAX_RUN {
            match events.next().now_or_never() {
                Some(Some(event)) => batch.push(event),
                Some(None) => {
                    open = false;
                    break;
                }
                None => break,
            }
        }
        for run in batch.chunk_by(|a, b| a.key() == b.key()) {
            self.deliver_run(run);
        }
        open
    }
}

/// Most events the consumer takes from its stream before delivering them.
const MAX_RUN: usize = 256;

impl<B: Backend, R: Runtime> Membership for Inner<B, R> {
    fn forget(&self, id: CarrierId) {
        self.edit_subscriptions(|table| table.remove_carrier(id));
    }
}

async fn consume<B: Backend, R: Runtime>(
    inner: Arc<Inner<B, R>>,
    mut events: EventStream,
    mut stop: oneshot::Receiver<()>,
    flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    finished: oneshot::Sender<()>,
) {
    // Never ends: the channel holds the sender while it runs.
    let mut flushes = flushes.chain(futures::stream::pending());
    loop {
        let next = future::select(events.next(), flushes.next());
        match future::select(next, &mut stop).await {
            Either::Left((Either::Left((Some(event), _)), _)) => {
                if !inner.deliver_available(event, &mut events) {
                    tracing::debug!(channel = %inner.name, "backend event stream ended");
                    break;
                }
            }
            Either::Left((Either::Left((None, _)), _)) => {
                tracing::debug!(channel = %inner.name, "backend event stream ended");
                break;
            }
            Either::Left((Either::Right((flushed, _)), _)) => {
                drain(&inner, &mut events).await;
                if let Some(flushed) = flushed {
                    let _ = flushed.send(());
                }
            }
            Either::Right(_) => {
                // Closed first, so that no publish can land after the
                // final drain and be lost: it lands before, or fails.
                inner.backend.close().await;
                drain(&inner, &mut events).await;
                drop(events);
                let _ = finished.send(());
                return;
            }
        }
    }
    drop(events);
    inner.backend.close().await;
    let _ = finished.send(());
}

/// Delivers the events the backend already holds, so that stopping loses
/// nothing that was accepted. A stream may report `Pending` while it still
/// holds items (tokio's cooperative budget does), so an empty poll is
/// trusted only after yielding to the executor once.
async fn drain<B: Backend, R: Runtime>(inner: &Inner<B, R>, events: &mut EventStream) {
    let mut yielded = false;
    loop {
        match events.next().now_or_never() {
            Some(Some(event)) => {
                inner.deliver(&event);
                yielded = false;
            }
            Some(None) => return,
            None if !yielded => {
                yield_now().await;
                yielded = true;
            }
            None => return,
        }
    }
}

/// Returns `Pending` once after waking itself: lets the executor run (and
/// reset any budget) before the caller looks again.
pub(crate) fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    future::poll_fn(move |cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt;

    use super::*;
    use crate::testing::ManualRuntime;
    use crate::{CarrierConfig, OverflowPolicy};

    /// A backend that loses receipts on the way, as a database backend
    /// that does not hold them would.
    struct Forgetful(MemoryBackend);

    impl Backend for Forgetful {
        async fn publish(&self, mut event: Event) -> Result<(), crate::BackendError> {
            drop(event.take_receipt());
            self.0.publish(event).await
        }

        fn consume(&self) -> Result<EventStream, crate::BackendError> {
            self.0.consume()
        }
    }

    #[test]
    fn publish_delivered_counts_the_carriers_that_took_the_event() {
        let runtime = ManualRuntime::new();
        let channel = ChannelBuilder::new("channel-tests-delivered")
            .open(runtime.clone(), MemoryBackend::new)
            .unwrap();
        channel.kickoff().unwrap();
        let config = CarrierConfig::default()
            .capacity(1)
            .overflow(OverflowPolicy::DropFrame);
        let (open, mut reader) = futures::channel::mpsc::unbounded::<Frame>();
        let reading = Carrier::new(&runtime, open, config.clone()).unwrap();
        // A sink that is never ready: its writer holds one frame, then the
        // one-slot queue fills.
        let stuck = futures::sink::unfold((), |(), _: Frame| {
            futures::future::pending::<Result<(), String>>()
        });
        let full = Carrier::new(&runtime, Box::pin(stuck), config).unwrap();
        channel.subscribe("e", &reading).unwrap();
        channel.subscribe("e", &full).unwrap();

        for (n, reached) in [(1, 2), (2, 2), (3, 1)] {
            let delivered = runtime.run(channel.publish_delivered("e", &n)).unwrap();
            assert_eq!(delivered.unwrap().carriers, reached, "event {n}");
            runtime.run(reader.next()).unwrap();
            runtime.run_until_stalled();
        }
        assert_eq!(
            full.frames_dropped(),
            1,
            "the stuck carrier dropped the third"
        );
        let nobody = runtime.run(channel.publish_delivered("other", &3)).unwrap();
        assert_eq!(nobody.unwrap().carriers, 0);
    }

    #[test]
    fn publish_delivered_says_when_the_backend_lost_the_receipt() {
        let runtime = ManualRuntime::new();
        let channel = ChannelBuilder::new("channel-tests-forgetful")
            .open(runtime.clone(), |rt| Forgetful(MemoryBackend::new(rt)))
            .unwrap();
        channel.kickoff().unwrap();
        let outcome = runtime.run(channel.publish_delivered("e", &1)).unwrap();
        assert!(
            matches!(outcome, Err(PublishError::NotDelivered { .. })),
            "{outcome:?}"
        );
    }
}
