//! What resuming costs (issue 11), on tokio, each beside a baseline in the
//! same run:
//!
//! - `publish_history/{off,on,on_positioned}/N`: 64 events published to N
//!   in-memory clients (0, 1, 100) until the last is written to each,
//!   with no history (the baseline), with the default history (1 000
//!   events) and TBone's frame, and with the default history and
//!   `PositionedEnvelope` (what a resuming deployment runs);
//! - `replay_10000/{live,replay,replay_first}`: one client receiving
//!   10 000 events, published while it is subscribed (the baseline), or
//!   replayed from the history by `subscribe_after` (`replay`: again and
//!   again from one history, whose frames the first replay kept;
//!   `replay_first`: each time from a new history, encoding every frame);
//! - `resume_1000_clients/{fanout,resume}`: 1 000 clients each receiving
//!   100 events, fanned out live to all of them (the baseline) or replayed
//!   to each by 1 000 `subscribe_after` calls at once.
//!
//! - `publish_history_interleaved`: the first group again with its
//!   variants interleaved round by round, for the ratio (printed first,
//!   with the quartiles of the rounds' ratios, and the ratio of a second
//!   history-off channel to the first, which shows how far two identical
//!   channels differ in the run; `publish_history_interleaved/1` for one
//!   client only);
//! - `publish_history_alone/VARIANT/N` (only when named): 1 000 batches of
//!   one variant alone, for a profiler (`valgrind --tool=callgrind`).
//!
//! Time runs until the last frame is written to the last client's sink
//! (with no client, until the last event is delivered:
//! `publish_delivered`). Creating and closing carriers is outside it; a
//! client dropped by the overflow policy fails the benchmark.
//!
//! `cargo bench -p tbone-dispatch-tokio --bench resume`

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use futures::channel::oneshot;
use futures::Sink;
use tbone_dispatch_tokio::{
    Carrier, CarrierConfig, Channel, ChannelBuilder, Envelope, Frame, HistoryLimits, MemoryBackend,
    PositionedEnvelope, Resumed, TBoneEnvelope, Tokio,
};

type Memory = Channel<MemoryBackend>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Frames still expected by a set of clients, and who to tell when none
/// is left.
#[derive(Clone, Default)]
struct Expected {
    left: Arc<AtomicUsize>,
    done: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl Expected {
    /// Expects `frames` more; resolves when they have all been written.
    fn arm(&self, frames: usize) -> oneshot::Receiver<()> {
        let (done, wait) = oneshot::channel();
        *self.done.lock().unwrap() = Some(done);
        self.left.store(frames, Ordering::Release);
        wait
    }

    fn written(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Sent outside the lock: the publisher it wakes takes that lock
            // at once for the next batch.
            let done = self.done.lock().unwrap().take();
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    }
}

/// A client's socket: takes every frame at once and counts it.
struct Client(Expected);

impl Sink<Frame> for Client {
    type Error = std::convert::Infallible;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        std::hint::black_box(frame);
        self.0.written();
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// Carriers large enough to hold a whole replay, so that no run is cut
/// short by the overflow policy.
fn carrier(tokio: &Tokio, expected: &Expected) -> Carrier {
    Carrier::new(
        tokio,
        Client(expected.clone()),
        CarrierConfig::default().capacity(20_000),
    )
    .expect("carrier")
}

fn channel(tokio: &Tokio, name: &str, history: HistoryLimits, envelope: impl Envelope) -> Memory {
    let channel = ChannelBuilder::new(name)
        .history(history)
        .envelope(envelope)
        .open(tokio.clone(), MemoryBackend::new)
        .expect("channel");
    channel.kickoff().expect("kickoff");
    channel
}

const BATCH: usize = 64;

/// One variant of `publish_history`: a channel and `n` clients counting
/// what is written to them.
struct Variant {
    name: &'static str,
    channel: Memory,
    n: usize,
    expected: Expected,
    clients: Vec<Carrier>,
}

impl Variant {
    fn new(
        tokio: &Tokio,
        name: &'static str,
        n: usize,
        history: HistoryLimits,
        envelope: impl Envelope,
    ) -> Self {
        let channel = channel(
            tokio,
            &format!("bench-history-{name}-{n}"),
            history,
            envelope,
        );
        let expected = Expected::default();
        let clients = (0..n)
            .map(|_| {
                let client = carrier(tokio, &expected);
                channel.subscribe("e", &client).expect("subscribe");
                client
            })
            .collect();
        Variant {
            name,
            channel,
            n,
            expected,
            clients,
        }
    }

    /// Off, on, and on with positions in the frames, each with `n` clients.
    fn all(tokio: &Tokio, n: usize) -> [Variant; 3] {
        [
            Variant::new(tokio, "off", n, HistoryLimits::off(), TBoneEnvelope),
            Variant::new(tokio, "on", n, HistoryLimits::default(), TBoneEnvelope),
            Variant::new(
                tokio,
                "on_positioned",
                n,
                HistoryLimits::default(),
                PositionedEnvelope,
            ),
        ]
    }

    /// Publishes `BATCH` events; returns once the last is delivered and
    /// every client has been written all of them.
    async fn batch(&self) {
        let written = self.expected.arm(self.n * BATCH);
        for i in 0..BATCH - 1 {
            self.channel.publish("e", &i).await.expect("publish");
        }
        self.channel
            .publish_delivered("e", &BATCH)
            .await
            .expect("publish");
        if self.n > 0 {
            written.await.expect("every frame written");
        }
    }

    fn close(self) {
        assert_eq!(
            self.channel.stats().carriers_dropped,
            0,
            "{}: a client was dropped",
            self.name
        );
        self.clients.iter().for_each(Carrier::close);
    }
}

fn publish_history(c: &mut Criterion) {
    let rt = runtime();
    let tokio = Tokio::with_handle(rt.handle().clone());
    let mut group = c.benchmark_group("publish_history");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for n in [0usize, 1, 100] {
        group.throughput(Throughput::Elements(BATCH as u64));
        for variant in Variant::all(&tokio, n) {
            group.bench_with_input(BenchmarkId::new(variant.name, n), &n, |b, _| {
                b.to_async(&rt).iter_custom(|iters| {
                    let variant = &variant;
                    async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            variant.batch().await;
                        }
                        start.elapsed()
                    }
                })
            });
            variant.close();
        }
    }
    group.finish();
}

const MISSED: usize = 10_000;

/// Publishes a first event to `channel`, whose position a client keeps,
/// then the `missed` events it misses; returns that position.
async fn missed_since(tokio: &Tokio, channel: &Memory, missed: usize) -> String {
    let (frames, mut client) = futures::channel::mpsc::unbounded::<Frame>();
    let seen = Carrier::new(tokio, frames, CarrierConfig::default()).expect("carrier");
    channel.subscribe("e", &seen).expect("subscribe");
    channel.publish("e", &0).await.expect("publish");
    let frame = futures::StreamExt::next(&mut client).await.expect("frame");
    seen.close();
    for i in 1..=missed {
        channel.publish("e", &i).await.expect("publish");
    }
    channel.flush().await;
    let value: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
    value["position"].as_str().expect("a position").to_string()
}

/// How long a new client resuming from `position` takes to be written
/// the `MISSED` events after it.
async fn timed_replay(
    tokio: &Tokio,
    channel: &Memory,
    expected: &Expected,
    position: &str,
) -> Duration {
    let client = carrier(tokio, expected);
    let start = Instant::now();
    let done = expected.arm(MISSED);
    let replayed = channel
        .subscribe_after(&["e"], &client, position)
        .expect("subscribe_after");
    assert_eq!(replayed, Resumed::Replayed { events: MISSED });
    done.await.expect("every frame");
    let elapsed = start.elapsed();
    client.close();
    elapsed
}

fn replay_10000(c: &mut Criterion) {
    let rt = runtime();
    let tokio = Tokio::with_handle(rt.handle().clone());
    // The event the client saw last, and the 10 000 after it.
    let history = HistoryLimits::default().events(MISSED + 1).bytes(64 << 20);
    let live = channel(&tokio, "bench-replay-live", history, PositionedEnvelope);
    let resumed = channel(&tokio, "bench-replay", history, PositionedEnvelope);
    let position = rt.block_on(missed_since(&tokio, &resumed, MISSED));
    assert_eq!(resumed.history_stats().events, MISSED + 1);

    let mut group = c.benchmark_group("replay_10000");
    group
        .sample_size(20)
        .throughput(Throughput::Elements(MISSED as u64));
    let expected = Expected::default();
    group.bench_function("live", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (live, expected, tokio) = (live.clone(), expected.clone(), tokio.clone());
            async move {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let client = carrier(&tokio, &expected);
                    live.subscribe("e", &client).expect("subscribe");
                    let start = Instant::now();
                    let done = expected.arm(MISSED);
                    for i in 1..=MISSED {
                        live.publish("e", &i).await.expect("publish");
                    }
                    done.await.expect("every frame");
                    elapsed += start.elapsed();
                    client.close();
                }
                elapsed
            }
        })
    });
    group.bench_function("replay", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (resumed, expected, tokio, position) = (
                resumed.clone(),
                expected.clone(),
                tokio.clone(),
                position.clone(),
            );
            async move {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    elapsed += timed_replay(&tokio, &resumed, &expected, &position).await;
                }
                elapsed
            }
        })
    });
    // The first replay of a history encodes its frames (later ones reuse
    // them): each iteration replays a history of its own, built untimed.
    let fresh = AtomicUsize::new(0);
    group.bench_function("replay_first", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (expected, tokio, fresh) = (expected.clone(), tokio.clone(), &fresh);
            async move {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let n = fresh.fetch_add(1, Ordering::Relaxed);
                    let name = format!("bench-replay-first-{n}");
                    let channel = channel(&tokio, &name, history, PositionedEnvelope);
                    let position = missed_since(&tokio, &channel, MISSED).await;
                    elapsed += timed_replay(&tokio, &channel, &expected, &position).await;
                    channel.stop().await;
                }
                elapsed
            }
        })
    });
    group.finish();
}

const CLIENTS: usize = 1_000;
const EACH: usize = 100;

fn resume_1000_clients(c: &mut Criterion) {
    let rt = runtime();
    let tokio = Tokio::with_handle(rt.handle().clone());
    let fanout = channel(
        &tokio,
        "bench-resume-fanout",
        HistoryLimits::default(),
        PositionedEnvelope,
    );
    let resumed = channel(
        &tokio,
        "bench-resume-many",
        HistoryLimits::default(),
        PositionedEnvelope,
    );
    let position = rt.block_on(missed_since(&tokio, &resumed, EACH));

    let mut group = c.benchmark_group("resume_1000_clients");
    group
        .sample_size(10)
        .throughput(Throughput::Elements((CLIENTS * EACH) as u64));
    let expected = Expected::default();
    group.bench_function("fanout", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (fanout, expected, tokio) = (fanout.clone(), expected.clone(), tokio.clone());
            async move {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let clients: Vec<_> = (0..CLIENTS)
                        .map(|_| {
                            let client = carrier(&tokio, &expected);
                            fanout.subscribe("e", &client).expect("subscribe");
                            client
                        })
                        .collect();
                    let start = Instant::now();
                    let done = expected.arm(CLIENTS * EACH);
                    for i in 1..=EACH {
                        fanout.publish("e", &i).await.expect("publish");
                    }
                    done.await.expect("every frame");
                    elapsed += start.elapsed();
                    clients.iter().for_each(Carrier::close);
                }
                elapsed
            }
        })
    });
    group.bench_function("resume", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (resumed, expected, tokio, position) = (
                resumed.clone(),
                expected.clone(),
                tokio.clone(),
                position.clone(),
            );
            async move {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let clients: Vec<_> =
                        (0..CLIENTS).map(|_| carrier(&tokio, &expected)).collect();
                    let start = Instant::now();
                    let done = expected.arm(CLIENTS * EACH);
                    for client in &clients {
                        let replayed = resumed
                            .subscribe_after(&["e"], client, &position)
                            .expect("subscribe_after");
                        assert_eq!(replayed, Resumed::Replayed { events: EACH });
                    }
                    done.await.expect("every frame");
                    elapsed += start.elapsed();
                    clients.iter().for_each(Carrier::close);
                }
                elapsed
            }
        })
    });
    group.finish();
}

/// `publish_history` again, the variants interleaved: rounds of 50
/// batches per variant, the order rotating each round, so that all of them
/// see the same machine noise; prints each variant's median time and the
/// median and quartiles of its rounds' ratios to `off`, a second
/// history-off channel (`off_again`) among them. (Run one after another, criterion's groups
/// differ by more than the 1.1x being checked on a shared machine.)
fn publish_history_interleaved(clients: &[usize]) {
    const ROUNDS: usize = 60;
    const BATCHES: usize = 50;
    let rt = runtime();
    let tokio = Tokio::with_handle(rt.handle().clone());
    for &n in clients {
        // The three variants, and a second history-off channel: its ratio
        // to the first (A/A) shows how far two identical channels differ
        // in this run.
        let mut variants = Vec::from(Variant::all(&tokio, n));
        variants.push(Variant::new(
            &tokio,
            "off_again",
            n,
            HistoryLimits::off(),
            TBoneEnvelope,
        ));
        let batches = |variant: &Variant, count: usize| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..count {
                    variant.batch().await;
                }
                start.elapsed() / count as u32
            })
        };
        for variant in &variants {
            batches(variant, 200);
        }
        let count = variants.len();
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); count];
        // To `off` (variant 0), for the others.
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); count - 1];
        for round in 0..ROUNDS {
            let mut this = vec![Duration::ZERO; count];
            for k in 0..count {
                let v = (round + k) % count;
                this[v] = batches(&variants[v], BATCHES);
            }
            for (v, time) in this.iter().enumerate() {
                times[v].push(*time);
            }
            for (v, ratio) in ratios.iter_mut().enumerate() {
                ratio.push(this[v + 1].as_secs_f64() / this[0].as_secs_f64());
            }
        }
        let median = |times: &mut Vec<Duration>| {
            times.sort_unstable();
            times[ROUNDS / 2]
        };
        let mut report = format!(
            "publish_history interleaved, {n} clients, per batch of {BATCH}: {} {:.1?}",
            variants[0].name,
            median(&mut times[0])
        );
        let others = variants.iter().zip(&mut times).skip(1);
        for ((variant, times), ratios) in others.zip(&mut ratios) {
            let time = median(times);
            ratios.sort_unstable_by(f64::total_cmp);
            let (low, median, high) = (
                ratios[ROUNDS / 4],
                ratios[ROUNDS / 2],
                ratios[ROUNDS * 3 / 4],
            );
            report += &format!(
                ", {} {time:.1?} ({median:.3}x, quartiles {low:.3}-{high:.3})",
                variant.name
            );
        }
        println!("{report} (medians of {ROUNDS} rounds)");
        variants.into_iter().for_each(Variant::close);
    }
}

/// One variant of `publish_history` alone, 1 000 batches, so that a
/// profiler sees nothing else.
fn publish_history_alone(name: &str, n: usize) {
    const BATCHES: u32 = 1_000;
    let rt = runtime();
    let tokio = Tokio::with_handle(rt.handle().clone());
    let variants = Variant::all(&tokio, n);
    let Some(variant) = variants.iter().find(|variant| variant.name == name) else {
        panic!("no variant {name}: off, on or on_positioned");
    };
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..BATCHES {
            variant.batch().await;
        }
    });
    let elapsed = start.elapsed();
    println!(
        "publish_history alone, {name}, {n} clients: {:.1?} per batch of {BATCH}",
        elapsed / BATCHES
    );
    variants.into_iter().for_each(Variant::close);
}

criterion_group!(benches, publish_history, replay_10000, resume_1000_clients);

fn main() {
    // `cargo bench -- NAME` runs only what NAME selects.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if let Some((variant, n)) = filters.iter().find_map(|f| {
        let (variant, n) = f.strip_prefix("publish_history_alone/")?.split_once('/')?;
        Some((variant.to_string(), n.parse::<usize>().ok()?))
    }) {
        publish_history_alone(&variant, n);
        return;
    }
    // `publish_history_interleaved/1` runs it with one client only.
    let clients: Vec<usize> = [0, 1, 100]
        .into_iter()
        .filter(|n| {
            let name = format!("publish_history_interleaved/{n}");
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| *f == name || "publish_history_interleaved".contains(f.as_str()))
        })
        .collect();
    if !clients.is_empty() {
        publish_history_interleaved(&clients);
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
