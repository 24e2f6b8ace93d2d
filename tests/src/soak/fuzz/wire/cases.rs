//! Running a case, and the part as a whole.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures::channel::mpsc;
use futures::StreamExt;
use proptest::test_runner::{TestCaseError, TestCaseResult};
use tbone_dispatch::{close_code, CloseReason, SocketOptions};
use tbone_dispatch_tokio::{MemoryChannel, Tokio};

use super::client::{drive, first_close, parse_frames, ReadEnd};
use super::frames::{Finish, WireCase, WireConn, WireFrame, CLOSE, PING_OP, PONG, TEXT};
use super::server::{Outcome, Server};
use super::strategies::wire_case;
use super::{BOUND, EVENTS, MAX_MESSAGE, PING};
use crate::soak::fuzz::socket::{
    simplify_frame, ConnModel, End, FuzzAuthorizer, Msg, Out, ReadFailure, SinkKind,
};
use crate::soak::fuzz::{ensure, run_cases, runner};
use crate::soak::{Profile, Row};
use crate::TestRuntime;

#[derive(Default)]
struct Tally {
    cases: u64,
    byte_streams: u64,
    pre_handshake: u64,
    framed: u64,
    frames: u64,
    texts: u64,
    bytes: u64,
    publishes: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    ends: BTreeMap<String, u64>,
    rejected: u64,
    /// Rejections whose close frame the client never got.
    close_lost: u64,
}

struct Part {
    channel: MemoryChannel,
    controlled: Server,
    plain: Server,
    good: futures::lock::Mutex<mpsc::UnboundedReceiver<String>>,
    published: RefCell<u64>,
    tally: RefCell<Tally>,
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

async fn run_wire_case(part: &Part, case: &WireCase) -> TestCaseResult {
    let server = if case.control {
        &part.controlled
    } else {
        &part.plain
    };
    let first = *part.published.borrow();
    let publish = async {
        for i in 0..case.publishes {
            let seq = first + i as u64;
            part.channel
                .publish(EVENTS[i % 2], &seq)
                .await
                .map_err(|e| fail(format!("publishing to the good client: {e}")))?;
        }
        Ok::<_, TestCaseError>(())
    };
    let clients = futures::future::join_all(case.conns.iter().map(|conn| async move {
        let driven = tokio::time::timeout(BOUND, drive(server.addr, conn)).await;
        match driven {
            Ok(seen) => seen,
            Err(_) => Err(format!(
                "the connection did not end within {BOUND:?} (a hang)"
            )),
        }
    }));
    let (published, seen) = futures::join!(publish, clients);
    published?;
    *part.published.borrow_mut() += case.publishes as u64;

    for (i, (conn, seen)) in case.conns.iter().zip(seen).enumerate() {
        let at = || format!("connection {i}");
        let seen = seen.map_err(|e| fail(format!("{}: {e}", at())))?;
        let outcome = server
            .outcome(seen.peer, BOUND)
            .await
            .ok_or_else(|| fail(format!("{}: the server never reported how it ended", at())))?;
        let reason = match (&outcome, seen.handshake) {
            (Outcome::Panicked, _) => return Err(fail(format!("{}: serving it panicked", at()))),
            (Outcome::Handshake(_), false) => None,
            (Outcome::Handshake(e), true) => {
                return Err(fail(format!("{}: a good handshake failed: {e}", at())))
            }
            (Outcome::Served(reason), _) => Some(reason.clone()),
        };
        // A client that did its own (possibly mangled, yet accepted)
        // handshake reads the upgrade response first.
        let mut stream = seen.received.as_slice();
        if !seen.handshake && reason.is_some() {
            let end = stream.windows(4).position(|w| w == b"\r\n\r\n");
            ensure(stream.starts_with(b"HTTP/1.1 101") && end.is_some(), || {
                format!("{}: served without an upgrade response", at())
            })?;
            stream = &stream[end.map_or(0, |e| e + 4)..];
        }
        let (frames, truncated) = if reason.is_some() {
            parse_frames(stream).map_err(|e| fail(format!("{}: the server sent {e}", at())))?
        } else {
            (Vec::new(), false)
        };
        ensure(!truncated || seen.end == ReadEnd::Reset, || {
            format!(
                "{}: the server's stream ended in the middle of a frame",
                at()
            )
        })?;
        let mut errors_seen = 0;
        for (op, payload) in &frames {
            match *op {
                TEXT => {
                    let text = std::str::from_utf8(payload)
                        .map_err(|_| fail(format!("{}: a text frame that is not UTF-8", at())))?;
                    if simplify_frame(text).map_err(|e| fail(format!("{}: {e}", at())))?
                        == Out::Error
                    {
                        errors_seen += 1;
                    }
                }
                PING_OP | PONG | CLOSE => {}
                other => return Err(fail(format!("{}: the server sent opcode {other}", at()))),
            }
        }
        // Whether the client sent nothing after what ended the connection:
        // only then is the close frame sure to arrive. With more input
        // unread, the server's socket closes with a reset, which destroys a
        // close frame still held back by Nagle's algorithm (for instance
        // right after the server answered a ping): see the row's notes.
        let mut quiet_after = false;
        if let WireConn::Frames { frames, finish } = conn {
            let mut model = ConnModel::new(
                case.control,
                &EVENTS.map(String::from),
                SinkKind::Reading,
                256,
                Default::default(),
            );
            for (n, frame) in frames.iter().enumerate() {
                model.message(&frame.msg());
                if !model.alive() {
                    // An oversized frame is refused on its header: its
                    // payload stays unread.
                    let whole = !matches!(frame, WireFrame::Oversized { .. });
                    quiet_after = whole && n + 1 == frames.len() && *finish == Finish::Silent;
                    break;
                }
            }
            match finish {
                Finish::CloseFrame => model.message(&Msg::Close),
                Finish::Shutdown => model.message(&Msg::Fails(ReadFailure::ResetWithoutClose)),
                Finish::Silent if model.alive() => {
                    model.tick();
                    model.tick();
                    quiet_after = true;
                }
                Finish::Silent => {}
            }
            let expected = model.end.clone().unwrap_or(End::Peer);
            let reason = reason.clone();
            ensure(reason.as_ref().is_some_and(|r| expected.matches(r)), || {
                format!(
                    "{}: ended with {reason:?}, the model says {expected:?}",
                    at()
                )
            })?;
            let errors_expected = model.out.iter().filter(|o| **o == Out::Error).count();
            ensure(errors_seen <= errors_expected, || {
                format!(
                    "{}: {errors_seen} error frames, the model says at most {errors_expected}",
                    at()
                )
            })?;
        }
        let close = first_close(&frames);
        if let Some(CloseReason::Rejected(code, message)) = &reason {
            ensure(close.is_none() || close == Some(Some(*code)), || {
                format!(
                    "{}: rejected with {code} ({message}), the client got close {close:?}",
                    at()
                )
            })?;
            ensure(!quiet_after || close == Some(Some(*code)), || {
                format!(
                    "{}: rejected with {code} ({message}) after its last input, yet the client got no close frame (read end {:?})",
                    at(),
                    seen.end
                )
            })?;
            if close.is_none() {
                part.tally.borrow_mut().close_lost += 1;
            }
        }
        let mut tally = part.tally.borrow_mut();
        tally.bytes += seen.bytes_sent as u64;
        match conn {
            WireConn::PreHandshake { .. } => tally.pre_handshake += 1,
            WireConn::Raw { .. } => tally.byte_streams += 1,
            WireConn::Frames { frames, .. } => {
                tally.framed += 1;
                tally.frames += frames.len() as u64;
                tally.texts += frames
                    .iter()
                    .filter(|f| matches!(f, WireFrame::Text(_) | WireFrame::Fragmented(..)))
                    .count() as u64;
            }
        }
        let end = match &reason {
            None => "handshake refused".to_string(),
            Some(CloseReason::Rejected(code, _)) => {
                if *code != close_code::GOING_AWAY {
                    tally.rejected += 1;
                }
                format!("closed {code}")
            }
            Some(other) => format!("{other:?}"),
        };
        if reason.is_none() {
            tally.rejected += 1;
        }
        *tally.ends.entry(end).or_default() += 1;
    }

    // The well-behaved client has every event of this case, in order
    // (events of an earlier case that failed before reading them are
    // skipped: cases are independent).
    let expected: Vec<u64> = (first..*part.published.borrow()).collect();
    let mut got = Vec::new();
    let arrived = tokio::time::timeout(BOUND, async {
        let mut good = part.good.lock().await;
        while got.len() < expected.len() {
            match good.next().await.map(|text| simplify_frame(&text)) {
                Some(Ok(Out::Event(_, seq))) if seq < first => {}
                Some(Ok(Out::Event(_, seq))) => got.push(seq),
                Some(other) => return Err(format!("the well-behaved client got {other:?}")),
                None => return Err("the well-behaved client's connection ended".to_string()),
            }
        }
        Ok(())
    })
    .await;
    {
        let mut tally = part.tally.borrow_mut();
        tally.cases += 1;
        tally.publishes += expected.len() as u64;
        let delivered = got.iter().filter(|s| expected.contains(s)).count() as u64;
        tally.delivered += delivered;
        tally.lost += expected.len() as u64 - delivered.min(expected.len() as u64);
        tally.duplicates += (got.len() as u64).saturating_sub(delivered);
    }
    ensure(arrived == Ok(Ok(())) && got == expected, || {
        format!("the well-behaved client got {got:?} of {expected:?} ({arrived:?})")
    })?;
    ensure(
        part.channel.subscription_count() == EVENTS.len() && part.channel.carrier_count() == 1,
        || {
            format!(
                "after the case the table holds {} subscriptions of {} carriers (expected only the well-behaved client: {} of 1)",
                part.channel.subscription_count(),
                part.channel.carrier_count(),
                EVENTS.len()
            )
        },
    )
}

async fn setup() -> Result<Part, String> {
    let channel = MemoryChannel::named("soak/fuzz/wire").map_err(|e| e.to_string())?;
    channel.kickoff().map_err(|e| e.to_string())?;
    let options = |control: bool| {
        SocketOptions::new(EVENTS)
            .control_messages(control)
            .authorize(FuzzAuthorizer)
            .ping_interval(PING)
            .handshake_timeout(PING)
            .max_message_size(MAX_MESSAGE)
    };
    let controlled = Server::start(&channel, options(true))
        .await
        .map_err(|e| e.to_string())?;
    let plain = Server::start(&channel, options(false))
        .await
        .map_err(|e| e.to_string())?;

    let (io, _) = Tokio::connect_tcp(controlled.addr)
        .await
        .map_err(|e| e.to_string())?;
    let (client, _) = async_tungstenite::client_async(format!("ws://{}/ws", controlled.addr), io)
        .await
        .map_err(|e| format!("the well-behaved client's handshake: {e}"))?;
    let (good_tx, good) = mpsc::unbounded();
    // Reading also answers the server's pings.
    tokio::spawn(async move {
        let mut client = client;
        while let Some(Ok(message)) = client.next().await {
            if let Message::Text(text) = message {
                if good_tx.unbounded_send(text.as_str().to_owned()).is_err() {
                    break;
                }
            }
        }
        let _ = client.close(None).await;
    });
    let deadline = tokio::time::Instant::now() + BOUND;
    while channel.carrier_count() < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Part {
        channel,
        controlled,
        plain,
        good: futures::lock::Mutex::new(good),
        published: RefCell::new(0),
        tally: RefCell::new(Tally::default()),
    })
}

/// Runs this part; returns its load for the row.
pub fn run(
    profile: Profile,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
    row: &mut Row,
) -> String {
    let cases = profile.pick(100, 2_000);
    let part = match runtime.block_on(setup()) {
        Ok(part) => part,
        Err(e) => {
            row.check(false, format!("websocket over TCP: setup failed: {e}"));
            return "websocket over TCP: not run".into();
        }
    };
    let mut runner = runner(seed, 2, cases, 256);
    run_cases(
        &mut runner,
        &wire_case(),
        "websocket over TCP",
        row,
        |case| runtime.block_on(run_wire_case(&part, &case)),
    );
    part.controlled.accept_loop.abort();
    part.plain.accept_loop.abort();
    runtime.block_on(part.channel.stop());
    let tally = part.tally.into_inner();
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
    let connections = tally.byte_streams + tally.pre_handshake + tally.framed;
    row.note(format!(
        "websocket over TCP: {} cases, {connections} connections: {} websocket byte streams, {} pre-handshake byte streams, {} framed sequences ({} frames, {} text/control messages), {} KiB written; {} events to a well-behaved client; connections ended {}",
        tally.cases,
        tally.byte_streams,
        tally.pre_handshake,
        tally.framed,
        tally.frames,
        tally.texts,
        tally.bytes / 1024,
        tally.publishes,
        ends.join(", ")
    ));
    if tally.close_lost > 0 {
        row.note(format!(
            "websocket over TCP: {} rejected connection(s) reached the client without their close frame (it saw a reset, or the end of the stream): each had sent more after the offending input, so the server closed its socket with input unread (a TCP reset) while Nagle's algorithm held the close frame back behind an unacknowledged frame, typically the pong to the client's ping. TCP_NODELAY on the accepted socket delivers it; a lingering close would too",
            tally.close_lost
        ));
    }
    format!("{connections} fuzzed TCP websocket connections")
}
