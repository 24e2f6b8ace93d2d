//! What the library reports through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`), and the names it reports under.
//!
//! With the feature on, channels and sockets record into whatever recorder
//! the application installed (Prometheus' exporter, say); without it, or
//! without a recorder, nothing is recorded and nothing is paid for. The
//! per-channel [`ChannelStats`](crate::ChannelStats) counters are kept
//! either way.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | [`SOCKETS_CONNECTED`] | gauge | | websockets being served |
//! | [`SUBSCRIPTIONS`] | gauge | `channel` | subscriptions of the channel's carriers |
//! | [`EVENTS_PUBLISHED`] | counter | `channel` | events this instance handed to the backend |
//! | [`EVENTS_RECEIVED`] | counter | `channel` | events the channel's consumer received |
//! | [`FRAMES_DELIVERED`] | counter | `channel` | frames put into carrier queues |
//! | [`FRAMES_DROPPED`] | counter | `channel` | frames skipped for full carriers (`DropFrame`) |
//! | [`CARRIERS_DROPPED`] | counter | `channel` | carriers closed because their queue overflowed |
//! | [`BACKEND_GAPS`] | counter | `stream` | times a backend found its read position overwritten (a capped collection or trimmed stream lost events before they were read) |
//! | [`DELIVERY_LATENCY`] | histogram | `channel` | seconds from `publish` to the carriers' queues, for events published on this instance through a backend that passes them through (MemoryChannel) |
//!
//! Install the recorder before opening channels: a channel takes its
//! handles when it is created.
//!
//! ```
//! use metrics_util::debugging::DebuggingRecorder;
//! use tbone_dispatch::testing::ManualRuntime;
//! use tbone_dispatch::{observe, ChannelBuilder, MemoryBackend};
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshots = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || {
//!     let runtime = ManualRuntime::new();
//!     let channel = ChannelBuilder::new("doc-observe")
//!         .open(runtime.clone(), MemoryBackend::new)
//!         .unwrap();
//!     channel.kickoff().unwrap();
//!     runtime.run(channel.publish("resource_create", &1)).unwrap().unwrap();
//! });
//! let published = snapshots
//!     .snapshot()
//!     .into_vec()
//!     .into_iter()
//!     .any(|(key, ..)| key.key().name() == observe::EVENTS_PUBLISHED);
//! assert!(published);
//! ```

/// Gauge: websockets being served.
pub const SOCKETS_CONNECTED: &str = "tbone_sockets_connected";
/// Gauge: subscriptions held by a channel's carriers.
pub const SUBSCRIPTIONS: &str = "tbone_subscriptions";
/// Counter: events this instance handed to a channel's backend.
pub const EVENTS_PUBLISHED: &str = "tbone_events_published_total";
/// Counter: events a channel's consumer received from its backend.
pub const EVENTS_RECEIVED: &str = "tbone_events_received_total";
/// Counter: frames put into carrier queues.
pub const FRAMES_DELIVERED: &str = "tbone_frames_delivered_total";
/// Counter: frames skipped for full carriers under `OverflowPolicy::DropFrame`.
pub const FRAMES_DROPPED: &str = "tbone_frames_dropped_total";
/// Counter: carriers closed because their queue overflowed.
pub const CARRIERS_DROPPED: &str = "tbone_carriers_dropped_total";
/// Counter: gaps a backend reported (see [`record_gap`]).
pub const BACKEND_GAPS: &str = "tbone_backend_gaps_total";
/// Histogram: seconds from `publish` to the carriers' queues.
pub const DELIVERY_LATENCY: &str = "tbone_delivery_latency_seconds";

/// Records one gap of the backend's `stream` (its collection or stream
/// name): events that were lost to it before they could be read. For
/// backends; MongoChannel and RedisChannel call it. Does nothing without
/// the `metrics` feature.
pub fn record_gap(stream: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(BACKEND_GAPS, "stream" => stream.to_string()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = stream;
}

/// One channel's metric handles, taken once when the channel is created so
/// that recording costs an atomic operation, not a registry lookup.
#[derive(Clone)]
pub(crate) struct ChannelMetrics {
    #[cfg(feature = "metrics")]
    handles: Handles,
}

#[cfg(feature = "metrics")]
#[derive(Clone)]
struct Handles {
    subscriptions: metrics::Gauge,
    published: metrics::Counter,
    received: metrics::Counter,
    delivered: metrics::Counter,
    frames_dropped: metrics::Counter,
    carriers_dropped: metrics::Counter,
    latency: metrics::Histogram,
}

impl ChannelMetrics {
    #[cfg(feature = "metrics")]
    pub(crate) fn new(channel: &str) -> Self {
        let label = || [("channel", channel.to_string())];
        ChannelMetrics {
            handles: Handles {
                subscriptions: metrics::gauge!(SUBSCRIPTIONS, &label()),
                published: metrics::counter!(EVENTS_PUBLISHED, &label()),
                received: metrics::counter!(EVENTS_RECEIVED, &label()),
                delivered: metrics::counter!(FRAMES_DELIVERED, &label()),
                frames_dropped: metrics::counter!(FRAMES_DROPPED, &label()),
                carriers_dropped: metrics::counter!(CARRIERS_DROPPED, &label()),
                latency: metrics::histogram!(DELIVERY_LATENCY, &label()),
            },
        }
    }

    #[cfg(not(feature = "metrics"))]
    pub(crate) fn new(_channel: &str) -> Self {
        ChannelMetrics {}
    }

    #[inline]
    pub(crate) fn published(&self) {
        #[cfg(feature = "metrics")]
        self.handles.published.increment(1);
    }

    #[inline]
    pub(crate) fn received(&self, _events: u64) {
        #[cfg(feature = "metrics")]
        self.handles.received.increment(_events);
    }

    #[inline]
    pub(crate) fn delivered(&self, _frames: u64) {
        #[cfg(feature = "metrics")]
        self.handles.delivered.increment(_frames);
    }

    #[inline]
    pub(crate) fn frames_dropped(&self, _frames: u64) {
        #[cfg(feature = "metrics")]
        self.handles.frames_dropped.increment(_frames);
    }

    #[inline]
    pub(crate) fn carriers_dropped(&self, _carriers: u64) {
        #[cfg(feature = "metrics")]
        self.handles.carriers_dropped.increment(_carriers);
    }

    #[inline]
    pub(crate) fn subscriptions(&self, _count: usize) {
        #[cfg(feature = "metrics")]
        self.handles.subscriptions.set(_count as f64);
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn latency(&self, latency: std::time::Duration) {
        self.handles.latency.record(latency.as_secs_f64());
    }
}

/// Counts a served websocket in [`SOCKETS_CONNECTED`] while it lives.
pub(crate) struct SocketConnected(());

impl SocketConnected {
    pub(crate) fn count() -> Self {
        #[cfg(feature = "metrics")]
        metrics::gauge!(SOCKETS_CONNECTED).increment(1.0);
        SocketConnected(())
    }
}

impl Drop for SocketConnected {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!(SOCKETS_CONNECTED).decrement(1.0);
    }
}
