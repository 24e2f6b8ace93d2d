//! Channel micro benchmarks on tokio, each beside its baseline in one group:
//!
//! - `publish_fanout/{library,broadcast}/N`: events delivered to N in-memory
//!   carriers, against `tokio::sync::broadcast` carrying the same
//!   pre-encoded bytes to N receiver tasks (throughput in deliveries);
//! - `unrelated_subscriptions/N`: publish to one subscriber while N
//!   subscriptions exist on other events;
//! - `subscribe_cycle`: subscribe + unsubscribe beside 1000 subscribers.
//!
//! What the `metrics` feature costs on the same fan-out is the
//! `metrics_cost` benchmark's (`scripts/bench-metrics-cost`).
//!
//! `cargo bench -p tbone-dispatch-tokio --bench fanout`

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use support::{queue_variant, runtime, Counter, CountingSink, BATCH};
use tbone_dispatch_tokio::{Carrier, MemoryChannel, Tokio};

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish_fanout");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for n in [1usize, 100, 10_000] {
        group.throughput(Throughput::Elements((n * BATCH) as u64));

        queue_variant::<Tokio>(&mut group, &rt, "library", n);

        let counter = Counter::new();
        let (tx, _) = tokio::sync::broadcast::channel::<Bytes>(1024);
        let receivers: Vec<_> = (0..n)
            .map(|_| {
                let mut rx = tx.subscribe();
                let counter = counter.clone();
                rt.spawn(async move {
                    while let Ok(frame) = rx.recv().await {
                        std::hint::black_box(frame);
                        counter.hit(1);
                    }
                })
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("broadcast", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| {
                let (tx, counter) = (tx.clone(), counter.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let base = counter.seen.load(Ordering::Acquire);
                        for i in 0..BATCH {
                            // Encoded once per event into a shared, reference-counted
                            // buffer, as the channel does: same allocation, same
                            // atomic count per receiver.
                            let frame = format!(
                                r#"{{"type":"event","payload":{{"name":"e","data":{i}}}}}"#
                            );
                            let _ = tx.send(Bytes::from(frame));
                        }
                        counter.wait_for(base + n * BATCH).await;
                    }
                    start.elapsed()
                }
            })
        });
        drop(tx);
        for receiver in receivers {
            receiver.abort();
        }
    }
    group.finish();
}

fn unrelated(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("unrelated_subscriptions");
    group.sample_size(20);
    for others in [0usize, 100_000] {
        let counter = Counter::new();
        let channel: MemoryChannel = rt.block_on(async {
            let channel =
                MemoryChannel::named(&format!("bench-unrelated-{others}")).expect("channel");
            channel.kickoff().expect("kickoff");
            channel
        });
        let (target, bystanders) = rt.block_on(async {
            let target = Carrier::from_sink(CountingSink(counter.clone())).expect("carrier");
            channel.subscribe("e", &target).expect("subscribe");
            // 100 carriers, each on 1000 other events.
            let bystanders: Vec<Carrier> = (0..others / 1000)
                .map(|c| {
                    let carrier =
                        Carrier::from_sink(CountingSink(Counter::new())).expect("carrier");
                    for e in 0..1000 {
                        channel
                            .subscribe(&format!("other-{c}-{e}"), &carrier)
                            .expect("subscribe");
                    }
                    carrier
                })
                .collect();
            (target, bystanders)
        });
        assert_eq!(channel.subscription_count(), others + 1);
        group.bench_with_input(BenchmarkId::from_parameter(others), &others, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (channel, counter) = (channel.clone(), counter.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let base = counter.seen.load(Ordering::Acquire);
                        channel.publish("e", &1).await.expect("publish");
                        counter.wait_for(base + 1).await;
                    }
                    start.elapsed()
                }
            })
        });
        drop((target, bystanders));
    }
    group.finish();
}

fn subscribe_cycle(c: &mut Criterion) {
    let rt = runtime();
    let channel: MemoryChannel =
        rt.block_on(async { MemoryChannel::named("bench-cycle").expect("channel") });
    let (carrier, _others) = rt.block_on(async {
        let others: Vec<Carrier> = (0..1000)
            .map(|_| {
                let carrier = Carrier::from_sink(CountingSink(Counter::new())).expect("carrier");
                channel.subscribe("e", &carrier).expect("subscribe");
                carrier
            })
            .collect();
        (
            Carrier::from_sink(CountingSink(Counter::new())).expect("carrier"),
            others,
        )
    });
    c.bench_function("subscribe_cycle", |b| {
        b.iter(|| {
            channel.subscribe("e", &carrier).expect("subscribe");
            channel.unsubscribe("e", &carrier)
        })
    });
}

criterion_group!(benches, fanout, unrelated, subscribe_cycle);
criterion_main!(benches);
