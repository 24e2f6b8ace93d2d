//! Scenario 1, churn: many websocket connect / subscribe / disconnect
//! cycles while events flow. Afterwards the channel's subscription tables
//! must be empty, every served connection must have ended, the clients that
//! stayed connected must have received every event once, in order, and
//! resident memory must be back within 10% of its level before the churn.
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
use tbone_dispatch::SocketOptions;
use tbone_dispatch_tokio::MemoryChannel;

use super::loopback::{self, connect, wait_until, Client, STEP};
use super::{rss_kib, Profile, Row};

pub async fn run(profile: Profile) -> Row {
    let cycles = profile.pick(5_000u64, 100_000);
    let workers = 64u64;
    let steady_clients = 8;
    let mut row = Row::new(
        "churn",
        format!(
            "{cycles} connect/subscribe/disconnect cycles, {workers} at a time, {steady_clients} steady clients, 200 events/s"
        ),
        "half the cycles close cleanly, half drop the TCP connection",
    );

    let channel = match MemoryChannel::named("soak/churn") {
        Ok(channel) => channel,
        Err(e) => {
            row.check(false, format!("opening the channel: {e}"));
            return row;
        }
    };
    if let Err(e) = channel.kickoff() {
        row.check(false, format!("kickoff: {e}"));
        return row;
    }
    let options = SocketOptions::new(["tick"]).control_messages(true);
    let server = match loopback::start(channel.clone(), options, None) {
        Ok(server) => server,
        Err(e) => {
            row.check(false, format!("starting the server: {e}"));
            return row;
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
                return row;
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
    let readers: Vec<_> = steady
        .into_iter()
        .map(|client| tokio::spawn(read_ticks(client, target.clone())))
        .collect();

    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = tokio::spawn({
        let (channel, publishing) = (channel.clone(), publishing.clone());
        async move {
            let (mut accepted, mut refused) = (0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while publishing.load(Ordering::SeqCst) {
                tick.tick().await;
                match channel.publish("tick", &accepted).await {
                    Ok(()) => accepted += 1,
                    Err(e) => {
                        tracing::error!(%e, "publish refused during churn");
                        refused += 1;
                    }
                }
            }
            (accepted, refused)
        }
    });

    // A warm-up brings the runtime's and the allocator's pools to their
    // working size; the baseline is taken after it, before the churn proper.
    let rss_cold = rss_kib();
    let warm_up = 1_000;
    let warm_failures = churn(addr, 0, warm_up, workers).await;
    let rss_before = rss_kib();
    let started = Instant::now();
    let failures = churn(addr, warm_up, cycles, workers).await;
    let churn_time = started.elapsed();
    publishing.store(false, Ordering::SeqCst);
    let (published, refused) = publisher.await.unwrap_or((0, 1));

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
    let rss_after = rss_kib();
    row.note(format!(
        "{:.0} cycles/s; resident memory before the churn {rss_before} KiB (after a warm-up of {warm_up} cycles; {rss_cold} KiB before it), after {rss_after} KiB ({:+.1}%)",
        cycles as f64 / churn_time.as_secs_f64(),
        (rss_after as f64 / rss_before as f64 - 1.0) * 100.0
    ));
    row.check(
        rss_after as f64 <= rss_before as f64 * 1.10,
        format!("resident memory grew from {rss_before} KiB to {rss_after} KiB, over 10%"),
    );
    row
}

/// What a steady client received.
struct Ticks {
    received: u64,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    ended_early: Option<String>,
}

/// Runs `count` cycles numbered from `first`, `workers` at a time; returns
/// how many failed.
async fn churn(server: SocketAddr, first: u64, count: u64, workers: u64) -> u64 {
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            tokio::spawn(async move {
                let mut failed = 0;
                let mut n = first + worker;
                while n < first + count {
                    if let Err(e) = cycle(server, n).await {
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
async fn cycle(server: SocketAddr, n: u64) -> Result<(), String> {
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

/// Reads `tick` events (their data is the sequence number) until it has
/// seen the last one the publisher announces through `target`.
async fn read_ticks(mut client: Client, target: Arc<AtomicU64>) -> Ticks {
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
