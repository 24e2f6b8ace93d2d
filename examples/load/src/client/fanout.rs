//! Fan-out: every client counts the events the server publishes and
//! records each one's delivery latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt as _;

use super::{connect_and_settle, number_field, CpuUse, Dial};
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
    number_field(text, "\"t\":")
}

async fn client(
    dial: Dial,
    stats: Arc<Stats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let Some(mut ws) = dial.open().await else {
        return 0;
    };
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
    let pid = server.pid();
    let stats = Arc::new(Stats {
        hist: Histogram::new(),
        received: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Phases 1 and 2: connect everyone, let the server subscribe them.
    let (clients, connection) = connect_and_settle(args, server, addr, |dial| {
        client(dial, stats.clone(), stop_rx.clone())
    })?;
    let connected = connection.connected;
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
    let cpu = CpuUse::since(cpu0, pid, wall);
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
    let per_client: Vec<u64> = clients
        .join()
        .into_iter()
        .map(|count| count.unwrap_or(0))
        .collect();
    let min_client = per_client.iter().copied().min().unwrap_or(0);
    let max_client = per_client.iter().copied().max().unwrap_or(0);

    let deliveries_per_s = received as f64 / active_secs;
    let kib_per_conn = connection.kib_per_conn(connection.rss_idle);
    let name = kind.name(Mode::Fanout);

    println!("server            {name} (pid {pid}, ws://{addr}/)");
    connection.print_clients(args);
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
    println!("latency ms        {}", stats.hist.summary());
    connection.print_rss(
        rss_end,
        &format!("{kib_per_conn:.1} KiB/conn (idle-before)/N"),
    );
    cpu.print();
    if let (Some(before), Some(idle)) = (&connection.allocs_before, &connection.allocs_idle) {
        idle.report_since(before, connected, "idle");
    }
    println!(
        "RESULT server={name} clients={connected} rate={} payload={} seconds={} published={published} \
         expected={expected} received={received} deliveries_per_s={deliveries_per_s:.0} {} {} \
         kib_per_conn={kib_per_conn:.1} {}",
        args.rate,
        args.payload,
        args.seconds,
        stats.hist.result_fields(),
        connection.rss_fields(rss_end),
        cpu.result_fields(args),
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
