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
//! | [`DELIVERY_LATENCY`] | histogram | `channel` | seconds from `publish` to the carriers' queues, for events published on this instance through a backend that passes them through (MemoryChannel); sampled: at low rates every event, under load about one per trip from `publish` to the channel's consumer |
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

use crate::Event;

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
/// Histogram: seconds from `publish` to the carriers' queues, of sampled
/// events (at low rates every event; see the module).
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
pub(crate) struct ChannelMetrics {
    #[cfg(feature = "metrics")]
    handles: Handles,
    #[cfg(feature = "metrics")]
    latency: LatencySampling,
}

#[cfg(feature = "metrics")]
struct Handles {
    subscriptions: metrics::Gauge,
    published: metrics::Counter,
    received: metrics::Counter,
    delivered: metrics::Counter,
    frames_dropped: metrics::Counter,
    carriers_dropped: metrics::Counter,
    latency: metrics::Histogram,
}

/// Which published events carry their publish time, for
/// [`DELIVERY_LATENCY`]: one at a time. An event is stamped when no
/// stamped event is on its way to the channel's consumer, so at low rates
/// every event is, and under load about one per trip from `publish` to the
/// consumer. (Stamping and recording every event, a clock read and a
/// histogram sample each, made the fan-out to one carrier 1.39 times the
/// instructions of a build without the feature, with Prometheus' recorder,
/// most of them the recorder summarising every sample.) Every
/// [`LATENCY_RESAMPLE`]th publish that finds one on its way is stamped
/// anyway, so that a stamped event lost on the way (a consumer stopped
/// with it queued) does not end the samples.
///
/// On cache lines of its own: publishers write it on every publish, and
/// a line shared with what the consumer writes would travel between their
/// cores on every publish.
#[cfg(feature = "metrics")]
#[derive(Default)]
#[repr(align(128))]
struct LatencySampling {
    on_its_way: std::sync::atomic::AtomicBool,
    skipped: std::sync::atomic::AtomicU32,
}

/// See [`LatencySampling`].
#[cfg(feature = "metrics")]
const LATENCY_RESAMPLE: u32 = 1024;

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
            latency: LatencySampling::default(),
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

    /// Stamps `event` with its publish time if it is to be a latency
    /// sample (see [`LatencySampling`]).
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn stamp<R: crate::Runtime>(&self, event: Event, runtime: &R) -> Event {
        use std::sync::atomic::Ordering::Relaxed;
        let sampling = &self.latency;
        let stamp = if sampling.on_its_way.load(Relaxed) {
            // A load and a store, not an atomic add: concurrent publishers
            // may lose a count between them, which only delays the next
            // resample a little, for less than an add costs every publish.
            let skipped = sampling.skipped.load(Relaxed).wrapping_add(1);
            sampling.skipped.store(skipped, Relaxed);
            skipped.is_multiple_of(LATENCY_RESAMPLE)
        } else {
            !sampling.on_its_way.swap(true, Relaxed)
        };
        if stamp {
            event.published_now(runtime.now())
        } else {
            event
        }
    }

    /// Counts a run of events the consumer received.
    #[inline]
    pub(crate) fn received(&self, run: &[Event]) {
        #[cfg(feature = "metrics")]
        {
            self.handles.received.increment(run.len() as u64);
            // The stamped event has arrived, delivered or not (a run with
            // no subscriber is not): the next publish may stamp another.
            if run.iter().any(|event| event.published_at().is_some()) {
                self.latency
                    .on_its_way
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = run;
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

    /// Records the latency of the run's stamped events, now in the
    /// carriers' queues.
    #[cfg(feature = "metrics")]
    pub(crate) fn latency<R: crate::Runtime>(&self, run: &[Event], runtime: &R) {
        let mut stamped = run.iter().filter_map(Event::published_at).peekable();
        if stamped.peek().is_none() {
            return;
        }
        let now = runtime.now();
        for published in stamped {
            self.handles
                .latency
                .record(now.saturating_duration_since(published).as_secs_f64());
        }
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

#[cfg(all(test, feature = "metrics"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use futures::channel::mpsc;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;
    use crate::testing::ManualRuntime;
    use crate::{Carrier, CarrierConfig, Channel, ChannelBuilder, Frame, MemoryBackend, Payload};

    fn channel(runtime: &ManualRuntime, name: &str) -> Channel<MemoryBackend, ManualRuntime> {
        let channel = ChannelBuilder::new(name)
            .open(runtime.clone(), MemoryBackend::new)
            .unwrap();
        channel.kickoff().unwrap();
        channel
    }

    /// The latency samples recorded for `channel`.
    fn latencies(snapshots: &Snapshotter, channel: &str) -> usize {
        let samples = snapshots
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| {
                key.key().name() == DELIVERY_LATENCY
                    && key.key().labels().any(|label| label.value() == channel)
            });
        match samples {
            Some((.., DebugValue::Histogram(samples))) => samples.len(),
            None => 0,
            Some(other) => panic!("{DELIVERY_LATENCY} is not a histogram: {other:?}"),
        }
    }

    #[test]
    fn a_burst_costs_one_latency_sample_not_one_per_event() {
        let recorder = DebuggingRecorder::new();
        let snapshots = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let rt = ManualRuntime::new();
            let ch = channel(&rt, "observe-burst");
            let (sink, _frames) = mpsc::unbounded::<Frame>();
            let reader = Carrier::new(&rt, sink, CarrierConfig::default()).unwrap();
            ch.subscribe("e", &reader).unwrap();
            // 100 events queued before the consumer runs: one is stamped.
            rt.run(async {
                for n in 0..100 {
                    ch.publish("e", &n).await.unwrap();
                }
            })
            .unwrap();
            rt.run_until_stalled();
            assert_eq!(ch.stats().queued, 100);
            assert_eq!(latencies(&snapshots, "observe-burst"), 1);
            // Delivered, it lets the next event be a sample (a snapshot
            // takes the samples it shows: this is one more).
            rt.run(ch.publish("e", &100)).unwrap().unwrap();
            rt.run_until_stalled();
            assert_eq!(latencies(&snapshots, "observe-burst"), 1);
        });
    }

    #[test]
    fn a_sample_no_carrier_took_does_not_end_the_samples() {
        let recorder = DebuggingRecorder::new();
        let snapshots = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let rt = ManualRuntime::new();
            let ch = channel(&rt, "observe-unrouted");
            rt.run(ch.publish("nobody", &1)).unwrap().unwrap();
            rt.run_until_stalled();
            assert_eq!(ch.stats().unrouted, 1);
            let (sink, _frames) = mpsc::unbounded::<Frame>();
            let reader = Carrier::new(&rt, sink, CarrierConfig::default()).unwrap();
            ch.subscribe("e", &reader).unwrap();
            rt.run(ch.publish("e", &2)).unwrap().unwrap();
            rt.run_until_stalled();
            assert_eq!(latencies(&snapshots, "observe-unrouted"), 1);
        });
    }

    #[test]
    fn a_sample_lost_on_the_way_does_not_end_the_samples() {
        let rt = ManualRuntime::new();
        let metrics = ChannelMetrics::new("observe-lost");
        let stamped = (0..2 * LATENCY_RESAMPLE + 1)
            .map(|_| Event::new("e", Payload::encode(&1).unwrap()))
            .map(|event| metrics.stamp(event, &rt))
            .filter(|event| event.published_at().is_some())
            .count();
        // The first, then one in LATENCY_RESAMPLE of those that found it
        // still on its way (it never arrives).
        assert_eq!(stamped, 3);
    }
}
