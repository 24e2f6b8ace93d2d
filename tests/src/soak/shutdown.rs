//! Scenario 6, shutdown: stopping a channel or the demo server while events
//! flow must end every task, close every socket with a close frame, and
//! lose no acknowledged event.
//!
//! Three rows:
//! - **channel stop**: a memory channel serving real websocket clients
//!   (the tokio crate's `websocket::accept` and `Accepted::serve`) is stopped while
//!   publishers publish flat out, so that the sockets have a backlog. Each
//!   socket must get what it was sent, then close 1001 (no shutdown signal
//!   of the server's: the channel's stop alone). Publishes after the stop
//!   must fail with `PublishError::Stopped`.
//! - **demo server**: the demo (`examples/demo`) serving websocket and SSE
//!   clients while writers create entries through its REST API (flat out
//!   at the end), shut down gracefully: `serve` must return, websockets
//!   get 1001, SSE streams end.
//! - **Mongo instance stop**: two `MongoChannel` instances on one
//!   collection, publishers on both; instance B (on a runtime of its own,
//!   so that its tasks can be counted) is stopped mid-flow, its later
//!   publishes must fail with `PublishError::Stopped`, and A must still
//!   deliver every acknowledged event of both exactly once.
//!
//! In each, "acknowledged" is what the caller was told succeeded: `publish`
//! returned `Ok`, or the REST API answered 201 before the shutdown began.
//! Every acknowledged event must reach every client that was connected (in
//! publish order per publisher, once), and an event whose publish failed
//! must reach nobody. Tasks are counted with tokio's runtime metrics: once
//! everything is shut down and dropped, the runtime must hold as many tasks
//! as before.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_tungstenite::tokio::{connect_async, ConnectStream};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures::channel::oneshot;
use futures::io::BufReader;
use futures::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, StreamExt};
use serde_json::{json, Value};
use tbone_dispatch::{close_code, CarrierConfig, CloseReason, Frame, PublishError, SocketOptions};
use tbone_dispatch_demo::MemoryState;
use tbone_dispatch_tokio::model::RESOURCE_CREATE;
use tbone_dispatch_tokio::mongo::{self, Driver, MongoOptions};
use tbone_dispatch_tokio::websocket::accept;
use tbone_dispatch_tokio::{Carrier, MemoryChannel, MongoChannel, Tokio};
use tokio::task::JoinHandle;

use super::{Profile, Row};
use crate::mongo::{database, database_name, fast_failing, mongo_uri, MONGO_WAIT};
use crate::websocket::ClientIo;
use crate::{new_carrier_with, TestRuntime};

/// The event the memory and Mongo rows publish.
const EVENT: &str = "e";

/// Limit on each setup step and on each part of shutting down.
const STEP: Duration = Duration::from_secs(30);

/// Queue of each socket's carrier in the channel-stop row: deep enough that
/// no client is dropped for being slow, so that every loss is shutdown's.
const CARRIER_CAPACITY: usize = 1 << 16;

/// How long the channel-stop row's server gives each socket to write what
/// was queued for it when it shuts down (the carriers' close timeout; the
/// default, 1 s, is too short for a backlog of 1 000 clients on 2 cores).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Tasks alive on the current tokio runtime.
fn tasks_alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Polls `condition` every 5 ms until it holds or `limit` passes; returns
/// whether it held.
async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Waits until the runtime is back to `baseline` tasks and records it.
async fn check_tasks(row: &mut Row, baseline: usize, what: &str) {
    let back = wait_until(Duration::from_secs(10), || tasks_alive() <= baseline).await;
    let now = tasks_alive();
    row.check(
        back,
        format!(
            "{what}: {now} tasks alive, {baseline} before: {} left running",
            now.saturating_sub(baseline)
        ),
    );
}

// ---- what was published, and what arrived -----------------------------------

/// What one publisher was told: the sequence numbers acknowledged (in the
/// order published) and the errors returned.
#[derive(Debug, Default)]
struct Ledger {
    /// Acknowledged, with whether the acknowledgement came before the
    /// shutdown began (only those are owed to the clients).
    acked: Vec<(u64, bool)>,
    /// Errors returned, as text.
    errors: Vec<String>,
    /// How many of them were the typed "channel stopped" error.
    stopped: u64,
}

impl Ledger {
    fn owed(&self) -> impl Iterator<Item = u64> + '_ {
        self.acked.iter().filter(|(_, owed)| *owed).map(|(n, _)| *n)
    }

    fn record_error(&mut self, error: &PublishError) {
        if matches!(error, PublishError::Stopped { .. }) {
            self.stopped += 1;
        }
        self.errors.push(error.to_string());
    }
}

/// One consumer's deliveries compared with the ledgers.
#[derive(Debug, Default)]
struct Audit {
    delivered: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Deliveries of events whose publish was not acknowledged.
    phantoms: u64,
    /// Frames that were not events of this scenario.
    foreign: u64,
}

impl Audit {
    /// Adds the comparison of `received` (publisher, sequence number) with
    /// what `ledgers` say was acknowledged.
    fn add(&mut self, ledgers: &[Ledger], received: &[(usize, u64)]) {
        let mut seen: Vec<HashSet<u64>> = vec![HashSet::new(); ledgers.len()];
        let mut last: Vec<Option<u64>> = vec![None; ledgers.len()];
        let acked: Vec<HashSet<u64>> = ledgers
            .iter()
            .map(|l| l.acked.iter().map(|(n, _)| *n).collect())
            .collect();
        for &(p, n) in received {
            if p >= ledgers.len() {
                self.foreign += 1;
                continue;
            }
            self.delivered += 1;
            if !seen[p].insert(n) {
                self.duplicates += 1;
                continue;
            }
            if !acked[p].contains(&n) {
                self.phantoms += 1;
            }
            if last[p].is_some_and(|last| n < last) {
                self.out_of_order += 1;
            }
            last[p] = Some(n);
        }
        for (p, ledger) in ledgers.iter().enumerate() {
            self.lost += ledger.owed().filter(|n| !seen[p].contains(n)).count() as u64;
        }
    }

    /// Puts the counters in `row` and checks them.
    fn report(&self, row: &mut Row, consumers: &str) {
        row.delivered += self.delivered;
        row.lost += self.lost;
        row.duplicates += self.duplicates;
        row.check(
            self.lost == 0,
            format!("{consumers} lost {} acknowledged events", self.lost),
        );
        row.check(
            self.duplicates == 0,
            format!("{consumers} received {} duplicates", self.duplicates),
        );
        row.check(
            self.out_of_order == 0,
            format!(
                "{consumers} received {} events out of publish order",
                self.out_of_order
            ),
        );
        row.check(
            self.phantoms == 0,
            format!(
                "{consumers} received {} events whose publish failed",
                self.phantoms
            ),
        );
        row.check(
            self.foreign == 0,
            format!(
                "{consumers} received {} frames that are not this scenario's events",
                self.foreign
            ),
        );
    }
}

fn acked_total(ledgers: &[Ledger]) -> u64 {
    ledgers.iter().map(|l| l.acked.len() as u64).sum()
}

fn errors_total(ledgers: &[Ledger]) -> u64 {
    ledgers.iter().map(|l| l.errors.len() as u64).sum()
}

/// `(publisher, n)` from a TBone frame whose data is `{"p":..,"n":..}`.
fn parse_event(text: &str) -> Option<(usize, u64)> {
    let frame: Value = serde_json::from_str(text).ok()?;
    let data = &frame["payload"]["data"];
    Some((
        usize::try_from(data["p"].as_u64()?).ok()?,
        data["n"].as_u64()?,
    ))
}

/// `(writer, n)` from a demo frame whose entry's text is `w<writer>-<n>`.
fn parse_entry(text: &str) -> Option<(usize, u64)> {
    let frame: Value = serde_json::from_str(text).ok()?;
    if frame["payload"]["name"] != RESOURCE_CREATE {
        return None;
    }
    let (writer, n) = frame["payload"]["data"]["text"]
        .as_str()?
        .strip_prefix('w')?
        .split_once('-')?;
    Some((writer.parse().ok()?, n.parse().ok()?))
}

// ---- websocket clients --------------------------------------------------------

type Client = WebSocketStream<ConnectStream>;

async fn connect(url: &str) -> Result<Client, String> {
    match tokio::time::timeout(STEP, connect_async(url)).await {
        Ok(Ok((client, _))) => Ok(client),
        Ok(Err(e)) => Err(format!("connecting to {url}: {e}")),
        Err(_) => Err(format!("connecting to {url}: no handshake within {STEP:?}")),
    }
}

async fn connect_all(url: &str, clients: usize) -> Result<Vec<Client>, String> {
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(connect(url).await?);
    }
    Ok(connected)
}

/// What one websocket client saw until its connection ended.
#[derive(Debug, Default)]
struct ClientLog {
    events: Vec<(usize, u64)>,
    /// The close frame's code, if one came.
    close: Option<u16>,
    /// Data received after the close frame.
    after_close: u64,
    /// A read error before the close frame.
    error: Option<String>,
}

/// Reads a client until its connection ends, answering the close handshake.
async fn read_client(mut client: Client, parse: fn(&str) -> Option<(usize, u64)>) -> ClientLog {
    let mut log = ClientLog::default();
    while let Some(message) = client.next().await {
        match message {
            Ok(Message::Text(text)) => {
                if log.close.is_some() {
                    log.after_close += 1;
                }
                // Foreign frames are counted by the audit.
                log.events
                    .push(parse(text.as_str()).unwrap_or((usize::MAX, 0)));
            }
            Ok(Message::Close(frame)) => {
                log.close = Some(frame.map_or(0, |f| u16::from(f.code)));
            }
            Ok(_) => {}
            Err(e) => {
                if log.close.is_none() {
                    log.error = Some(e.to_string());
                }
                break;
            }
        }
    }
    log
}

/// Joins the readers and checks that each got a close frame with `code`
/// and then the end of its connection; returns their logs.
async fn join_readers(
    row: &mut Row,
    readers: Vec<JoinHandle<ClientLog>>,
    code: u16,
) -> Vec<ClientLog> {
    let (mut logs, mut unfinished, mut wrong_code, mut no_close) = (Vec::new(), 0, 0, 0);
    let mut examples = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP;
    for reader in readers {
        match tokio::time::timeout_at(deadline, reader).await {
            Ok(Ok(log)) => {
                match log.close {
                    Some(c) if c == code => {}
                    Some(c) => {
                        wrong_code += 1;
                        examples.push(format!("close code {c}"));
                    }
                    None => {
                        no_close += 1;
                        examples.push(format!("no close frame ({:?})", log.error));
                    }
                }
                if log.after_close > 0 {
                    examples.push(format!("{} events after the close frame", log.after_close));
                }
                logs.push(log);
            }
            Ok(Err(e)) => {
                unfinished += 1;
                examples.push(format!("reader failed: {e}"));
            }
            Err(_) => unfinished += 1,
        }
    }
    examples.truncate(5);
    row.check(
        unfinished == 0,
        format!("{unfinished} client connections did not end within {STEP:?} of the shutdown"),
    );
    row.check(
        wrong_code == 0 && no_close == 0 && logs.iter().all(|l| l.after_close == 0),
        format!(
            "expected every client to get a close frame with {code}: {wrong_code} got another code, {no_close} none; e.g. {examples:?}"
        ),
    );
    logs
}

// ---- (a) channel stop under load ----------------------------------------------

/// How `serve` ended one connection, or why it could not run.
type Outcome = Result<CloseReason, String>;

/// A websocket server over a channel, as an application writes one with the
/// tokio crate: an accept loop, and a task per connection running
/// `websocket::accept` and `Accepted::serve`. Keeps each connection's task so that
/// its end (and `serve`'s close reason) can be checked.
struct Server {
    url: String,
    /// The channel's name, which the close reason of its sockets names.
    channel: String,
    accept_loop: JoinHandle<()>,
    stop_accepting: oneshot::Sender<()>,
    connections: Arc<Mutex<Vec<JoinHandle<Outcome>>>>,
}

impl Server {
    async fn start(channel: MemoryChannel, options: SocketOptions) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let connections = Arc::new(Mutex::new(Vec::new()));
        let name = channel.name().to_string();
        let (stop_accepting, mut stopped) = oneshot::channel::<()>();
        let accept_loop = tokio::spawn({
            let connections = connections.clone();
            async move {
                loop {
                    let tcp = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => tcp,
                            Err(e) => {
                                tracing::warn!(%e, "accept failed");
                                continue;
                            }
                        },
                        _ = &mut stopped => break,
                    };
                    let (channel, options) = (channel.clone(), options.clone());
                    let task = tokio::spawn(async move {
                        let accepted = accept(tcp, &channel, options)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(accepted.serve().await)
                    });
                    connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(task);
                }
            }
        });
        Ok(Server {
            url: format!("ws://{addr}/ws"),
            channel: name,
            accept_loop,
            stop_accepting,
            connections,
        })
    }

    /// Stops accepting, then waits for every connection's task and checks
    /// that `serve` ended each because the channel stopped.
    async fn finish(self, row: &mut Row) {
        let _ = self.stop_accepting.send(());
        let accept_ended = tokio::time::timeout(STEP, self.accept_loop).await;
        row.check(
            matches!(accept_ended, Ok(Ok(()))),
            "the accept loop did not end",
        );
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let expected = CloseReason::Rejected(
            close_code::GOING_AWAY,
            format!("the channel `{}` stopped", self.channel),
        );
        let (mut unfinished, mut other) = (0, Vec::new());
        let deadline = tokio::time::Instant::now() + STEP;
        for task in connections {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(reason))) if reason == expected => {}
                Ok(Ok(outcome)) => other.push(format!("{outcome:?}")),
                Ok(Err(e)) => other.push(format!("the task failed: {e}")),
                Err(_) => unfinished += 1,
            }
        }
        row.check(
            unfinished == 0,
            format!("{unfinished} serve tasks still running {STEP:?} after the shutdown"),
        );
        let count = other.len();
        other.truncate(3);
        row.check(
            count == 0,
            format!(
                "{count} connections ended otherwise than by the channel's stop (1001): {other:?}"
            ),
        );
    }
}

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

// ---- (b) the demo server ------------------------------------------------------

/// A minimal HTTP/1.1 client on one keep-alive connection.
struct Http {
    io: BufReader<ClientIo>,
}

impl Http {
    async fn connect(addr: SocketAddr) -> std::io::Result<Http> {
        let (io, _) = <Tokio as TestRuntime>::connect_tcp(addr).await?;
        Ok(Http {
            io: BufReader::new(io),
        })
    }

    /// POSTs `body` as JSON to `path`; returns the status and the body.
    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.io.get_mut().write_all(request.as_bytes()).await?;
        self.io.get_mut().flush().await?;
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        if self.io.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.io.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid("bad content-length"))?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.io.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

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

/// An SSE client of the demo (`GET /sse/`): reads `data:` lines until the
/// stream ends. Its log has no close frame (SSE has none).
async fn read_sse(addr: SocketAddr) -> Result<JoinHandle<ClientLog>, String> {
    let (mut io, _) = <Tokio as TestRuntime>::connect_tcp(addr)
        .await
        .map_err(|e| format!("SSE client: {e}"))?;
    io.write_all(b"GET /sse/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .map_err(|e| format!("SSE request: {e}"))?;
    let mut io = BufReader::new(io);
    let mut status = String::new();
    match tokio::time::timeout(STEP, io.read_line(&mut status)).await {
        Ok(Ok(_)) if status.starts_with("HTTP/1.1 200") => {}
        other => return Err(format!("SSE response: {other:?} {status:?}")),
    }
    Ok(tokio::spawn(async move {
        let mut log = ClientLog::default();
        let mut line = String::new();
        loop {
            line.clear();
            match io.read_line(&mut line).await {
                Ok(0) => break,
                Ok(_) => {
                    if let Some(data) = line.trim_end().strip_prefix("data: ") {
                        log.events
                            .push(parse_entry(data).unwrap_or((usize::MAX, 0)));
                    }
                }
                Err(e) => {
                    log.error = Some(e.to_string());
                    break;
                }
            }
        }
        log
    }))
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

// ---- (c) one of two Mongo instances stops ---------------------------------------

/// Publishes `{"p": id, "n": 0, 1, ..}` on a Mongo channel, each awaiting
/// its acknowledgement, until a publish fails or `halt` is set.
async fn publish_mongo(channel: MongoChannel, id: usize, halt: Arc<AtomicBool>) -> Ledger {
    let mut ledger = Ledger::default();
    for n in 0.. {
        if halt.load(Ordering::SeqCst) {
            break;
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

/// What instance A's subscriber received: `(publisher, n)` in arrival order.
type Received = Arc<Mutex<Vec<(usize, u64)>>>;

fn received_from(received: &Received, ids: &std::ops::Range<usize>) -> u64 {
    received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(p, _)| ids.contains(p))
        .count() as u64
}

/// Part (c): see the module documentation.
pub async fn mongo_instance_stop(profile: Profile) -> Row {
    let per_instance = profile.pick(4, 8);
    let cycles = profile.pick(1, 4);
    let before_stop = profile.pick(200u64, 500);
    let after_stop = Duration::from_millis(profile.pick(1000, 3000));
    let mut row = Row::new(
        "shutdown: Mongo instance stop",
        format!(
            "2 MongoChannel instances on one collection, {per_instance} publishers each; {cycles} x (a new instance B publishes and is stopped once A has {before_stop} of its events)"
        ),
        "stop one instance mid-flow",
    );
    let baseline = tasks_alive();
    let test = "soak_shutdown";
    let db_a = database::<Tokio>(test).await;
    let options = MongoOptions::default().collection("tbone_channel_soak_shutdown");
    let a: MongoChannel = match mongo::builder("soak/shutdown/mongo-a", &db_a)
        .options(options.clone())
        .open()
    {
        Ok(a) => a,
        Err(e) => {
            row.check(false, format!("opening A: {e}"));
            return row;
        }
    };
    if let Err(e) = a.kickoff() {
        row.check(false, format!("kickoff of A: {e}"));
        return row;
    }
    let (carrier, mut frames) =
        new_carrier_with::<Tokio>(CarrierConfig::default().capacity(CARRIER_CAPACITY));
    if let Err(e) = a.subscribe(EVENT, &carrier) {
        row.check(false, format!("subscribing on A: {e}"));
        return row;
    }
    let received: Received = Arc::default();
    let collector = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(frame) = frames.next().await {
                let event = parse_event(frame.as_str()).unwrap_or((usize::MAX, 0));
                received
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(event);
            }
        }
    });

    // Indexed by publisher id: A's are 0..per_instance, each B's next.
    let mut ledgers: Vec<Ledger> = std::iter::repeat_with(Ledger::default)
        .take(per_instance * (cycles + 1))
        .collect();
    let halt_a = Arc::new(AtomicBool::new(false));
    let a_publishers: Vec<_> = (0..per_instance)
        .map(|id| tokio::spawn(publish_mongo(a.clone(), id, halt_a.clone())))
        .collect();
    let mut b_errors = 0;
    for cycle in 0..cycles {
        let first = per_instance * (cycle + 1);
        let b = InstanceB {
            cycle,
            ids: first..first + per_instance,
            database: database_name::<Tokio>(test),
            options: options.clone(),
            before_stop,
        };
        match b.run(&mut row, &received).await {
            Some(cycle_ledgers) => {
                for (id, ledger) in cycle_ledgers {
                    b_errors += ledger.errors.len() as u64;
                    ledgers[id] = ledger;
                }
            }
            None => break,
        }
    }

    // A keeps running after B stopped: its own publishers go on.
    tokio::time::sleep(after_stop).await;
    halt_a.store(true, Ordering::SeqCst);
    for (id, task) in a_publishers.into_iter().enumerate() {
        match tokio::time::timeout(MONGO_WAIT, task).await {
            Ok(Ok(ledger)) => ledgers[id] = ledger,
            _ => row.check(false, "a publisher on A did not finish"),
        }
    }
    let a_errors = errors_total(&ledgers[..per_instance]);
    row.check(
        a_errors == 0,
        format!(
            "A, which kept running, returned {a_errors} publish errors: {:?}",
            ledgers[..per_instance]
                .iter()
                .flat_map(|l| &l.errors)
                .take(3)
                .collect::<Vec<_>>()
        ),
    );
    let complete = wait_until(MONGO_WAIT, || {
        let mut audit = Audit::default();
        audit.add(
            &ledgers,
            &received.lock().unwrap_or_else(PoisonError::into_inner),
        );
        audit.lost == 0
    })
    .await;
    if !complete {
        tracing::warn!("A did not receive every acknowledged event within {MONGO_WAIT:?}");
    }
    // A duplicate would come after the last original: give it time to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut audit = Audit::default();
    audit.add(
        &ledgers,
        &received.lock().unwrap_or_else(PoisonError::into_inner),
    );
    audit.report(&mut row, "instance A");
    let stats = a.backend().stats();
    row.check(
        stats.gaps == 0,
        format!("A reported {} gaps in the capped collection", stats.gaps),
    );
    row.note(format!(
        "A: {} events read from the collection, {} re-read after a reconnect and dropped, cursor reopened {} times",
        stats.received, stats.duplicates, stats.reopened
    ));
    row.published = acked_total(&ledgers);
    row.errors = a_errors + b_errors;

    let stopped = tokio::time::timeout(MONGO_WAIT, a.stop()).await.is_ok();
    row.check(stopped, "A's stop() did not finish");
    drop((a, carrier));
    row.check(
        matches!(tokio::time::timeout(STEP, collector).await, Ok(Ok(()))),
        "A's subscriber did not see the end of its carrier",
    );
    let client = db_a.client().clone();
    drop(db_a);
    let shut = tokio::time::timeout(STEP, async move { client.shutdown().await })
        .await
        .is_ok();
    row.check(
        shut,
        "A's MongoDB client did not shut down: a cursor or session was left open",
    );
    check_tasks(
        &mut row,
        baseline,
        "after A stopped and its client shut down",
    )
    .await;
    row
}

/// One stop cycle of instance B: a channel on the shared collection with a
/// MongoDB client of its own, both on a runtime of their own so that the
/// tasks it leaves behind (if any) can be told from A's.
struct InstanceB {
    cycle: usize,
    /// Its publishers' ids.
    ids: std::ops::Range<usize>,
    database: String,
    options: MongoOptions,
    /// How many of B's events A must have received before B is stopped.
    before_stop: u64,
}

impl InstanceB {
    /// Runs the cycle; returns B's publishers' ledgers, or None if it could
    /// not be set up.
    async fn run(self, row: &mut Row, received: &Received) -> Option<Vec<(usize, Ledger)>> {
        let cycle = self.cycle;
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("soak-mongo-b")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                row.check(false, format!("cycle {cycle}: a runtime for B: {e}"));
                return None;
            }
        };
        let handle = runtime.handle().clone();
        let ledgers = self.on(row, &handle, received).await;
        // Nothing may be left on B's runtime; whatever is would be cut
        // here, so it was counted above.
        runtime.shutdown_background();
        ledgers
    }

    async fn on(
        self,
        row: &mut Row,
        handle: &tokio::runtime::Handle,
        received: &Received,
    ) -> Option<Vec<(usize, Ledger)>> {
        let cycle = self.cycle;
        let alive = || handle.metrics().num_alive_tasks();
        let driver = Driver::with_handle(handle.clone());
        let db = match driver
            .connect(&fast_failing(&mongo_uri()), &self.database)
            .await
        {
            Ok(db) => db,
            Err(e) => {
                row.check(false, format!("cycle {cycle}: connecting B: {e}"));
                return None;
            }
        };
        // The client starts its monitors and pool as it discovers the
        // server: its own tasks are counted once it has answered and they
        // have settled.
        let ping = {
            let db = db.clone();
            driver.run(async move { db.run_command(mongodb::bson::doc! {"ping": 1}).await })
        };
        if !matches!(tokio::time::timeout(STEP, ping).await, Ok(Ok(Ok(_)))) {
            row.check(
                false,
                format!("cycle {cycle}: B's client got no answer to a ping"),
            );
            return None;
        }
        let mut client_tasks = alive();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = alive();
            if now == client_tasks {
                break;
            }
            client_tasks = now;
        }
        let runtime = Tokio::with_handle(handle.clone());
        let opened: Result<MongoChannel, _> =
            mongo::builder(&format!("soak/shutdown/mongo-b{cycle}"), &db)
                .options(self.options.clone().driver(driver.clone()))
                .open_on(runtime.clone());
        let b = match opened {
            Ok(b) => b,
            Err(e) => {
                row.check(false, format!("cycle {cycle}: opening B: {e}"));
                return None;
            }
        };
        if let Err(e) = b.kickoff() {
            row.check(false, format!("cycle {cycle}: kickoff of B: {e}"));
            return None;
        }
        let (sink, b_frames) = futures::channel::mpsc::unbounded::<Frame>();
        let subscribed = Carrier::new(&runtime, sink, CarrierConfig::default())
            .map_err(|e| e.to_string())
            .and_then(|carrier| {
                b.subscribe(EVENT, &carrier)
                    .map(|_| carrier)
                    .map_err(|e| e.to_string())
            });
        let b_carrier = match subscribed {
            Ok(carrier) => carrier,
            Err(e) => {
                row.check(false, format!("cycle {cycle}: subscribing on B: {e}"));
                return None;
            }
        };

        let halt = Arc::new(AtomicBool::new(false));
        let publishers: Vec<_> = self
            .ids
            .clone()
            .map(|id| tokio::spawn(publish_mongo(b.clone(), id, halt.clone())))
            .collect();
        let flowing = wait_until(MONGO_WAIT, || {
            received_from(received, &self.ids) >= self.before_stop
        })
        .await;
        row.check(
            flowing,
            format!(
                "cycle {cycle}: A received {} of B's events within {MONGO_WAIT:?}, expected {}",
                received_from(received, &self.ids),
                self.before_stop
            ),
        );

        let started = Instant::now();
        let stopped = tokio::time::timeout(MONGO_WAIT, b.stop()).await.is_ok();
        let stop_time = started.elapsed();
        row.check(
            stopped,
            format!("cycle {cycle}: B's stop() did not finish within {MONGO_WAIT:?}"),
        );
        row.check(
            b.subscription_count() == 0,
            format!(
                "cycle {cycle}: B holds {} subscriptions after stop",
                b.subscription_count()
            ),
        );
        // Every publisher on B must have been refused: the stop was mid-flow.
        let deadline = tokio::time::Instant::now() + MONGO_WAIT;
        let mut ledgers = Vec::new();
        for (id, task) in self.ids.clone().zip(publishers) {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(ledger)) => ledgers.push((id, ledger)),
                Ok(Err(e)) => row.check(
                    false,
                    format!("cycle {cycle}: a publisher on B failed: {e}"),
                ),
                Err(_) => {
                    halt.store(true, Ordering::SeqCst);
                    row.check(
                        false,
                        format!("cycle {cycle}: a publisher on B was not refused after the stop"),
                    );
                }
            }
        }
        let mut late = Ledger::default();
        if let Err(e) = b.publish(EVENT, &json!({"p": usize::MAX, "n": 0})).await {
            late.record_error(&e);
        }
        let all = || ledgers.iter().map(|(_, l)| l).chain([&late]);
        let errors: u64 = all().map(|l| l.errors.len() as u64).sum();
        let refused: u64 = all().map(|l| l.stopped).sum();
        let expected = self.ids.len() as u64 + 1;
        row.check(
            errors == expected && refused == errors,
            format!(
                "cycle {cycle}: after B stopped, {errors} of its publishes failed ({refused} with PublishError::Stopped), expected {expected}: {:?}",
                all().flat_map(|l| &l.errors).take(3).collect::<Vec<_>>()
            ),
        );
        if cycle == 0 {
            row.note(format!(
                "cycle 0: B acknowledged {} events before it stopped; B.stop() took {:.1} ms",
                ledgers.iter().map(|(_, l)| l.acked.len()).sum::<usize>(),
                stop_time.as_secs_f64() * 1e3
            ));
        }
        // The late publish is the caller's error too.
        if let Some((_, first)) = ledgers.first_mut() {
            first.errors.extend(late.errors);
        }

        drop((b, b_carrier, b_frames));
        let back = wait_until(Duration::from_secs(10), || alive() <= client_tasks).await;
        row.check(
            back,
            format!(
                "cycle {cycle}: B stopped and dropped, its runtime still runs {} tasks besides its client's {client_tasks}",
                alive().saturating_sub(client_tasks)
            ),
        );
        let client = db.client().clone();
        drop(db);
        let shut = driver.run(async move { client.shutdown().await });
        let shut = tokio::time::timeout(STEP, shut).await;
        row.check(
            matches!(shut, Ok(Ok(()))),
            format!("cycle {cycle}: B's MongoDB client did not shut down: a cursor or session was left open"),
        );
        let empty = wait_until(Duration::from_secs(10), || alive() == 0).await;
        row.check(
            empty,
            format!(
                "cycle {cycle}: after B's client shut down, its runtime still runs {} tasks",
                alive()
            ),
        );
        Some(ledgers)
    }
}
