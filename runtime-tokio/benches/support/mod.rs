//! What the fan-out benchmarks share (`fanout` and `metrics_cost`): a sink
//! that counts frames, and the library's fan-out to N in-memory carriers.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};
use futures::Sink;
use tbone_dispatch_tokio::{ChannelBuilder, Frame, MemoryBackend, Runtime};
use tokio::sync::Notify;

/// Events published per measured iteration.
pub const BATCH: usize = 64;

/// The runtime every benchmark runs on: two workers, one per core of the
/// machines the figures come from.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Counts what it receives and wakes the benchmark when a target is met.
#[derive(Clone)]
pub struct Counter {
    pub seen: Arc<AtomicUsize>,
    target: Arc<AtomicUsize>,
    done: Arc<Notify>,
}

impl Counter {
    pub fn new() -> Self {
        Counter {
            seen: Arc::new(AtomicUsize::new(0)),
            target: Arc::new(AtomicUsize::new(usize::MAX)),
            done: Arc::new(Notify::new()),
        }
    }

    pub fn hit(&self, n: usize) {
        let now = self.seen.fetch_add(n, Ordering::AcqRel) + n;
        if now >= self.target.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }

    pub async fn wait_for(&self, total: usize) {
        self.target.store(total, Ordering::Release);
        while self.seen.load(Ordering::Acquire) < total {
            self.done.notified().await;
        }
    }
}

/// An in-memory carrier's sink: counts frames, keeps nothing.
pub struct CountingSink(pub Counter);

impl Sink<Frame> for CountingSink {
    type Error = std::convert::Infallible;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, _: Frame) -> Result<(), Self::Error> {
        self.0.hit(1);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// Benchmarks `name/n`: batches of `BATCH` events published to `n`
/// carriers on runtime `R`, each batch timed until every carrier's sink
/// has counted it. The channel and its carriers are made on the first
/// call, so that a size the filter leaves out costs nothing.
pub fn queue_variant<R: Runtime + Default>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    n: usize,
) {
    let counter = Counter::new();
    let mut setup = None;
    group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
        let (channel, _carriers) = setup.get_or_insert_with(|| {
            rt.block_on(async {
                let channel = ChannelBuilder::new(format!("bench-queue-{name}-{n}"))
                    .open(R::default(), MemoryBackend::new)
                    .expect("channel");
                channel.kickoff().expect("kickoff");
                let carriers: Vec<tbone_dispatch_tokio::dispatch::Carrier<R>> = (0..n)
                    .map(|_| {
                        let carrier = tbone_dispatch_tokio::dispatch::Carrier::new(
                            &R::default(),
                            CountingSink(counter.clone()),
                            Default::default(),
                        )
                        .expect("carrier");
                        channel.subscribe("e", &carrier).expect("subscribe");
                        carrier
                    })
                    .collect();
                (channel, carriers)
            })
        });
        b.to_async(rt).iter_custom(|iters| {
            let (channel, counter) = (channel.clone(), counter.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let base = counter.seen.load(Ordering::Acquire);
                    for i in 0..BATCH {
                        channel.publish("e", &i).await.expect("publish");
                    }
                    counter.wait_for(base + n * BATCH).await;
                }
                start.elapsed()
            }
        })
    });
}
