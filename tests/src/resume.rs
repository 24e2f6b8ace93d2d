//! Resuming after a reconnect (issue 11), through
//! `Channel::subscribe_after`, on both backends: a client that comes back
//! with the position of the last event it saw (from `PositionedEnvelope`
//! frames) receives exactly what it missed, in order, then the live
//! events, none twice; a position the history cannot answer for gets the
//! recovery-failed frame, then the live events.
//!
//! MongoDB tests publish tens of events, not thousands: the test server
//! does a few hundred capped inserts per second.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::task::AtomicWaker;
use futures::{Sink, StreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::Database;
use serde_json::{json, Value};
use tbone_dispatch::{
    Backend, Carrier, CarrierConfig, Channel, ChannelBuilder, CloseReason, Frame, HistoryLimits,
    MemoryBackend, Position, PositionedEnvelope, Resumed,
};
use tbone_dispatch_tokio::mongo::{self, MongoBackend, MongoOptions};

use crate::mongo::{connect_to, database, database_name, mongo_uri, MONGO_WAIT};
use crate::{new_carrier, unique_name, wait, within, Mem, TestRuntime, WAIT};

pub(crate) type Mongo<R> = Channel<MongoBackend, R>;

/// What a client of a `PositionedEnvelope` channel receives.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Received {
    /// An event frame: its data and its position.
    Event { data: Value, position: String },
    /// The frame saying that what was missed cannot be replayed, with the
    /// position the client gave.
    RecoveryFailed { position: String },
}

pub(crate) fn received(frame: &Frame) -> Received {
    let value: Value = serde_json::from_str(frame.as_str())
        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {frame}"));
    let position = |value: &Value| {
        value["position"]
            .as_str()
            .unwrap_or_else(|| panic!("a frame without its position: {frame}"))
            .to_string()
    };
    match value["type"].as_str() {
        Some("event") => Received::Event {
            data: value["payload"]["data"].clone(),
            position: position(&value),
        },
        Some("recovery_failed") => Received::RecoveryFailed {
            position: position(&value),
        },
        _ => panic!("neither an event nor a recovery-failed frame: {frame}"),
    }
}

/// One event a client saw: its data and position.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Seen {
    pub(crate) data: Value,
    pub(crate) position: String,
}

pub(crate) fn seen(frame: &Frame) -> Seen {
    match received(frame) {
        Received::Event { data, position } => Seen { data, position },
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The next `n` frames of `client`, within `limit` in all.
pub(crate) async fn frames<R: TestRuntime>(
    client: &mut mpsc::UnboundedReceiver<Frame>,
    n: usize,
    limit: Duration,
    what: &str,
) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(n);
    within::<R, _>(limit, what, async {
        while frames.len() < n {
            match client.next().await {
                Some(frame) => frames.push(frame),
                None => panic!(
                    "[{}] the client's connection ended after {} of {n} frames ({what})",
                    R::name(),
                    frames.len()
                ),
            }
        }
    })
    .await;
    frames
}

/// The next `n` events of `client`.
pub(crate) async fn events<R: TestRuntime>(
    client: &mut mpsc::UnboundedReceiver<Frame>,
    n: usize,
    limit: Duration,
    what: &str,
) -> Vec<Seen> {
    frames::<R>(client, n, limit, what)
        .await
        .iter()
        .map(seen)
        .collect()
}

pub(crate) fn data(events: &[Seen]) -> Vec<Value> {
    events.iter().map(|event| event.data.clone()).collect()
}

pub(crate) fn numbers(range: std::ops::Range<u64>) -> Vec<Value> {
    range.map(Value::from).collect()
}

/// A MemoryChannel whose frames carry positions, kicked off.
fn memory<R: TestRuntime>(name: &str, history: HistoryLimits) -> Mem<R> {
    let channel = ChannelBuilder::new(name)
        .envelope(PositionedEnvelope)
        .history(history)
        .open(R::default(), MemoryBackend::new)
        .unwrap_or_else(|e| panic!("cannot open channel {name}: {e}"));
    channel.kickoff().expect("kickoff");
    channel
}

pub(crate) const COLLECTION: &str = "tbone_channel_resume";

/// A MongoChannel instance on `db`'s resume collection whose frames carry
/// positions, kicked off.
pub(crate) fn mongo_on<R: TestRuntime>(
    name: &str,
    db: &Database,
    history: HistoryLimits,
) -> Mongo<R> {
    let channel: Mongo<R> = mongo::builder(name, db)
        .envelope(PositionedEnvelope)
        .history(history)
        .options(MongoOptions::default().collection(COLLECTION))
        .open()
        .unwrap_or_else(|e| panic!("cannot open channel {name}: {e}"));
    channel.kickoff().expect("kickoff");
    channel
}

/// A MongoChannel on a fresh database for this test.
async fn mongo_channel<R: TestRuntime>(test: &str, history: HistoryLimits) -> Mongo<R> {
    let db = database::<R>(test).await;
    mongo_on::<R>(&unique_name::<R>(test), &db, history)
}

/// Resumes `carrier` after `after` and expects every missed event to be
/// replayable.
fn resume<B: Backend, R: TestRuntime>(
    channel: &Channel<B, R>,
    carrier: &Carrier<R>,
    after: &str,
) -> usize {
    match channel.subscribe_after(&["tick"], carrier, after) {
        Ok(Resumed::Replayed { events }) => events,
        other => panic!(
            "[{}] resuming after {after:?}: expected a replay, got {other:?}",
            R::name()
        ),
    }
}

/// A client sees three events, goes away, `missed` events (and, between
/// them, events of a name it never subscribed to) are published, and it
/// comes back with the last position it saw: it receives the `missed`
/// events, frame for frame what a client that stayed connected received,
/// then the `live` ones, and nothing twice.
async fn missed_then_live<B: Backend, R: TestRuntime>(
    channel: &Channel<B, R>,
    missed: u64,
    live: u64,
    limit: Duration,
) {
    let (stays, mut witness) = new_carrier::<R>();
    let (first, mut client) = new_carrier::<R>();
    channel.subscribe("tick", &stays).expect("subscribe");
    channel.subscribe("tick", &first).expect("subscribe");
    for n in 0..3u64 {
        channel.publish("tick", &n).await.expect("publish");
    }
    let before = events::<R>(&mut client, 3, limit, "the events before the disconnect").await;
    assert_eq!(data(&before), numbers(0..3));
    let last = before[2].position.clone();
    first.close();
    drop(client);

    let end = 3 + missed;
    for n in 3..end {
        channel
            .publish("other", &"unsubscribed")
            .await
            .expect("publish");
        channel.publish("tick", &n).await.expect("publish");
    }
    // Once this instance delivered it, every missed event is in its history.
    channel
        .publish_delivered("other", &"unsubscribed")
        .await
        .expect("publish");

    let (again, mut client) = new_carrier::<R>();
    assert_eq!(
        resume(channel, &again, &last),
        usize::try_from(missed).unwrap(),
        "[{}] every missed event is replayed",
        R::name()
    );
    let total = end + live;
    for n in end..total {
        channel.publish("tick", &n).await.expect("publish");
    }
    channel
        .publish_delivered("tick", &total)
        .await
        .expect("publish");
    let replayed = frames::<R>(&mut client, (total + 1 - 3) as usize, limit, "the replay").await;
    assert_eq!(
        data(&replayed.iter().map(seen).collect::<Vec<_>>()),
        numbers(3..total + 1),
        "[{}] the missed events, then the live ones, each once",
        R::name()
    );
    let stayed = frames::<R>(&mut witness, (total + 1) as usize, limit, "the witness").await;
    let stayed: Vec<&str> = stayed[3..].iter().map(Frame::as_str).collect();
    let replayed: Vec<&str> = replayed.iter().map(Frame::as_str).collect();
    assert_eq!(
        replayed,
        stayed,
        "[{}] the resumed client's frames are those of a client that stayed",
        R::name()
    );
}

pub async fn missed_events_are_replayed_then_live<R: TestRuntime>() {
    let channel = memory::<R>(&unique_name::<R>("resume-missed"), HistoryLimits::default());
    missed_then_live(&channel, 200, 50, WAIT).await;
}

pub async fn missed_events_are_replayed_then_live_on_mongo<R: TestRuntime>() {
    let channel = mongo_channel::<R>("resume_missed", HistoryLimits::default()).await;
    missed_then_live(&channel, 6, 3, MONGO_WAIT).await;
}

/// A task publishes `0..total` (pausing 1 ms every 16 events, so the
/// client keeps up) while a client reads them and drops its connection
/// `reconnects` times, each time waiting for `away` more events to be
/// published before it resumes, with publishing going on meanwhile (the
/// publisher holds its last `away` events back until the reconnects are
/// done, so it is still running at each). The client sees `0..total` once
/// each, in order.
async fn reconnects_while_publishing<B: Backend, R: TestRuntime>(
    channel: &Channel<B, R>,
    total: u64,
    reconnects: u64,
    away: u64,
    limit: Duration,
) {
    let published = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let (mut carrier, mut client) = new_carrier::<R>();
    channel.subscribe("tick", &carrier).expect("subscribe");
    let (outcome, publishing) = oneshot::channel();
    let held_back = total - away;
    R::default()
        .spawn({
            let (channel, published, resumed) =
                (channel.clone(), published.clone(), resumed.clone());
            let runtime = R::default();
            async move {
                let mut result = Ok(());
                for n in 0..total {
                    if n == held_back {
                        while resumed.load(Ordering::SeqCst) < reconnects {
                            runtime.sleep(Duration::from_millis(1)).await;
                        }
                    }
                    if let Err(e) = channel.publish("tick", &n).await {
                        result = Err(e);
                        break;
                    }
                    published.fetch_add(1, Ordering::SeqCst);
                    // Paced so that the client keeps up and reconnects
                    // while the publisher is running.
                    if n % 16 == 15 {
                        runtime.sleep(Duration::from_millis(1)).await;
                    }
                }
                let _ = outcome.send(result);
            }
        })
        .expect("spawning the publisher");

    let step = held_back / (reconnects + 1);
    let mut seen: Vec<u64> = Vec::new();
    within::<R, _>(limit, "every event, across the reconnects", async {
        while (seen.len() as u64) < total {
            let Some(frame) = client.next().await else {
                panic!(
                    "[{}] the connection ended ({:?}) after {} events",
                    R::name(),
                    carrier.close_reason(),
                    seen.len()
                );
            };
            let event = self::seen(&frame);
            seen.push(event.data.as_u64().expect("a number"));
            let done = resumed.load(Ordering::SeqCst);
            if done < reconnects && seen.len() as u64 == step * (done + 1) {
                carrier.close();
                let target = published.load(Ordering::SeqCst) + away;
                while published.load(Ordering::SeqCst) < target {
                    R::default().sleep(Duration::from_millis(1)).await;
                }
                let (again, frames) = new_carrier::<R>();
                // As sockets do: from the history, or else the backend's
                // store, while publishing goes on.
                match channel.resume(&["tick"], &again, &event.position).await {
                    Ok(Resumed::Replayed { .. }) => {}
                    other => panic!(
                        "[{}] resuming after {}: expected a replay, got {other:?}",
                        R::name(),
                        event.position
                    ),
                }
                (carrier, client) = (again, frames);
                resumed.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    within::<R, _>(limit, "the publisher's end", publishing)
        .await
        .expect("the publisher ended without a word")
        .expect("publish");
    assert_eq!(resumed.load(Ordering::SeqCst), reconnects);
    assert_eq!(
        seen,
        (0..total).collect::<Vec<_>>(),
        "[{}] every event once, in order, across {reconnects} reconnects",
        R::name()
    );
    channel
        .publish_delivered("tick", &total)
        .await
        .expect("publish");
    let next = events::<R>(&mut client, 1, limit, "the event after the run").await;
    assert_eq!(
        data(&next),
        numbers(total..total + 1),
        "[{}] nothing more was queued",
        R::name()
    );
}

pub async fn resume_while_publishing_continues<R: TestRuntime>() {
    let channel = memory::<R>(
        &unique_name::<R>("resume-concurrent"),
        HistoryLimits::default(),
    );
    reconnects_while_publishing(&channel, 3_000, 5, 20, WAIT * 4).await;
}

pub async fn resume_while_publishing_continues_on_mongo<R: TestRuntime>() {
    let channel = mongo_channel::<R>("resume_concurrent", HistoryLimits::default()).await;
    reconnects_while_publishing(&channel, 40, 3, 3, MONGO_WAIT).await;
}

/// The same with a history of 4 events and 12 events published while the
/// client is away: each resume reads the capped collection while the
/// instance goes on delivering (the seam between the two is exact). (The
/// publisher holds its last events back until the reconnects are done:
/// 120 leaves room for the 12 published during each.)
pub async fn resume_from_the_collection_while_publishing_continues<R: TestRuntime>() {
    let channel = mongo_channel::<R>(
        "resume_store_concurrent",
        HistoryLimits::default().events(4),
    )
    .await;
    reconnects_while_publishing(&channel, 120, 3, 12, MONGO_WAIT).await;
}

/// MongoChannel positions are the documents' ObjectIds, the same on every
/// instance: a client of instance A that went away resumes on instance B
/// with A's position, and gets exactly what it missed, then the live
/// events.
pub async fn resume_on_another_mongo_instance<R: TestRuntime>() {
    let test = "resume_other_instance";
    let db_a = database::<R>(test).await;
    let db_b = connect_to(&mongo_uri(), &database_name::<R>(test)).await;
    let history = HistoryLimits::default();
    let a = mongo_on::<R>(&unique_name::<R>("resume-instance-a"), &db_a, history);
    let b = mongo_on::<R>(&unique_name::<R>("resume-instance-b"), &db_b, history);
    let (stays, mut witness) = new_carrier::<R>();
    b.subscribe("tick", &stays).expect("subscribe");
    let (first, mut client) = new_carrier::<R>();
    a.subscribe("tick", &first).expect("subscribe");

    for n in 0..3u64 {
        a.publish("tick", &n).await.expect("publish");
    }
    let before = events::<R>(&mut client, 3, MONGO_WAIT, "the events on A").await;
    // B delivered them too (so it holds them), with the same positions.
    let on_b = events::<R>(&mut witness, 3, MONGO_WAIT, "the events on B").await;
    assert_eq!(before, on_b, "[{}] one position per event", R::name());
    first.close();
    drop(client);

    for n in 3..6u64 {
        a.publish("tick", &n).await.expect("publish");
    }
    // B reads the collection in insertion order: once it delivered this,
    // it delivered the missed events.
    b.publish_delivered("other", &"marker")
        .await
        .expect("publish");
    let (again, mut client) = new_carrier::<R>();
    assert_eq!(resume(&b, &again, &before[2].position), 3);
    a.publish("tick", &6).await.expect("publish");
    b.publish_delivered("tick", &7).await.expect("publish");
    let resumed = events::<R>(&mut client, 5, MONGO_WAIT, "the missed, then live").await;
    assert_eq!(
        data(&resumed),
        numbers(3..8),
        "[{}] exactly the missed events, then the live ones",
        R::name()
    );
    let stayed = events::<R>(&mut witness, 5, MONGO_WAIT, "the witness").await;
    assert_eq!(resumed, stayed);
}

/// Garbage a client may send as its last position: not a position at all.
fn garbage() -> Vec<String> {
    [
        "",
        "has space",
        "quote\"inside",
        "back\\slash",
        "é",
        "line\nbreak",
        &"x".repeat(300),
    ]
    .map(String::from)
    .to_vec()
}

/// For each position of `unknown`: a new client resuming from it is told
/// that recovery failed (the frame echoes what it sent when that is a
/// position, and nothing when it is garbage), is subscribed all the same,
/// and receives the next live event.
pub(crate) async fn recovery_fails_then_live<B: Backend, R: TestRuntime>(
    channel: &Channel<B, R>,
    unknown: &[String],
    limit: Duration,
) {
    for (n, position) in unknown.iter().enumerate() {
        let (carrier, mut client) = new_carrier::<R>();
        let resumed = channel
            .resume(&["tick"], &carrier, position)
            .await
            .expect("resume");
        assert_eq!(resumed, Resumed::Failed, "[{}] {position:?}", R::name());
        channel
            .publish_delivered("tick", &n)
            .await
            .expect("publish");
        let frames = frames::<R>(&mut client, 2, limit, "recovery failed, then live").await;
        let echoed = match Position::new(position) {
            Ok(_) => position.clone(),
            Err(_) => String::new(),
        };
        assert_eq!(
            received(&frames[0]),
            Received::RecoveryFailed { position: echoed },
            "[{}] the explicit frame first",
            R::name()
        );
        assert_eq!(
            seen(&frames[1]).data,
            json!(n),
            "[{}] then the live event",
            R::name()
        );
        carrier.close();
    }
}

/// The positions a client of `channel` sees for `0..n` (published now).
pub(crate) async fn positions<B: Backend, R: TestRuntime>(
    channel: &Channel<B, R>,
    n: u64,
    limit: Duration,
) -> Vec<String> {
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("tick", &carrier).expect("subscribe");
    for i in 0..n {
        channel.publish("tick", &i).await.expect("publish");
    }
    let seen = events::<R>(&mut client, n as usize, limit, "the events").await;
    carrier.close();
    seen.into_iter().map(|event| event.position).collect()
}

/// A position older than the history (pushed out by its count limit), one
/// of another epoch (the same channel before a restart: stopped and opened
/// again), and garbage: the recovery-failed frame, then live events. A
/// position still in the history resumes.
pub async fn unknown_positions_fail_recovery_then_go_live<R: TestRuntime>() {
    let name = unique_name::<R>("resume-unknown");
    let restarted = memory::<R>(&name, HistoryLimits::default());
    let other_epoch = positions(&restarted, 1, WAIT).await.remove(0);
    wait::<R, _>("the stop", restarted.stop()).await;

    let channel = memory::<R>(&name, HistoryLimits::default().events(5));
    let seen = positions(&channel, 10, WAIT).await;
    let (kept, mut client) = new_carrier::<R>();
    assert_eq!(resume(&channel, &kept, &seen[6]), 3, "7, 8 and 9");
    assert_eq!(
        data(&events::<R>(&mut client, 3, WAIT, "the replay").await),
        numbers(7..10)
    );
    kept.close();

    let mut unknown = vec![seen[2].clone(), other_epoch];
    unknown.extend(garbage());
    recovery_fails_then_live(&channel, &unknown, WAIT).await;
}

/// The same on a MongoChannel, whose own history is its capped collection
/// (`Channel::resume` reads it): a position overwritten in the collection
/// (and pushed out of the instance's history), an ObjectId no instance
/// delivered, a MemoryChannel's position, garbage.
pub async fn unknown_positions_fail_recovery_then_go_live_on_mongo<R: TestRuntime>() {
    let db = database::<R>("resume_unknown").await;
    let channel: Mongo<R> = mongo::builder(&unique_name::<R>("resume-unknown-mongo"), &db)
        .envelope(PositionedEnvelope)
        .history(HistoryLimits::default().events(3))
        .options(
            MongoOptions::default()
                .collection("tbone_channel_small")
                .capacity(4),
        )
        .open()
        .expect("open");
    channel.kickoff().expect("kickoff");
    let seen = positions(&channel, 8, MONGO_WAIT).await;
    let mut unknown = vec![
        seen[1].clone(),
        ObjectId::new().to_hex(),
        "18c2f00d3a1b-7".to_string(),
    ];
    unknown.extend(garbage());
    recovery_fails_then_live(&channel, &unknown, MONGO_WAIT).await;
}

/// A client whose reading can be paused: its sink passes frames on while
/// the gate is open; while it is shut, the carrier's writer waits, as on a
/// socket whose peer stopped reading.
#[derive(Clone, Default)]
struct Gate(Arc<GateState>);

#[derive(Default)]
struct GateState {
    shut: AtomicBool,
    waker: AtomicWaker,
}

impl Gate {
    fn sink(&self) -> (GatedSink, mpsc::UnboundedReceiver<Frame>) {
        let (tx, rx) = mpsc::unbounded();
        (
            GatedSink {
                gate: self.clone(),
                tx,
            },
            rx,
        )
    }

    fn shut(&self) {
        self.0.shut.store(true, Ordering::SeqCst);
    }

    fn open(&self) {
        self.0.shut.store(false, Ordering::SeqCst);
        self.0.waker.wake();
    }
}

struct GatedSink {
    gate: Gate,
    tx: mpsc::UnboundedSender<Frame>,
}

impl Sink<Frame> for GatedSink {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        let state = &self.gate.0;
        state.waker.register(cx.waker());
        if state.shut.load(Ordering::SeqCst) {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), String> {
        self.tx.unbounded_send(frame).map_err(|e| e.to_string())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.tx.close_channel();
        Poll::Ready(Ok(()))
    }
}

/// A client that stops reading is dropped by the overflow policy
/// (`DropCarrier`, a queue of 4), then resumes with a fresh connection from
/// the last event its socket was written: nothing is lost or repeated.
async fn dropped_for_overflow_then_resumed<B: Backend, R: TestRuntime>(
    channel: &Channel<B, R>,
    burst: u64,
    limit: Duration,
) {
    let gate = Gate::default();
    let (sink, mut client) = gate.sink();
    let carrier =
        Carrier::new(&R::default(), sink, CarrierConfig::default().capacity(4)).expect("carrier");
    channel.subscribe("tick", &carrier).expect("subscribe");
    for n in 0..3u64 {
        channel.publish("tick", &n).await.expect("publish");
    }
    let mut written = events::<R>(&mut client, 3, limit, "the events before the stall").await;

    gate.shut();
    let end = 3 + burst;
    for n in 3..end - 1 {
        channel.publish("tick", &n).await.expect("publish");
    }
    channel
        .publish_delivered("tick", &(end - 1))
        .await
        .expect("publish");
    assert_eq!(
        within::<R, _>(limit, "the overflow", carrier.closed()).await,
        CloseReason::Overflow,
        "[{}] the stalled client was dropped",
        R::name()
    );
    while let Ok(frame) = client.try_recv() {
        written.push(seen(&frame));
    }
    let last = written.last().expect("the events before the stall");
    let next = last.data.as_u64().expect("a number") + 1;

    // A queue that holds the replay: with the dropped one's 4 frames, a
    // live event arriving before the writer caught up would drop it again
    // (`a_replay_longer_than_the_queue_is_not_dropped_by_live_events`).
    let (again, mut client) = new_carrier::<R>();
    assert_eq!(
        resume(channel, &again, &last.position) as u64,
        end - next,
        "[{}] everything after the last written event",
        R::name()
    );
    channel
        .publish_delivered("tick", &end)
        .await
        .expect("publish");
    let rest = events::<R>(
        &mut client,
        (end + 1 - next) as usize,
        limit,
        "the rest, then live",
    )
    .await;
    written.extend(rest);
    assert_eq!(
        data(&written),
        numbers(0..end + 1),
        "[{}] every event once, in order, across the drop",
        R::name()
    );
}

pub async fn carrier_dropped_for_overflow_resumes_without_loss<R: TestRuntime>() {
    let channel = memory::<R>(
        &unique_name::<R>("resume-overflow"),
        HistoryLimits::default(),
    );
    dropped_for_overflow_then_resumed(&channel, 30, WAIT).await;
}

pub async fn carrier_dropped_for_overflow_resumes_without_loss_on_mongo<R: TestRuntime>() {
    let channel = mongo_channel::<R>("resume_overflow", HistoryLimits::default()).await;
    dropped_for_overflow_then_resumed(&channel, 10, MONGO_WAIT).await;
}

/// A replay may exceed the carrier's queue capacity (the history bounds
/// it). A live event that arrives before the writer has written the replay
/// must not count the replayed frames against that capacity: the client
/// that resumes after missing more than a queue's worth must not be
/// dropped for it, or it would reconnect and be dropped again.
pub async fn a_replay_longer_than_the_queue_is_not_dropped_by_live_events<R: TestRuntime>() {
    let channel = memory::<R>(
        &unique_name::<R>("resume-long-replay"),
        HistoryLimits::default(),
    );
    let last = positions(&channel, 1, WAIT).await.remove(0);
    for n in 1..=50u64 {
        channel.publish("tick", &n).await.expect("publish");
    }
    channel.flush().await;

    let gate = Gate::default();
    gate.shut();
    let (sink, mut client) = gate.sink();
    let carrier =
        Carrier::new(&R::default(), sink, CarrierConfig::default().capacity(8)).expect("carrier");
    assert_eq!(resume(&channel, &carrier, &last), 50);
    channel
        .publish_delivered("tick", &51)
        .await
        .expect("publish");
    gate.open();
    let replayed = frames::<R>(&mut client, 51, WAIT, "the replay, then live").await;
    assert_eq!(
        data(&replayed.iter().map(seen).collect::<Vec<_>>()),
        numbers(1..52)
    );
    assert!(!carrier.is_closed(), "{:?}", carrier.close_reason());
}
