//! Round trips: every client sends a TBone request, waits for the answer
//! (the response, or the baseline's echo), and sends the next; each round
//! trip in the measured window goes into the histogram.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt as _;

use super::{connect_and_settle, number_field, CpuUse, Dial, Socket};
use crate::args::{Args, Kind, Mode};
use crate::child::ServerProcess;
use crate::histogram::Histogram;
use crate::process::{vm_rss_kib, CpuSample};
use crate::BoxError;

/// What every client of an rtt run adds to.
struct Stats {
    hist: Histogram,
    /// Whether round trips finishing now are measured.
    recording: AtomicBool,
    /// Round trips measured.
    round_trips: AtomicU64,
    /// Answers that were not the expected one.
    wrong: AtomicU64,
}

/// The phases every client follows, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Connecting,
    Running,
    Stopping,
}

/// How one client's run ended.
struct ClientEnd {
    measured: u64,
    /// Why the client stopped before it was told to, if it did.
    failed: Option<String>,
}

/// Whether `reply` answers request `key`: the library's response
/// (`{"type":"response","key":..,"status":200,..}`) or the echo of the
/// request itself (no status).
fn answers(reply: &str, key: u64) -> bool {
    number_field(reply, "\"key\":") == Some(key)
        && number_field(reply, "\"status\":").is_none_or(|status| status == 200)
}

/// Sends `request` and waits for the next text message.
async fn round_trip(ws: &mut Socket, request: String) -> Result<String, String> {
    ws.send(Message::text(request))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(reply))) => return Ok(reply.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the server: {frame:?}"))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("the connection ended".into()),
        }
    }
}

async fn client(
    dial: Dial,
    stats: Arc<Stats>,
    mut phase: tokio::sync::watch::Receiver<Phase>,
) -> ClientEnd {
    let mut end = ClientEnd {
        measured: 0,
        failed: None,
    };
    let Some(mut ws) = dial.open().await else {
        return end;
    };
    let started = phase.wait_for(|p| *p >= Phase::Running).await.map(|p| *p);
    if !matches!(started, Ok(Phase::Running)) {
        let _ = ws.close(None).await;
        return end;
    }
    let mut key = 0u64;
    loop {
        key += 1;
        let request = format!(r#"{{"type":"request","key":{key},"method":"GET","href":"/load/"}}"#);
        let sent = Instant::now();
        let reply = tokio::select! {
            biased;
            _ = phase.changed() => break,
            reply = round_trip(&mut ws, request) => reply,
        };
        let us = sent.elapsed().as_micros() as u64;
        match reply {
            Ok(reply) if answers(&reply, key) => {
                if stats.recording.load(Ordering::Relaxed) {
                    stats.hist.record(us);
                    stats.round_trips.fetch_add(1, Ordering::Relaxed);
                    end.measured += 1;
                }
            }
            Ok(reply) => {
                if stats.wrong.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("tbone-load: request {key} was answered {reply:?}");
                }
            }
            Err(e) => {
                end.failed = Some(e);
                return end;
            }
        }
    }
    let _ = ws.close(None).await;
    end
}

pub(super) fn run(
    kind: Kind,
    args: &Args,
    server: &mut ServerProcess,
    addr: SocketAddr,
) -> Result<(), BoxError> {
    let pid = server.pid();
    let stats = Arc::new(Stats {
        hist: Histogram::new(),
        recording: AtomicBool::new(false),
        round_trips: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
    });
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Connecting);

    // Phases 1 and 2: connect everyone; idle connections, idle memory.
    let (clients, connection) = connect_and_settle(args, server, addr, |dial| {
        client(dial, stats.clone(), phase_rx.clone())
    })?;
    let connected = connection.connected;

    // Phase 3: round trips; warm up, then measure.
    let _ = phase_tx.send(Phase::Running);
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let cpu0 = CpuSample::take(pid);
    let start = Instant::now();
    stats.recording.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stats.recording.store(false, Ordering::Relaxed);
    let window = start.elapsed().as_secs_f64().max(1e-6);
    let cpu = CpuUse::since(cpu0, pid, window);
    let rss_end = vm_rss_kib(pid).unwrap_or(0);
    let allocs_end = args.alloc_stats.then(|| server.allocs()).transpose()?;
    let round_trips = stats.round_trips.load(Ordering::Relaxed);

    // Phase 4: stop.
    let _ = phase_tx.send(Phase::Stopping);
    let ends: Vec<ClientEnd> = clients.join().into_iter().flatten().collect();
    let failed: Vec<&str> = ends.iter().filter_map(|e| e.failed.as_deref()).collect();
    if let Some(first) = failed.first() {
        eprintln!(
            "tbone-load: {} of {connected} clients stopped early (first: {first})",
            failed.len()
        );
    }
    let wrong = stats.wrong.load(Ordering::Relaxed);
    let errors = failed.len() as u64 + wrong;
    let min_client = ends.iter().map(|e| e.measured).min().unwrap_or(0);
    let max_client = ends.iter().map(|e| e.measured).max().unwrap_or(0);

    let msgs_per_s = round_trips as f64 / window;
    let kib_idle = connection.kib_per_conn(connection.rss_idle);
    let kib_end = connection.kib_per_conn(rss_end);
    let name = kind.name(Mode::Rtt);

    println!("server            {name} (pid {pid}, ws://{addr}/), request -> response round trips");
    connection.print_clients(args);
    println!(
        "round trips       {round_trips} in {window:.2} s after {} s of warm-up, per client min {min_client} max {max_client}",
        args.warmup
    );
    println!(
        "errors            {errors} ({} clients stopped early, {wrong} wrong answers)",
        failed.len()
    );
    println!("round trips/s     {msgs_per_s:.0} (requests answered per second)");
    println!("round trip ms     {}", stats.hist.summary());
    connection.print_rss(
        rss_end,
        &format!("{kib_idle:.1} KiB/conn idle, {kib_end:.1} after the load"),
    );
    cpu.print();
    if let (Some(before), Some(idle), Some(end)) = (
        &connection.allocs_before,
        &connection.allocs_idle,
        &allocs_end,
    ) {
        idle.report_since(before, connected, "idle");
        end.report_since(idle, connected, "load");
    }
    println!(
        "RESULT mode=rtt server={name} clients={connected} seconds={} round_trips={round_trips} \
         msgs_per_s={msgs_per_s:.0} {} \
         min_client={min_client} max_client={max_client} errors={errors} {} \
         kib_per_conn={kib_idle:.1} kib_per_conn_end={kib_end:.1} {}",
        args.seconds,
        stats.hist.result_fields(),
        connection.rss_fields(rss_end),
        cpu.result_fields(args),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::answers;

    #[test]
    fn responses_and_echoes_answer_their_key() {
        let echo = r#"{"type":"request","key":12,"method":"GET","href":"/load/"}"#;
        assert!(answers(echo, 12));
        assert!(!answers(echo, 1));
        assert!(answers(
            r#"{"type":"response","key":3,"status":200,"payload":{"ok":true,"n":1}}"#,
            3
        ));
        assert!(!answers(
            r#"{"type":"response","key":3,"status":404,"payload":"no such resource"}"#,
            3
        ));
    }
}
