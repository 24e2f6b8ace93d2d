//! Properties of `History`, the ring a channel replays to resuming clients:
//! for random interleavings of records, limits and resume points, `after`
//! returns exactly the events recorded after the position, or `None` when
//! the position was evicted (or never recorded); and the count and byte
//! bounds hold after every step; `replay` gives what `after` reads,
//! encoding each event once and keeping within the bounds with the frames
//! it keeps; and a channel that numbers its own events finds exactly its
//! own positions.
//!
//! Checked against a model that states the rule instead of carrying it
//! out: what a history holds is the longest suffix of what it accepted
//! that fits the limits at the time it last trimmed (a record, or an
//! `after`). A record is accepted unless the history is off or holds its
//! position already.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use proptest::prelude::*;
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::{
    Carrier, CarrierConfig, Channel, ChannelBuilder, Frame, History, HistoryLimits, MemoryBackend,
    Payload, Position, PositionedEnvelope, Resumed,
};

#[derive(Clone, Debug)]
enum Step {
    /// Record position `id` (repeats and evicted ids come back), with
    /// data of `pad` extra bytes, `dt` ms after the previous step.
    Record { id: u8, key: bool, pad: u8, dt: u16 },
    /// Resume after position `id` (some never recorded), `dt` ms later.
    After { id: u8, dt: u16 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..40u8, any::<bool>(), 0..24u8, 0..400u16)
            .prop_map(|(id, key, pad, dt)| Step::Record { id, key, pad, dt }),
        1 => (0..48u8, 0..400u16).prop_map(|(id, dt)| Step::After { id, dt }),
    ]
}

fn limits() -> impl Strategy<Value = HistoryLimits> {
    (0..12usize, 0..160usize, 0..3_000u64).prop_map(|(events, bytes, age)| {
        HistoryLimits::default()
            .events(events)
            .bytes(bytes)
            .age(Duration::from_millis(age))
    })
}

/// One accepted record, as the model keeps it.
#[derive(Clone, Debug)]
struct Entry {
    position: Position,
    key: Arc<str>,
    data: Payload,
    at: Duration,
}

/// What the history should hold, stated declaratively.
struct Model {
    limits: HistoryLimits,
    accepted: Vec<Entry>,
    trimmed_at: Duration,
}

impl Model {
    /// The longest suffix of `accepted` within the limits at `now`.
    fn held(&self, now: Duration) -> &[Entry] {
        let mut start = self.accepted.len();
        let mut bytes = 0;
        while start > 0 {
            let candidate = &self.accepted[start - 1];
            let count = self.accepted.len() - start + 1;
            let fits = count <= self.limits.events
                && bytes + candidate.data.len() <= self.limits.bytes
                && now.saturating_sub(candidate.at) <= self.limits.age;
            if !fits {
                break;
            }
            bytes += candidate.data.len();
            start -= 1;
        }
        &self.accepted[start..]
    }

    fn holds(&self, position: &Position) -> bool {
        self.held(self.trimmed_at)
            .iter()
            .any(|entry| &entry.position == position)
    }
}

fn position(id: u8) -> Position {
    Position::new(&format!("p{id}")).unwrap()
}

/// Positions shaped like a channel's own (`<epoch>-<n>`) but given as
/// tokens, as a backend or a client would: the history must treat them as
/// any other token.
fn numbered_looking(id: u8) -> Position {
    Position::new(&format!("{:x}-{}", id % 3, id / 3)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn after_is_the_suffix_or_none_and_the_bounds_hold(
        limits in limits(),
        steps in proptest::collection::vec(step(), 1..120),
        numbered in any::<bool>(),
    ) {
        let position = if numbered { numbered_looking } else { position };
        let start = Instant::now();
        let mut history = History::new(limits);
        let mut model = Model { limits, accepted: Vec::new(), trimmed_at: Duration::ZERO };
        let mut now = Duration::ZERO;
        let mut serial = 0u32;
        for step in steps {
            match step {
                Step::Record { id, key, pad, dt } => {
                    now += Duration::from_millis(u64::from(dt));
                    serial += 1;
                    let position = position(id);
                    let key: Arc<str> = if key { "a".into() } else { "b".into() };
                    // Distinct data, so a replay of the wrong one shows.
                    let data = Payload::from_json(&format!("\"{serial}:{}\"", "x".repeat(usize::from(pad)))).unwrap();
                    if limits.is_on() && !model.holds(&position) {
                        model.accepted.push(Entry {
                            position: position.clone(),
                            key: key.clone(),
                            data: data.clone(),
                            at: now,
                        });
                        model.trimmed_at = now;
                    }
                    history.record(position, key, &data, start + now);
                }
                Step::After { id, dt } => {
                    now += Duration::from_millis(u64::from(dt));
                    model.trimmed_at = now;
                    let position = position(id);
                    let held = model.held(now);
                    let expected: Option<Vec<(String, String, String)>> = held
                        .iter()
                        .position(|entry| entry.position == position)
                        .map(|i| {
                            held[i + 1..]
                                .iter()
                                .map(|e| (e.position.to_string(), e.key.to_string(), e.data.as_str().to_string()))
                                .collect()
                        });
                    let got: Option<Vec<(String, String, String)>> = history
                        .after(&position, start + now)
                        .map(|events| {
                            events
                                .map(|r| (r.position().to_string(), r.key().to_string(), r.data().as_str().to_string()))
                                .collect()
                        });
                    prop_assert_eq!(&got, &expected, "after {} at {:?}", position, now);
                    if let Some(i) = model.accepted.iter().rposition(|e| e.position == position) {
                        if got.is_some() {
                            // Nothing recorded after the position was
                            // evicted: the replay is complete.
                            prop_assert_eq!(got.as_ref().map(Vec::len), Some(model.accepted.len() - i - 1));
                        }
                    } else {
                        prop_assert!(got.is_none(), "{} was never recorded", position);
                    }
                }
            }
            let held = model.held(model.trimmed_at);
            prop_assert!(history.len() <= limits.events, "{} events, limit {}", history.len(), limits.events);
            prop_assert!(history.bytes() <= limits.bytes, "{} bytes, limit {}", history.bytes(), limits.bytes);
            prop_assert_eq!(history.len(), held.len());
            prop_assert_eq!(history.bytes(), held.iter().map(|e| e.data.len()).sum::<usize>());
            prop_assert_eq!(history.last(), held.last().map(|e| e.position.clone()));
            prop_assert_eq!(history.is_empty(), held.is_empty());
        }
    }

    /// A history that only records (no resume trims it) never exceeds its
    /// count or byte limits, whatever the sizes; off, it holds nothing.
    #[test]
    fn recording_alone_keeps_within_count_and_bytes(
        limits in limits(),
        sizes in proptest::collection::vec(0..64usize, 0..200),
    ) {
        let now = Instant::now();
        let mut history = History::new(limits);
        for (n, size) in sizes.iter().enumerate() {
            let data = Payload::from_json(&format!("\"{}\"", "y".repeat(*size))).unwrap();
            history.record(Position::new(&format!("q{n}")).unwrap(), "e".into(), &data, now);
            prop_assert!(history.len() <= limits.events);
            prop_assert!(history.bytes() <= limits.bytes);
            if !limits.is_on() {
                prop_assert!(history.is_empty());
            }
        }
    }

    /// `replay` gives what `after` reads, for the names wanted; the frames
    /// it keeps never take the history past its byte limit nor push out
    /// an event (a replay keeps every event, and a record keeps what it
    /// would with no frame kept); and with room for them, each event is
    /// encoded once (later replays reuse the frame kept).
    #[test]
    fn replay_is_after_encoded_once_within_the_bounds(
        limits in limits(),
        roomy in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..120),
        wants_a in any::<bool>(),
    ) {
        let limits = if roomy { limits.bytes(1 << 20) } else { limits };
        // The same records with no replay: what the history keeps.
        let mut plain = History::new(limits);
        let start = Instant::now();
        let mut history = History::new(limits);
        let mut now = Duration::ZERO;
        let mut encoded: Vec<String> = Vec::new();
        let mut serial = 0u32;
        for step in steps {
            match step {
                Step::Record { id, key, pad, dt } => {
                    now += Duration::from_millis(u64::from(dt));
                    let key: Arc<str> = if key { "a".into() } else { "b".into() };
                    serial += 1;
                    let data = Payload::from_json(&format!("\"{serial}:{}\"", "x".repeat(usize::from(pad)))).unwrap();
                    history.record(position(id), key.clone(), &data, start + now);
                    plain.record(position(id), key, &data, start + now);
                }
                Step::After { id, dt } => {
                    now += Duration::from_millis(u64::from(dt));
                    // Trims by age, as `replay` does: both histories age alike.
                    plain.after(&position(id), start + now);
                    let wants = |key: &str| (key == "a") == wants_a;
                    let frame_of = |key: &str, position: &str, data: &str| format!("{key}|{position}|{data}");
                    let expected: Option<Vec<String>> = history.after(&position(id), start + now).map(|events| {
                        events
                            .filter(|r| wants(r.key()))
                            .map(|r| frame_of(r.key(), r.position().as_str(), r.data().as_str()))
                            .collect()
                    });
                    let got = history.replay(&position(id), start + now, wants, |r| {
                        let frame = frame_of(r.key(), r.position().as_str(), r.data().as_str());
                        encoded.push(frame.clone());
                        Frame::from(frame)
                    });
                    let got: Option<Vec<String>> = got.map(|frames| frames.iter().map(|f| f.as_str().to_string()).collect());
                    prop_assert_eq!(&got, &expected);
                }
            }
            prop_assert!(history.len() <= limits.events);
            prop_assert!(history.bytes() <= limits.bytes, "{} bytes, limit {}", history.bytes(), limits.bytes);
            prop_assert_eq!(history.len(), plain.len(), "frames kept pushed out events");
        }
        if roomy {
            // Each event (its data is unique) encoded at most once.
            let mut seen = std::collections::HashSet::new();
            for frame in &encoded {
                prop_assert!(seen.insert(frame), "{} encoded twice", frame);
            }
        }
    }
}

/// A MemoryChannel with the history on, a client subscribed to it, and
/// what that client was sent.
struct Numbered {
    runtime: ManualRuntime,
    channel: Channel<MemoryBackend, ManualRuntime>,
}

impl Numbered {
    fn open(runtime: &ManualRuntime, name: &str) -> Self {
        let channel = ChannelBuilder::new(name)
            .envelope(PositionedEnvelope)
            .history(HistoryLimits::default().events(5))
            .open(runtime.clone(), MemoryBackend::new)
            .unwrap();
        channel.kickoff().unwrap();
        Numbered {
            runtime: runtime.clone(),
            channel,
        }
    }

    /// Publishes `count` events; returns their positions, as the frames'
    /// text and `Frame::position` give them (the same).
    fn publish(&self, count: usize) -> Vec<String> {
        let (sink, mut frames) = mpsc::unbounded::<Frame>();
        let client = Carrier::new(&self.runtime, sink, CarrierConfig::default()).unwrap();
        self.channel.subscribe("tick", &client).unwrap();
        for n in 0..count {
            self.runtime
                .run(self.channel.publish("tick", &n))
                .unwrap()
                .unwrap();
        }
        self.runtime.run_until_stalled();
        client.close();
        self.runtime.run_until_stalled();
        let mut positions = Vec::new();
        while let Ok(frame) = frames.try_recv() {
            let value: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
            let position = value["position"].as_str().unwrap().to_string();
            assert_eq!(frame.position(), Some(position.as_str()));
            positions.push(position);
        }
        assert_eq!(positions.len(), count);
        positions
    }

    /// What a client resuming after `after` receives: the positions of the
    /// replayed events, or `recovery_failed`.
    fn resume(&self, after: &str) -> (Resumed, Vec<String>) {
        let (sink, mut frames) = mpsc::unbounded::<Frame>();
        let client = Carrier::new(&self.runtime, sink, CarrierConfig::default()).unwrap();
        let resumed = self
            .channel
            .subscribe_after(&["tick"], &client, after)
            .unwrap();
        self.runtime.run_until_stalled();
        client.close();
        self.runtime.run_until_stalled();
        let mut received = Vec::new();
        while let Ok(frame) = frames.try_recv() {
            received.push(if frame.is_recovery_failed() {
                "recovery_failed".to_string()
            } else {
                frame.position().unwrap().to_string()
            });
        }
        (resumed, received)
    }
}

#[test]
fn a_channel_numbering_its_events_finds_its_own_positions_and_no_other() {
    let runtime = ManualRuntime::new();
    let (a, b) = (
        Numbered::open(&runtime, "history-own-positions-a"),
        Numbered::open(&runtime, "history-own-positions-b"),
    );
    let (ours, theirs) = (a.publish(8), b.publish(8));
    let (epoch, last) = ours[7].rsplit_once('-').unwrap();
    assert_eq!(last, "8");
    // Five kept: 4 to 8. After 5, the client missed 6, 7 and 8.
    assert_eq!(
        a.resume(&ours[4]),
        (Resumed::Replayed { events: 3 }, ours[5..].to_vec())
    );
    assert_eq!(
        a.resume(&ours[7]),
        (Resumed::Replayed { events: 0 }, vec![])
    );
    let failed = (Resumed::Failed, vec!["recovery_failed".to_string()]);
    for (after, why) in [
        (ours[2].clone(), "pushed out of the history"),
        (
            theirs[4].clone(),
            "another channel's epoch, a number held here",
        ),
        (format!("{epoch}-9"), "not delivered yet"),
        (
            format!("{epoch}-05"),
            "a number held here, written otherwise",
        ),
        (format!("{epoch}0-5"), "another epoch"),
        ("5".to_string(), "no epoch"),
    ] {
        assert_eq!(a.resume(&after), failed, "{after}: {why}");
    }
    assert_eq!(
        b.resume(&theirs[6]),
        (Resumed::Replayed { events: 1 }, theirs[7..].to_vec())
    );
}

/// A replay encodes each event once: the first client to resume is sent
/// frames encoded from the history, the next the same frames, kept; the
/// channel's `encoded` counter says so.
#[test]
fn a_replay_encodes_each_event_once_and_the_next_reuses_it() {
    let runtime = ManualRuntime::new();
    let channel = Numbered::open(&runtime, "history-replay-encodes-once");
    let positions = channel.publish(5);
    assert_eq!(channel.channel.stats().encoded, 5, "one frame per event");
    for client in ["first", "second"] {
        let (resumed, received) = channel.resume(&positions[1]);
        assert_eq!(resumed, Resumed::Replayed { events: 3 }, "{client}");
        assert_eq!(received, positions[2..], "{client}");
        assert_eq!(
            channel.channel.stats().encoded,
            5 + 3,
            "{client}: the three replayed encoded once"
        );
    }
}
