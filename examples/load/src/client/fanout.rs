//! Fan-out: every client counts the events the server publishes and
//! records each one's delivery latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt as _;

use super::{client_runtime, connect, connect_all, kib_per_conn, report_failures};
use crate::args::{Args, Kind, Mode};
use crate::child::ServerProcess;
use crate::histogram::Histogram;
use crate::process::{vm_rss_kib, wall_ns, CpuSample};
use crate::BoxError;

/// What every client of a fan-out run adds to.
struct Stats {
    hist: Histogram,
    received: AtomicU64,
    /// Microseconds since `epoch` of the last delivery.
    last_us: AtomicU64,
    epoch: Instant,
}

/// Extracts the `t` field of an event frame without a full JSON parse (the
/// frame's other keys are `type`, `payload`, `name`, `data`, `seq`, `pad`).
fn frame_time(text: &str) -> Option<u64> {
    let at = text.find("\"t\":")? + 4;
    let digits = text[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn client(
    addr: SocketAddr,
    stats: Arc<Stats>,
    semaphore: Arc<tokio::sync::Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let mut ws = match connect(addr, &semaphore).await {
        Ok(ws) => ws,
        Err(e) => {
            let _ = ready.send(Err(e));
            return 0;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut count = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(t) = frame_time(text.as_str()) {
                        let latency_us = wall_ns().saturating_sub(t) / 1000;
                        stats.hist.record(latency_us);
                        stats.received.fetch_add(1, Ordering::Relaxed);
                        let since = stats.epoch.elapsed().as_micros() as u64;
                        stats.last_us.fetch_max(since, Ordering::Relaxed);
                        count += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let _ = ws.close(None).await;
    count
}

pub(super) fn run(
    kind: Kind,
    args: &Args,
    server: &mut ServerProcess,
    addr: SocketAddr,
) -> Result<(), BoxError> {
    let n = args.clients;
    let pid = server.pid();
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = vm_rss_kib(pid).unwrap_or(0);
    let allocs_before = args.alloc_stats.then(|| server.allocs()).transpose()?;

    let rt = client_runtime(args)?;
    let stats = Arc::new(Stats {
        hist: Histogram::new(),
        received: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Phase 1: connect everyone.
    let connect_start = Instant::now();
    let (handles, connected, failures) = rt.block_on(connect_all(
        n,
        args.connect_concurrency,
        |_, semaphore, ready| client(addr, stats.clone(), semaphore, ready, stop_rx.clone()),
    ));
    let connect_secs = connect_start.elapsed().as_secs_f64();
    report_failures(&failures, n);

    // Phase 2: let the server subscribe everyone, measure idle memory.
    std::thread::sleep(Duration::from_millis(500 + n as u64 / 10));
    let rss_idle = vm_rss_kib(pid).unwrap_or(0);
    let allocs_idle = args.alloc_stats.then(|| server.allocs()).transpose()?;
    let cpu0 = CpuSample::take(pid);
    let received0 = stats.received.load(Ordering::Relaxed);

    // Phase 3: publish.
    let start = Instant::now();
    let start_us = stats.epoch.elapsed().as_micros() as u64;
    server.send(&format!("START {}", args.seconds))?;
    let line = server.read_line()?;
    let published: u64 = line
        .strip_prefix("DONE ")
        .ok_or(format!("unexpected server output {line:?}"))?
        .parse()?;
    let expected = published * connected as u64 + received0;

    // Phase 4: drain.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while stats.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = start.elapsed().as_secs_f64();
    let (client_cpu, server_cpu) = CpuSample::take(pid).since(cpu0);
    let rss_end = vm_rss_kib(pid).unwrap_or(0);
    let received = stats.received.load(Ordering::Relaxed) - received0;
    let expected = expected - received0;
    let active_secs = (stats
        .last_us
        .load(Ordering::Relaxed)
        .saturating_sub(start_us) as f64
        / 1e6)
        .max(1e-6);

    let _ = stop_tx.send(true);
    let per_client: Vec<u64> = rt.block_on(async {
        let mut counts = Vec::with_capacity(handles.len());
        for h in handles {
            counts.push(h.await.unwrap_or(0));
        }
        counts
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let min_client = per_client.iter().copied().min().unwrap_or(0);
    let max_client = per_client.iter().copied().max().unwrap_or(0);

    let (p50, p95, p99) = stats.hist.percentiles_ms();
    let max_ms = stats.hist.max_ms();
    let deliveries_per_s = received as f64 / active_secs;
    let kib_per_conn = kib_per_conn(rss_idle, rss_before, connected);
    let client_cores = client_cpu / wall;
    let server_cores = server_cpu / wall;
    let name = kind.name(Mode::Fanout);

    println!("server            {name} (pid {pid}, ws://{addr}/)");
    println!(
        "clients           {connected}/{n} connected in {connect_secs:.2} s ({} client worker thread(s))",
        args.client_threads
    );
    println!(
        "published         {published} events ({} /s for {} s, pad {} B)",
        args.rate, args.seconds, args.payload
    );
    println!(
        "deliveries        {received}/{expected} ({:.3}%), per client min {min_client} max {max_client}",
        if expected > 0 {
            100.0 * received as f64 / expected as f64
        } else {
            100.0
        }
    );
    println!(
        "deliveries/s      {deliveries_per_s:.0} (over {active_secs:.2} s to the last delivery)"
    );
    println!("latency ms        p50 {p50:.3}  p95 {p95:.3}  p99 {p99:.3}  max {max_ms:.3}");
    println!(
        "server RSS KiB    before {rss_before}  idle {rss_idle}  end {rss_end}  => {kib_per_conn:.1} KiB/conn (idle-before)/N"
    );
    println!(
        "CPU (cores)       client {client_cores:.2} ({client_cpu:.2} s)  server {server_cores:.2} ({server_cpu:.2} s)  over {wall:.2} s wall"
    );
    if let (Some(before), Some(idle)) = (&allocs_before, &allocs_idle) {
        idle.report_since(before, connected, "idle");
    }
    println!(
        "RESULT server={name} clients={connected} rate={} payload={} seconds={} published={published} \
         expected={expected} received={received} deliveries_per_s={deliveries_per_s:.0} \
         p50_ms={p50:.3} p95_ms={p95:.3} p99_ms={p99:.3} max_ms={max_ms:.3} \
         rss_before_kib={rss_before} rss_idle_kib={rss_idle} rss_end_kib={rss_end} \
         kib_per_conn={kib_per_conn:.1} client_cpu={client_cores:.2} server_cpu={server_cores:.2} \
         client_threads={} server_threads={}",
        args.rate,
        args.payload,
        args.seconds,
        args.client_threads,
        super::server_threads(args),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::frame_time;

    #[test]
    fn reads_the_publish_time() {
        let frame =
            r#"{"type":"event","payload":{"name":"load","data":{"pad":"xx","seq":3,"t":1234567}}}"#;
        assert_eq!(frame_time(frame), Some(1_234_567));
        assert_eq!(frame_time(r#"{"type":"response"}"#), None);
    }
}
