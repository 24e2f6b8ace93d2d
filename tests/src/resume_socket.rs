//! Websocket clients that resume after a reconnect (issue 11), against real
//! clients over loopback on each runtime crate's `websocket::accept`: a
//! client gives the position of the last event it received, in the
//! `last_position` query parameter or in its first message
//! (`{"action":"resume","position":..}`), and receives exactly what it
//! missed, in order, then the live events, none twice; a position the
//! channel no longer has brings the `recovery_failed` frame, then the live
//! events. On a memory channel, and across two MongoChannel instances.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use serde_json::{json, Value};
use tbone_dispatch::socket::LAST_POSITION;
use tbone_dispatch::{
    CarrierConfig, ChannelBuilder, CloseReason, HistoryLimits, MemoryBackend, OverflowPolicy,
    PositionedEnvelope, SocketOptions,
};

use crate::duplex::{next_json, send_json};
use crate::websocket::{publish, Client};
use crate::{eventually, unique_name, wait, Mem, TestRuntime};

/// A running memory channel for this runtime and `test` whose frames carry
/// their positions, keeping `history`.
fn positioned<R: TestRuntime>(test: &str, history: HistoryLimits) -> Mem<R> {
    let channel = ChannelBuilder::new(unique_name::<R>(test))
        .envelope(PositionedEnvelope)
        .history(history)
        .open(R::default(), MemoryBackend::new)
        .expect("open");
    channel.kickoff().expect("kickoff");
    channel
}

/// A websocket client of the server at `addr`, upgrading `target` (a path
/// and query).
async fn connect_at<R: TestRuntime>(addr: std::net::SocketAddr, target: &str) -> Client {
    let (io, _) = wait::<R, _>("a TCP connection", R::connect_tcp(addr))
        .await
        .unwrap_or_else(|e| panic!("[{}] connecting to {addr}: {e}", R::name()));
    let request = format!("ws://{addr}{target}")
        .into_client_request()
        .expect("a websocket URL");
    wait::<R, _>(
        "the websocket handshake",
        async_tungstenite::client_async(request, io),
    )
    .await
    .map(|(client, _)| client)
    .unwrap_or_else(|e| panic!("[{}] websocket handshake for {target}: {e}", R::name()))
}

/// How a client says where it resumes.
#[derive(Clone, Copy, Debug)]
enum Resume {
    Query,
    Message,
}

/// Connects with the client's last position (`None`: it saw nothing), as
/// `how` says.
async fn reconnect<R: TestRuntime>(
    addr: std::net::SocketAddr,
    how: Resume,
    last: Option<&str>,
) -> Client {
    match how {
        Resume::Query => {
            // Empty when it saw nothing: it still says "in the query".
            let last = last.unwrap_or_default();
            connect_at::<R>(addr, &format!("/ws/?{LAST_POSITION}={last}")).await
        }
        Resume::Message => {
            let mut client = connect_at::<R>(addr, "/ws/").await;
            let mut resume = json!({"action": "resume"});
            if let Some(last) = last {
                resume["position"] = json!(last);
            }
            send_json::<R>(&mut client, &resume).await;
            client
        }
    }
}

/// One positioned event frame: its data (a number) and position.
fn event(frame: &Value) -> (u64, String) {
    assert_eq!(frame["type"], "event", "{frame}");
    let data = frame["payload"]["data"]
        .as_u64()
        .unwrap_or_else(|| panic!("an event without a number: {frame}"));
    let position = frame["position"]
        .as_str()
        .unwrap_or_else(|| panic!("an event without a position: {frame}"))
        .to_string();
    (data, position)
}

/// The next `n` events a client receives, within [`crate::WAIT`] in all.
async fn next_events<R: TestRuntime>(
    client: &mut Client,
    n: usize,
    what: &str,
) -> Vec<(u64, String)> {
    wait::<R, _>(what, read_events::<R>(client, n, what)).await
}

/// The next `n` events a client receives, however long it takes.
async fn read_events<R: TestRuntime>(
    client: &mut Client,
    n: usize,
    what: &str,
) -> Vec<(u64, String)> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match client.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                events.push(event(&frame));
            }
            Some(Ok(_)) => {}
            other => panic!(
                "[{}] {what}: the connection ended after {} of {n} events: {other:?}",
                R::name(),
                events.len()
            ),
        }
    }
    events
}

fn data(events: &[(u64, String)]) -> Vec<u64> {
    events.iter().map(|(data, _)| *data).collect()
}

async fn publish_all<R: TestRuntime>(channel: &Mem<R>, numbers: std::ops::Range<u64>) {
    for n in numbers {
        publish::<R>(channel, "e", &json!(n)).await;
    }
}

/// A client that disconnects mid-stream and reconnects with its last
/// position receives exactly the events published meanwhile, in order,
/// then the live ones, none twice: in the query parameter and in the
/// resume message (with the same server: a client that gives its position
/// in the query does not wait for a message).
pub async fn a_reconnecting_client_receives_what_it_missed_once<R: TestRuntime>() {
    const MISSED: u64 = 25;
    let channel = positioned::<R>("resume-ws-missed", HistoryLimits::default());
    let options = SocketOptions::new(["e"]).resume_message(true);
    let server = R::spawn_ws_server(&channel, options);
    let mut next = 0;
    for how in [Resume::Query, Resume::Message] {
        let mut client = reconnect::<R>(server.addr, how, None).await;
        eventually::<R>("the socket subscribed", || {
            channel.subscriber_count("e") == 1
        })
        .await;
        publish_all(&channel, next..next + 3).await;
        let seen = next_events::<R>(&mut client, 3, "the first events").await;
        assert_eq!(data(&seen), (next..next + 3).collect::<Vec<_>>());
        next += 3;
        drop(client);
        eventually::<R>("the socket gone", || channel.subscriber_count("e") == 0).await;

        publish_all(&channel, next..next + MISSED).await;
        let last = &seen[2].1;
        let (mut again, missed) = match how {
            Resume::Query => (reconnect::<R>(server.addr, how, Some(last)).await, MISSED),
            Resume::Message => {
                let mut again = connect_at::<R>(server.addr, "/ws/").await;
                // After the handshake, before the resume message: held
                // back, then replayed in its place.
                publish_all(&channel, next + MISSED..next + MISSED + 1).await;
                let resume = json!({"action": "resume", "position": last});
                send_json::<R>(&mut again, &resume).await;
                (again, MISSED + 1)
            }
        };
        let replayed = next_events::<R>(&mut again, missed as usize, "the missed events").await;
        assert_eq!(
            data(&replayed),
            (next..next + missed).collect::<Vec<_>>(),
            "[{}] {how:?}: exactly the missed events, in order",
            R::name()
        );
        next += missed;
        publish_all(&channel, next..next + 3).await;
        let live = next_events::<R>(&mut again, 3, "the live events").await;
        assert_eq!(data(&live), (next..next + 3).collect::<Vec<_>>());
        next += 3;
        // Nothing more: no event twice.
        publish::<R>(&channel, "e", &json!("end")).await;
        let end = next_json::<R>(&mut again, "the end marker").await;
        assert_eq!(
            end["payload"]["data"],
            "end",
            "[{}] {how:?}: {end}",
            R::name()
        );
        drop(again);
        eventually::<R>("the socket gone", || channel.subscriber_count("e") == 0).await;
    }
}

/// A publisher keeps publishing numbered events while a client reads,
/// drops its connection (without a close frame) and reconnects with its
/// last position, several times, alternately by query and by message: in
/// all, the client receives every number once, in order.
pub async fn reconnecting_while_publishing_goes_on_loses_and_repeats_nothing<R: TestRuntime>() {
    const CYCLES: usize = 4;
    let channel = positioned::<R>("resume-ws-ongoing", HistoryLimits::default());
    let options = SocketOptions::new(["e"]).resume_message(true);
    let server = R::spawn_ws_server(&channel, options);
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (channel, published, stop) = (channel.clone(), published.clone(), stop.clone());
        let runtime = R::default();
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                channel.publish("e", &n).await.expect("publish");
                n += 1;
                published.store(n, Ordering::SeqCst);
                // Paced, so that the reconnects happen while it goes on.
                runtime.sleep(Duration::from_micros(500)).await;
            }
        }
    };
    // The first connection is subscribed when its handshake returns: it
    // misses nothing.
    let mut first = Some(reconnect::<R>(server.addr, Resume::Query, None).await);
    let publishing = R::default()
        .spawn(publisher)
        .expect("spawning the publisher");

    let mut received: Vec<u64> = Vec::new();
    let mut last: Option<String> = None;
    for cycle in 0..=CYCLES {
        let how = if cycle % 2 == 0 {
            Resume::Query
        } else {
            Resume::Message
        };
        let mut client = match first.take() {
            Some(client) => client,
            None => reconnect::<R>(server.addr, how, last.as_deref()).await,
        };
        // Read a stretch, then leave without a word.
        for _ in 0..40 {
            let frame = next_json::<R>(&mut client, &format!("cycle {cycle} ({how:?})")).await;
            let (n, position) = event(&frame);
            received.push(n);
            last = Some(position);
        }
        // Gone with its TCP connection: no close frame.
        drop(client);
        // Events are published while the client is away, and while it
        // reconnects.
        let gone = published.load(Ordering::SeqCst);
        eventually::<R>("more events published while away", || {
            published.load(Ordering::SeqCst) >= gone + 20
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    wait::<R, _>("the publisher to stop", publishing).await;
    let total = published.load(Ordering::SeqCst);
    // The last stretch: resume once more and read to the end.
    let mut client = reconnect::<R>(server.addr, Resume::Query, last.as_deref()).await;
    while received.last().is_none_or(|n| n + 1 < total) {
        let frame = next_json::<R>(&mut client, "the rest").await;
        received.push(event(&frame).0);
    }
    assert_eq!(
        received,
        (0..total).collect::<Vec<_>>(),
        "[{}] every event once, in order, over {} connections",
        R::name(),
        CYCLES + 2
    );
}

/// The next frame must be `recovery_failed` for `position`.
async fn expect_recovery_failed<R: TestRuntime>(client: &mut Client, position: &str) {
    let frame = next_json::<R>(client, "the recovery_failed frame").await;
    assert_eq!(
        frame,
        json!({"type": "recovery_failed", "position": position}),
        "[{}]",
        R::name()
    );
}

/// A position from another epoch (another process, or before a restart),
/// and one the history no longer holds, bring the `recovery_failed` frame,
/// then the live events; in the query and in the message alike.
pub async fn an_unknown_position_gets_recovery_failed_then_live_events<R: TestRuntime>() {
    let channel = positioned::<R>("resume-ws-unknown", HistoryLimits::default().events(3));
    let options = SocketOptions::new(["e"]).resume_message(true);
    let server = R::spawn_ws_server(&channel, options);
    let mut first = reconnect::<R>(server.addr, Resume::Query, None).await;
    eventually::<R>("the socket subscribed", || {
        channel.subscriber_count("e") == 1
    })
    .await;
    publish_all(&channel, 0..1).await;
    let (_, overwritten) = next_events::<R>(&mut first, 1, "the first event")
        .await
        .remove(0);
    drop(first);
    // Three more: the history (of three) has forgotten the first, once
    // they are delivered (published is only queued: a consumer that lags
    // would deliver them to the next client, live).
    publish_all(&channel, 1..4).await;
    channel.flush().await;

    let mut next = 4;
    for how in [Resume::Query, Resume::Message] {
        for position in ["deadbeef-1", overwritten.as_str()] {
            let mut client = reconnect::<R>(server.addr, how, Some(position)).await;
            expect_recovery_failed::<R>(&mut client, position).await;
            publish_all(&channel, next..next + 2).await;
            let live = next_events::<R>(&mut client, 2, "the live events").await;
            assert_eq!(
                data(&live),
                [next, next + 1],
                "[{}] {how:?} from {position}: live events after the frame",
                R::name()
            );
            next += 2;
        }
    }
}

/// A slow client dropped by the overflow policy (`DropCarrier`, a small
/// queue) reads what it was sent, reconnects with the position of the last
/// event it read, and receives the rest: every event once, in order.
pub async fn a_client_dropped_for_overflow_resumes_without_loss<R: TestRuntime>() {
    const MAX_EVENTS: u64 = 1_500;
    let channel = positioned::<R>(
        "resume-ws-overflow",
        HistoryLimits::default().events(4_000).bytes(256 << 20),
    );
    let options = SocketOptions::new(["e"]).carrier(
        CarrierConfig::default()
            .capacity(8)
            .overflow(OverflowPolicy::DropCarrier)
            .close_timeout(Duration::from_millis(200)),
    );
    let mut server = R::spawn_ws_server(&channel, options);
    let (mut slow, slow_peer) = crate::websocket::connect::<R>(server.addr).await;
    eventually::<R>("the socket subscribed", || {
        channel.subscriber_count("e") == 1
    })
    .await;

    // Big events, never read, until the server drops the client.
    let pad = "x".repeat(32 * 1024);
    let mut published = 0;
    while channel.stats().carriers_dropped == 0 {
        assert!(
            published < MAX_EVENTS,
            "[{}] the slow client was not dropped after {MAX_EVENTS} events of 32 KiB",
            R::name()
        );
        publish::<R>(&channel, "e", &json!({"n": published, "pad": pad})).await;
        published += 1;
    }
    assert_eq!(
        server
            .reason_for::<R>(slow_peer, "the slow connection")
            .await,
        CloseReason::Overflow
    );
    // What it was sent before the drop, then the close.
    let mut received: Vec<u64> = Vec::new();
    let mut last: Option<String> = None;
    wait::<R, _>("the slow client to read to the end", async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    let n = frame["payload"]["data"]["n"].as_u64().expect("a number");
                    received.push(n);
                    last = frame["position"].as_str().map(String::from);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(
        (received.len() as u64) < published,
        "[{}] the slow client received all {published} events although dropped",
        R::name()
    );

    let mut again = reconnect::<R>(server.addr, Resume::Query, last.as_deref()).await;
    publish::<R>(&channel, "e", &json!({"n": published, "pad": ""})).await;
    published += 1;
    while (received.len() as u64) < published {
        let frame = next_json::<R>(&mut again, "the rest of the events").await;
        assert_eq!(frame["type"], "event", "[{}] {frame}", R::name());
        received.push(frame["payload"]["data"]["n"].as_u64().expect("a number"));
    }
    assert_eq!(
        received,
        (0..published).collect::<Vec<_>>(),
        "[{}] every event once, in order, across the drop",
        R::name()
    );
}

/// Reads the events numbered `range` (within the MongoDB wait: the test
/// server is slow), and returns them with their positions.
async fn expect_events<R: TestRuntime>(
    client: &mut Client,
    range: std::ops::Range<u64>,
    what: &str,
) -> Vec<(u64, String)> {
    let n = (range.end - range.start) as usize;
    let wait = crate::mongo::MONGO_WAIT;
    let got = crate::within::<R, _>(wait, what, read_events::<R>(client, n, what)).await;
    assert_eq!(
        data(&got),
        range.collect::<Vec<_>>(),
        "[{}] {what}",
        R::name()
    );
    got
}

/// A MongoChannel instance called `name` on `db`'s events collection
/// `collection`, whose frames carry their positions (ObjectIds).
fn mongo_instance<R: TestRuntime>(
    name: &str,
    db: &mongodb::Database,
    collection: &str,
) -> tbone_dispatch::Channel<tbone_dispatch_tokio::mongo::MongoBackend, R> {
    use tbone_dispatch_tokio::mongo::{self, MongoOptions};
    let channel = mongo::builder(name, db)
        .envelope(PositionedEnvelope)
        .options(MongoOptions::default().collection(collection))
        .open()
        .unwrap_or_else(|e| panic!("cannot open channel {name}: {e}"));
    channel.kickoff().expect("kickoff");
    channel
}

/// A client of a websocket server on MongoChannel instance A leaves; the
/// events published meanwhile are stored once, with their ObjectIds as
/// positions; it reconnects to a server on instance B (another client of
/// the same collection) with its last position from A, and receives
/// exactly what it missed, in order, then the live events.
pub async fn a_client_resumes_on_another_mongo_instance<R: TestRuntime>() {
    use crate::mongo::{database, database_name, mongo_uri};
    const EVENTS: &str = "socket_resume";
    let test = "resume_socket_other_instance";
    let db_a = database::<R>(test).await;
    let db_b = crate::mongo::connect_to(&mongo_uri(), &database_name::<R>(test)).await;
    let a = mongo_instance::<R>(&unique_name::<R>("resume-ws-mongo-a"), &db_a, EVENTS);
    let b = mongo_instance::<R>(&unique_name::<R>("resume-ws-mongo-b"), &db_b, EVENTS);
    let on_a = R::spawn_ws_server(&a, SocketOptions::new(["e"]));
    let on_b = R::spawn_ws_server(&b, SocketOptions::new(["e"]));
    // B delivers every event too, so that it holds them in its history.
    let mut witness = connect_at::<R>(on_b.addr, "/ws/").await;
    let mut client = connect_at::<R>(on_a.addr, "/ws/").await;
    eventually::<R>("both sockets subscribed", || {
        a.subscriber_count("e") == 1 && b.subscriber_count("e") == 1
    })
    .await;
    for n in 0..3u64 {
        a.publish("e", &n).await.expect("publish");
    }
    let seen = expect_events::<R>(&mut client, 0..3, "the first events, on A").await;
    let witnessed = expect_events::<R>(&mut witness, 0..3, "the first events, on B").await;
    assert_eq!(
        seen,
        witnessed,
        "[{}] the same positions on both",
        R::name()
    );
    drop(client);

    for n in 3..6u64 {
        a.publish("e", &n).await.expect("publish");
    }
    // B reads the collection in order: once it delivered the last, it
    // holds them all.
    expect_events::<R>(&mut witness, 3..6, "the missed events, on B").await;
    let last = &seen[2].1;
    let mut again = connect_at::<R>(on_b.addr, &format!("/ws/?{LAST_POSITION}={last}")).await;
    expect_events::<R>(&mut again, 3..6, "the missed events, replayed by B").await;
    a.publish("e", &6u64).await.expect("publish");
    expect_events::<R>(&mut again, 6..7, "a live event").await;
}

/// A websocket client of instance A resumes on instance B, started a
/// second after the events it missed: B's history holds nothing of them,
/// so they come from the capped collection, then the live ones.
pub async fn a_client_resumes_on_an_instance_started_after_it_left<R: TestRuntime>() {
    use crate::mongo::{database, database_name, mongo_uri};
    const EVENTS: &str = "socket_resume_late";
    let test = "resume_socket_late_instance";
    let db_a = database::<R>(test).await;
    let a = mongo_instance::<R>(&unique_name::<R>("resume-ws-late-a"), &db_a, EVENTS);
    let on_a = R::spawn_ws_server(&a, SocketOptions::new(["e"]));
    let mut client = connect_at::<R>(on_a.addr, "/ws/").await;
    eventually::<R>("the socket subscribed", || a.subscriber_count("e") == 1).await;
    for n in 0..3u64 {
        a.publish("e", &n).await.expect("publish");
    }
    let seen = expect_events::<R>(&mut client, 0..3, "the first events, on A").await;
    drop(client);
    for n in 3..6u64 {
        a.publish("e", &n).await.expect("publish");
    }
    // In the same second, B would deliver them live and hold them.
    crate::mongo::next_second::<R>().await;

    let db_b = crate::mongo::connect_to(&mongo_uri(), &database_name::<R>(test)).await;
    let b = mongo_instance::<R>(&unique_name::<R>("resume-ws-late-b"), &db_b, EVENTS);
    let on_b = R::spawn_ws_server(&b, SocketOptions::new(["e"]));
    let last = &seen[2].1;
    let mut again = connect_at::<R>(on_b.addr, &format!("/ws/?{LAST_POSITION}={last}")).await;
    expect_events::<R>(&mut again, 3..6, "the missed events, from the collection").await;
    a.publish("e", &6u64).await.expect("publish");
    expect_events::<R>(&mut again, 6..7, "a live event").await;
}
