//! Dispatch logic tested without IO, threads or a real clock: only the
//! core and its `testing::ManualRuntime` (no tokio, async-std or smol).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Sink, StreamExt};
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::{
    Carrier, CarrierConfig, Channel, ChannelBuilder, CloseReason, Frame, MemoryBackend, Receiver,
    ReceiverError, ReceiverKey, Sender, Senders, Signal,
};

/// A client that stopped reading: its sink never becomes ready.
struct StuckSink;

impl Sink<Frame> for StuckSink {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Pending
    }

    fn start_send(self: Pin<&mut Self>, _frame: Frame) -> Result<(), String> {
        Err("not ready".into())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
}

type ManualChannel = Channel<MemoryBackend, ManualRuntime>;

fn open(runtime: &ManualRuntime, test: &str) -> ManualChannel {
    ChannelBuilder::new(format!("conformance/manual/{test}"))
        .open(runtime.clone(), MemoryBackend::new)
        .expect("open")
}

#[test]
fn memory_channel_delivers_driven_by_hand() {
    let runtime = ManualRuntime::new();
    let channel = open(&runtime, "deliver");
    let (sink, mut client) = futures::channel::mpsc::unbounded::<Frame>();
    let carrier = Carrier::new(&runtime, sink, CarrierConfig::default()).expect("carrier");
    channel
        .subscribe("resource_create", &carrier)
        .expect("subscribe");
    channel.kickoff().expect("kickoff");

    // Nothing published: waiting for a frame stalls instead of hanging.
    assert!(
        runtime.run(client.next()).is_none(),
        "no frame without a publish"
    );

    for id in 0..3 {
        runtime
            .run(channel.publish("resource_create", &serde_json::json!({ "id": id })))
            .expect("publish completes")
            .expect("publish succeeds");
    }
    for id in 0..3 {
        let frame = runtime
            .run(client.next())
            .expect("a frame")
            .expect("sink open");
        assert_eq!(
            frame.as_str(),
            format!(
                r#"{{"type":"event","payload":{{"name":"resource_create","data":{{"id":{id}}}}}}}"#
            )
        );
    }
    assert!(runtime.run(client.next()).is_none(), "exactly three frames");
    let stats = channel.stats();
    assert_eq!(
        (stats.published, stats.received, stats.encoded, stats.queued),
        (3, 3, 3, 3)
    );
}

#[test]
fn slow_carrier_dropped_driven_by_hand() {
    let runtime = ManualRuntime::new();
    let channel = open(&runtime, "slow");
    let slow =
        Carrier::new(&runtime, StuckSink, CarrierConfig::default().capacity(2)).expect("carrier");
    let (sink, mut client) = futures::channel::mpsc::unbounded::<Frame>();
    let fast = Carrier::new(&runtime, sink, CarrierConfig::default()).expect("carrier");
    channel.subscribe("tick", &slow).expect("subscribe");
    channel.subscribe("tick", &fast).expect("subscribe");
    channel.kickoff().expect("kickoff");

    for n in 0..10 {
        runtime
            .run(channel.publish("tick", &n))
            .expect("publishing never waits for a carrier")
            .expect("publish succeeds");
    }
    runtime.run_until_stalled();

    assert!(slow.is_closed());
    assert_eq!(slow.close_reason(), Some(CloseReason::Overflow));
    assert_eq!(runtime.run(slow.closed()), Some(CloseReason::Overflow));
    assert_eq!(channel.stats().carriers_dropped, 1);
    assert_eq!(
        channel.subscriber_count("tick"),
        1,
        "the slow carrier left the table"
    );
    for n in 0..10 {
        let frame = runtime
            .run(client.next())
            .expect("a frame")
            .expect("sink open");
        assert_eq!(
            frame.as_str(),
            format!(r#"{{"type":"event","payload":{{"name":"tick","data":{n}}}}}"#)
        );
    }
    assert!(!fast.is_closed());
}

#[test]
fn receiver_timeout_on_a_manual_clock() {
    static SIG: Signal<u32, u32> = Signal::new();
    let _ = SIG.connect(|_: Sender, n: &u32| n + 1, Senders::Any);
    let _ = SIG.connect_receiver(
        Receiver::future(|_: Sender, _: Arc<u32>| futures::future::pending::<u32>()).key("stuck"),
        Senders::Any,
    );

    let runtime = ManualRuntime::new();
    let timeout = Duration::from_secs(30);
    let mut send = Box::pin(SIG.send_robust_timeout(&runtime, timeout, Sender::of::<()>(), 1));
    assert!(
        runtime.run_for(send.as_mut()).is_none(),
        "time stands still: still waiting"
    );
    runtime.advance(timeout - Duration::from_millis(1));
    assert!(runtime.run_for(send.as_mut()).is_none(), "not yet due");
    runtime.advance(Duration::from_millis(1));
    let results = runtime.run_for(send.as_mut()).expect("the deadline passed");
    assert_eq!(results[0].as_ref().ok(), Some(&2));
    assert!(matches!(
        &results[1],
        Err(ReceiverError::TimedOut { key, timeout: t }) if *key == ReceiverKey::from("stuck") && *t == timeout
    ));
}
