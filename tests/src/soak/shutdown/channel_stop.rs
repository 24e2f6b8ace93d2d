//! Row (a), channel stop under load: see the module documentation of
//! `shutdown`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbone_dispatch::{close_code, CarrierConfig, SocketOptions};
use tbone_dispatch_tokio::MemoryChannel;

use super::audit::{acked_total, errors_total, parse_event, Audit, Ledger};
use super::clients::{connect_all, join_readers, read_client};
use super::server::Server;
use super::{check_tasks, tasks_alive, wait_until, CARRIER_CAPACITY, EVENT, STEP};
use crate::soak::{Profile, Row};

/// How long the channel-stop row's server gives each socket to write what
/// was queued for it when it shuts down (the carriers' close timeout; the
/// default, 1 s, is too short for a backlog of 1 000 clients on 2 cores).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Publishes `{"p": id, "n": 0, 1, ..}` on `channel`, one every `every`
/// until `flat_out` is set, then as fast as the channel takes them, until
/// a publish fails or `halt` is set.
async fn publish_until_refused(
    channel: MemoryChannel,
    id: usize,
    every: Duration,
    flat_out: Arc<AtomicBool>,
    halt: Arc<AtomicBool>,
) -> Ledger {
    let mut ledger = Ledger::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0.. {
        if halt.load(Ordering::SeqCst) {
            break;
        }
        if !flat_out.load(Ordering::SeqCst) {
            tick.tick().await;
        }
        match channel.publish(EVENT, &json!({"p": id, "n": n})).await {
            Ok(()) => ledger.acked.push((n, true)),
            Err(e) => {
                ledger.record_error(&e);
                break;
            }
        }
    }
    ledger
}

/// The load of one channel-stop cycle.
#[derive(Clone, Copy)]
struct StopLoad {
    clients: usize,
    publishers: usize,
    /// Each publisher's pace during the flow.
    every: Duration,
    /// How long events flow at that pace.
    flow: Duration,
    /// Then the publishers go flat out, and the channel is stopped once
    /// this many more events were accepted: the sockets have a backlog.
    burst: u64,
}

/// Part (a): see the module documentation.
pub async fn channel_stop(profile: Profile) -> Row {
    let load = StopLoad {
        clients: profile.pick(32, 1000),
        publishers: 2,
        every: Duration::from_millis(profile.pick(2, 10)),
        flow: Duration::from_millis(profile.pick(1500, 3000)),
        burst: profile.pick(1000, 1000),
    };
    let cycles = profile.pick(1, 5);
    let mut row = Row::new(
        "shutdown: channel stop",
        format!(
            "{cycles} x ({} websocket clients, {} publishers at 1 event/{} ms each for {:.1} s, then flat out)",
            load.clients,
            load.publishers,
            load.every.as_millis(),
            load.flow.as_secs_f64()
        ),
        format!(
            "channel.stop() mid-flow, {} events after going flat out",
            load.burst
        ),
    );
    let baseline = tasks_alive();
    for cycle in 0..cycles {
        if !channel_stop_cycle(&mut row, cycle, load).await {
            break;
        }
    }
    check_tasks(&mut row, baseline, "after every cycle").await;
    row
}

/// One stop cycle; returns false if it could not be set up.
async fn channel_stop_cycle(row: &mut Row, cycle: usize, load: StopLoad) -> bool {
    let StopLoad {
        clients,
        publishers,
        every,
        flow,
        burst,
    } = load;
    // The same name every cycle: stopping frees it.
    let channel = match MemoryChannel::named("soak/shutdown/channel") {
        Ok(channel) if !channel.is_stopped() => channel,
        Ok(_) => {
            row.check(
                false,
                format!("cycle {cycle}: the name still holds the stopped channel"),
            );
            return false;
        }
        Err(e) => {
            row.check(false, format!("cycle {cycle}: opening the channel: {e}"));
            return false;
        }
    };
    if let Err(e) = channel.kickoff() {
        row.check(false, format!("cycle {cycle}: kickoff: {e}"));
        return false;
    }
    let carrier = CarrierConfig::default()
        .capacity(CARRIER_CAPACITY)
        .close_timeout(SHUTDOWN_GRACE);
    // No shutdown signal: stopping the channel alone must close its sockets.
    let options = SocketOptions::new([EVENT]).carrier(carrier);
    let server = match Server::start(channel.clone(), options).await {
        Ok(server) => server,
        Err(e) => {
            row.check(false, format!("cycle {cycle}: starting the server: {e}"));
            return false;
        }
    };
    let connected = match connect_all(&server.url, clients).await {
        Ok(connected) => connected,
        Err(e) => {
            row.check(false, format!("cycle {cycle}: {e}"));
            return false;
        }
    };
    let subscribed = wait_until(STEP, || channel.subscriber_count(EVENT) == clients).await;
    row.check(
        subscribed,
        format!(
            "cycle {cycle}: {} of {clients} sockets subscribed",
            channel.subscriber_count(EVENT)
        ),
    );
    let readers: Vec<_> = connected
        .into_iter()
        .map(|client| tokio::spawn(read_client(client, parse_event)))
        .collect();

    let (flat_out, halt) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let publishing: Vec<_> = (0..publishers)
        .map(|id| {
            tokio::spawn(publish_until_refused(
                channel.clone(),
                id,
                every,
                flat_out.clone(),
                halt.clone(),
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
            "cycle {cycle}: the publishers did not publish {burst} events flat out within {STEP:?}"
        ),
    );

    let started = Instant::now();
    let stopped = tokio::time::timeout(STEP, channel.stop()).await.is_ok();
    let stop_time = started.elapsed();
    row.check(
        stopped,
        format!("cycle {cycle}: channel.stop() did not finish within {STEP:?}"),
    );
    row.check(
        channel.subscription_count() == 0 && channel.carrier_count() == 0,
        format!(
            "cycle {cycle}: after stop the channel holds {} subscriptions of {} carriers",
            channel.subscription_count(),
            channel.carrier_count()
        ),
    );
    // Each publisher must have been refused by the stop, not halted: that is
    // what makes the stop "mid-flow".
    let mut ledgers = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP;
    for task in publishing {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(ledger)) => ledgers.push(ledger),
            Ok(Err(e)) => row.check(false, format!("cycle {cycle}: a publisher failed: {e}")),
            Err(_) => {
                halt.store(true, Ordering::SeqCst);
                row.check(
                    false,
                    format!("cycle {cycle}: a publisher was not refused after the stop"),
                );
            }
        }
    }
    let mut late = Ledger::default();
    if let Err(e) = channel
        .publish(EVENT, &json!({"p": publishers, "n": 0}))
        .await
    {
        late.record_error(&e);
    }
    ledgers.push(late);
    let errors = errors_total(&ledgers);
    let typed: u64 = ledgers.iter().map(|l| l.stopped).sum();
    row.check(
        errors == (publishers + 1) as u64 && typed == errors,
        format!(
            "cycle {cycle}: after the stop, {errors} publishes failed ({typed} with PublishError::Stopped); expected {} of {}: {:?}",
            publishers + 1,
            publishers + 1,
            ledgers.iter().flat_map(|l| &l.errors).take(3).collect::<Vec<_>>()
        ),
    );

    // Every socket closes by itself, after what was queued.
    let logs = join_readers(row, readers, close_code::GOING_AWAY).await;
    server.finish(row).await;
    let mut audit = Audit::default();
    for log in &logs {
        audit.add(&ledgers, &log.events);
    }
    audit.report(row, &format!("cycle {cycle}: {} clients", logs.len()));
    let stats = channel.stats();
    row.check(
        stats.carriers_dropped == 0 && stats.frames_dropped == 0,
        format!(
            "cycle {cycle}: {} carriers and {} frames dropped for overflow: the load outran the clients",
            stats.carriers_dropped, stats.frames_dropped
        ),
    );
    row.published += acked_total(&ledgers);
    row.errors += errors;
    if cycle == 0 {
        row.note(format!(
            "cycle 0: {} events acknowledged, channel.stop() took {:.1} ms",
            acked_total(&ledgers),
            stop_time.as_secs_f64() * 1e3
        ));
    }
    true
}
