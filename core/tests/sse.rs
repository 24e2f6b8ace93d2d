//! Server-sent events (`tbone_dispatch::sse`), stepped by hand with
//! `ManualRuntime`: the wire format, keep-alive on virtual time, resume from
//! `Last-Event-ID`, and leaving the channel when the body is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tbone_dispatch::sse::{self, SseError, SseOptions, SseStream};
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::{
    Backend, CarrierConfig, Channel, ChannelBuilder, CloseReason, Envelope, Frame, HistoryLimits,
    MemoryBackend, OverflowPolicy, Payload, Position, Resumed,
};

type Memory = Channel<MemoryBackend, ManualRuntime>;

fn channel(runtime: &ManualRuntime, name: &str) -> Memory {
    open(ChannelBuilder::new(format!("core-sse-{name}")), runtime)
}

fn open(builder: ChannelBuilder, runtime: &ManualRuntime) -> Memory {
    let channel = builder.open(runtime.clone(), MemoryBackend::new).unwrap();
    channel.kickoff().unwrap();
    channel
}

/// What a client has received so far: the body's text, and whether the
/// body ended.
struct Received {
    text: String,
    ended: bool,
}

/// Everything the body can give now: runs the runtime's tasks (the
/// carrier's writer) and reads the body, until neither moves.
fn read(runtime: &ManualRuntime, body: &mut SseStream<ManualRuntime>) -> Received {
    let mut received = Received {
        text: String::new(),
        ended: false,
    };
    loop {
        runtime.run_until_stalled();
        let mut progressed = false;
        while let Some(next) = body.next().now_or_never() {
            match next {
                Some(chunk) => {
                    let chunk = chunk.unwrap();
                    received.text.push_str(std::str::from_utf8(&chunk).unwrap());
                    progressed = true;
                }
                None => {
                    received.ended = true;
                    return received;
                }
            }
        }
        if !progressed {
            return received;
        }
    }
}

/// One event as an `EventSource` dispatches it.
#[derive(Debug, PartialEq)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Parses a complete event stream text as the HTML standard's
/// `EventSource` does (fields `id`, `event`, `data`; comments skipped),
/// returning the events and the number of comments.
fn parse(text: &str) -> (Vec<Event>, usize) {
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "a chunk ends in the middle of an event: {text:?}"
    );
    let (mut events, mut comments) = (Vec::new(), 0);
    let (mut id, mut event, mut data): (Option<String>, Option<String>, Option<String>) =
        (None, None, None);
    for line in text.split('\n') {
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push(Event {
                    id: id.take(),
                    event: event.take(),
                    data,
                });
            }
            id = None;
            event = None;
            continue;
        }
        if line.starts_with(':') {
            comments += 1;
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_string()),
            "event" => event = Some(value.to_string()),
            "data" => {
                let data = data.get_or_insert_with(String::new);
                if !data.is_empty() || value.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            "retry" => {}
            other => panic!("unexpected field {other:?} in {text:?}"),
        }
    }
    (events, comments)
}

/// The `data` of each TBone event frame in `events`.
fn tbone_data(events: &[Event]) -> Vec<serde_json::Value> {
    events
        .iter()
        .map(|e| {
            let frame: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(frame["type"], "event", "{e:?}");
            frame["payload"]["data"].clone()
        })
        .collect()
}

fn publish(runtime: &ManualRuntime, channel: &Memory, event: &str, data: u32) {
    runtime.run(channel.publish(event, &data)).unwrap().unwrap();
    runtime.run_until_stalled();
}

/// Frames over several lines, with the event's position as the last one,
/// so the `id:` line can be checked against it.
struct MultiLine;

impl Envelope for MultiLine {
    fn encode(&self, event: &str, data: &Payload) -> Frame {
        Frame::from(format!("{event}\n{data}"))
    }

    fn encode_at(&self, event: &str, data: &Payload, position: &Position) -> Frame {
        Frame::from(format!("{event}\n{data}\r\n\r{position}"))
    }
}

#[test]
fn events_go_out_with_their_position_as_id_and_one_data_line_per_line() {
    let runtime = ManualRuntime::new();
    let channel = open(
        ChannelBuilder::new("core-sse-framing").envelope(MultiLine),
        &runtime,
    );
    let mut body = stream(&runtime, &channel, &["tick"], None, SseOptions::default());
    publish(&runtime, &channel, "tick", 1);
    publish(&runtime, &channel, "tick", 2);

    let received = read(&runtime, &mut body);
    let lines: Vec<&str> = received.text.split('\n').collect();
    // Byte for byte: id, then each line of the frame as its own data line
    // (`\n`, `\r\n` and `\r` all end a line), then a blank line.
    assert_eq!(lines.len(), 13, "{:?}", received.text);
    for event in lines[..12].chunks(6) {
        let id = event[0].strip_prefix("id: ").unwrap();
        assert_eq!(event[1], "data: tick");
        assert!(event[2] == "data: 1" || event[2] == "data: 2", "{event:?}");
        assert_eq!(event[3], "data: ");
        assert_eq!(event[4], format!("data: {id}"), "the id is the position");
        assert_eq!(event[5], "");
    }
    let (events, comments) = parse(&received.text);
    assert_eq!(comments, 0);
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].data,
        format!("tick\n2\n\n{}", events[1].id.as_ref().unwrap())
    );
    assert_ne!(events[0].id, events[1].id);
    assert!(!received.ended);
}

#[test]
fn events_without_a_position_go_out_without_an_id() {
    let runtime = ManualRuntime::new();
    let channel = open(
        ChannelBuilder::new("core-sse-no-history").history(HistoryLimits::off()),
        &runtime,
    );
    let mut body = stream(&runtime, &channel, &["tick"], None, SseOptions::default());
    publish(&runtime, &channel, "tick", 1);
    assert_eq!(
        read(&runtime, &mut body).text,
        "data: {\"type\":\"event\",\"payload\":{\"name\":\"tick\",\"data\":1}}\n\n"
    );
}

#[test]
fn keep_alive_comments_follow_each_idle_interval_on_the_runtime_clock() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "keep-alive");
    let options = SseOptions::default()
        .keep_alive(Some(Duration::from_secs(10)))
        .retry(Some(Duration::from_millis(2500)));
    let mut body = stream(&runtime, &channel, &["tick"], None, options);
    // The reconnection hint comes first.
    assert_eq!(read(&runtime, &mut body).text, "retry: 2500\n\n");

    runtime.advance(Duration::from_millis(9_999));
    assert_eq!(read(&runtime, &mut body).text, "", "not idle long enough");
    runtime.advance(Duration::from_millis(1));
    assert_eq!(read(&runtime, &mut body).text, ": keep-alive\n\n");
    assert_eq!(
        read(&runtime, &mut body).text,
        "",
        "one comment per interval"
    );

    // An event at 15 s: the next comment is due 10 s after it, not at 20 s.
    runtime.advance(Duration::from_secs(5));
    publish(&runtime, &channel, "tick", 1);
    let (events, comments) = parse(&read(&runtime, &mut body).text);
    assert_eq!((events.len(), comments), (1, 0));
    runtime.advance(Duration::from_secs(5));
    assert_eq!(read(&runtime, &mut body).text, "", "5 s after the event");
    runtime.advance(Duration::from_secs(5));
    assert_eq!(read(&runtime, &mut body).text, ": keep-alive\n\n");
    runtime.advance(Duration::from_secs(10));
    assert_eq!(read(&runtime, &mut body).text, ": keep-alive\n\n");
}

#[test]
fn without_keep_alive_an_idle_body_writes_nothing() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "no-keep-alive");
    let options = SseOptions::default().keep_alive(None);
    let mut body = stream(&runtime, &channel, &["tick"], None, options);
    runtime.advance(Duration::from_secs(3600));
    assert_eq!(read(&runtime, &mut body).text, "");
}

#[test]
fn a_zero_keep_alive_is_refused() {
    let runtime = ManualRuntime::new();
    let options = SseOptions::default().keep_alive(Some(Duration::ZERO));
    assert!(matches!(
        SseStream::new(&runtime, options),
        Err(SseError::ZeroKeepAlive)
    ));
}

#[test]
fn last_event_id_resumes_exactly_the_missed_events_then_live_ones() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "resume");
    let mut first = stream(&runtime, &channel, &["tick"], None, SseOptions::default());
    for n in 1..=3 {
        publish(&runtime, &channel, "tick", n);
        publish(&runtime, &channel, "other", 100 + n);
    }
    let (seen, _) = parse(&read(&runtime, &mut first).text);
    assert_eq!(tbone_data(&seen), [1, 2, 3]);
    let last_id = seen[2].id.clone().unwrap();
    drop(first);
    assert_eq!(channel.subscriber_count("tick"), 0);

    // Missed while away: 4 and 5 (and events of another name).
    for n in 4..=5 {
        publish(&runtime, &channel, "tick", n);
        publish(&runtime, &channel, "other", 100 + n);
    }
    let mut again = stream(
        &runtime,
        &channel,
        &["tick"],
        sse::last_event_id(last_id.as_bytes()),
        SseOptions::default(),
    );
    let (missed, _) = parse(&read(&runtime, &mut again).text);
    assert_eq!(tbone_data(&missed), [4, 5], "exactly the missed events");
    publish(&runtime, &channel, "tick", 6);
    let (live, _) = parse(&read(&runtime, &mut again).text);
    assert_eq!(tbone_data(&live), [6], "then live ones, none twice");

    let ids: Vec<_> = seen
        .iter()
        .chain(&missed)
        .chain(&live)
        .map(|e| e.id.clone().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "every event has its own id: {ids:?}"
    );
}

#[test]
fn join_reports_how_the_resume_went() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "join-report");
    let first = SseStream::new(&runtime, SseOptions::default()).unwrap();
    assert_eq!(
        runtime
            .run(first.join(&channel, &["tick"], Some("  ")))
            .unwrap()
            .unwrap(),
        None,
        "blank: live"
    );
    drop(first);
    publish(&runtime, &channel, "tick", 1);
    let position = channel_position(&runtime, &channel);
    publish(&runtime, &channel, "tick", 2);
    let body = SseStream::new(&runtime, SseOptions::default()).unwrap();
    assert_eq!(
        runtime
            .run(body.join(&channel, &["tick"], Some(position.as_str())))
            .unwrap()
            .unwrap(),
        Some(Resumed::Replayed { events: 1 })
    );
}

/// `sse::stream`, run to its end (a memory channel answers at once).
fn stream<B: Backend>(
    runtime: &ManualRuntime,
    channel: &Channel<B, ManualRuntime>,
    events: &[&str],
    last_event_id: Option<&str>,
    options: SseOptions,
) -> SseStream<ManualRuntime> {
    runtime
        .run(sse::stream(channel, events, last_event_id, options))
        .expect("a memory channel answers at once")
        .expect("an SSE body")
}

/// The position of the last event `channel` delivered, as a client that
/// received it would have it.
fn channel_position(runtime: &ManualRuntime, channel: &Memory) -> String {
    let mut probe = stream(runtime, channel, &["probe"], None, SseOptions::default());
    publish(runtime, channel, "probe", 0);
    let (events, _) = parse(&read(runtime, &mut probe).text);
    events[0].id.clone().unwrap()
}

#[test]
fn an_unknown_last_event_id_gets_the_recovery_failed_event_then_live_ones() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "recovery");
    let elsewhere = channel_position(&runtime, &self::channel(&runtime, "recovery-other"));
    // The frame names the id it could not resume from, when it is a
    // position at all (client input is not echoed otherwise).
    for (last_event_id, named) in [
        (elsewhere.as_str(), elsewhere.as_str()),
        ("ffff-1", "ffff-1"),
        ("not a position", ""),
    ] {
        let mut body = stream(
            &runtime,
            &channel,
            &["tick"],
            Some(last_event_id),
            SseOptions::default(),
        );
        let received = read(&runtime, &mut body).text;
        assert_eq!(
            received,
            format!(
                "event: recovery_failed\ndata: {{\"type\":\"recovery_failed\",\"position\":\"{named}\"}}\n\n"
            ),
            "for {last_event_id:?}"
        );
        publish(&runtime, &channel, "tick", 7);
        let (live, _) = parse(&read(&runtime, &mut body).text);
        assert_eq!(tbone_data(&live), [7]);
        assert!(live[0].id.is_some() && live[0].event.is_none());
    }
}

#[test]
fn dropping_the_body_leaves_every_channel_at_once_with_no_event_published() {
    let runtime = ManualRuntime::new();
    let (one, two) = (channel(&runtime, "drop-one"), channel(&runtime, "drop-two"));
    let body = SseStream::new(&runtime, SseOptions::default()).unwrap();
    runtime
        .run(body.join(&one, &["a", "b"], None))
        .unwrap()
        .unwrap();
    runtime.run(body.join(&two, &["c"], None)).unwrap().unwrap();
    let carrier = body.carrier().clone();
    runtime.run_until_stalled();
    assert_eq!((one.subscription_count(), two.subscription_count()), (2, 1));

    drop(body); // the server dropped the response: its client went away
                // No task ran, no event was published, no time passed.
    assert_eq!((one.subscription_count(), two.subscription_count()), (0, 0));
    assert_eq!(carrier.close_reason(), Some(CloseReason::PeerClosed));
}

#[test]
fn a_closed_carrier_ends_the_body_after_the_frames_it_holds() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "close");
    let mut body = stream(&runtime, &channel, &["tick"], None, SseOptions::default());
    publish(&runtime, &channel, "tick", 1);
    publish(&runtime, &channel, "tick", 2);
    body.carrier().close_after_queued(CloseReason::Closed);
    assert_eq!(channel.subscriber_count("tick"), 0);
    let received = read(&runtime, &mut body);
    assert_eq!(tbone_data(&parse(&received.text).0), [1, 2]);
    assert!(received.ended);
}

#[test]
fn end_on_ends_the_body_after_what_it_was_sent() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "end-on");
    let (shutdown, signal) = futures::channel::oneshot::channel::<()>();
    let mut body =
        stream(&runtime, &channel, &["tick"], None, SseOptions::default()).end_on(signal);
    publish(&runtime, &channel, "tick", 1);
    shutdown.send(()).unwrap();
    let received = read(&runtime, &mut body);
    assert_eq!(tbone_data(&parse(&received.text).0), [1]);
    assert!(
        received.ended,
        "the body ends, so a graceful shutdown is not held"
    );
    assert_eq!(channel.subscriber_count("tick"), 0);
}

#[test]
fn a_client_dropped_for_falling_behind_resumes_without_loss() {
    let runtime = ManualRuntime::new();
    let channel = channel(&runtime, "overflow");
    let options = SseOptions::default().carrier(
        CarrierConfig::default()
            .capacity(4)
            .overflow(OverflowPolicy::DropCarrier),
    );
    let mut body = stream(&runtime, &channel, &["tick"], None, options.clone());
    const EVENTS: u32 = 60;
    for n in 1..=EVENTS {
        publish(&runtime, &channel, "tick", n); // the client reads nothing meanwhile
    }
    assert_eq!(channel.stats().carriers_dropped, 1);
    let received = read(&runtime, &mut body);
    assert!(received.ended, "a dropped client's body ends");
    let (before, _) = parse(&received.text);
    assert!(!before.is_empty() && before.len() < EVENTS as usize);

    // The EventSource reconnects with the last id it received.
    let last_id = before.last().unwrap().id.clone();
    let mut again = stream(&runtime, &channel, &["tick"], last_id.as_deref(), options);
    let (after, _) = parse(&read(&runtime, &mut again).text);
    let all: Vec<_> = tbone_data(&before)
        .into_iter()
        .chain(tbone_data(&after))
        .collect();
    assert_eq!(
        all,
        (1..=EVENTS).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
}
