//! Running a case against the model, and the part as a whole.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::channel::mpsc;
use proptest::test_runner::{TestCaseError, TestCaseResult};
use tbone_dispatch::testing::ManualRuntime;
use tbone_dispatch::websocket::read_error;
use tbone_dispatch::{
    close_code, serve_socket, Carrier, CarrierConfig, Channel, ChannelBuilder, CloseReason, Frame,
    Incoming, MemoryBackend, Outgoing, ReadError, Runtime, SocketOptions,
};

use super::model::{simplify_frame, ConnModel, End, Msg, Out, SinkKind};
use super::sink::{ClientSink, Recorded};
use super::strategies::{case, Case, ConnSpec, Step};
use super::{published_names, FuzzAuthorizer};
use crate::soak::fuzz::{ensure, run_cases, runner, shorten};
use crate::soak::{Profile, Row};

/// The keep-alive interval of the served sockets; one `Tick` step moves the
/// manual clock by exactly this much.
const PING: Duration = Duration::from_secs(10);
/// How long a carrier may take to close its sink (a stalled one never
/// does).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Tally {
    cases: u64,
    connections: u64,
    messages: u64,
    texts: u64,
    publishes: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    rejected: u64,
    ends: std::collections::BTreeMap<String, u64>,
}

type Mem = Channel<MemoryBackend, ManualRuntime>;

struct Live {
    model: ConnModel,
    spec: ConnSpec,
    input: Option<mpsc::UnboundedSender<Result<Incoming, ReadError>>>,
    record: Arc<Mutex<Recorded>>,
    result: Arc<Mutex<Option<CloseReason>>>,
}

impl Live {
    fn result(&self) -> Option<CloseReason> {
        self.result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

static NEXT_CHANNEL: AtomicU64 = AtomicU64::new(0);

fn fail(what: impl fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// Checks that each connection ended exactly when and how the model says,
/// and that the table holds exactly the model's subscriptions.
fn verify(at: &str, channel: &Mem, good_subs: usize, live: &[Live]) -> TestCaseResult {
    for (i, conn) in live.iter().enumerate() {
        let real = conn.result();
        match (&conn.model.end, &real) {
            (None, None) => {}
            (Some(end), Some(reason)) => ensure(end.matches(reason), || {
                format!("{at}: connection {i} ended with {reason:?}, the model says {end:?}")
            })?,
            (end, reason) => {
                return Err(fail(format!(
                    "{at}: connection {i} ended: {reason:?}, the model says {end:?}"
                )))
            }
        }
    }
    let alive = live.iter().filter(|c| c.model.alive());
    let subscriptions = good_subs + alive.clone().map(|c| c.model.subs.len()).sum::<usize>();
    let carriers = 1 + alive.filter(|c| !c.model.subs.is_empty()).count();
    ensure(
        channel.subscription_count() == subscriptions && channel.carrier_count() == carriers,
        || {
            format!(
                "{at}: the table holds {} subscriptions of {} carriers, the model {subscriptions} of {carriers}",
                channel.subscription_count(),
                channel.carrier_count()
            )
        },
    )
}

fn run_case(case: &Case, tally: &RefCell<Tally>) -> TestCaseResult {
    let runtime = ManualRuntime::new();
    let name = format!(
        "soak/fuzz/core/{}",
        NEXT_CHANNEL.fetch_add(1, Ordering::Relaxed)
    );
    let channel: Mem = ChannelBuilder::new(name)
        .open(runtime.clone(), MemoryBackend::new)
        .map_err(fail)?;
    channel.kickoff().map_err(fail)?;
    let names = published_names();
    let (good_sink, mut good_client) = mpsc::unbounded::<Frame>();
    let good =
        Carrier::new(&runtime, good_sink, CarrierConfig::default().capacity(1024)).map_err(fail)?;
    for event in &names {
        channel.subscribe(event, &good).map_err(fail)?;
    }

    let mut live = Vec::new();
    for spec in &case.conns {
        let (input, stream) = mpsc::unbounded();
        let record = Arc::new(Mutex::new(Recorded::default()));
        let result = Arc::new(Mutex::new(None));
        let sink = ClientSink {
            kind: spec.sink,
            taken: 0,
            record: record.clone(),
        };
        let options = SocketOptions::new(spec.initial.clone())
            .control_messages(spec.control)
            .authorize(FuzzAuthorizer)
            .ping_interval(PING)
            .carrier(
                CarrierConfig::default()
                    .capacity(spec.capacity)
                    .overflow(spec.overflow)
                    .close_timeout(CLOSE_TIMEOUT),
            );
        let task = {
            let (channel, result) = (channel.clone(), result.clone());
            async move {
                let reason = serve_socket(&channel, sink, stream, options).await;
                *result.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            }
        };
        runtime.spawn(task).map_err(fail)?;
        live.push(Live {
            model: ConnModel::new(
                spec.control,
                &spec.initial,
                spec.sink,
                spec.capacity,
                spec.overflow,
            ),
            spec: spec.clone(),
            input: Some(input),
            record,
            result,
        });
    }
    runtime.run_until_stalled();
    verify("after connecting", &channel, names.len(), &live)?;

    let mut published = Vec::new();
    let n = live.len();
    let tick = |live: &mut Vec<Live>| {
        for conn in live.iter_mut() {
            conn.model.tick();
        }
        runtime.advance(PING);
    };
    for (i, step) in case.steps.iter().enumerate() {
        match step {
            Step::Send(c, msg) => {
                let conn = &mut live[c % n];
                conn.model.message(msg);
                let item = match msg {
                    Msg::Text(text) => Ok(Incoming::Text(text.clone())),
                    Msg::Binary(len) => Ok(Incoming::Binary(vec![0u8; *len].into())),
                    Msg::Alive => Ok(Incoming::Alive),
                    Msg::Close => Ok(Incoming::Close),
                    Msg::Fails(failure) => Err(read_error(failure.error())),
                };
                if let Some(input) = &conn.input {
                    // Refused once the server stopped reading: as a socket.
                    let _ = input.unbounded_send(item);
                }
                runtime.run_until_stalled();
            }
            Step::End(c) => {
                let conn = &mut live[c % n];
                conn.model.stream_ends();
                conn.input = None;
                runtime.run_until_stalled();
            }
            Step::Publish(e) => {
                let seq = published.len() as u64;
                let event = &names[*e];
                for conn in live.iter_mut() {
                    conn.model.publish(event, seq);
                }
                match runtime.run(channel.publish(event, &seq)) {
                    Some(Ok(())) => published.push((event.clone(), seq)),
                    other => return Err(fail(format!("step {i}: publish gave {other:?}"))),
                }
                runtime.run_until_stalled();
            }
            Step::Tick => tick(&mut live),
        }
        verify(
            &format!("after step {i} ({})", shorten(&format!("{step:?}"), 120)),
            &channel,
            names.len(),
            &live,
        )?;
    }

    // The clients still connected leave, or fall silent until the pings
    // give up on them.
    for conn in live.iter_mut().filter(|c| !c.spec.silent_at_end) {
        conn.model.stream_ends();
        conn.input = None;
    }
    runtime.run_until_stalled();
    verify("after the clients left", &channel, names.len(), &live)?;
    tick(&mut live);
    tick(&mut live);
    verify(
        "after two silent ping intervals",
        &channel,
        names.len(),
        &live,
    )?;
    // Writers stuck on a stalled client give up after the close timeout.
    runtime.advance(CLOSE_TIMEOUT);

    for (i, conn) in live.iter().enumerate() {
        let record = conn.record.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.spec.sink == SinkKind::Stalled {
            continue;
        }
        let mut received = Vec::new();
        for item in &record.items {
            received.push(match item {
                Outgoing::Frame(frame) => simplify_frame(frame.as_str()).map_err(fail)?,
                Outgoing::Ping => Out::Ping,
                Outgoing::Close(code, reason) => {
                    ensure(reason.len() <= close_code::MAX_REASON, || {
                        format!("connection {i}: close reason of {} bytes", reason.len())
                    })?;
                    Out::Close(*code)
                }
            });
        }
        ensure(received == conn.model.out, || {
            format!(
                "connection {i} ({:?}) received {received:?}, the model says {:?}",
                conn.spec.sink, conn.model.out
            )
        })?;
        ensure(record.closed, || {
            format!("connection {i}: the server never closed its sink")
        })?;
    }

    let mut got = Vec::new();
    while let Ok(frame) = good_client.try_recv() {
        match simplify_frame(frame.as_str()).map_err(fail)? {
            Out::Event(name, seq) => got.push((name, seq)),
            other => return Err(fail(format!("the good carrier received {other:?}"))),
        }
    }
    {
        let mut tally = tally.borrow_mut();
        tally.cases += 1;
        tally.connections += live.len() as u64;
        for step in &case.steps {
            if let Step::Send(_, msg) = step {
                tally.messages += 1;
                tally.texts += u64::from(matches!(msg, Msg::Text(_)));
            }
        }
        tally.publishes += published.len() as u64;
        let delivered = got.iter().filter(|e| published.contains(e)).count() as u64;
        tally.delivered += delivered;
        tally.lost += published.len() as u64 - delivered.min(published.len() as u64);
        tally.duplicates += (got.len() as u64).saturating_sub(delivered);
        for conn in &live {
            let end = match &conn.model.end {
                Some(End::Code(code)) => {
                    if *code != close_code::GOING_AWAY {
                        tally.rejected += 1;
                    }
                    format!("closed {code}")
                }
                Some(other) => format!("{other:?}"),
                None => "open".to_string(),
            };
            *tally.ends.entry(end).or_default() += 1;
        }
    }
    ensure(got == published, || {
        format!("the well-behaved carrier received {got:?}, published {published:?}")
    })?;
    ensure(runtime.task_count() == 2, || {
        format!(
            "{} tasks alive after every connection ended (expected 2: the channel's consumer and the good carrier's writer)",
            runtime.task_count()
        )
    })?;
    let stopped = runtime.run(channel.stop());
    drop(good);
    drop(live);
    runtime.run_until_stalled();
    ensure(stopped.is_some() && runtime.task_count() == 0, || {
        format!(
            "{} tasks alive after the channel stopped",
            runtime.task_count()
        )
    })
}

/// Runs this part; returns its load for the row.
pub fn run(profile: Profile, seed: u64, row: &mut Row) -> String {
    let cases = profile.pick(2_000, 100_000);
    let tally = RefCell::new(Tally::default());
    let mut runner = runner(seed, 1, cases, 2_000);
    run_cases(&mut runner, &case(), "core sockets", row, |case| {
        run_case(&case, &tally)
    });
    let tally = tally.into_inner();
    row.check(
        tally.cases >= u64::from(cases),
        format!("core sockets: only {} of {cases} cases ran", tally.cases),
    );
    row.published += tally.publishes;
    row.delivered += tally.delivered;
    row.lost += tally.lost;
    row.duplicates += tally.duplicates;
    row.errors += tally.rejected;
    let ends: Vec<String> = tally
        .ends
        .iter()
        .map(|(end, n)| format!("{end}: {n}"))
        .collect();
    row.note(format!(
        "core serve_socket: {} scripts, {} connections, {} client messages ({} text/control messages), {} events to a well-behaved carrier; connections ended {}",
        tally.cases,
        tally.connections,
        tally.messages,
        tally.texts,
        tally.publishes,
        ends.join(", ")
    ));
    format!(
        "{} core socket scripts ({} messages)",
        tally.cases, tally.messages
    )
}
