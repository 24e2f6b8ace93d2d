//! Scenario 1, churn: many websocket connect / subscribe / disconnect
//! cycles while events flow. Afterwards the channel's subscription tables
//! must be empty, every served connection must have ended, the clients that
//! stayed connected must have received every event once, in order, and the
//! live heap must not have grown with the cycles between the run's two late
//! points, half-way and the end (`heap.rs`: live allocations flat, live
//! bytes within 2 B per cycle beyond what buffers reaching a new high-water
//! mark add). A second row runs the same churn with a leak injected on
//! purpose, and passes only if that check catches it.
//!
//! The server here is the tokio runtime crate's `websocket::accept` and
//! `serve` behind a minimal accept loop that only counts outcomes, so that
//! the test's own bookkeeping does not grow with the number of cycles and
//! blur the memory figure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use tbone_dispatch::{HistoryLimits, SocketOptions};
use tbone_dispatch_tokio::MemoryChannel;

use super::heap::{live_heap, HeapGrowth, LiveHeap};
use super::loopback::{self, connect, wait_until, Client, STEP};
use super::{rss_kib, Profile, Row};

/// What the leaking row leaks per cycle: a few bytes, as a forgotten
/// small allocation per connection would.
pub const INJECTED_LEAK_BYTES: usize = 8;

/// The churn row: the scenario, with its leak check.
pub async fn run(profile: Profile) -> Row {
    let (mut row, growth) = churn_and_measure(profile, "churn", "soak/churn", 0).await;
    if let Some(growth) = growth {
        row.check(
            !growth.leaks(),
            format!(
                "the live heap grew with the cycles, as a leak does: {}",
                growth.describe()
            ),
        );
    }
    row
}

/// The same churn with [`INJECTED_LEAK_BYTES`] leaked per cycle: passes
/// only if the churn row's leak check catches it (the other checks hold as
/// in the churn row).
pub async fn injected_leak_is_caught(profile: Profile) -> Row {
    let (mut row, growth) = churn_and_measure(
        profile,
        "churn: injected leak",
        "soak/churn-leaking",
        INJECTED_LEAK_BYTES,
    )
    .await;
    row.faults.push_str(&format!(
        "; {INJECTED_LEAK_BYTES} B leaked per cycle on purpose"
    ));
    if let Some(growth) = growth {
        row.check(
            growth.leaks(),
            format!(
                "{INJECTED_LEAK_BYTES} B leaked per cycle, and the leak check missed it: {}",
                growth.describe()
            ),
        );
    }
    row
}

/// Runs the churn scenario on channel `name`, leaking `leak` bytes per
/// cycle; returns its row (every check but the leak check) and the live
/// heap's growth between half-way and the end, if it was measured.
async fn churn_and_measure(
    profile: Profile,
    scenario: &str,
    name: &str,
    leak: usize,
) -> (Row, Option<HeapGrowth>) {
    let cycles = profile.pick(5_000u64, 100_000);
    let workers = 64u64;
    let steady_clients = 8;
    let mut row = Row::new(
        scenario,
        format!(
            "{cycles} connect/subscribe/disconnect cycles, {workers} at a time, {steady_clients} steady clients, 200 events/s"
        ),
        "half the cycles close cleanly, half drop the TCP connection",
    );

    let channel = match MemoryChannel::named(name) {
        Ok(channel) => channel,
        Err(e) => {
            row.check(false, format!("opening the channel: {e}"));
            return (row, None);
        }
    };
    if let Err(e) = channel.kickoff() {
        row.check(false, format!("kickoff: {e}"));
        return (row, None);
    }
    let options = SocketOptions::new(["tick"]).control_messages(true);
    let server = match loopback::start(channel.clone(), options, None) {
        Ok(server) => server,
        Err(e) => {
            row.check(false, format!("starting the server: {e}"));
            return (row, None);
        }
    };
    let (addr, served) = (server.addr, server.served.clone());

    // Clients that stay for the whole churn and must see every event.
    let mut steady = Vec::new();
    for i in 0..steady_clients {
        match connect(addr, i, None).await {
            Ok(client) => steady.push(client),
            Err(e) => {
                row.check(false, format!("steady client {i}: {e}"));
                return (row, None);
            }
        }
    }
    let subscribed = wait_until(STEP, || {
        channel.subscriber_count("tick") == steady_clients as usize
    })
    .await;
    row.check(
        subscribed,
        "the steady clients were not all subscribed within 5 s",
    );
    // u64::MAX until the publisher stops; then the number of events the
    // readers must have.
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let delivered = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = steady
        .into_iter()
        .map(|client| tokio::spawn(read_ticks(client, target.clone(), delivered.clone())))
        .collect();
    let flow = Flow::start(&channel);

    // Quiet: every churned connection has ended on the server and left the
    // channel, the flow is held and the steady clients have read all of
    // it. Nothing started before is still running, so the live heap holds
    // only what stays.
    let quiet = || {
        served.ended.load(Ordering::SeqCst) + steady_clients
            == served.accepted.load(Ordering::SeqCst)
            && channel.carrier_count() == steady_clients as usize
            && flow.is_held()
            && delivered.load(Ordering::SeqCst) >= flow.published() * steady_clients
    };

    // A warm-up brings the runtime's and the allocator's pools to their
    // working size, and the flow fills the channel's history. The leak check compares the live heap half-way through
    // the churn proper and at its end: a leak grows between the two,
    // pools reaching their high-water mark do not.
    let rss_cold = rss_kib();
    let warm_up = 1_000;
    let warm_failures = run_cycles(addr, 0, warm_up, workers, leak).await;
    // The channel keeps its latest events for clients that resume (its
    // history, default limits): a cache that fills with the flow, not with
    // the cycles. The churn proper starts once it is full.
    let history = HistoryLimits::default().events as u64;
    let filled = wait_until(Duration::from_secs(60), || flow.published() > history).await;
    row.check(
        filled,
        format!(
            "the flow did not publish the {history} events of the channel's history within 60 s"
        ),
    );
    let rss_before = rss_kib();
    let started = Instant::now();
    let half = cycles / 2;
    let mut failures = run_cycles(addr, warm_up, half, workers, leak).await;
    let (heap_half, rss_half) = (heap_when_quiet(&flow, quiet).await, rss_kib());
    failures += run_cycles(addr, warm_up + half, cycles - half, workers, leak).await;
    let (heap_end, rss_end) = (heap_when_quiet(&flow, quiet).await, rss_kib());
    let churn_time = started.elapsed();
    let growth = match (heap_half, heap_end) {
        (Ok(from), Ok(to)) => {
            let growth = HeapGrowth {
                from,
                to,
                cycles: cycles - half,
            };
            row.note(format!(
                "leak check, half-way to the end: {}",
                growth.describe()
            ));
            Some(growth)
        }
        (Err(e), _) | (_, Err(e)) => {
            row.check(false, e);
            None
        }
    };
    let (published, refused) = flow.stop().await;

    let settled = wait_until(STEP, || {
        served.ended.load(Ordering::SeqCst) + steady_clients
            == served.accepted.load(Ordering::SeqCst)
    })
    .await;
    let accepted = served.accepted.load(Ordering::SeqCst);
    let ended = served.ended.load(Ordering::SeqCst);
    row.check(
        settled,
        format!(
            "{ended} of {} churned connections ended on the server",
            accepted.saturating_sub(steady_clients)
        ),
    );
    row.check(
        channel.subscription_count() == steady_clients as usize
            && channel.carrier_count() == steady_clients as usize,
        format!(
            "after the churn the channel holds {} subscriptions of {} carriers; only the {steady_clients} steady clients should remain",
            channel.subscription_count(),
            channel.carrier_count()
        ),
    );

    // The steady clients: every event exactly once, in order; then they
    // leave too and the tables must be empty.
    target.store(published, Ordering::SeqCst);
    for reader in readers {
        match reader.await {
            Ok(ticks) => {
                row.delivered += ticks.received;
                row.duplicates += ticks.duplicates;
                row.lost += published.saturating_sub(ticks.distinct);
                row.check(
                    ticks.out_of_order == 0,
                    format!(
                        "a steady client got {} events out of order",
                        ticks.out_of_order
                    ),
                );
                row.check(
                    ticks.ended_early.is_none(),
                    format!(
                        "a steady client's connection ended: {:?}",
                        ticks.ended_early
                    ),
                );
            }
            Err(e) => row.check(false, format!("a steady reader failed: {e}")),
        }
    }
    let empty = wait_until(STEP, || {
        channel.subscription_count() == 0
            && channel.carrier_count() == 0
            && served.ended.load(Ordering::SeqCst) == served.accepted.load(Ordering::SeqCst)
    })
    .await;
    row.check(
        empty,
        format!(
            "after every client left: {} subscriptions, {} carriers, {} of {} connections ended",
            channel.subscription_count(),
            channel.carrier_count(),
            served.ended.load(Ordering::SeqCst),
            served.accepted.load(Ordering::SeqCst)
        ),
    );
    row.check(
        row.lost == 0,
        format!("steady clients lost {} events", row.lost),
    );
    row.check(
        row.duplicates == 0,
        format!("steady clients got {} duplicates", row.duplicates),
    );
    row.note(format!(
        "server: {} connections accepted, {} closed by their client, {} ended otherwise (TCP dropped without a close frame), {} dropped for overflow",
        served.accepted.load(Ordering::SeqCst),
        served.peer_closed.load(Ordering::SeqCst),
        served.other_reason.load(Ordering::SeqCst),
        served.overflow.load(Ordering::SeqCst)
    ));

    row.published = published;
    row.errors = refused;
    row.check(refused == 0, format!("{refused} publishes refused"));
    row.check(
        warm_failures + failures == 0,
        format!(
            "{} client cycles failed (connect, handshake or first event)",
            warm_failures + failures
        ),
    );
    row.check(
        served.handshake_failed.load(Ordering::SeqCst) == 0,
        "some server handshakes failed",
    );

    drop(server);
    let _ = channel.stop().await;
    row.note(format!(
        "{:.0} cycles/s; resident memory (not checked: pools, not leaks, move it) {rss_cold} KiB before a warm-up of {warm_up} cycles, {rss_before} KiB after it, {rss_half} KiB half-way, {rss_end} KiB at the end",
        cycles as f64 / churn_time.as_secs_f64(),
    ));
    (row, growth)
}

/// What a steady client received.
struct Ticks {
    received: u64,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    ended_early: Option<String>,
}

/// Runs `count` cycles numbered from `first`, `workers` at a time, each
/// leaking `leak` bytes; returns how many failed.
async fn run_cycles(server: SocketAddr, first: u64, count: u64, workers: u64, leak: usize) -> u64 {
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            tokio::spawn(async move {
                let mut failed = 0;
                let mut n = first + worker;
                while n < first + count {
                    if let Err(e) = cycle(server, n, leak).await {
                        tracing::error!(cycle = n, "churn cycle failed: {e}");
                        failed += 1;
                    }
                    n += workers;
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        failed += task.await.unwrap_or(1);
    }
    failed
}

/// One cycle: connect (subscribed to `tick` by the server), subscribe to a
/// room by control message, wait for an event, then leave: cleanly with a
/// close frame on even cycles, by dropping the connection on odd ones.
/// Leaks `leak` bytes (the leak check's own test).
async fn cycle(server: SocketAddr, n: u64, leak: usize) -> Result<(), String> {
    if leak > 0 {
        // Opaque to the optimizer, which would otherwise drop an allocation
        // nothing reads.
        std::hint::black_box(Box::leak(vec![0u8; leak].into_boxed_slice()));
    }
    let mut client = connect(server, n, None).await?;
    let subscribe = format!(r#"{{"action":"subscribe","event":"room-{}"}}"#, n % 16);
    client
        .send(Message::text(subscribe))
        .await
        .map_err(|e| format!("sending a control message: {e}"))?;
    let first = tokio::time::timeout(STEP, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(_))) => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("reading: {e}")),
                None => return Err("the server ended the connection".to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no event within 5 s".to_string())?;
    first?;
    if n.is_multiple_of(2) {
        let _ = client.close(None).await;
        let drained = tokio::time::timeout(STEP, async {
            while let Some(Ok(_)) = client.next().await {}
        })
        .await;
        drained.map_err(|_| "the server did not finish the close handshake".to_string())?;
    }
    Ok(())
}

/// The live heap once the churn is `quiet` with `flow` held (see
/// [`live_heap`]).
async fn heap_when_quiet(flow: &Flow, quiet: impl FnMut() -> bool) -> Result<LiveHeap, String> {
    flow.hold(true);
    let rested = wait_until(STEP, quiet).await;
    let heap = live_heap();
    flow.hold(false);
    if !rested {
        return Err("the churn did not come to rest within 5 s of its cycles (connections still open, or events unread)".to_string());
    }
    heap
}

/// The steady flow of `tick` events (200/s), which a measurement can hold
/// still.
struct Flow {
    running: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Flow {
    /// Starts publishing on `channel`.
    fn start(channel: &MemoryChannel) -> Flow {
        let running = Arc::new(AtomicBool::new(true));
        let hold = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let channel = channel.clone();
            let (running, hold, held, published) = (
                running.clone(),
                hold.clone(),
                held.clone(),
                published.clone(),
            );
            async move {
                let (mut accepted, mut refused) = (0u64, 0u64);
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                while running.load(Ordering::SeqCst) {
                    tick.tick().await;
                    // Acknowledged only here, between publishes: once
                    // `held` is seen, no publish is under way.
                    let holding = hold.load(Ordering::SeqCst);
                    held.store(holding, Ordering::SeqCst);
                    if holding {
                        continue;
                    }
                    match channel.publish("tick", &accepted).await {
                        Ok(()) => {
                            accepted += 1;
                            published.store(accepted, Ordering::SeqCst);
                        }
                        Err(e) => {
                            tracing::error!(%e, "publish refused during churn");
                            refused += 1;
                        }
                    }
                }
                (accepted, refused)
            }
        });
        Flow {
            running,
            hold,
            held,
            published,
            task,
        }
    }

    /// Holds the flow (`true`) or lets it go on.
    fn hold(&self, hold: bool) {
        if !hold {
            self.held.store(false, Ordering::SeqCst);
        }
        self.hold.store(hold, Ordering::SeqCst);
    }

    /// Whether the publisher has seen the hold and publishes no more.
    fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Events accepted so far.
    fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Stops the flow; returns how many publishes were accepted and
    /// refused.
    async fn stop(self) -> (u64, u64) {
        self.running.store(false, Ordering::SeqCst);
        self.task.await.unwrap_or((0, 1))
    }
}

/// Reads `tick` events (their data is the sequence number) until it has
/// seen the last one the publisher announces through `target`, counting
/// each into `delivered`.
async fn read_ticks(
    mut client: Client,
    target: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
) -> Ticks {
    let mut ticks = Ticks {
        received: 0,
        distinct: 0,
        duplicates: 0,
        out_of_order: 0,
        ended_early: None,
    };
    let mut next = 0u64;
    let mut quiet_since = Instant::now();
    loop {
        let target_now = target.load(Ordering::SeqCst);
        if next >= target_now {
            break;
        }
        if target_now != u64::MAX && quiet_since.elapsed() > STEP {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), client.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(Message::Text(text)))) => {
                quiet_since = Instant::now();
                ticks.received += 1;
                delivered.fetch_add(1, Ordering::SeqCst);
                let seq = serde_json::from_str::<serde_json::Value>(text.as_str())
                    .ok()
                    .and_then(|frame| frame["payload"]["data"].as_u64());
                match seq {
                    Some(seq) if seq == next => {
                        ticks.distinct += 1;
                        next += 1;
                    }
                    Some(seq) if seq < next => ticks.duplicates += 1,
                    _ => {
                        ticks.out_of_order += 1;
                        next = seq.map_or(next, |s| s + 1);
                        ticks.distinct += 1;
                    }
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                ticks.ended_early = Some(e.to_string());
                break;
            }
            Ok(None) => {
                ticks.ended_early = Some("end of stream".to_string());
                break;
            }
        }
    }
    let _ = client.close(None).await;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, client.next()).await {}
    ticks
}
