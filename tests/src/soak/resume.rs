//! Resume under churn (issue 11): clients on in-memory sinks, each
//! dropping its connection at random (about 5% per second) and coming back
//! after a pause with the position of the last event it saw
//! (`Channel::subscribe_after`), while 100 events/s are published.
//!
//! Counted at each client, event by event: an event whose sequence number
//! skips ahead of the one expected is a loss, one at or below the last
//! seen a duplicate. A client told that recovery failed (its position had
//! left the history) reloads: what it missed then is counted apart, as
//! "recovery failed", and its count starts again at the next event. Lost
//! and duplicates must be 0; a recovery that failed while the position was
//! well inside the history is a failure of its own; and the history never
//! holds more than its limits (sampled every 50 ms).
//!
//! Most pauses are short (up to 2 s); one in ten is longer than the
//! history holds at this rate, so both outcomes occur.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use serde::Serialize;
use tbone_dispatch::{
    Carrier, CarrierConfig, ChannelBuilder, CloseReason, Frame, HistoryLimits, MemoryBackend,
    PositionedEnvelope, Resumed,
};
use tbone_dispatch_tokio::{MemoryChannel, Tokio};

use super::{Profile, Row};

/// Events per second.
const RATE: u64 = 100;
/// Chance per second that a connected client drops its connection.
const DROP_RATE: f64 = 0.05;

#[derive(Serialize)]
struct Tick {
    seq: u64,
}

/// What is shared by the publisher, the clients and the sampler.
struct Run {
    channel: MemoryChannel,
    /// Events published so far (the next sequence number).
    published: AtomicU64,
    /// Set once the publisher is done; `published` is then final.
    finished: AtomicBool,
    /// Pauses longer than this one (the history's span at `RATE`) are
    /// meant to outlast the history.
    history_span: Duration,
    seed: u64,
}

/// One client's count.
#[derive(Clone, Debug, Default)]
struct Tally {
    delivered: u64,
    lost: u64,
    duplicates: u64,
    reconnects: u64,
    replayed: u64,
    longest_replay: u64,
    recovery_failed: u64,
    /// Events a client whose recovery failed never saw (it reloads).
    skipped_after_failure: u64,
    /// Recoveries that failed although the position was well inside the
    /// history.
    spurious_failures: u64,
    /// Connections the overflow policy dropped (the client resumes at once).
    dropped_for_overflow: u64,
    /// Whether it saw the last event (or reloaded after the end).
    finished: bool,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.reconnects += other.reconnects;
        self.replayed += other.replayed;
        self.longest_replay = self.longest_replay.max(other.longest_replay);
        self.recovery_failed += other.recovery_failed;
        self.skipped_after_failure += other.skipped_after_failure;
        self.spurious_failures += other.spurious_failures;
        self.dropped_for_overflow += other.dropped_for_overflow;
    }
}

/// splitmix64: each client's own reproducible randomness.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Time until the next drop: exponential, `DROP_RATE` per second.
    fn connected_for(&mut self) -> Duration {
        Duration::from_secs_f64(-(1.0 - self.unit()).ln() / DROP_RATE)
    }

    /// How long a client stays away: up to 2 s, or (one in ten) 1.2 to 1.6
    /// history spans.
    fn away_for(&mut self, history_span: Duration) -> Duration {
        if self.unit() < 0.9 {
            Duration::from_secs_f64(self.unit() * 2.0)
        } else {
            history_span.mul_f64(1.2 + self.unit() * 0.4)
        }
    }
}

/// A connection: a carrier over an in-memory sink.
fn connect() -> Result<(Carrier<Tokio>, mpsc::UnboundedReceiver<Frame>), String> {
    let (sink, frames) = mpsc::unbounded::<Frame>();
    let carrier = Carrier::new(&Tokio::default(), sink, CarrierConfig::default())
        .map_err(|e| e.to_string())?;
    Ok((carrier, frames))
}

/// The sequence number and position of an event frame.
fn parse(frame: &Frame) -> Option<(u64, String)> {
    let value: serde_json::Value = serde_json::from_str(frame.as_str()).ok()?;
    let seq = value["payload"]["data"]["seq"].as_u64()?;
    let position = value["position"].as_str()?.to_string();
    Some((seq, position))
}

/// One client, from its first subscription (made before publishing
/// starts) to the last event.
async fn client(
    run: Arc<Run>,
    id: u64,
    mut carrier: Carrier<Tokio>,
    mut frames: mpsc::UnboundedReceiver<Frame>,
) -> Result<Tally, String> {
    let mut random = Random(run.seed ^ id.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut tally = Tally::default();
    // The sequence number expected next; `None` after a failed recovery.
    let mut next: Option<u64> = Some(0);
    let mut last: Option<(u64, String)> = None;
    let mut drop_at = Instant::now() + random.connected_for();
    loop {
        let finished = run.finished.load(Ordering::SeqCst);
        let total = run.published.load(Ordering::SeqCst);
        // Done once it saw the last event, or, after a failed recovery
        // with no live event since, once nothing more is published (it
        // reloads).
        if finished && next.is_none_or(|n| n >= total) {
            tally.finished = true;
            return Ok(tally);
        }
        // Wakes at least every 100 ms to see whether the run ended.
        let wake = drop_at.min(Instant::now() + Duration::from_millis(100));
        let frame = tokio::select! {
            frame = frames.next() => frame,
            () = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() < drop_at || finished || last.is_none() {
                    if last.is_none() {
                        drop_at = Instant::now() + random.connected_for();
                    }
                    continue;
                }
                None
            }
        };
        if let Some(frame) = frame {
            let Some((seq, position)) = parse(&frame) else {
                return Err(format!("client {id}: not an event frame: {frame}"));
            };
            tally.delivered += 1;
            match next {
                None => {
                    let seen = last.as_ref().map_or(0, |(seen, _)| seen + 1);
                    tally.skipped_after_failure += seq.saturating_sub(seen);
                    next = Some(seq + 1);
                }
                Some(n) if seq == n => next = Some(n + 1),
                Some(n) if seq > n => {
                    tally.lost += seq - n;
                    next = Some(seq + 1);
                }
                Some(_) => tally.duplicates += 1,
            }
            if next == Some(seq + 1) {
                last = Some((seq, position));
            }
            continue;
        }

        // The connection ends: dropped at random, or by the overflow policy.
        let away = if carrier.close_reason() == Some(CloseReason::Overflow) {
            tally.dropped_for_overflow += 1;
            Duration::ZERO
        } else {
            random.away_for(run.history_span)
        };
        carrier.close();
        drop(frames);
        tokio::time::sleep(away).await;
        let (seen, position) = last
            .clone()
            .ok_or_else(|| format!("client {id}: reconnecting without a position"))?;
        let (again, again_frames) = connect()?;
        let published = run.published.load(Ordering::SeqCst);
        let resumed = run
            .channel
            .subscribe_after(&["tick"], &again, &position)
            .map_err(|e| format!("client {id}: resuming: {e}"))?;
        tally.reconnects += 1;
        match resumed {
            Resumed::Replayed { events } => {
                tally.replayed += events as u64;
                tally.longest_replay = tally.longest_replay.max(events as u64);
            }
            Resumed::Failed => {
                tally.recovery_failed += 1;
                // The history holds the last `RATE * span` events; a
                // position less than half of that behind must resume.
                let behind = published.saturating_sub(seen + 1);
                if behind * 2 < RATE * run.history_span.as_secs() {
                    tally.spurious_failures += 1;
                }
                next = None;
                // The recovery-failed frame comes first.
                let mut again_frames = again_frames;
                match again_frames.next().await {
                    Some(frame) if frame.as_str().contains("recovery_failed") => {}
                    other => {
                        return Err(format!(
                            "client {id}: expected the recovery-failed frame, got {other:?}"
                        ))
                    }
                }
                if run.finished.load(Ordering::SeqCst) {
                    // Nothing live will follow: the client reloads and is done.
                    tally.finished = true;
                    return Ok(tally);
                }
                (carrier, frames) = (again, again_frames);
                drop_at = Instant::now() + random.connected_for();
                continue;
            }
            _ => return Err(format!("client {id}: unexpected {resumed:?}")),
        }
        (carrier, frames) = (again, again_frames);
        drop_at = Instant::now() + random.connected_for();
    }
}

pub async fn run(profile: Profile) -> Row {
    let clients = profile.pick(200u64, 1_000);
    let seconds = profile.pick(8u64, 60);
    // The default history in the long profile (1 000 events: 10 s at this
    // rate); a shorter one in the short profile, so that some pauses
    // outlast it there too.
    let limits = profile.pick(
        HistoryLimits::default().events(200),
        HistoryLimits::default(),
    );
    let history_span = Duration::from_secs(limits.events as u64 / RATE);
    let mut row = Row::new(
        "resume after reconnects",
        format!("{clients} clients, {RATE} events/s for {seconds} s, history of {} events", limits.events),
        format!(
            "each client drops its connection at random ({:.0}%/s) and resumes after 0-2 s, or (1 in 10) after 1.2-1.6x the history's span",
            DROP_RATE * 100.0
        ),
    );
    let channel = match ChannelBuilder::new("soak/resume")
        .envelope(PositionedEnvelope)
        .history(limits)
        .open(Tokio::default(), MemoryBackend::new)
    {
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
    let run = Arc::new(Run {
        channel: channel.clone(),
        published: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        history_span,
        seed: 0x5eed_0f11,
    });

    let mut tasks = Vec::new();
    for id in 0..clients {
        let (carrier, frames) = match connect() {
            Ok(connection) => connection,
            Err(e) => {
                row.check(false, format!("client {id}: {e}"));
                return row;
            }
        };
        if let Err(e) = channel.subscribe("tick", &carrier) {
            row.check(false, format!("client {id}: subscribing: {e}"));
            return row;
        }
        tasks.push(tokio::spawn(client(run.clone(), id, carrier, frames)));
    }

    // Samples the history's size while events flow.
    let sampler = tokio::spawn({
        let run = run.clone();
        async move {
            let (mut events, mut bytes) = (0, 0);
            while !run.finished.load(Ordering::SeqCst) {
                let stats = run.channel.history_stats();
                events = events.max(stats.events);
                bytes = bytes.max(stats.bytes);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (events, bytes)
        }
    });

    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut errors = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let seq = run.published.load(Ordering::SeqCst);
        match channel.publish("tick", &Tick { seq }).await {
            Ok(()) => {
                run.published.store(seq + 1, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::error!(%e, "publish refused");
                errors += 1;
            }
        }
    }
    run.finished.store(true, Ordering::SeqCst);
    let published = run.published.load(Ordering::SeqCst);
    let (history_events, history_bytes) = sampler.await.unwrap_or((0, 0));

    // Clients away at the end come back after their pause.
    let limit = history_span.mul_f64(1.6) + Duration::from_secs(15);
    let mut total = Tally::default();
    let mut unfinished = 0;
    let mut client_errors = Vec::new();
    for task in tasks {
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(tally))) => {
                if !tally.finished {
                    unfinished += 1;
                }
                total.add(&tally);
            }
            Ok(Ok(Err(e))) => client_errors.push(e),
            Ok(Err(e)) => client_errors.push(format!("a client task failed: {e}")),
            Err(_) => unfinished += 1,
        }
    }

    row.published = published;
    row.delivered = total.delivered;
    row.lost = total.lost;
    row.duplicates = total.duplicates;
    row.errors = errors;
    row.check(errors == 0, format!("{errors} publishes refused"));
    row.check(
        total.lost == 0,
        format!(
            "{} events lost by clients whose position was in the history",
            total.lost
        ),
    );
    row.check(
        total.duplicates == 0,
        format!("{} events seen twice", total.duplicates),
    );
    row.check(
        unfinished == 0,
        format!("{unfinished} clients never reached the last event"),
    );
    row.check(
        total.spurious_failures == 0,
        format!(
            "{} recoveries failed although the position was well inside the history",
            total.spurious_failures
        ),
    );
    row.check(
        total.recovery_failed > 0 && total.replayed > 0,
        format!(
            "both outcomes should occur: {} replays, {} failed recoveries",
            total.reconnects - total.recovery_failed,
            total.recovery_failed
        ),
    );
    for e in client_errors.iter().take(5) {
        row.check(false, e.clone());
    }
    row.check(
        history_events <= limits.events && history_bytes <= limits.bytes,
        format!(
            "the history held {history_events} events / {history_bytes} bytes, limits {} / {}",
            limits.events, limits.bytes
        ),
    );
    row.note(format!(
        "{} reconnects: {} resumed with {} events replayed (longest replay {}), {} told that recovery failed ({} events they never saw, counted apart from lost), {} connections dropped by the overflow policy and resumed at once",
        total.reconnects,
        total.reconnects - total.recovery_failed,
        total.replayed,
        total.longest_replay,
        total.recovery_failed,
        total.skipped_after_failure,
        total.dropped_for_overflow,
    ));
    row.note(format!(
        "history: at most {history_events} events and {history_bytes} bytes held (limits {} events, {} bytes)",
        limits.events, limits.bytes
    ));
    let _ = channel.stop().await;
    row
}
