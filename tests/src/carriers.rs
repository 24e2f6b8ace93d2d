//! Rules of carriers.

use futures::channel::{mpsc, oneshot};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures::StreamExt;
use serde_json::json;
use tbone_dispatch::{Carrier, CarrierConfig, CloseReason, Frame, OverflowPolicy, SubscribeError};

use crate::support::{FailOn, FailingSink, StuckSink};
use crate::{
    eventually, frame_data, new_carrier, next_frame, next_frames, unique_name, wait, Mem,
    TestRuntime,
};

fn open_running<R: TestRuntime>(test: &str) -> Mem<R> {
    let channel = Mem::<R>::named(&unique_name::<R>(test)).expect("open");
    channel.kickoff().expect("kickoff");
    channel
}

fn assert_sink_error(reason: &CloseReason, message: &str) {
    match reason {
        CloseReason::SinkError(e) => assert!(
            e.contains(message),
            "close reason {e:?} should mention {message:?}"
        ),
        other => panic!("expected CloseReason::SinkError({message:?}), got {other:?}"),
    }
}

/// A carrier whose sink fails on the first write (in `poll_ready` or in
/// `start_send`) closes and leaves every event of every channel, without
/// disturbing the other carriers.
pub async fn sink_error_removes_carrier_from_every_channel<R: TestRuntime>() {
    let first = open_running::<R>("sink-error-1");
    let second = open_running::<R>("sink-error-2");
    let runtime = R::default();
    let on_ready = Carrier::new(
        &runtime,
        FailingSink::new(FailOn::Ready, "boom in poll_ready"),
        CarrierConfig::default(),
    )
    .expect("carrier");
    let on_send = Carrier::new(
        &runtime,
        FailingSink::new(FailOn::Send, "boom in start_send"),
        CarrierConfig::default(),
    )
    .expect("carrier");
    let (healthy, mut healthy_client) = new_carrier::<R>();
    for failing in [&on_ready, &on_send] {
        first.subscribe("x", failing).expect("subscribe");
        first.subscribe("y", failing).expect("subscribe");
        second.subscribe("z", failing).expect("subscribe");
    }
    first.subscribe("x", &healthy).expect("subscribe");
    second.subscribe("z", &healthy).expect("subscribe");
    assert_eq!(first.subscription_count(), 5);
    assert_eq!(second.subscription_count(), 3);

    first.publish("x", &1).await.expect("publish");

    assert_sink_error(
        &wait::<R, _>("the poll_ready carrier to close", on_ready.closed()).await,
        "boom in poll_ready",
    );
    assert_sink_error(
        &wait::<R, _>("the start_send carrier to close", on_send.closed()).await,
        "boom in start_send",
    );
    eventually::<R>(
        "failed carriers to leave every event of both channels",
        || first.subscription_count() == 1 && second.subscription_count() == 1,
    )
    .await;
    for failing in [&on_ready, &on_send] {
        assert!(failing.is_closed());
        assert!(matches!(
            failing.close_reason(),
            Some(CloseReason::SinkError(_))
        ));
        assert!(matches!(
            first.subscribe("x", failing),
            Err(SubscribeError::CarrierClosed {
                reason: CloseReason::SinkError(_),
                ..
            })
        ));
    }
    assert_eq!(first.subscriber_count("y"), 0);
    assert_eq!(second.subscriber_count("z"), 1);

    // The healthy carrier is unaffected.
    assert_eq!(
        frame_data(&next_frame::<R>(&mut healthy_client, "x").await),
        json!(1)
    );
    second.publish("z", &2).await.expect("publish");
    assert_eq!(
        frame_data(&next_frame::<R>(&mut healthy_client, "z").await),
        json!(2)
    );
    assert!(!healthy.is_closed());
}

/// A carrier whose client went away (the receiver of its mpsc sink was
/// dropped) closes and leaves every channel.
pub async fn dropped_client_removes_carrier_from_every_channel<R: TestRuntime>() {
    let first = open_running::<R>("dropped-client-1");
    let second = open_running::<R>("dropped-client-2");
    let (sink, client) = mpsc::unbounded::<Frame>();
    drop(client);
    let carrier = R::carrier_from_sink(sink).expect("carrier");
    first.subscribe("x", &carrier).expect("subscribe");
    first.subscribe("y", &carrier).expect("subscribe");
    second.subscribe("x", &carrier).expect("subscribe");

    first.publish("x", &1).await.expect("publish");
    let reason = wait::<R, _>("the carrier of a gone client to close", carrier.closed()).await;
    assert!(
        matches!(reason, CloseReason::SinkError(_)),
        "got {reason:?}"
    );
    eventually::<R>("the carrier to leave both channels", || {
        first.subscription_count() == 0 && second.subscription_count() == 0
    })
    .await;
    assert!(carrier.is_closed());
    assert_eq!(carrier.close_reason(), Some(reason));
}

/// One carrier whose sink never becomes ready cannot slow anyone: publishing
/// completes, the other carriers receive everything in order, and the slow
/// one is dropped (closed with `Overflow`, removed from every channel).
pub async fn slow_carrier_is_dropped_without_slowing_others<R: TestRuntime>() {
    const EVENTS: usize = 50;
    let channel = open_running::<R>("slow-carrier");
    let other = open_running::<R>("slow-carrier-other");
    let slow = Carrier::new(
        &R::default(),
        StuckSink,
        CarrierConfig::default().capacity(4),
    )
    .expect("carrier");
    channel.subscribe("tick", &slow).expect("subscribe");
    other.subscribe("elsewhere", &slow).expect("subscribe");
    let mut fast = Vec::new();
    for _ in 0..3 {
        let (carrier, client) = new_carrier::<R>();
        channel.subscribe("tick", &carrier).expect("subscribe");
        fast.push((carrier, client));
    }

    wait::<R, _>("50 publishes while a carrier is stuck", async {
        for n in 0..EVENTS {
            channel.publish("tick", &n).await.expect("publish");
        }
    })
    .await;
    for (carrier, client) in &mut fast {
        let frames = next_frames::<R>(client, EVENTS, "every tick on a fast carrier").await;
        let data: Vec<_> = frames.iter().map(frame_data).collect();
        assert_eq!(data, (0..EVENTS).map(|n| json!(n)).collect::<Vec<_>>());
        assert!(!carrier.is_closed());
    }

    assert_eq!(
        wait::<R, _>("the slow carrier to close", slow.closed()).await,
        CloseReason::Overflow
    );
    assert_eq!(slow.close_reason(), Some(CloseReason::Overflow));
    let stats = channel.stats();
    assert_eq!(stats.carriers_dropped, 1);
    assert_eq!(stats.frames_dropped, 0);
    assert_eq!(
        channel.subscriber_count("tick"),
        3,
        "the slow carrier left the table"
    );
    assert_eq!(channel.carrier_count(), 3);
    assert_eq!(other.subscription_count(), 0, "and every other channel");
    assert!(
        slow.frames_queued() <= 5,
        "queued {} frames with capacity 4",
        slow.frames_queued()
    );
}

/// Under `OverflowPolicy::DropFrame` a slow carrier only loses frames: it
/// stays subscribed and open, and the drops are counted.
pub async fn slow_carrier_with_drop_frame_stays_subscribed<R: TestRuntime>() {
    const EVENTS: u64 = 50;
    let channel = open_running::<R>("slow-drop-frame");
    let config = CarrierConfig::default()
        .capacity(4)
        .overflow(OverflowPolicy::DropFrame);
    let slow = Carrier::new(&R::default(), StuckSink, config).expect("carrier");
    channel.subscribe("tick", &slow).expect("subscribe");
    let (fast, mut fast_client) = new_carrier::<R>();
    channel.subscribe("tick", &fast).expect("subscribe");

    for n in 0..EVENTS {
        channel.publish("tick", &n).await.expect("publish");
    }
    next_frames::<R>(
        &mut fast_client,
        EVENTS as usize,
        "every tick on the fast carrier",
    )
    .await;

    assert!(!slow.is_closed());
    assert_eq!(
        channel.subscriber_count("tick"),
        2,
        "the slow carrier is still subscribed"
    );
    // The writer holds at most one frame out of the queue of 4. Counters
    // move just after the offer: wait until all 50 are accounted for.
    eventually::<R>("the slow carrier to account for every frame", || {
        slow.frames_queued() + slow.frames_dropped() == EVENTS
            && channel.stats().frames_dropped == slow.frames_dropped()
    })
    .await;
    let dropped = slow.frames_dropped();
    assert!(
        (45..=46).contains(&dropped),
        "dropped {dropped} of {EVENTS} with capacity 4"
    );
    let stats = channel.stats();
    assert_eq!(stats.carriers_dropped, 0);
}

/// `Carrier::close` removes the carrier from every channel at once, and its
/// sink is closed.
pub async fn close_removes_carrier_from_every_channel<R: TestRuntime>() {
    let first = open_running::<R>("close-1");
    let second = open_running::<R>("close-2");
    let (carrier, mut client) = new_carrier::<R>();
    let (other, mut other_client) = new_carrier::<R>();
    first.subscribe("a", &carrier).expect("subscribe");
    first.subscribe("b", &carrier).expect("subscribe");
    second.subscribe("a", &carrier).expect("subscribe");
    first.subscribe("a", &other).expect("subscribe");

    carrier.clone().close();
    assert!(carrier.is_closed());
    assert_eq!(carrier.close_reason(), Some(CloseReason::Closed));
    assert_eq!(
        first.subscription_count(),
        1,
        "only the other carrier is left"
    );
    assert_eq!(second.subscription_count(), 0);
    assert_eq!(
        wait::<R, _>("closed()", carrier.closed()).await,
        CloseReason::Closed
    );
    assert_eq!(
        wait::<R, _>("the carrier's sink to be closed", client.next()).await,
        None,
        "closing a carrier closes its sink"
    );
    assert!(matches!(
        first.subscribe("a", &carrier),
        Err(SubscribeError::CarrierClosed {
            reason: CloseReason::Closed,
            ..
        })
    ));
    carrier.close();
    assert_eq!(
        carrier.close_reason(),
        Some(CloseReason::Closed),
        "close is idempotent"
    );

    first.publish("a", &1).await.expect("publish");
    assert_eq!(
        frame_data(&next_frame::<R>(&mut other_client, "a").await),
        json!(1)
    );
    assert!(!other.is_closed());
}

/// `closed()` waits (in any task) until the carrier closes, then resolves
/// with the reason; once closed, it resolves at once.
pub async fn closed_resolves_with_reason<R: TestRuntime>() {
    let (carrier, _client) = new_carrier::<R>();
    let mut waiting = Box::pin(carrier.closed());
    assert_eq!(
        futures::poll!(waiting.as_mut()),
        Poll::Pending,
        "an open carrier is not closed"
    );

    let (report, reported) = oneshot::channel();
    let in_task = carrier.closed();
    R::default()
        .spawn(async move {
            let _ = report.send(in_task.await);
        })
        .expect("spawn");

    carrier.close();
    assert_eq!(
        wait::<R, _>("closed() in this task", waiting).await,
        CloseReason::Closed
    );
    assert_eq!(
        wait::<R, _>("closed() in another task", reported)
            .await
            .expect("report"),
        CloseReason::Closed
    );
    assert_eq!(
        wait::<R, _>("closed() after close", carrier.closed()).await,
        CloseReason::Closed
    );
}

/// By the time `closed()` is woken, the carrier has already left every
/// channel: a multi-thread executor may run the woken task at once, and a
/// handler that awaits `closed()` must not find its carrier still
/// subscribed. Checked deterministically with a waker that looks at the
/// channels when it is called.
pub async fn closed_wakes_after_carrier_left_every_channel<R: TestRuntime>() {
    struct Inspect<F: Fn() -> usize + Send + Sync + 'static> {
        subscriptions: F,
        seen: Mutex<Vec<usize>>,
    }
    impl<F: Fn() -> usize + Send + Sync + 'static> Wake for Inspect<F> {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let now = (self.subscriptions)();
            self.seen.lock().expect("lock").push(now);
        }
    }

    let first = open_running::<R>("closed-wakes-late-1");
    let second = open_running::<R>("closed-wakes-late-2");
    let (carrier, _client) = new_carrier::<R>();
    first.subscribe("a", &carrier).expect("subscribe");
    first.subscribe("b", &carrier).expect("subscribe");
    second.subscribe("a", &carrier).expect("subscribe");

    let inspect = Arc::new(Inspect {
        subscriptions: {
            let (first, second) = (first.clone(), second.clone());
            move || first.subscription_count() + second.subscription_count()
        },
        seen: Mutex::new(Vec::new()),
    });
    let waker = Waker::from(inspect.clone());
    let mut waiting = Box::pin(carrier.closed());
    assert_eq!(
        waiting.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Pending
    );

    carrier.close();
    assert_eq!(
        waiting.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Ready(CloseReason::Closed)
    );
    let seen = inspect.seen.lock().expect("lock").clone();
    assert!(!seen.is_empty(), "closed() was never woken");
    assert!(
        seen.iter().all(|&n| n == 0),
        "closed() was woken while the carrier still had {seen:?} subscriptions"
    );
}

/// When the last handle of a carrier goes (the application's and the
/// channels'), the frames already queued are still written, then the sink
/// is closed.
pub async fn dropping_last_handle_flushes_then_closes_sink<R: TestRuntime>() {
    const EVENTS: u64 = 20;
    let channel = open_running::<R>("drop-last-handle");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).expect("subscribe");
    for n in 0..EVENTS {
        channel.publish("e", &n).await.expect("publish");
    }
    eventually::<R>("all frames queued", || carrier.frames_queued() == EVENTS).await;
    assert_eq!(channel.unsubscribe_all(&carrier), 1);
    drop(carrier);

    let frames = next_frames::<R>(
        &mut client,
        EVENTS as usize,
        "queued frames after the last handle dropped",
    )
    .await;
    let data: Vec<_> = frames.iter().map(frame_data).collect();
    assert_eq!(data, (0..EVENTS).map(|n| json!(n)).collect::<Vec<_>>());
    assert_eq!(
        wait::<R, _>("the sink to be closed", client.next()).await,
        None,
        "the sink is closed once the queue is drained"
    );
}

/// Each carrier receives events in publish order.
pub async fn delivery_order_is_publish_order<R: TestRuntime>() {
    const EVENTS: usize = 200;
    let channel = open_running::<R>("order");
    let (first, mut first_client) = new_carrier::<R>();
    let (second, mut second_client) = new_carrier::<R>();
    channel.subscribe("seq", &first).expect("subscribe");
    channel.subscribe("seq", &second).expect("subscribe");
    channel.subscribe("other", &second).expect("subscribe");

    for n in 0..EVENTS {
        channel.publish("seq", &n).await.expect("publish");
        if n % 10 == 0 {
            channel.publish("other", &n).await.expect("publish");
        }
    }
    let frames = next_frames::<R>(&mut first_client, EVENTS, "200 events").await;
    let data: Vec<_> = frames.iter().map(frame_data).collect();
    assert_eq!(data, (0..EVENTS).map(|n| json!(n)).collect::<Vec<_>>());

    let frames = next_frames::<R>(&mut second_client, EVENTS + EVENTS / 10, "220 events").await;
    let mut expected = Vec::new();
    for n in 0..EVENTS {
        expected.push(("seq".to_string(), json!(n)));
        if n % 10 == 0 {
            expected.push(("other".to_string(), json!(n)));
        }
    }
    let got: Vec<_> = frames.iter().map(crate::parse_frame).collect();
    assert_eq!(got, expected);
}
