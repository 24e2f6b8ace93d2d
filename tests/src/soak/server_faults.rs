//! The timeline of the database fault scenarios (`mongo_faults`,
//! `redis_faults`): two channel instances sharing one server, each with its
//! own connections (instance `b` through a [`Proxy`]), numbered events
//! flowing from publishers on both, while the server is SIGKILLed and
//! restarted on the same data three times and `b`'s TCP connections are
//! cut once. A scenario supplies its server ([`FaultyServer`]).
//!
//! What a user relies on, checked afterwards on both instances: every
//! publish that returned `Ok` is delivered exactly once; nothing is
//! delivered twice; publishing during an outage returns an error (errors,
//! not silence) within bounded time; both instances publish and deliver
//! again after every fault. A publish that returned an error may still have
//! reached the server (its acknowledgement was lost with the connection):
//! such events may be delivered, and are reported, not counted as loss.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use tbone_dispatch::{Backend, Channel};
use tbone_dispatch_tokio::{Carrier, CarrierConfig, Tokio};

use super::proxy::Proxy;
use super::{percentile, Profile, Row};
use crate::frame_data;

const EVENT: &str = "soak";
const RESTARTS: usize = 3;
/// Bound on getting both instances publishing and delivering again after
/// the last fault.
const RECOVERY: Duration = Duration::from_secs(60);
/// Bound on a single publish: the clients fail fast, so a publish that
/// takes longer is a hang, i.e. silence where an error was due.
const SLOWEST_PUBLISH: Duration = Duration::from_secs(20);

/// Publisher ids from here on are the closing markers, one per instance.
const MARKER: u32 = 1000;

/// A server the timeline can kill, restart and reach through a proxy, and
/// how to open a channel instance on it.
pub trait FaultyServer: Sized + Send + 'static {
    /// The channels' backend.
    type Backend: Backend;

    /// Starts a private server (blocking).
    fn start() -> Result<Self, String>;

    /// Its port on 127.0.0.1, the same after a restart.
    fn port(&self) -> u16;

    /// SIGKILL (blocking).
    fn kill(&self) -> Result<(), String>;

    /// Starts it again on the same port and data (blocking).
    fn restart(&mut self) -> Result<(), String>;

    /// Opens (and kicks off) instance `name`, reaching the server directly,
    /// or through `proxy`.
    fn open(
        &self,
        name: &'static str,
        proxy: Option<SocketAddr>,
    ) -> impl Future<Output = Result<Channel<Self::Backend, Tokio>, String>> + Send;

    /// Called once both instances had a publish acknowledged, before any
    /// fault.
    fn before_faults(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// What the load description says about the server's data (its cap).
    fn capacity() -> String;

    /// How often `backend` made its tailing connection (or cursor) again.
    fn reconnects(backend: &Self::Backend) -> u64;

    /// The backend's counters, for a note.
    fn describe(backend: &Self::Backend) -> String;

    /// The part of a publish error's message that says what happened (the
    /// rest repeats the channel and event).
    fn cause(message: &str) -> &str {
        message
    }
}

struct Plan {
    publishers: u32,
    interval: Duration,
    flow: Duration,
    outage: Duration,
    settle: Duration,
}

impl Plan {
    fn of(profile: Profile) -> Self {
        Plan {
            // Each publisher waits for its acknowledgement, so more of them
            // make bigger batches rather than a deeper queue.
            publishers: profile.pick(2, 8),
            interval: profile.pick(Duration::from_millis(40), Duration::from_millis(10)),
            flow: profile.pick(Duration::from_secs(5), Duration::from_secs(60)),
            outage: profile.pick(Duration::from_secs(3), Duration::from_secs(10)),
            settle: profile.pick(Duration::from_secs(1), Duration::from_secs(5)),
        }
    }
}

/// A fault of the timeline.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The `n`th SIGKILL of the server, restarted after the outage.
    Kill(usize),
    /// Instance `b`'s TCP connections dropped by the proxy.
    Cut,
}

/// One published event: which publisher, which of its publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EventId {
    p: u32,
    n: u64,
}

impl EventId {
    fn data(self) -> serde_json::Value {
        serde_json::json!({"p": self.p, "n": self.n})
    }

    fn parse(data: &serde_json::Value) -> Option<Self> {
        Some(EventId {
            p: u32::try_from(data.get("p")?.as_u64()?).ok()?,
            n: data.get("n")?.as_u64()?,
        })
    }
}

/// What the publishers of one instance were told.
#[derive(Default)]
struct Ledger {
    acked: HashSet<EventId>,
    refused: HashSet<EventId>,
    /// Distinct error messages, with how often each was returned.
    messages: HashMap<String, u64>,
    slowest: Duration,
    /// How long each acknowledged publish took.
    latencies: Vec<Duration>,
}

/// What one instance's subscriber received.
#[derive(Default)]
struct Tally {
    counts: HashMap<EventId, u32>,
    frames: u64,
    unreadable: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One instance: its channel, what it was told, what it received.
struct Instance<B: Backend> {
    name: &'static str,
    channel: Channel<B, Tokio>,
    ledger: Arc<Mutex<Ledger>>,
    tally: Arc<Mutex<Tally>>,
}

impl<B: Backend> Instance<B> {
    fn subscribed(name: &'static str, channel: Channel<B, Tokio>) -> Result<Self, String> {
        // A queue far deeper than the run can fill: an overflow would drop
        // the carrier and show up as loss that the channel did not cause.
        let (sink, frames) = mpsc::unbounded();
        let carrier = Carrier::new(
            &Tokio::default(),
            sink,
            CarrierConfig::default().capacity(1 << 20),
        )
        .map_err(|e| format!("cannot start a carrier: {e}"))?;
        channel
            .subscribe(EVENT, &carrier)
            .map_err(|e| format!("cannot subscribe on instance {name}: {e}"))?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        tokio::spawn(collect(frames, tally.clone()));
        Ok(Instance {
            name,
            channel,
            ledger: Arc::default(),
            tally,
        })
    }

    fn acked(&self) -> usize {
        lock(&self.ledger).acked.len()
    }

    fn errors(&self) -> u64 {
        lock(&self.ledger).refused.len() as u64
    }

    fn has(&self, id: EventId) -> bool {
        lock(&self.tally).counts.contains_key(&id)
    }
}

async fn collect(
    mut frames: mpsc::UnboundedReceiver<tbone_dispatch_tokio::Frame>,
    tally: Arc<Mutex<Tally>>,
) {
    while let Some(frame) = frames.next().await {
        let id = EventId::parse(&frame_data(&frame));
        let mut tally = lock(&tally);
        tally.frames += 1;
        match id {
            Some(id) => *tally.counts.entry(id).or_insert(0) += 1,
            None => tally.unreadable += 1,
        }
    }
}

/// Publishes `id` once and records the outcome.
async fn publish<S: FaultyServer>(
    channel: &Channel<S::Backend, Tokio>,
    ledger: &Mutex<Ledger>,
    id: EventId,
) -> bool {
    let started = Instant::now();
    let outcome = channel.publish(EVENT, &id.data()).await;
    let took = started.elapsed();
    tracing::trace!(?id, ?took, ok = outcome.is_ok(), "soak: publish returned");
    let mut ledger = lock(ledger);
    ledger.slowest = ledger.slowest.max(took);
    match outcome {
        Ok(()) => {
            ledger.acked.insert(id);
            ledger.latencies.push(took);
            true
        }
        Err(error) => {
            ledger.refused.insert(id);
            // Numbers (ports, timings) would make every message distinct.
            let message = error.to_string();
            let shape: String = S::cause(&message)
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .take(120)
                .collect();
            *ledger.messages.entry(shape).or_insert(0) += 1;
            false
        }
    }
}

/// One publisher: numbered events, one at a time, until told to stop.
async fn publisher<S: FaultyServer>(
    channel: Channel<S::Backend, Tokio>,
    ledger: Arc<Mutex<Ledger>>,
    p: u32,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        publish::<S>(&channel, &ledger, EventId { p, n }).await;
        n += 1;
        tokio::time::sleep(interval).await;
    }
}

/// The scenario `name` on server `S`; see the module documentation.
pub async fn run<S: FaultyServer>(name: &str, profile: Profile) -> Row {
    let plan = Plan::of(profile);
    let mut row = Row::new(
        name,
        format!(
            "2 instances x {} publishers, 1 event per {} ms each, {} s of flow around each fault, {}",
            plan.publishers,
            plan.interval.as_millis(),
            plan.flow.as_secs(),
            S::capacity(),
        ),
        format!("{RESTARTS} kill -9 + restart, 1 TCP cut"),
    );
    let server = match tokio::task::spawn_blocking(S::start).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            row.check(false, format!("cannot start the test server: {e}"));
            return row;
        }
        Err(e) => {
            row.check(false, format!("starting the test server panicked: {e}"));
            return row;
        }
    };
    if let Err(e) = faults(&plan, server, &mut row).await {
        row.check(false, e);
    }
    row
}

/// Runs the timeline and fills `row`; an `Err` is a step that could not be
/// carried out at all (the server did not come back, a channel did not
/// open).
async fn faults<S: FaultyServer>(plan: &Plan, mut server: S, row: &mut Row) -> Result<(), String> {
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
    let proxy = Proxy::start(upstream)
        .await
        .map_err(|e| format!("cannot start the TCP proxy: {e}"))?;
    let instances = [
        Instance::subscribed("a", server.open("a", None).await?)?,
        Instance::subscribed("b", server.open("b", Some(proxy.addr())).await?)?,
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        for k in 0..plan.publishers {
            publishers.push(tokio::spawn(publisher::<S>(
                instance.channel.clone(),
                instance.ledger.clone(),
                i as u32 * plan.publishers + k,
                plan.interval,
                stop.clone(),
            )));
        }
    }

    // Both instances working before any fault.
    let started = Instant::now();
    while instances.iter().any(|i| i.acked() == 0) {
        if started.elapsed() > RECOVERY {
            return Err("no publish was acknowledged on both instances before any fault".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.before_faults().await;
    let flowing = Instant::now();
    tokio::time::sleep(plan.flow).await;

    // The faults, each followed by a period of flow: kill, cut, kill, kill.
    let faults = (1..=RESTARTS).map(Fault::Kill).collect::<Vec<_>>();
    let faults = [&faults[..1], &[Fault::Cut], &faults[1..]].concat();
    for fault in faults {
        let acked: Vec<usize> = instances.iter().map(Instance::acked).collect();
        let errors: Vec<u64> = instances.iter().map(Instance::errors).collect();
        match fault {
            Fault::Kill(kill) => {
                server = tokio::task::spawn_blocking(move || server.kill().map(|()| server))
                    .await
                    .map_err(|e| format!("killing the server panicked: {e}"))??;
                tracing::info!(kill, "soak: server killed");
                tokio::time::sleep(plan.outage).await;
                server = tokio::task::spawn_blocking(move || server.restart().map(|()| server))
                    .await
                    .map_err(|e| format!("restarting the server panicked: {e}"))??;
                tracing::info!(kill, "soak: server restarted");
                for (instance, before) in instances.iter().zip(&errors) {
                    row.check(
                        instance.errors() > *before,
                        format!(
                            "instance {}: no publish returned an error while the server was down ({kill}): silence, not errors",
                            instance.name
                        ),
                    );
                }
                tokio::time::sleep(plan.flow).await;
            }
            Fault::Cut => {
                let b = &instances[1];
                let reconnects = S::reconnects(b.channel.backend());
                let accepted = proxy.accepted();
                let cut = proxy.cut();
                row.check(cut > 0, "the proxy had no connection of instance b to cut");
                tokio::time::sleep(plan.flow).await;
                row.check(
                    proxy.accepted() > accepted,
                    "instance b never reconnected through the proxy after the cut",
                );
                row.note(format!(
                    "TCP cut: {cut} connections of b dropped; b's tail reconnected {} times, {} of its publishes returned an error",
                    S::reconnects(b.channel.backend()) - reconnects,
                    b.errors() - errors[1],
                ));
            }
        }
        for (instance, before) in instances.iter().zip(acked) {
            row.check(
                instance.acked() > before,
                format!(
                    "instance {} acknowledged no publish after {fault:?}",
                    instance.name
                ),
            );
        }
    }

    stop.store(true, Ordering::Relaxed);
    for task in publishers {
        task.await
            .map_err(|e| format!("a publisher panicked: {e}"))?;
    }
    let flowed = flowing.elapsed().as_secs_f64();
    let acked: usize = instances.iter().map(Instance::acked).sum();
    row.note(format!(
        "{:.0} publishes/s acknowledged on average over {flowed:.0} s of faults and flow",
        acked as f64 / flowed
    ));

    // A marker per instance, published last: order is kept, so once an
    // instance delivered both, it has delivered everything acknowledged
    // before them, a late duplicate included.
    let mut markers = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let marker = EventId {
            p: MARKER + i as u32,
            n: 0,
        };
        let started = Instant::now();
        let mut attempt = marker;
        while !publish::<S>(&instance.channel, &instance.ledger, attempt).await {
            if started.elapsed() > RECOVERY {
                return Err(format!(
                    "instance {} could not publish within {RECOVERY:?} after the last fault",
                    instance.name
                ));
            }
            attempt.n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        markers.push(attempt);
    }
    let started = Instant::now();
    while !instances.iter().all(|i| markers.iter().all(|m| i.has(*m))) {
        if started.elapsed() > RECOVERY {
            let missing: Vec<&str> = instances
                .iter()
                .filter(|i| !markers.iter().all(|m| i.has(*m)))
                .map(|i| i.name)
                .collect();
            row.check(
                false,
                format!(
                    "instances {missing:?} did not deliver the closing markers within {RECOVERY:?}"
                ),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(plan.settle).await;

    account::<S>(&instances, row);
    for instance in &instances {
        row.check(
            instance.channel.subscriber_count(EVENT) == 1,
            format!(
                "instance {}'s subscriber was dropped (carrier overflow or error)",
                instance.name
            ),
        );
    }
    for instance in instances {
        instance.channel.stop().await;
    }
    // Stopping the server waits for it to exit: not on a runtime worker.
    let _ = tokio::task::spawn_blocking(move || drop(server)).await;
    Ok(())
}

/// Compares what was acknowledged with what each instance delivered, and
/// fills the row's counters, checks and notes.
fn account<S: FaultyServer>(instances: &[Instance<S::Backend>], row: &mut Row) {
    let mut acked = HashSet::new();
    let mut refused = HashSet::new();
    let mut messages: HashMap<String, u64> = HashMap::new();
    let mut slowest = Duration::ZERO;
    let mut latencies = Vec::new();
    for instance in instances {
        let ledger = lock(&instance.ledger);
        latencies.extend_from_slice(&ledger.latencies);
        acked.extend(ledger.acked.iter().copied());
        refused.extend(ledger.refused.iter().copied());
        for (message, n) in &ledger.messages {
            *messages.entry(message.clone()).or_insert(0) += n;
        }
        slowest = slowest.max(ledger.slowest);
    }
    row.published = acked.len() as u64;
    row.errors = refused.len() as u64;
    row.check(
        row.errors > 0,
        "no publish returned an error although the server was down three times",
    );
    row.check(
        slowest <= SLOWEST_PUBLISH,
        format!("a publish took {slowest:?} to return (more than {SLOWEST_PUBLISH:?}: silence, not an error)"),
    );
    row.note(format!(
        "acknowledged publishes took {:.0} ms (p50), {:.0} ms (p99); the slowest publish returned after {:.1} s",
        percentile(&mut latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&mut latencies, 0.99).as_secs_f64() * 1000.0,
        slowest.as_secs_f64()
    ));
    let mut messages: Vec<(String, u64)> = messages.into_iter().collect();
    messages.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (message, n) in messages.iter().take(3) {
        row.note(format!("publish error x{n}: {message}"));
    }

    for instance in instances {
        let tally = lock(&instance.tally);
        row.delivered += tally.frames;
        let mut lost = Vec::new();
        let mut duplicated = Vec::new();
        for id in &acked {
            match tally.counts.get(id).copied().unwrap_or(0) {
                0 => lost.push(*id),
                1 => {}
                n => duplicated.push((*id, n)),
            }
        }
        let mut unacked_delivered = 0;
        let mut unknown = 0;
        for (id, n) in &tally.counts {
            if refused.contains(id) {
                unacked_delivered += 1;
                if *n > 1 {
                    duplicated.push((*id, *n));
                }
            } else if !acked.contains(id) {
                unknown += 1;
            }
        }
        lost.sort();
        duplicated.sort();
        row.lost += lost.len() as u64;
        row.duplicates += duplicated
            .iter()
            .map(|(_, n)| u64::from(*n - 1))
            .sum::<u64>();
        row.check(
            lost.is_empty(),
            format!(
                "instance {}: {} acknowledged events never delivered, e.g. {:?}",
                instance.name,
                lost.len(),
                &lost[..lost.len().min(5)]
            ),
        );
        row.check(
            duplicated.is_empty(),
            format!(
                "instance {}: {} events delivered more than once, e.g. {:?}",
                instance.name,
                duplicated.len(),
                &duplicated[..duplicated.len().min(5)]
            ),
        );
        row.check(
            unknown == 0 && tally.unreadable == 0,
            format!(
                "instance {}: {unknown} delivered events were never published, {} frames unreadable",
                instance.name, tally.unreadable
            ),
        );
        row.note(format!(
            "instance {}: {unacked_delivered} events whose publish returned an error reached the server and were delivered (not a loss); {}",
            instance.name,
            S::describe(instance.channel.backend()),
        ));
    }
}
