//! Scenario: clients flooding requests. A server whose sockets answer
//! TBone's requests through a route that takes a few milliseconds (as a
//! database call would) serves clients that send requests as fast as their
//! sockets take them, reading the answers as they come, beside one
//! well-behaved client that sends one request at a time and receives the
//! events published meanwhile.
//!
//! Checks: no socket ever has more than `Limits::in_flight` requests in the
//! application's hands (reading pauses instead, so the flood waits in TCP
//! buffers, not in the server); the process's memory does not grow with the
//! requests answered (measured between two late points, as bytes per
//! request); every flooder gets an answer to every request it sent; the
//! well-behaved client loses no event and no answer. A last phase floods
//! a server with the default rate limit: the flooder is closed with 1008.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use serde_json::{json, Value};
use tbone_dispatch::multiplexer::{Multiplexer, Request, Response, Routes};
use tbone_dispatch::{close_code, CarrierId, Limits, SocketHandle, SocketOptions};
use tbone_dispatch_tokio::MemoryChannel;

use super::loopback::{self, connect, wait_until, Client, STEP};
use super::{rss_kib, Profile, Row};

/// Memory growth allowed whatever the number of requests (allocator pools
/// and buffers reaching their high-water mark).
const WARM_UP: u64 = 1024 * 1024;

/// How long the route takes to answer.
const ROUTE_TIME: Duration = Duration::from_millis(2);

/// Requests in the application's hands, per socket, and the most seen.
#[derive(Default)]
struct InFlight {
    now: Mutex<HashMap<CarrierId, usize>>,
    most: AtomicUsize,
    answered: AtomicU64,
}

impl InFlight {
    fn enter(&self, socket: CarrierId) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        let count = now.entry(socket).or_default();
        *count += 1;
        self.most.fetch_max(*count, Ordering::SeqCst);
    }

    fn leave(&self, socket: CarrierId) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = now.get_mut(&socket) {
            *count -= 1;
            if *count == 0 {
                now.remove(&socket);
            }
        }
        self.answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// `GET /work/`: answers `{"done": true}` after [`ROUTE_TIME`].
struct Slow(Arc<InFlight>);

impl Routes for Slow {
    async fn route(&self, request: Request, socket: SocketHandle) -> Response {
        self.0.enter(socket.id());
        tokio::time::sleep(ROUTE_TIME).await;
        self.0.leave(socket.id());
        match request.path() {
            "/work/" => Response::ok(json!({"done": true})),
            _ => Response::not_found(),
        }
    }
}

fn request(key: u64) -> Message {
    Message::text(
        json!({"type": "request", "key": key, "method": "GET", "href": "/work/"}).to_string(),
    )
}

/// What one flooding client saw.
#[derive(Debug, Default)]
struct Flooded {
    sent: u64,
    answered: u64,
    /// The close code, if the server closed it.
    closed_with: Option<u16>,
}

/// Requests a flooder sends ahead of its answers, at most: thousands of
/// times the server's in-flight limit (a flood), yet a bounded time to
/// answer them all at the end.
const AHEAD: u64 = 2_000;

/// Sends requests as fast as the socket takes them until `stop`, reading
/// answers concurrently; then waits (bounded) for the answers still due.
async fn flood(client: Client, stop: Arc<AtomicBool>) -> Flooded {
    let (mut sink, mut stream) = client.split();
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let writer = {
        let (sent, answered, stop) = (sent.clone(), answered.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let key = sent.load(Ordering::Relaxed);
                if key >= answered.load(Ordering::Relaxed) + AHEAD {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                if sink.send(request(key)).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            sink
        })
    };
    let mut seen = Flooded::default();
    loop {
        let writing = !writer.is_finished();
        let due = sent.load(Ordering::Relaxed);
        if !writing && seen.answered >= due {
            break;
        }
        match tokio::time::timeout(STEP, stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if answer["type"] == "response" && answer["status"] == 200 {
                    seen.answered += 1;
                    answered.store(seen.answered, Ordering::Relaxed);
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                seen.closed_with = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    seen.sent = sent.load(Ordering::Relaxed);
    if let Ok(mut sink) = writer.await {
        let _ = tokio::time::timeout(STEP, sink.close(None)).await;
    }
    drop(stream);
    seen
}

/// Sends one request at a time and counts events between answers.
async fn behave(mut client: Client, stop: Arc<AtomicBool>) -> Result<(u64, Vec<u64>), String> {
    let (mut answers, mut events) = (0u64, Vec::new());
    let mut key = 0u64;
    while !stop.load(Ordering::Relaxed) {
        client
            .send(request(key))
            .await
            .map_err(|e| format!("well-behaved client: sending: {e}"))?;
        loop {
            let message = tokio::time::timeout(STEP, client.next())
                .await
                .map_err(|_| {
                    format!("well-behaved client: no answer to request {key} within 5 s")
                })?;
            let Some(Ok(Message::Text(text))) = message else {
                continue;
            };
            let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if frame["type"] == "event" {
                events.push(frame["payload"]["data"].as_u64().unwrap_or(u64::MAX));
            } else if frame["key"] == key {
                answers += 1;
                break;
            }
        }
        key += 1;
    }
    // The events published up to the stop, still in flight.
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(300), client.next()).await
    {
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if frame["type"] == "event" {
                events.push(frame["payload"]["data"].as_u64().unwrap_or(u64::MAX));
            }
        }
    }
    let _ = client.close(None).await;
    Ok((answers, events))
}

pub async fn run(profile: Profile) -> Row {
    let flooders = profile.pick(8, 64);
    let seconds = profile.pick(4, 60);
    let in_flight = 8;
    let mut row = Row::new(
        "clients flooding requests",
        format!(
            "{flooders} clients sending requests without pause for {seconds} s (route {ROUTE_TIME:?}), 1 client one at a time, 50 events/s"
        ),
        format!("floods; in-flight limit {in_flight}, no rate limit; then one flooder against the default rate limit"),
    );
    let counts = Arc::new(InFlight::default());
    let channel = match MemoryChannel::named("soak/flood") {
        Ok(channel) => channel,
        Err(e) => {
            row.check(false, format!("cannot open the channel: {e}"));
            return row;
        }
    };
    if let Err(e) = channel.kickoff() {
        row.check(false, format!("cannot start the channel: {e}"));
        return row;
    }
    let options = SocketOptions::new(["tick"])
        .on_message(Multiplexer::new(Slow(counts.clone())))
        .limits(
            Limits::default()
                .max_in_flight(in_flight)
                .max_messages_per_second(None),
        );
    let server = match loopback::start(channel.clone(), options, None) {
        Ok(server) => server,
        Err(e) => {
            row.check(false, format!("cannot start the server: {e}"));
            return row;
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut flooding = Vec::new();
    for n in 0..flooders {
        match connect(server.addr, n as u64, None).await {
            Ok(client) => flooding.push(tokio::spawn(flood(client, stop.clone()))),
            Err(e) => row.check(false, format!("flooder {n} cannot connect: {e}")),
        }
    }
    let polite = match connect(server.addr, 10_000, None).await {
        Ok(client) => tokio::spawn(behave(client, stop.clone())),
        Err(e) => {
            row.check(
                false,
                format!("the well-behaved client cannot connect: {e}"),
            );
            return row;
        }
    };
    let subscribed = wait_until(STEP, || channel.subscriber_count("tick") == flooders + 1).await;
    row.check(subscribed, "every client subscribed within 5 s");

    // Publish 50 events/s; sample memory at the half and at the end.
    let started = Instant::now();
    let total = Duration::from_secs(seconds);
    let mut published = 0u64;
    let mut half = None;
    while started.elapsed() < total {
        match channel.publish("tick", &published).await {
            Ok(()) => published += 1,
            Err(e) => row.check(false, format!("publish failed: {e}")),
        }
        if half.is_none() && started.elapsed() >= total / 2 {
            half = Some((rss_kib(), counts.answered.load(Ordering::SeqCst)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    channel.flush().await;

    let mut sent = 0;
    for (n, flooder) in flooding.into_iter().enumerate() {
        match flooder.await {
            Ok(seen) => {
                sent += seen.sent;
                row.check(
                    seen.closed_with.is_none(),
                    format!(
                        "flooder {n} was closed ({:?}) without a rate limit",
                        seen.closed_with
                    ),
                );
                row.check(
                    seen.answered == seen.sent,
                    format!(
                        "flooder {n}: {} answers to {} requests",
                        seen.answered, seen.sent
                    ),
                );
            }
            Err(e) => row.check(false, format!("flooder {n} panicked: {e}")),
        }
    }
    // Every request answered: the server holds nothing for the flood now.
    let end = (rss_kib(), counts.answered.load(Ordering::SeqCst));
    match polite.await {
        Ok(Ok((answers, events))) => {
            row.delivered += answers + events.len() as u64;
            let expected: Vec<u64> = (0..published).collect();
            let mut got = events.clone();
            got.sort_unstable();
            got.dedup();
            row.duplicates += (events.len() - got.len()) as u64;
            row.lost += expected
                .iter()
                .filter(|n| got.binary_search(n).is_err())
                .count() as u64;
            row.check(
                events.windows(2).all(|w| w[0] < w[1]),
                "the well-behaved client's events arrive in order",
            );
            row.note(format!(
                "the well-behaved client: {answers} answers, {} of {published} events",
                events.len()
            ));
        }
        Ok(Err(e)) => row.check(false, e),
        Err(e) => row.check(false, format!("the well-behaved client panicked: {e}")),
    }
    row.published = published;
    row.check(
        row.lost == 0 && row.duplicates == 0,
        "no event lost or repeated",
    );

    let most = counts.most.load(Ordering::SeqCst);
    row.check(
        most <= in_flight,
        format!("{most} requests of one socket in the handler at once, limit {in_flight}"),
    );
    if let Some((half_kib, half_answered)) = half {
        let answered = end.1.saturating_sub(half_answered).max(1);
        let grown = end.0.saturating_sub(half_kib) * 1024;
        let per_request = grown as f64 / answered as f64;
        row.note(format!(
            "{sent} requests sent and answered; from the half to the last answer, {answered} answered with memory {half_kib} -> {} KiB ({per_request:.2} bytes per request)",
            end.0
        ));
        // A flood buffered by the server grows by the request (about 100
        // bytes each); allocators warm up by a constant (350-450 KiB here,
        // whether 37 000 or 150 000 requests were answered).
        let bound = WARM_UP + 8 * answered;
        row.check(
            grown <= bound,
            format!(
                "memory grew {} KiB while {answered} requests were answered (bound 1 MiB + 8 bytes per request = {} KiB)",
                grown / 1024,
                bound / 1024
            ),
        );
    }
    row.note(format!(
        "at most {most} requests of one socket in the handler (limit {in_flight})"
    ));

    rate_limited(&mut row, channel.clone()).await;
    drop(server);
    channel.stop().await;
    row
}

/// One flooder against the default limits (1 000 messages per second):
/// closed with 1008.
async fn rate_limited(row: &mut Row, channel: MemoryChannel) {
    let counts = Arc::new(InFlight::default());
    let options = SocketOptions::new(["tick"]).on_message(Multiplexer::new(Slow(counts)));
    let server = match loopback::start(channel, options, None) {
        Ok(server) => server,
        Err(e) => return row.check(false, format!("cannot start the rate-limited server: {e}")),
    };
    let client = match connect(server.addr, 20_000, None).await {
        Ok(client) => client,
        Err(e) => {
            return row.check(
                false,
                format!("cannot connect to the rate-limited server: {e}"),
            )
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let seen = flood(client, stop).await;
    timer.abort();
    row.check(
        seen.closed_with == Some(close_code::POLICY),
        format!(
            "a flooder over the default rate limit is closed with 1008 (got {:?} after {} requests)",
            seen.closed_with, seen.sent
        ),
    );
    row.note(format!(
        "against the default rate limit: closed with {:?} after {} requests",
        seen.closed_with, seen.sent
    ));
}
