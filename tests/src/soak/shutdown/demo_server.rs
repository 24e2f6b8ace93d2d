//! Row (b), the demo server shut down gracefully under load: see the
//! module documentation of `shutdown`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use serde_json::json;
use tbone_dispatch::close_code;
use tbone_dispatch_demo::MemoryState;
use tbone_dispatch_tokio::model::RESOURCE_CREATE;

use super::audit::{acked_total, errors_total, parse_entry, Audit, Ledger};
use super::clients::{connect_all, join_readers, read_client, read_sse};
use super::http::Http;
use super::{check_tasks, tasks_alive, wait_until, STEP};
use crate::soak::{Profile, Row};

/// Creates entries `w<id>-0`, `w<id>-1`, .. through the REST API, one every
/// `every` until `flat_out` is set, then as fast as the server answers,
/// until a request fails. An entry is owed to the clients if its 201
/// arrived before `shutdown` was set.
async fn write_entries(
    addr: SocketAddr,
    id: usize,
    every: Duration,
    flat_out: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
) -> Ledger {
    let mut ledger = Ledger::default();
    let mut http = match Http::connect(addr).await {
        Ok(http) => http,
        Err(e) => {
            ledger.errors.push(format!("connecting: {e}"));
            return ledger;
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0.. {
        if !flat_out.load(Ordering::SeqCst) {
            tick.tick().await;
        }
        let body = json!({"author": "soak", "text": format!("w{id}-{n}")}).to_string();
        match tokio::time::timeout(STEP, http.post("/api/entries/", &body)).await {
            Ok(Ok((201, _))) => ledger.acked.push((n, !shutdown.load(Ordering::SeqCst))),
            Ok(Ok((status, body))) => {
                ledger.errors.push(format!("{status}: {body}"));
                break;
            }
            Ok(Err(e)) => {
                ledger.errors.push(e.to_string());
                break;
            }
            Err(_) => {
                ledger.errors.push(format!("no answer within {STEP:?}"));
                break;
            }
        }
    }
    ledger
}

/// The load of one demo-server cycle.
#[derive(Clone, Copy)]
struct DemoLoad {
    clients: usize,
    sse_clients: usize,
    writers: usize,
    /// Each writer's pace during the flow.
    every: Duration,
    flow: Duration,
    /// Then the writers go flat out, and the server is told to shut down
    /// once this many more entries were acknowledged.
    burst: u64,
}

/// Part (b): see the module documentation.
pub async fn demo_server(profile: Profile) -> Row {
    let load = DemoLoad {
        clients: profile.pick(32, 1000),
        sse_clients: profile.pick(4, 20),
        writers: 4,
        every: Duration::from_millis(profile.pick(4, 40)),
        flow: Duration::from_millis(profile.pick(1500, 3000)),
        burst: profile.pick(200, 100),
    };
    let cycles = profile.pick(1, 3);
    let mut row = Row::new(
        "shutdown: demo server",
        format!(
            "{cycles} x ({} websocket clients on /ws/ and {} on /sse/, {} REST writers at 1 POST/{} ms each for {:.1} s, then flat out)",
            load.clients,
            load.sse_clients,
            load.writers,
            load.every.as_millis(),
            load.flow.as_secs_f64()
        ),
        format!(
            "graceful shutdown of the demo server mid-flow, {} entries after going flat out",
            load.burst
        ),
    );
    let baseline = tasks_alive();
    for cycle in 0..cycles {
        if !demo_cycle(&mut row, cycle, load).await {
            break;
        }
    }
    check_tasks(&mut row, baseline, "after every demo server stopped").await;
    row
}

async fn demo_cycle(row: &mut Row, cycle: usize, load: DemoLoad) -> bool {
    let DemoLoad {
        clients,
        sse_clients,
        writers,
        every,
        flow,
        burst,
    } = load;
    let state = match MemoryState::memory(&format!("soak/shutdown/demo-{cycle}")) {
        Ok(state) => state,
        Err(e) => {
            row.check(false, format!("cycle {cycle}: {e}"));
            return false;
        }
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(e) => {
            row.check(false, format!("cycle {cycle}: binding: {e}"));
            return false;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            row.check(false, format!("cycle {cycle}: {e}"));
            return false;
        }
    };
    let (shut_down, shutting_down) = oneshot::channel::<()>();
    let server = tokio::spawn(tbone_dispatch_demo::serve(
        listener,
        state.clone(),
        async move {
            let _ = shutting_down.await;
        },
    ));
    let connected = match connect_all(&format!("ws://{addr}/ws/"), clients).await {
        Ok(connected) => connected,
        Err(e) => {
            row.check(false, format!("cycle {cycle}: {e}"));
            return false;
        }
    };
    let mut sse_readers = Vec::new();
    for _ in 0..sse_clients {
        match read_sse(addr).await {
            Ok(reader) => sse_readers.push(reader),
            Err(e) => {
                row.check(false, format!("cycle {cycle}: {e}"));
                return false;
            }
        }
    }
    let channel = state.channel().clone();
    let subscribed = wait_until(STEP, || {
        channel.subscriber_count(RESOURCE_CREATE) == clients + sse_clients
    })
    .await;
    row.check(
        subscribed,
        format!(
            "cycle {cycle}: {} of {} websocket and SSE clients subscribed",
            channel.subscriber_count(RESOURCE_CREATE),
            clients + sse_clients
        ),
    );
    let readers: Vec<_> = connected
        .into_iter()
        .map(|client| tokio::spawn(read_client(client, parse_entry)))
        .collect();

    let (flat_out, shutdown_begun) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let writing: Vec<_> = (0..writers)
        .map(|id| {
            tokio::spawn(write_entries(
                addr,
                id,
                every,
                flat_out.clone(),
                shutdown_begun.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(flow).await;
    let before_burst = channel.stats().published;
    flat_out.store(true, Ordering::SeqCst);
    let burst_done = wait_until(STEP, || channel.stats().published >= before_burst + burst).await;
    row.check(
        burst_done,
        format!(
            "cycle {cycle}: the writers did not create {burst} entries flat out within {STEP:?}"
        ),
    );

    // Back to the paced flow: writes during the shutdown go on, but at a
    // pace the clients keep up with, so that none is dropped as too slow.
    flat_out.store(false, Ordering::SeqCst);
    shutdown_begun.store(true, Ordering::SeqCst);
    let _ = shut_down.send(());
    let started = Instant::now();
    match tokio::time::timeout(STEP, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => row.check(false, format!("cycle {cycle}: the server failed: {e}")),
        Ok(Err(e)) => row.check(false, format!("cycle {cycle}: the server task failed: {e}")),
        Err(_) => row.check(
            false,
            format!("cycle {cycle}: the server did not return within {STEP:?} of the shutdown"),
        ),
    }
    let shutdown_time = started.elapsed();
    row.check(
        channel.is_stopped(),
        format!("cycle {cycle}: the demo's channel was not stopped"),
    );
    let mut ledgers = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP;
    for task in writing {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(ledger)) => ledgers.push(ledger),
            Ok(Err(e)) => row.check(false, format!("cycle {cycle}: a writer failed: {e}")),
            Err(_) => row.check(
                false,
                format!("cycle {cycle}: a writer was still writing after the shutdown"),
            ),
        }
    }
    let logs = join_readers(row, readers, close_code::GOING_AWAY).await;
    let mut audit = Audit::default();
    for log in &logs {
        audit.add(&ledgers, &log.events);
    }
    audit.report(
        row,
        &format!("cycle {cycle}: {} websocket clients", logs.len()),
    );
    let mut sse_audit = Audit::default();
    let (mut sse_ended, mut sse_errors) = (0, Vec::new());
    let deadline = tokio::time::Instant::now() + STEP;
    for reader in sse_readers {
        if let Ok(Ok(log)) = tokio::time::timeout_at(deadline, reader).await {
            sse_ended += 1;
            sse_errors.extend(log.error.clone());
            sse_audit.add(&ledgers, &log.events);
        }
    }
    row.check(
        sse_ended == sse_clients && sse_errors.is_empty(),
        format!(
            "cycle {cycle}: {sse_ended} of {sse_clients} SSE streams ended cleanly within {STEP:?} of the shutdown; errors {sse_errors:?}"
        ),
    );
    sse_audit.report(row, &format!("cycle {cycle}: {sse_clients} SSE clients"));
    row.check(
        channel.subscription_count() == 0,
        format!(
            "cycle {cycle}: {} subscriptions left after the shutdown",
            channel.subscription_count()
        ),
    );
    let stats = channel.stats();
    row.check(
        stats.carriers_dropped == 0,
        format!(
            "cycle {cycle}: {} clients dropped for overflow: the load outran them",
            stats.carriers_dropped
        ),
    );
    let owed: u64 = ledgers.iter().map(|l| l.owed().count() as u64).sum();
    row.published += acked_total(&ledgers);
    row.errors += errors_total(&ledgers);
    if cycle == 0 {
        row.note(format!(
            "cycle 0: {} entries created, {owed} acknowledged before the shutdown; the server returned {:.1} ms after the signal",
            acked_total(&ledgers),
            shutdown_time.as_secs_f64() * 1e3
        ));
    }
    true
}
