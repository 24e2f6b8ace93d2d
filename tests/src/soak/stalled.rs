//! Scenario 2, slow and stalled consumers: two identical servers run side
//! by side, each with 1 000 websocket clients receiving the same events;
//! on one of them 1% of the clients stop reading. The reading clients'
//! delivery p99 on that server must stay within 1.2x of the other's, the
//! stalled clients must be dropped by the overflow policy, no reading
//! client may lose an event, and memory must stay bounded.
//!
//! Running both at once, fed by one publisher that alternates which
//! server it serves first, puts both under the same machine noise; two
//! runs one after the other on a shared machine differ by more than the
//! 1.2x being checked.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use serde::Serialize;
use tbone_dispatch::{CarrierConfig, SocketOptions};
use tbone_dispatch_tokio::MemoryChannel;

use super::loopback::{self, connect, wait_until, Client, STEP};
use super::{rss_kib, Profile, Row};

/// Latency histogram: 20 µs buckets up to 2 s, shared by the clients of
/// one server; constant memory whatever the run's length.
struct Histogram {
    buckets: Vec<AtomicU32>,
    count: AtomicU64,
}

const BUCKET_US: u64 = 20;

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..100_000).map(|_| AtomicU32::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }

    fn record(&self, latency_us: u64) {
        let i = ((latency_us / BUCKET_US) as usize).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The upper edge of the bucket holding quantile `q`, in ms.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count.load(Ordering::Relaxed);
        let rank = (total as f64 * q).ceil() as u64;
        let mut seen = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += u64::from(bucket.load(Ordering::Relaxed));
            if seen >= rank.max(1) {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        f64::INFINITY
    }
}

/// Microseconds since the scenario's clock started: both publisher and
/// clients live in this process.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

#[derive(Serialize)]
struct Tick<'a> {
    seq: u64,
    t: u64,
    pad: &'a str,
}

/// One server of the pair and what its reading clients saw.
struct Side {
    channel: MemoryChannel,
    server: loopback::Server,
    latency: Arc<Histogram>,
    received: Arc<AtomicU64>,
    /// Deliveries that were not the client's next sequence number.
    disordered: Arc<AtomicU64>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    stalled: Vec<Client>,
}

pub async fn run(profile: Profile) -> Row {
    let clients = 1_000u64;
    let stalled_count = clients / 100;
    let rate = 20u64;
    let seconds = profile.pick(15u64, 120);
    let pad = "x".repeat(512);
    let mut row = Row::new(
        "stalled consumers",
        format!("2 servers x {clients} clients, {rate} events/s of 0.5 KiB each, {seconds} s"),
        format!("{stalled_count} clients (1%) of one server stop reading (SO_RCVBUF 4 KiB)"),
    );

    let rss_start = rss_kib();
    let mut sides = Vec::new();
    for (name, stalled) in [("baseline", 0), ("stalled", stalled_count)] {
        match side(name, clients, stalled).await {
            Ok(side) => sides.push(side),
            Err(e) => {
                row.check(false, format!("setting up the {name} server: {e}"));
                return row;
            }
        }
    }
    let rss_connected = rss_kib();

    // Memory is sampled while events flow; the stalled side's drops are
    // timed.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let running = running.clone();
        async move {
            let mut peak = 0;
            while running.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            peak
        }
    });

    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut published = 0u64;
    let mut refused = 0u64;
    let mut all_dropped_at = None;
    let mut rss_after_drops = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let order: [usize; 2] = if published.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        for i in order {
            let tick = Tick {
                seq: published,
                t: now_us(),
                pad: &pad,
            };
            if let Err(e) = sides[i].channel.publish("tick", &tick).await {
                tracing::error!(%e, "publish refused");
                refused += 1;
            }
        }
        published += 1;
        if all_dropped_at.is_none() && sides[1].channel.stats().carriers_dropped == stalled_count {
            all_dropped_at = Some(started.elapsed());
            rss_after_drops = rss_kib();
        }
    }
    running.store(false, Ordering::SeqCst);
    let peak = sampler.await.unwrap_or(0);

    // Every reading client must get every event.
    let expected = published * (clients - stalled_count);
    let baseline_expected = published * clients;
    let complete = wait_until(Duration::from_secs(10), || {
        sides[0].received.load(Ordering::SeqCst) >= baseline_expected
            && sides[1].received.load(Ordering::SeqCst) >= expected
    })
    .await;
    let rss_end = rss_kib();
    let (baseline, stalled) = (&sides[0], &sides[1]);
    let got = [
        baseline.received.load(Ordering::SeqCst),
        stalled.received.load(Ordering::SeqCst),
    ];
    row.published = published * 2 - refused;
    row.delivered = got[0] + got[1];
    row.lost = baseline_expected.saturating_sub(got[0]) + expected.saturating_sub(got[1]);
    row.duplicates =
        baseline.disordered.load(Ordering::SeqCst) + stalled.disordered.load(Ordering::SeqCst);
    row.errors = refused;
    row.check(
        complete && row.lost == 0,
        format!("reading clients lost {} deliveries", row.lost),
    );
    row.check(
        row.duplicates == 0,
        format!("{} deliveries repeated or out of order", row.duplicates),
    );
    row.check(refused == 0, format!("{refused} publishes refused"));

    let dropped = stalled.channel.stats().carriers_dropped;
    row.check(
        dropped == stalled_count,
        format!("{dropped} of {stalled_count} stalled clients dropped by the overflow policy"),
    );
    row.check(
        baseline.channel.stats().carriers_dropped == 0,
        "a client of the baseline server was dropped",
    );
    let overflowed = stalled.server.served.overflow.load(Ordering::SeqCst);
    row.check(
        overflowed == stalled_count,
        format!(
            "{overflowed} connections ended with CloseReason::Overflow, expected {stalled_count}"
        ),
    );

    let [b50, b99] = [0.5, 0.99].map(|q| baseline.latency.quantile_ms(q));
    let [s50, s99] = [0.5, 0.99].map(|q| stalled.latency.quantile_ms(q));
    let ratio = s99 / b99;
    row.note(format!(
        "reading clients' latency: baseline p50 {b50:.2} ms, p99 {b99:.2} ms; with stalled clients p50 {s50:.2} ms, p99 {s99:.2} ms: p99 ratio {ratio:.2}x (limit 1.2x)"
    ));
    row.check(
        ratio <= 1.2,
        format!("p99 with stalled clients is {ratio:.2}x the baseline's (limit 1.2x)"),
    );
    match all_dropped_at {
        Some(at) => row.note(format!(
            "all {stalled_count} stalled clients dropped {:.1} s into the run",
            at.as_secs_f64()
        )),
        None => row.check(
            false,
            "the stalled clients were not all dropped during the run",
        ),
    }
    row.note(format!(
        "resident memory: {rss_start} KiB before, {rss_connected} KiB with {} clients connected, peak {peak} KiB while events flowed, {rss_after_drops} KiB once the stalled were dropped, {rss_end} KiB at the end",
        clients * 2
    ));
    // Bounded: after the stalled clients are gone, memory stops growing.
    if rss_after_drops > 0 {
        row.check(
            rss_end as f64 <= rss_after_drops as f64 * 1.10 + 4096.0,
            format!("resident memory kept growing after the stalled clients were dropped: {rss_after_drops} -> {rss_end} KiB"),
        );
    }

    for side in &mut sides {
        for reader in side.readers.drain(..) {
            reader.abort();
        }
        side.stalled.clear();
    }
    for side in sides {
        let Side {
            channel, server, ..
        } = side;
        let _ = channel.stop().await;
        drop(server);
    }
    row
}

/// A server with `clients` clients, the last `stalled` of which never read.
async fn side(name: &str, clients: u64, stalled: u64) -> Result<Side, String> {
    let channel =
        MemoryChannel::named(&format!("soak/stalled/{name}")).map_err(|e| e.to_string())?;
    channel.kickoff().map_err(|e| e.to_string())?;
    let options = SocketOptions::new(["tick"]).carrier(CarrierConfig::default().capacity(32));
    let server = loopback::start(channel.clone(), options, Some(16 * 1024))
        .map_err(|e| format!("starting the server: {e}"))?;
    let latency = Arc::new(Histogram::new());
    let received = Arc::new(AtomicU64::new(0));
    let disordered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut stalled_clients = Vec::new();
    let offset = if name == "baseline" { 0 } else { 10_000 };
    for n in 0..clients {
        let stalls = n >= clients - stalled;
        let client = connect(server.addr, offset + n, stalls.then_some(4096)).await?;
        if stalls {
            stalled_clients.push(client);
        } else {
            readers.push(tokio::spawn(read(
                client,
                latency.clone(),
                received.clone(),
                disordered.clone(),
            )));
        }
    }
    let all = clients as usize;
    if !wait_until(STEP, || channel.subscriber_count("tick") == all).await {
        return Err(format!(
            "{} of {all} clients subscribed",
            channel.subscriber_count("tick")
        ));
    }
    Ok(Side {
        channel,
        server,
        latency,
        received,
        disordered,
        readers,
        stalled: stalled_clients,
    })
}

/// A reading client: counts deliveries, checks their order, and records
/// each one's latency after the warm-up.
async fn read(
    mut client: Client,
    latency: Arc<Histogram>,
    received: Arc<AtomicU64>,
    disordered: Arc<AtomicU64>,
) {
    let mut next = 0u64;
    while let Some(Ok(message)) = client.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let now = now_us();
        let (seq, sent) = (field(&text, "\"seq\":"), field(&text, "\"t\":"));
        if seq != Some(next) {
            disordered.fetch_add(1, Ordering::Relaxed);
        }
        next = seq.map_or(next + 1, |s| s + 1);
        received.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = sent {
            if sent >= WARM_UP_US {
                latency.record(now.saturating_sub(sent));
            }
        }
    }
}

/// Samples before this (µs after the scenario's clock started) are the
/// warm-up: connection set-up, first allocations.
const WARM_UP_US: u64 = 2_000_000;

/// The unsigned integer following `key` in `text`.
fn field(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}
