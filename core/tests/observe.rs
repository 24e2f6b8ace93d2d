//! What the `metrics` feature records, read back through `metrics-util`'s
//! debugging recorder, on a `ManualRuntime` (the core's dev-dependencies turn
//! the feature on, so this always runs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::Sink;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::{
    observe, serve_socket, Carrier, CarrierConfig, Channel, ChannelBuilder, Frame, Incoming,
    MemoryBackend, Outgoing, OverflowPolicy, ReadError, SocketOptions,
};

type Memory = Channel<MemoryBackend, ManualRuntime>;

fn channel(runtime: &ManualRuntime, name: &str) -> Memory {
    let channel = ChannelBuilder::new(name)
        .open(runtime.clone(), MemoryBackend::new)
        .unwrap();
    channel.kickoff().unwrap();
    channel
}

/// A sink that accepts nothing: a client that stopped reading.
struct Stalled;

impl Sink<Frame> for Stalled {
    type Error = std::io::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }
    fn start_send(self: Pin<&mut Self>, _: Frame) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }
}

/// Every metric of `channel` (and the unlabelled ones), by name.
fn read(snapshots: &Snapshotter, channel: &str) -> HashMap<String, DebugValue> {
    snapshots
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            let mut labels = key.key().labels();
            labels.all(|label| label.key() == "channel" && label.value() == channel)
        })
        .map(|(key, _, _, value)| (key.key().name().to_string(), value))
        .collect()
}

fn counter(metrics: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match metrics.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: not a counter: {other:?}"),
    }
}

fn gauge(metrics: &HashMap<String, DebugValue>, name: &str) -> f64 {
    match metrics.get(name) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        other => panic!("{name}: not a gauge: {other:?}"),
    }
}

#[test]
fn a_channel_reports_publishes_deliveries_drops_and_subscriptions() {
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    let name = "observe-channel";
    metrics::with_local_recorder(&recorder, || {
        let rt = ManualRuntime::new();
        let ch = channel(&rt, name);
        let (sink, _frames) = mpsc::unbounded::<Frame>();
        let reader = Carrier::new(&rt, sink, CarrierConfig::default()).unwrap();
        let dropping = CarrierConfig::default()
            .capacity(1)
            .overflow(OverflowPolicy::DropFrame);
        let behind = Carrier::new(&rt, Stalled, dropping).unwrap();
        let gone = Carrier::new(&rt, Stalled, CarrierConfig::default().capacity(1)).unwrap();
        for carrier in [&reader, &behind, &gone] {
            ch.subscribe("e", carrier).unwrap();
        }
        ch.subscribe("other", &reader).unwrap();
        for n in 0..5 {
            rt.run(ch.publish("e", &n)).unwrap().unwrap();
            rt.advance(Duration::from_millis(10));
        }

        let metrics = read(&snapshots, name);
        assert_eq!(counter(&metrics, observe::EVENTS_PUBLISHED), 5);
        assert_eq!(counter(&metrics, observe::EVENTS_RECEIVED), 5);
        // The reader took 5, `behind` 2 (one in its sink's hands, one
        // queued) and dropped 3, `gone` 2 before it overflowed.
        assert_eq!(counter(&metrics, observe::FRAMES_DELIVERED), 9);
        assert_eq!(counter(&metrics, observe::FRAMES_DROPPED), 3);
        assert_eq!(counter(&metrics, observe::CARRIERS_DROPPED), 1);
        assert_eq!(
            ch.stats().queued,
            9,
            "the metrics agree with the channel's own counters"
        );
        // `gone` left: the reader's two and `behind`'s one remain.
        assert_eq!(gauge(&metrics, observe::SUBSCRIPTIONS), 3.0);
        match metrics.get(observe::DELIVERY_LATENCY) {
            Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 5),
            other => panic!("no latency histogram: {other:?}"),
        }

        ch.unsubscribe_all(&reader);
        assert_eq!(gauge(&read(&snapshots, name), observe::SUBSCRIPTIONS), 1.0);
    });
}

#[test]
fn served_sockets_are_counted_while_they_live() {
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = ManualRuntime::new();
        let ch = channel(&rt, "observe-sockets");
        let (sink, _outgoing) = mpsc::unbounded::<Outgoing>();
        let (client, incoming) = mpsc::unbounded::<Result<Incoming, ReadError>>();
        let served = serve_socket(ch.clone(), sink, incoming, SocketOptions::new(["e"]));
        let mut task = tbone_dispatch::Runtime::spawn(&rt, async move {
            served.await;
        })
        .unwrap();
        rt.run_until_stalled();
        // A snapshot resets what it read (a gauge to 0): add the readings
        // up to follow the gauge's level.
        let mut connected = 0.0;
        let mut level = |snapshots: &Snapshotter| {
            connected += gauge(&read(snapshots, ""), observe::SOCKETS_CONNECTED);
            connected
        };
        assert_eq!(level(&snapshots), 1.0);

        drop(client); // the client went away
        rt.advance(Duration::from_secs(5));
        assert!(task.is_finished());
        assert_eq!(level(&snapshots), 0.0);
    });
}

#[test]
fn backend_gaps_are_counted_per_stream() {
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        observe::record_gap("tbone_channel_a");
        observe::record_gap("tbone_channel_a");
    });
    let gaps: Vec<_> = snapshots
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == observe::BACKEND_GAPS)
        .map(|(key, _, _, value)| {
            let stream: Vec<_> = key.key().labels().map(|l| l.value().to_string()).collect();
            (stream, value)
        })
        .collect();
    assert_eq!(
        gaps,
        vec![(vec!["tbone_channel_a".to_string()], DebugValue::Counter(2))]
    );
}
