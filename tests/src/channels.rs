//! Rules of channels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tbone_dispatch::{
    CarrierConfig, ChannelBuilder, ChannelError, HistoryLimits, MemoryBackend, PayloadError,
    PublishError, SubscribeError,
};

use crate::support::{CountingEnvelope, LinesEnvelope, LoopbackBackend};
use crate::{
    eventually, frame_data, frame_name, new_carrier, new_carrier_with, next_frame, next_frames,
    nothing_received, parse_frame, unique_name, wait, Mem, TestRuntime,
};

fn open<R: TestRuntime>(test: &str) -> Mem<R> {
    let name = unique_name::<R>(test);
    Mem::<R>::named(&name).unwrap_or_else(|e| panic!("opening {name}: {e}"))
}

fn open_running<R: TestRuntime>(test: &str) -> Mem<R> {
    let channel = open::<R>(test);
    channel.kickoff().expect("kickoff");
    channel
}

/// Channels are singletons by name: opening a name twice (also through the
/// runtime crate's `MemoryChannel` alias) gives the same instance.
pub async fn channel_is_singleton_by_name<R: TestRuntime>() {
    let name = unique_name::<R>("singleton");
    let a = Mem::<R>::named(&name).expect("open");
    let b = Mem::<R>::named(&name).expect("open again");
    let c = R::memory_channel(&name).expect("open through the runtime crate's alias");
    assert!(a == b, "same name, same instance");
    assert!(
        a == c,
        "the runtime crate's MemoryChannel is the same channel"
    );
    let other = Mem::<R>::named(&unique_name::<R>("singleton-other")).expect("open other");
    assert!(a != other, "another name is another instance");

    // State is shared: subscribe through one handle, see it through another.
    let (carrier, mut client) = new_carrier::<R>();
    a.subscribe("ping", &carrier).expect("subscribe");
    assert_eq!(b.subscriber_count("ping"), 1);
    assert_eq!(other.subscriber_count("ping"), 0);
    c.kickoff().expect("kickoff");
    b.publish("ping", &1).await.expect("publish");
    assert_eq!(
        frame_data(&next_frame::<R>(&mut client, "ping").await),
        json!(1)
    );
    assert_eq!(a.stats().published, 1);
}

/// Opening an existing name with another backend type fails with
/// `BackendMismatch` (and leaves the existing channel alone).
pub async fn same_name_with_other_backend_is_mismatch<R: TestRuntime>() {
    let name = unique_name::<R>("mismatch");
    let memory = Mem::<R>::named(&name).expect("open as memory");
    let err = ChannelBuilder::new(name.as_str())
        .open(R::default(), |_| LoopbackBackend::default())
        .expect_err("same name, other backend");
    match err {
        ChannelError::BackendMismatch {
            channel: n,
            existing,
            requested,
        } => {
            assert_eq!(n, name);
            assert!(existing.contains("MemoryBackend"), "existing = {existing}");
            assert!(
                requested.contains("LoopbackBackend"),
                "requested = {requested}"
            );
        }
        other => panic!("expected BackendMismatch, got {other:?}"),
    }
    assert!(Mem::<R>::named(&name).expect("still there") == memory);

    // And the other way round.
    let name = unique_name::<R>("mismatch-reverse");
    let _loopback = ChannelBuilder::new(name.as_str())
        .open(R::default(), |_| LoopbackBackend::default())
        .expect("open as loopback");
    assert!(matches!(
        Mem::<R>::named(&name),
        Err(ChannelError::BackendMismatch { .. })
    ));
}

/// subscribe / unsubscribe / unsubscribe_all, and what reaches the carrier.
pub async fn subscribe_unsubscribe_and_unsubscribe_all<R: TestRuntime>() {
    let channel = open_running::<R>("subscribe");
    let (carrier, mut client) = new_carrier::<R>();

    assert!(channel.subscribe("a", &carrier).expect("subscribe a"));
    assert!(
        !channel.subscribe("a", &carrier).expect("subscribe a again"),
        "already subscribed"
    );
    assert!(channel.subscribe("b", &carrier).expect("subscribe b"));
    assert!(channel.subscribe("c", &carrier).expect("subscribe c"));
    assert_eq!(channel.subscriber_count("a"), 1);
    assert_eq!(channel.subscription_count(), 3);
    assert_eq!(channel.carrier_count(), 1);

    channel.publish("a", &"first").await.expect("publish");
    assert_eq!(
        frame_data(&next_frame::<R>(&mut client, "a").await),
        json!("first")
    );

    assert!(channel.unsubscribe("a", &carrier));
    assert!(!channel.unsubscribe("a", &carrier), "no longer subscribed");
    assert_eq!(channel.subscriber_count("a"), 0);
    assert_eq!(channel.subscription_count(), 2);
    // `a` no longer reaches the carrier: the next frame is `b`, published after.
    channel
        .publish("a", &"unsubscribed")
        .await
        .expect("publish");
    channel.publish("b", &"second").await.expect("publish");
    let frame = next_frame::<R>(&mut client, "b").await;
    assert_eq!(frame_name(&frame), "b", "got {frame}");

    assert_eq!(channel.unsubscribe_all(&carrier), 2);
    assert_eq!(channel.subscription_count(), 0);
    assert_eq!(channel.carrier_count(), 0);
    assert_eq!(channel.unsubscribe_all(&carrier), 0);

    // Resubscribing works and only `c` is delivered.
    assert!(channel.subscribe("c", &carrier).expect("subscribe c"));
    channel.publish("b", &"not for us").await.expect("publish");
    channel.publish("c", &"third").await.expect("publish");
    let frame = next_frame::<R>(&mut client, "c").await;
    assert_eq!(parse_frame(&frame), ("c".to_string(), json!("third")));
    assert!(
        !carrier.is_closed(),
        "unsubscribing does not close the carrier"
    );
}

/// Unsubscribing with a clone of the subscribed carrier works (TBone's
/// unsubscribe never matched).
pub async fn unsubscribe_with_clone_of_carrier<R: TestRuntime>() {
    let channel = open_running::<R>("unsubscribe-clone");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("x", &carrier).expect("subscribe");
    channel.subscribe("y", &carrier).expect("subscribe");

    let clone = carrier.clone();
    assert_eq!(clone.id(), carrier.id());
    assert!(
        channel.unsubscribe("x", &clone),
        "unsubscribe must match a clone"
    );
    assert_eq!(channel.subscriber_count("x"), 0);
    assert_eq!(channel.unsubscribe_all(&carrier.clone()), 1);
    assert_eq!(channel.subscription_count(), 0);

    channel.subscribe("z", &carrier).expect("subscribe");
    channel.publish("x", &0).await.expect("publish");
    channel.publish("z", &1).await.expect("publish");
    assert_eq!(frame_name(&next_frame::<R>(&mut client, "z").await), "z");
}

/// One carrier subscribed to several events of two channels receives from
/// all of them.
pub async fn one_carrier_receives_events_of_two_channels<R: TestRuntime>() {
    let first = open_running::<R>("two-channels-1");
    let second = open_running::<R>("two-channels-2");
    let (carrier, mut client) = new_carrier::<R>();
    for event in ["create", "update"] {
        first.subscribe(event, &carrier).expect("subscribe");
        second.subscribe(event, &carrier).expect("subscribe");
    }
    second.subscribe("delete", &carrier).expect("subscribe");

    first
        .publish("create", &json!({"from": 1}))
        .await
        .expect("publish");
    first
        .publish("update", &json!({"from": 1}))
        .await
        .expect("publish");
    second
        .publish("create", &json!({"from": 2}))
        .await
        .expect("publish");
    second
        .publish("update", &json!({"from": 2}))
        .await
        .expect("publish");
    second
        .publish("delete", &json!({"from": 2}))
        .await
        .expect("publish");

    let mut got: Vec<(String, i64)> = next_frames::<R>(&mut client, 5, "frames from both channels")
        .await
        .iter()
        .map(|f| {
            let (name, data) = parse_frame(f);
            (name, data["from"].as_i64().expect("from"))
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("create".to_string(), 1),
            ("create".to_string(), 2),
            ("delete".to_string(), 2),
            ("update".to_string(), 1),
            ("update".to_string(), 2),
        ]
    );
}

/// Anything `Serialize` can be published; the frame carries its JSON.
pub async fn publish_accepts_any_serialize<R: TestRuntime>() {
    #[derive(Serialize)]
    struct Entry {
        id: u32,
        text: String,
        tags: Vec<&'static str>,
        parent: Option<u32>,
    }
    #[derive(Serialize)]
    enum Change {
        Created { id: u32 },
        Deleted(u32),
        Cleared,
    }
    #[derive(Serialize)]
    struct Unit;

    let channel = open_running::<R>("any-serialize");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).expect("subscribe");

    let entry = Entry {
        id: 1,
        text: "hi \"there\"\n".into(),
        tags: vec!["a", "b"],
        parent: None,
    };
    let by_number: HashMap<u32, bool> = [(1, true), (2, false)].into_iter().collect();
    let mut expected = Vec::new();
    macro_rules! publish {
        ($data:expr) => {{
            let data = $data;
            expected.push(serde_json::to_value(&data).expect("to_value"));
            channel.publish("e", &data).await.expect("publish");
        }};
    }
    publish!(&entry);
    publish!(Change::Created { id: 2 });
    publish!(Change::Deleted(3));
    publish!(Change::Cleared);
    publish!(Unit);
    publish!(vec![1u8, 2, 3]);
    publish!(by_number);
    publish!((1, "two", 3.5));
    publish!("plain text");
    publish!(-42i64);
    publish!(Option::<u8>::None);
    publish!(json!({"nested": {"deep": [1, {"x": null}]}}));
    channel
        .publish("e", &[1, 2][..])
        .await
        .expect("publish unsized slice");
    expected.push(json!([1, 2]));

    let frames = next_frames::<R>(&mut client, expected.len(), "one frame per publish").await;
    let got: Vec<_> = frames.iter().map(frame_data).collect();
    assert_eq!(got, expected);
}

/// NaN and maps with non-scalar keys are refused with `PublishError::Payload`
/// and nothing is published or delivered.
pub async fn invalid_payload_is_refused_and_nothing_delivered<R: TestRuntime>() {
    let channel = open_running::<R>("invalid-payload");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("bad", &carrier).expect("subscribe");
    channel.subscribe("marker", &carrier).expect("subscribe");

    match channel.publish("bad", &f64::NAN).await {
        Err(PublishError::Payload {
            event,
            source: PayloadError::NonFinite,
        }) => assert_eq!(event, "bad"),
        other => panic!("NaN must be refused as NonFinite, got {other:?}"),
    }
    match channel.publish("bad", &vec![1.0, f64::INFINITY]).await {
        Err(PublishError::Payload {
            source: PayloadError::NonFinite,
            ..
        }) => {}
        other => panic!("a nested infinity must be refused, got {other:?}"),
    }
    let mut by_point = BTreeMap::new();
    by_point.insert((1, 2), "tuple keys are no JSON keys");
    match channel.publish("bad", &by_point).await {
        Err(PublishError::Payload {
            event,
            source: PayloadError::Invalid(_),
        }) => assert_eq!(event, "bad"),
        other => panic!("a map with tuple keys must be refused as Invalid, got {other:?}"),
    }
    assert_eq!(
        channel.stats().published,
        0,
        "nothing was handed to the backend"
    );

    channel
        .publish("marker", &())
        .await
        .expect("publish marker");
    let frame = next_frame::<R>(&mut client, "marker").await;
    assert_eq!(
        frame_name(&frame),
        "marker",
        "the refused events must not be delivered, got {frame}"
    );
    let stats = channel.stats();
    assert_eq!(stats.published, 1);
    assert_eq!(stats.received, 1, "only the marker reached the consumer");
    assert!(nothing_received(&mut client));
}

/// The default frame is TBone's envelope, written compactly; `&()`
/// publishes `null`.
pub async fn default_frame_is_tbone_bytes<R: TestRuntime>() {
    let channel = open_running::<R>("frame-bytes");
    let (carrier, mut client) = new_carrier::<R>();
    channel
        .subscribe("resource_update", &carrier)
        .expect("subscribe");
    channel
        .subscribe("say \"hi\"", &carrier)
        .expect("subscribe");

    channel
        .publish("resource_update", &())
        .await
        .expect("publish");
    let frame = next_frame::<R>(&mut client, "null frame").await;
    let expected = r#"{"type":"event","payload":{"name":"resource_update","data":null}}"#;
    assert_eq!(frame.as_str(), expected);
    assert_eq!(frame.as_bytes(), expected.as_bytes());

    channel
        .publish("resource_update", &json!({"id": 7, "text": "a\"b\n"}))
        .await
        .expect("publish");
    let frame = next_frame::<R>(&mut client, "object frame").await;
    assert_eq!(
        frame.as_str(),
        r#"{"type":"event","payload":{"name":"resource_update","data":{"id":7,"text":"a\"b\n"}}}"#
    );

    channel
        .publish("say \"hi\"", &[1, 2])
        .await
        .expect("publish");
    let frame = next_frame::<R>(&mut client, "escaped name frame").await;
    assert_eq!(
        frame.as_str(),
        r#"{"type":"event","payload":{"name":"say \"hi\"","data":[1,2]}}"#
    );
}

/// `ChannelBuilder::envelope` replaces the frame format.
pub async fn custom_envelope_shapes_frames<R: TestRuntime>() {
    let channel = ChannelBuilder::new(unique_name::<R>("custom-envelope"))
        .envelope(LinesEnvelope)
        .open(R::default(), MemoryBackend::new)
        .expect("open");
    channel.kickoff().expect("kickoff");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("ping", &carrier).expect("subscribe");

    channel
        .publish("ping", &json!({"n": 1}))
        .await
        .expect("publish");
    channel.publish("ping", &()).await.expect("publish");
    let frames = next_frames::<R>(&mut client, 2, "custom frames").await;
    assert_eq!(frames[0].as_str(), r#"ping {"n":1}"#);
    assert_eq!(frames[1].as_str(), "ping null");
}

/// With 50 carriers subscribed, each event is encoded exactly once and every
/// carrier receives the same shared bytes.
pub async fn each_event_encoded_once_and_frame_bytes_shared<R: TestRuntime>() {
    let envelope = CountingEnvelope::default();
    let channel = ChannelBuilder::new(unique_name::<R>("encode-once"))
        .envelope(envelope.clone())
        .open(R::default(), MemoryBackend::new)
        .expect("open");
    channel.kickoff().expect("kickoff");
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (carrier, client) = new_carrier::<R>();
            channel.subscribe("tick", &carrier).expect("subscribe");
            (carrier, client)
        })
        .collect();
    let mut clients: Vec<_> = clients.into_iter().map(|(_, client)| client).collect();

    const EVENTS: usize = 3;
    for n in 0..EVENTS {
        channel.publish("tick", &n).await.expect("publish");
    }
    let mut received = Vec::new();
    for client in &mut clients {
        received.push(next_frames::<R>(client, EVENTS, "every tick on every carrier").await);
    }
    assert_eq!(
        envelope.count(),
        EVENTS,
        "one encode per event, not per carrier"
    );
    assert_eq!(channel.stats().encoded, EVENTS as u64);
    // Counted just after the frames are handed over: wait for the count.
    eventually::<R>("stats().queued to count 150 frames", || {
        channel.stats().queued == (EVENTS * 50) as u64
    })
    .await;
    for n in 0..EVENTS {
        let ptr = received[0][n].as_bytes().as_ptr();
        for frames in &received {
            assert_eq!(frame_data(&frames[n]), json!(n));
            assert_eq!(
                frames[n].as_bytes().as_ptr(),
                ptr,
                "carriers share one buffer per event"
            );
        }
    }
    assert_ne!(
        received[0][0].as_bytes().as_ptr(),
        received[0][1].as_bytes().as_ptr()
    );
}

/// Events nobody is subscribed to are counted as unrouted and never
/// encoded, with the history off or on (a history keeps their data, and
/// a replay encodes them).
pub async fn events_without_subscribers_are_not_encoded<R: TestRuntime>() {
    for history in [HistoryLimits::off(), HistoryLimits::default()] {
        unsubscribed_events_are_not_encoded::<R>(history).await;
    }
}

async fn unsubscribed_events_are_not_encoded<R: TestRuntime>(history: HistoryLimits) {
    let envelope = CountingEnvelope::default();
    let name = format!("no-subscribers-history-{}", history.is_on());
    let channel = ChannelBuilder::new(unique_name::<R>(&name))
        .envelope(envelope.clone())
        .history(history)
        .open(R::default(), MemoryBackend::new)
        .expect("open");
    channel.kickoff().expect("kickoff");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("watched", &carrier).expect("subscribe");

    for n in 0..5 {
        channel.publish("unwatched", &n).await.expect("publish");
    }
    channel
        .publish("watched", &"marker")
        .await
        .expect("publish");
    let frame = next_frame::<R>(&mut client, "marker").await;
    assert_eq!(frame_name(&frame), "watched");
    let stats = channel.stats();
    assert_eq!(stats.received, 6);
    assert_eq!(stats.unrouted, 5);
    assert_eq!(stats.encoded, 1, "history {history:?}");
    assert_eq!(
        envelope.count(),
        1,
        "only the watched event was encoded (history {history:?})"
    );
    let kept = if history.is_on() { 6 } else { 0 };
    assert_eq!(
        channel.history_stats().events,
        kept,
        "history {history:?} keeps every event, or none when off"
    );
}

/// Delivering an event touches only its own subscribers: carriers of other
/// events receive nothing.
pub async fn delivery_does_not_touch_carriers_of_other_events<R: TestRuntime>() {
    let channel = open_running::<R>("other-events");
    let (hot, mut hot_client) = new_carrier::<R>();
    channel.subscribe("hot", &hot).expect("subscribe");
    let mut cold = Vec::new();
    for i in 0..20 {
        let (carrier, client) = new_carrier::<R>();
        channel
            .subscribe(&format!("cold-{i}"), &carrier)
            .expect("subscribe");
        channel.subscribe("barrier", &carrier).expect("subscribe");
        cold.push((carrier, client));
    }

    for n in 0..10 {
        channel.publish("hot", &n).await.expect("publish");
    }
    let frames = next_frames::<R>(&mut hot_client, 10, "hot events").await;
    assert!(frames.iter().all(|f| frame_name(f) == "hot"));
    for (carrier, _) in &cold {
        assert_eq!(
            carrier.frames_queued(),
            0,
            "a cold carrier was offered a hot frame"
        );
    }

    // Proof by ordering: the first thing each cold carrier receives is the
    // barrier published after all hot events.
    channel.publish("barrier", &()).await.expect("publish");
    for (_, client) in &mut cold {
        let frame = next_frame::<R>(client, "barrier").await;
        assert_eq!(
            frame_name(&frame),
            "barrier",
            "a cold carrier received {frame}"
        );
    }
    eventually::<R>("each cold carrier to count exactly the barrier", || {
        cold.iter().all(|(carrier, _)| carrier.frames_queued() == 1)
            && channel.stats().queued == 10 + 20
    })
    .await;
    assert!(nothing_received(&mut hot_client));
}

/// `kickoff` is idempotent: each event is still delivered exactly once.
pub async fn kickoff_is_idempotent<R: TestRuntime>() {
    let channel = open::<R>("kickoff-twice");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).expect("subscribe");
    channel.kickoff().expect("kickoff");
    channel.kickoff().expect("kickoff again");
    open::<R>("kickoff-twice")
        .kickoff()
        .expect("kickoff through another handle");

    for n in 0..3 {
        channel.publish("e", &n).await.expect("publish");
    }
    channel.publish("e", &"end").await.expect("publish");
    let frames = next_frames::<R>(&mut client, 4, "events").await;
    let data: Vec<_> = frames.iter().map(frame_data).collect();
    assert_eq!(data, vec![json!(0), json!(1), json!(2), json!("end")]);
    assert_eq!(channel.stats().received, 4, "each event consumed once");
    assert!(nothing_received(&mut client));
}

/// Events published before `kickoff` wait and are delivered after it.
pub async fn events_published_before_kickoff_are_delivered<R: TestRuntime>() {
    let channel = open::<R>("before-kickoff");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).expect("subscribe");
    for n in 0..3 {
        channel
            .publish("e", &n)
            .await
            .expect("publish before kickoff");
    }
    assert_eq!(channel.stats().published, 3);
    assert_eq!(channel.stats().received, 0, "no consumer before kickoff");
    assert!(nothing_received(&mut client));

    channel.kickoff().expect("kickoff");
    let frames = next_frames::<R>(&mut client, 3, "events published before kickoff").await;
    let data: Vec<_> = frames.iter().map(frame_data).collect();
    assert_eq!(data, vec![json!(0), json!(1), json!(2)]);
}

/// Events the backend accepted before `stop` are delivered, even many.
pub async fn stop_delivers_events_accepted_before_stop<R: TestRuntime>() {
    // Many more than a tokio task's cooperative budget (128 polls), so that
    // stop() lands while the consumer is still working through them.
    const EVENTS: usize = 5000;
    let channel = ChannelBuilder::new(unique_name::<R>("stop-drains"))
        .open(R::default(), |rt| MemoryBackend::with_capacity(rt, EVENTS))
        .expect("open");
    let (carrier, mut client) = new_carrier_with::<R>(CarrierConfig::default().capacity(EVENTS));
    channel.subscribe("e", &carrier).expect("subscribe");
    for n in 0..EVENTS {
        channel.publish("e", &n).await.expect("publish");
    }
    channel.kickoff().expect("kickoff");
    wait::<R, _>("stop", channel.stop()).await;

    assert_eq!(
        channel.stats().received,
        EVENTS as u64,
        "every event accepted before stop is consumed"
    );
    let frames = next_frames::<R>(&mut client, EVENTS, "events accepted before stop").await;
    for (n, frame) in frames.iter().enumerate() {
        assert_eq!(frame_data(frame), json!(n));
    }
}

/// After `stop().await`: publish and subscribe fail with `Stopped`,
/// subscriptions are gone (carriers stay open), and opening the name again
/// gives a new, working channel.
pub async fn stop_ends_channel_and_frees_its_name<R: TestRuntime>() {
    let name = unique_name::<R>("stop");
    let channel = Mem::<R>::named(&name).expect("open");
    channel.kickoff().expect("kickoff");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).expect("subscribe");
    channel.publish("e", &1).await.expect("publish");
    assert_eq!(
        frame_data(&next_frame::<R>(&mut client, "event before stop").await),
        json!(1)
    );

    wait::<R, _>("stop", channel.stop()).await;
    assert!(channel.is_stopped());
    assert_eq!(channel.subscription_count(), 0);
    assert!(
        !carrier.is_closed(),
        "stopping a channel leaves carriers open"
    );
    match channel.publish("e", &2).await {
        Err(PublishError::Stopped { channel: c, event }) => {
            assert_eq!(c, name);
            assert_eq!(event, "e");
        }
        other => panic!("publish after stop must fail with Stopped, got {other:?}"),
    }
    match channel.subscribe("e", &carrier) {
        Err(SubscribeError::Stopped { channel: c }) => assert_eq!(c, name),
        other => panic!("subscribe after stop must fail with Stopped, got {other:?}"),
    }
    assert!(matches!(
        channel.kickoff(),
        Err(ChannelError::Stopped { .. })
    ));
    wait::<R, _>("second stop", channel.stop()).await;

    let reopened = Mem::<R>::named(&name).expect("reopen");
    assert!(
        reopened != channel,
        "a stopped channel's name opens a new instance"
    );
    assert!(!reopened.is_stopped());
    reopened.kickoff().expect("kickoff the new instance");
    reopened
        .subscribe("e", &carrier)
        .expect("subscribe the same carrier");
    reopened
        .publish("e", &3)
        .await
        .expect("publish on the new instance");
    let frame = next_frame::<R>(&mut client, "event on the reopened channel").await;
    assert_eq!(
        frame_data(&frame),
        json!(3),
        "event 2 was refused, event 3 delivered"
    );
}

/// One document of the write-order tests: `n` counts its writes, `by` is
/// the writer of this version.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Tally {
    /// How many writes the document has had.
    pub n: i64,
    /// The writer that made this version.
    pub by: usize,
}

/// Checks the `resource_update` events of one document against its writes:
/// `events` (their data, in arrival order) count `n` up by one from the
/// first write, so they left in write order; each writer's own events are
/// the versions its writes returned (`writes[w]`, in its write order); the
/// last event is the stored state.
pub fn assert_events_follow_writes(
    runtime: &str,
    events: &[serde_json::Value],
    writes: &[Vec<i64>],
    stored: &serde_json::Value,
) {
    let counted: Vec<i64> = events
        .iter()
        .map(|data| data["n"].as_i64().expect("an event with n"))
        .collect();
    let total = writes.iter().map(Vec::len).sum::<usize>() as i64;
    let first = total - counted.len() as i64 + 1;
    let expected: Vec<i64> = (first..=total).collect();
    assert_eq!(
        counted, expected,
        "[{runtime}] the events of one document left out of its write order"
    );
    for (writer, returned) in writes.iter().enumerate() {
        let seen: Vec<i64> = events
            .iter()
            .filter(|data| data["by"] == json!(writer))
            .map(|data| data["n"].as_i64().expect("an event with n"))
            .collect();
        assert_eq!(
            &seen, returned,
            "[{runtime}] writer {writer}'s events are not in its write order"
        );
    }
    assert_eq!(
        events.last(),
        Some(stored),
        "[{runtime}] the last event a client sees is not the stored state"
    );
}

/// Yields to the executor once: the time a real store takes to answer.
async fn yield_once() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A store of tallies in memory, written as a store must write to keep
/// its events in order: the document's turn is held from the write until
/// its `post_save` has been sent.
#[derive(Default)]
struct Tallies {
    stored: std::sync::Mutex<HashMap<u32, Tally>>,
    order: tbone_dispatch::model::WriteOrder<u32>,
}

impl Tallies {
    /// Counts a write of document `id` by `by`, then sends `post_save`
    /// after `pause` yields (other writers run meanwhile). Returns `n`.
    async fn increment(&self, id: u32, by: usize, pause: usize) -> i64 {
        use tbone_dispatch::model::{send_model_signal, PostSave, POST_SAVE};
        let _turn = self.order.turn(id).await;
        let written = {
            let mut stored = self.stored.lock().unwrap();
            let tally = stored.entry(id).or_insert(Tally { n: 0, by });
            tally.n += 1;
            tally.by = by;
            tally.clone()
        };
        for _ in 0..pause {
            yield_once().await;
        }
        let n = written.n;
        let saved = PostSave::new(Arc::new(written), false, Arc::new(())).unwrap();
        send_model_signal(&POST_SAVE, tbone_dispatch::Sender::of::<Tally>(), saved).await;
        n
    }
}

/// Issue 12, defect 5 (memory path): concurrent writes of one document
/// published their `resource_update` events in another order than the
/// writes, so a client could end with an older version than the stored
/// one. A store that holds the document's `WriteOrder` turn across write
/// and signal delivers them in write order; other documents do not wait.
pub async fn model_events_of_a_document_follow_its_writes<R: TestRuntime>() {
    use tbone_dispatch::model::publish_resource_events;
    const WRITERS: usize = 8;
    const WRITES: usize = 25;
    let channel = open_running::<R>("model-write-order");
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("resource_update", &carrier).unwrap();
    let (_save, _delete) = publish_resource_events(&channel, tbone_dispatch::Sender::of::<Tally>());
    let tallies = Tallies::default();

    // Writers pause a different number of yields after each write, so
    // without turns a later write's event overtakes an earlier one's.
    let writers = (0..WRITERS).map(|by| {
        let tallies = &tallies;
        async move {
            let mut returned = Vec::new();
            for k in 0..WRITES {
                returned.push(tallies.increment(7, by, (by * 7 + k) % 5).await);
            }
            returned
        }
    });
    let writes = wait::<R, _>("the writes", futures::future::join_all(writers)).await;
    let events: Vec<serde_json::Value> =
        next_frames::<R>(&mut client, WRITERS * WRITES, "one event per write")
            .await
            .iter()
            .map(frame_data)
            .collect();
    let stored = json!(tallies.stored.lock().unwrap()[&7]);
    assert_events_follow_writes(R::name(), &events, &writes, &stored);
    assert!(
        tallies.order.is_empty(),
        "[{}] turns are forgotten once no write holds or awaits them",
        R::name()
    );
}
