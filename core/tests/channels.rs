//! Channel and carrier rules, stepped by hand with `ManualRuntime`: no
//! executor, no threads, no IO.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Sink, StreamExt};
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::{
    close_code, serve_socket, Carrier, CarrierConfig, Channel, ChannelBuilder, ChannelError,
    CloseReason, Envelope, Frame, HistoryLimits, Incoming, MemoryBackend, Outgoing, OverflowPolicy,
    Payload, PublishError, ReadError, SocketOptions, SubscribeError, TBoneEnvelope,
};

type Memory = Channel<MemoryBackend, ManualRuntime>;

fn channel(runtime: &ManualRuntime, name: &str) -> Memory {
    let channel = ChannelBuilder::new(format!("core-tests-{name}"))
        .open(runtime.clone(), MemoryBackend::new)
        .unwrap();
    channel.kickoff().unwrap();
    channel
}

fn client(
    runtime: &ManualRuntime,
    config: CarrierConfig,
) -> (Carrier<ManualRuntime>, mpsc::UnboundedReceiver<Frame>) {
    let (sink, frames) = mpsc::unbounded();
    (Carrier::new(runtime, sink, config).unwrap(), frames)
}

fn drain(runtime: &ManualRuntime, frames: &mut mpsc::UnboundedReceiver<Frame>) -> Vec<String> {
    runtime.run_until_stalled();
    let mut out = Vec::new();
    while let Ok(frame) = frames.try_recv() {
        out.push(frame.as_str().to_string());
    }
    out
}

/// A sink that accepts nothing, ever: a client that stopped reading.
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

#[test]
fn delivers_the_exact_tbone_frame_to_subscribers_of_the_key_only() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "exact");
    let (create, mut create_frames) = client(&rt, CarrierConfig::default());
    let (delete, mut delete_frames) = client(&rt, CarrierConfig::default());
    ch.subscribe("resource_create", &create).unwrap();
    ch.subscribe("resource_delete", &delete).unwrap();

    rt.run(ch.publish(
        "resource_create",
        &serde_json::json!({"id": 1, "text": "hi"}),
    ))
    .unwrap()
    .unwrap();
    rt.run(ch.publish("resource_create", &())).unwrap().unwrap();
    assert_eq!(
        drain(&rt, &mut create_frames),
        vec![
            r#"{"type":"event","payload":{"name":"resource_create","data":{"id":1,"text":"hi"}}}"#,
            r#"{"type":"event","payload":{"name":"resource_create","data":null}}"#,
        ]
    );
    assert!(drain(&rt, &mut delete_frames).is_empty());
}

#[test]
fn invalid_data_is_an_error_and_nothing_is_sent() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "invalid");
    let (carrier, mut frames) = client(&rt, CarrierConfig::default());
    ch.subscribe("e", &carrier).unwrap();

    let nan = rt.run(ch.publish("e", &f64::NAN)).unwrap();
    assert!(matches!(nan, Err(PublishError::Payload { .. })), "{nan:?}");
    let mut tuple_keys = BTreeMap::new();
    tuple_keys.insert((1, 2), 3);
    let keys = rt.run(ch.publish("e", &tuple_keys)).unwrap();
    assert!(
        matches!(keys, Err(PublishError::Payload { .. })),
        "{keys:?}"
    );
    let long = "x".repeat(10_000);
    assert!(matches!(
        rt.run(ch.publish(&long, &1)).unwrap(),
        Err(PublishError::EventNameTooLong { .. })
    ));
    assert!(drain(&rt, &mut frames).is_empty());
    assert_eq!(ch.stats().published, 0);
}

struct Counting(Arc<AtomicUsize>);

impl Envelope for Counting {
    fn encode(&self, event: &str, data: &Payload) -> Frame {
        self.0.fetch_add(1, Ordering::SeqCst);
        TBoneEnvelope.encode(event, data)
    }
}

#[test]
fn each_event_is_encoded_once_and_its_bytes_shared() {
    let rt = ManualRuntime::new();
    let encodes = Arc::new(AtomicUsize::new(0));
    // Without a history, an event nobody listens to is never encoded.
    let ch = ChannelBuilder::new("core-tests-encode-once")
        .envelope(Counting(encodes.clone()))
        .history(HistoryLimits::off())
        .open(rt.clone(), MemoryBackend::new)
        .unwrap();
    ch.kickoff().unwrap();
    let mut clients: Vec<_> = (0..100)
        .map(|_| client(&rt, CarrierConfig::default()))
        .collect();
    for (carrier, _) in &clients {
        ch.subscribe("e", carrier).unwrap();
    }
    rt.run(ch.publish("e", &[1, 2, 3])).unwrap().unwrap();
    rt.run(ch.publish("nobody-listens", &1)).unwrap().unwrap();
    rt.run_until_stalled();
    assert_eq!(encodes.load(Ordering::SeqCst), 1);

    let pointers: Vec<*const u8> = clients
        .iter_mut()
        .map(|(_, frames)| frames.try_recv().unwrap().as_bytes().as_ptr())
        .collect();
    assert!(pointers.windows(2).all(|w| w[0] == w[1]));
    let stats = ch.stats();
    assert_eq!((stats.encoded, stats.queued, stats.unrouted), (1, 100, 1));
}

#[test]
fn a_slow_carrier_is_dropped_without_delaying_the_others() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "slow");
    let slow = Carrier::new(&rt, Stalled, CarrierConfig::default().capacity(4)).unwrap();
    let (fast, mut fast_frames) = client(&rt, CarrierConfig::default().capacity(4));
    ch.subscribe("tick", &slow).unwrap();
    ch.subscribe("tock", &slow).unwrap();
    ch.subscribe("tick", &fast).unwrap();

    for i in 0..50 {
        // Every publish completes at once: no carrier can hold it up.
        rt.run(ch.publish("tick", &i)).unwrap().unwrap();
        assert_eq!(drain(&rt, &mut fast_frames).len(), 1);
    }
    assert_eq!(slow.close_reason(), Some(CloseReason::Overflow));
    assert_eq!(ch.stats().carriers_dropped, 1);
    assert_eq!(
        ch.subscription_count(),
        1,
        "the slow carrier left every event"
    );
    // The stalled sink's close is abandoned after the close timeout.
    rt.advance(Duration::from_secs(2));
    assert_eq!(
        rt.task_count(),
        2,
        "only the consumer and the fast writer remain"
    );
}

#[test]
fn drop_frame_policy_keeps_the_carrier_and_counts() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "drop-frame");
    let slow = Carrier::new(
        &rt,
        Stalled,
        CarrierConfig::default()
            .capacity(2)
            .overflow(OverflowPolicy::DropFrame),
    )
    .unwrap();
    ch.subscribe("e", &slow).unwrap();
    for i in 0..10 {
        rt.run(ch.publish("e", &i)).unwrap().unwrap();
        rt.run_until_stalled();
    }
    assert!(!slow.is_closed());
    assert_eq!(ch.subscriber_count("e"), 1);
    // One frame is in the stalled sink's hands, two wait in the queue.
    assert_eq!(slow.frames_dropped(), 7);
    assert_eq!(ch.stats().frames_dropped, 7);
}

#[test]
fn a_carrier_whose_client_is_gone_leaves_every_channel() {
    let rt = ManualRuntime::new();
    let a = channel(&rt, "dead-a");
    let b = channel(&rt, "dead-b");
    let (carrier, frames) = client(&rt, CarrierConfig::default());
    a.subscribe("x", &carrier).unwrap();
    a.subscribe("y", &carrier).unwrap();
    b.subscribe("x", &carrier).unwrap();
    drop(frames); // the socket died

    rt.run(a.publish("x", &1)).unwrap().unwrap();
    rt.run_until_stalled();
    assert!(matches!(
        carrier.close_reason(),
        Some(CloseReason::SinkError(_))
    ));
    assert_eq!(a.subscription_count(), 0);
    assert_eq!(b.subscription_count(), 0);
    assert!(matches!(
        a.subscribe("x", &carrier),
        Err(SubscribeError::CarrierClosed { .. })
    ));
}

#[test]
fn unsubscribe_matches_any_clone_of_the_carrier() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "unsubscribe");
    let (carrier, mut frames) = client(&rt, CarrierConfig::default());
    assert!(ch.subscribe("e", &carrier).unwrap());
    assert!(!ch.subscribe("e", &carrier.clone()).unwrap());
    assert!(ch.unsubscribe("e", &carrier.clone()));
    rt.run(ch.publish("e", &1)).unwrap().unwrap();
    assert!(drain(&rt, &mut frames).is_empty());
    assert_eq!(ch.subscription_count(), 0);
}

#[test]
fn singletons_by_name_and_backend_type() {
    let rt = ManualRuntime::new();
    let first = channel(&rt, "singleton");
    let again: Memory = ChannelBuilder::new("core-tests-singleton")
        .open(rt.clone(), MemoryBackend::new)
        .unwrap();
    assert!(first == again);

    struct Other;
    impl tbone_dispatch::Backend for Other {
        async fn publish(
            &self,
            _: tbone_dispatch::Event,
        ) -> Result<(), tbone_dispatch::BackendError> {
            Ok(())
        }
        fn consume(&self) -> Result<tbone_dispatch::EventStream, tbone_dispatch::BackendError> {
            Ok(futures::stream::empty().boxed())
        }
    }
    let clash = ChannelBuilder::new("core-tests-singleton").open(rt.clone(), |_| Other);
    assert!(matches!(clash, Err(ChannelError::BackendMismatch { .. })));
}

#[test]
fn stop_delivers_accepted_events_then_refuses_new_ones() {
    let rt = ManualRuntime::new();
    let ch = ChannelBuilder::new("core-tests-stop")
        .open(rt.clone(), MemoryBackend::new)
        .unwrap();
    let (carrier, mut frames) = client(&rt, CarrierConfig::default());
    ch.subscribe("e", &carrier).unwrap();
    // Published before kickoff: waits in the backend, delivered after it.
    rt.run(ch.publish("e", &1)).unwrap().unwrap();
    ch.kickoff().unwrap();
    ch.kickoff().unwrap();
    rt.run(ch.publish("e", &2)).unwrap().unwrap();
    rt.run(ch.stop()).unwrap();
    assert_eq!(drain(&rt, &mut frames).len(), 2);
    assert!(matches!(
        rt.run(ch.publish("e", &3)).unwrap(),
        Err(PublishError::Stopped { .. })
    ));
    assert!(matches!(
        ch.subscribe("e", &carrier),
        Err(SubscribeError::Stopped { .. })
    ));
    assert!(matches!(ch.kickoff(), Err(ChannelError::Stopped { .. })));

    let fresh: Memory = ChannelBuilder::new("core-tests-stop")
        .open(rt.clone(), MemoryBackend::new)
        .unwrap();
    assert!(fresh != ch);
    assert_eq!(rt.task_count(), 1, "only the carrier's writer remains");
}

#[test]
fn dropping_every_handle_ends_the_writer_after_flushing() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "drop-handles");
    let (carrier, mut frames) = client(&rt, CarrierConfig::default());
    ch.subscribe("e", &carrier).unwrap();
    rt.run(ch.publish("e", &1)).unwrap().unwrap();
    rt.run_until_stalled();
    ch.unsubscribe_all(&carrier);
    drop(carrier);
    assert_eq!(drain(&rt, &mut frames).len(), 1);
    assert_eq!(rt.run(frames.next()), Some(None), "the sink was closed");
}

/// A server shutting down (`SocketOptions::until`) closes each socket with
/// 1001 only after the frames already queued for it: a client that was
/// behind still gets every event it was sent, then the close frame.
#[test]
fn shutdown_writes_what_was_queued_before_the_close_frame() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "until-drains");
    let (shut_down, shutting_down) = futures::channel::oneshot::channel::<()>();
    let options = SocketOptions::new(["e"]).until(async move {
        let _ = shutting_down.await;
    });
    // The client reads nothing until the end: the frames wait in the
    // carrier's queue, behind a socket that takes one at a time.
    let (sink, mut client) = mpsc::channel::<Outgoing>(0);
    let (incoming, stream) = mpsc::unbounded::<Result<Incoming, ReadError>>();
    let served = serve_socket(&ch, sink, stream, options);
    let mut served = std::pin::pin!(served);
    assert!(rt.run_for(served.as_mut()).is_none(), "serving");
    assert_eq!(ch.subscriber_count("e"), 1);
    for i in 0..5 {
        rt.run(ch.publish("e", &i)).unwrap().unwrap();
    }
    rt.run_until_stalled();

    shut_down.send(()).unwrap();
    let reason =
        CloseReason::Rejected(close_code::GOING_AWAY, "the server is shutting down".into());
    assert_eq!(rt.run_for(served.as_mut()), Some(reason));
    assert_eq!(ch.subscription_count(), 0, "the socket left at once");
    let mut received = Vec::new();
    while let Some(Some(item)) = rt.run(client.next()) {
        received.push(item);
    }
    let mut expected: Vec<Outgoing> = (0..5)
        .map(|i| {
            Outgoing::Frame(Frame::from(format!(
                r#"{{"type":"event","payload":{{"name":"e","data":{i}}}}}"#
            )))
        })
        .collect();
    expected.push(Outgoing::Close(
        close_code::GOING_AWAY,
        "the server is shutting down".into(),
    ));
    assert_eq!(received, expected);
    // The client answers the close frame: the closing handshake ends.
    incoming.unbounded_send(Ok(Incoming::Close)).unwrap();
    rt.run_until_stalled();
    assert_eq!(rt.task_count(), 1, "only the channel's consumer remains");
}

/// `flush` resolves only once the events whose publish returned are in
/// their subscribers' queues, and the channel keeps running; on a channel
/// that is not running it resolves at once.
#[test]
fn flush_delivers_what_was_published_without_stopping() {
    let rt = ManualRuntime::new();
    let idle: Memory = ChannelBuilder::new("core-tests-flush-idle")
        .open(rt.clone(), MemoryBackend::new)
        .unwrap();
    assert_eq!(
        rt.run(idle.flush()),
        Some(()),
        "nothing to flush before kickoff"
    );

    let ch = channel(&rt, "flush");
    let (carrier, mut frames) = client(&rt, CarrierConfig::default());
    ch.subscribe("e", &carrier).unwrap();
    for i in 0..3 {
        // Accepted at once: the consumer has not run yet.
        rt.run(ch.publish("e", &i)).unwrap().unwrap();
    }
    assert_eq!(carrier.frames_queued(), 0);
    let flush = ch.flush();
    assert_eq!(carrier.frames_queued(), 0, "flushing happens when awaited");
    assert_eq!(rt.run(flush), Some(()));
    assert_eq!(carrier.frames_queued(), 3);
    assert!(!ch.is_stopped());
    rt.run(ch.publish("e", &3)).unwrap().unwrap();
    assert_eq!(drain(&rt, &mut frames).len(), 4);

    rt.run(ch.stop()).unwrap();
    assert_eq!(
        rt.run(ch.flush()),
        Some(()),
        "nothing to flush once stopped"
    );
}

/// Issue 12, defect 2: with one runtime per test, a second test that
/// opened a channel by name got the first test's instance, whose consumer
/// had died with the first runtime: `kickoff` said Ok and every publish
/// failed as Stopped. Now the name gives a fresh channel, and the old
/// handle says what happened.
#[test]
fn a_channel_whose_consumer_died_with_its_runtime_is_replaced() {
    let first = ManualRuntime::new();
    let old = channel(&first, "orphaned");
    old.kickoff().unwrap();
    first.run(old.publish("e", &1)).unwrap().unwrap();
    first.shutdown();
    assert!(old.is_stopped(), "its consumer is gone");
    assert!(matches!(
        old.kickoff(),
        Err(ChannelError::ConsumerGone { .. })
    ));

    let second = ManualRuntime::new();
    let fresh = channel(&second, "orphaned");
    assert!(fresh != old, "a new instance");
    fresh.kickoff().unwrap();
    let (carrier, mut frames) = client(&second, CarrierConfig::default());
    fresh.subscribe("e", &carrier).unwrap();
    second.run(fresh.publish("e", &2)).unwrap().unwrap();
    assert_eq!(drain(&second, &mut frames).len(), 1, "delivered");
}

/// Issue 12, defect 2: opening a name again with other settings returned
/// the first channel silently.
#[test]
fn reopening_a_name_with_other_settings_is_an_error() {
    let rt = ManualRuntime::new();
    let name = "core-tests-settings";
    let first: Memory = ChannelBuilder::new(name)
        .max_payload_bytes(1024)
        .open(rt.clone(), MemoryBackend::new)
        .unwrap();
    let same: Memory = ChannelBuilder::new(name)
        .max_payload_bytes(1024)
        .open(rt.clone(), MemoryBackend::new)
        .unwrap();
    assert!(same == first);
    let bigger = ChannelBuilder::new(name).open(rt.clone(), MemoryBackend::new);
    assert!(
        matches!(bigger, Err(ChannelError::SettingsMismatch { .. })),
        "{bigger:?}"
    );
    struct Lines;
    impl tbone_dispatch::Envelope for Lines {
        fn encode(&self, event: &str, data: &tbone_dispatch::Payload) -> Frame {
            Frame::from(format!("{event} {data}"))
        }
    }
    let other_envelope = ChannelBuilder::new(name)
        .max_payload_bytes(1024)
        .envelope(Lines)
        .open(rt.clone(), MemoryBackend::new);
    let Err(error) = other_envelope else {
        panic!("another envelope must be refused");
    };
    assert!(error.to_string().contains("Lines"), "{error}");
}

/// A sink that takes frames only while its gate is open: a client on a slow
/// network.
#[derive(Clone, Default)]
struct Gated {
    open: Arc<std::sync::atomic::AtomicBool>,
    waiting: Arc<futures::task::AtomicWaker>,
    written: Arc<AtomicUsize>,
}

impl Gated {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.waiting.wake();
    }

    fn ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        self.waiting.register(cx.waker());
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl Sink<Frame> for Gated {
    type Error = std::io::Error;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ready(cx)
    }
    fn start_send(self: Pin<&mut Self>, _: Frame) -> Result<(), Self::Error> {
        self.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ready(cx)
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// Found in review: `stop` resolved once the consumer had queued its last
/// frames, before the carriers' writers wrote them, so a runtime dropped
/// right after the stop (the end of `#[tokio::test]`, a server's main)
/// lost them.
#[test]
fn stop_waits_for_the_carriers_to_write_what_they_were_given() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "stop-waits-writers");
    let sink = Gated::default();
    let carrier = Carrier::new(&rt, sink.clone(), CarrierConfig::default()).unwrap();
    ch.subscribe("e", &carrier).unwrap();
    for n in 0..3 {
        rt.run(ch.publish("e", &n)).unwrap().unwrap();
    }
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = stopped.clone();
    let stop = ch.stop();
    tbone_dispatch::Runtime::spawn(&rt, async move {
        stop.await;
        done.store(true, Ordering::SeqCst);
    })
    .unwrap();
    rt.run_until_stalled();
    assert!(
        !stopped.load(Ordering::SeqCst),
        "stop resolved while the frames were still queued"
    );
    sink.open();
    rt.run_until_stalled();
    assert!(stopped.load(Ordering::SeqCst));
    assert_eq!(sink.written.load(Ordering::SeqCst), 3);
}

/// A client that never reads cannot hold a stop past its carrier's close
/// timeout.
#[test]
fn stop_gives_up_on_a_stalled_carrier_after_its_close_timeout() {
    let rt = ManualRuntime::new();
    let ch = channel(&rt, "stop-stalled-writer");
    let config = CarrierConfig::default().close_timeout(Duration::from_millis(300));
    let carrier = Carrier::new(&rt, Stalled, config).unwrap();
    ch.subscribe("e", &carrier).unwrap();
    rt.run(ch.publish("e", &1)).unwrap().unwrap();
    let stop = ch.stop();
    let mut task = tbone_dispatch::Runtime::spawn(&rt, stop).unwrap();
    rt.run_until_stalled();
    assert!(!task.is_finished());
    rt.advance(Duration::from_millis(300));
    assert!(task.is_finished());
}

#[test]
fn a_task_handle_tells_the_end_of_its_task_and_can_abort_it() {
    let rt = ManualRuntime::new();
    let (finish, finished) = futures::channel::oneshot::channel::<()>();
    let mut ends = tbone_dispatch::Runtime::spawn(&rt, async move {
        let _ = finished.await;
    })
    .unwrap();
    rt.run_until_stalled();
    assert!(!ends.is_finished());
    finish.send(()).unwrap();
    rt.run_until_stalled();
    assert!(ends.is_finished());

    let mut aborted = tbone_dispatch::Runtime::spawn(&rt, futures::future::pending()).unwrap();
    rt.run_until_stalled();
    aborted.abort();
    rt.run_until_stalled();
    assert!(aborted.is_finished());
    assert_eq!(rt.task_count(), 0, "the aborted task was dropped");

    // A task dropped by its executor (a runtime shutting down) has ended too.
    let mut dropped = tbone_dispatch::Runtime::spawn(&rt, futures::future::pending()).unwrap();
    rt.shutdown();
    assert!(dropped.is_finished());
}
