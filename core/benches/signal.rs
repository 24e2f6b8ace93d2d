//! Signal `send` against its physical limit: calling the same receivers
//! directly in a loop, in the same benchmark group.
//!
//! `cargo bench -p tbone-dispatch --bench signal`

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::FutureExt;
use tbone_dispatch::{Sender, Senders, Signal};

struct App;

type Direct = Box<dyn Fn(Sender, &u64) -> u64 + Send + Sync>;

fn receivers(n: u64) -> Vec<Direct> {
    (0..n)
        .map(|k| Box::new(move |_: Sender, x: &u64| x.wrapping_mul(31).wrapping_add(k)) as Direct)
        .collect()
}

fn send(c: &mut Criterion) {
    let mut group = c.benchmark_group("signal_send");
    for n in [1u64, 10, 100] {
        let direct = receivers(n);
        group.bench_with_input(BenchmarkId::new("direct_loop", n), &n, |b, _| {
            b.iter(|| {
                let sender = Sender::of::<App>();
                let out: Vec<u64> = direct.iter().map(|r| r(sender, black_box(&7))).collect();
                black_box(out)
            })
        });

        let signal: Signal<u64, u64> = Signal::new();
        for k in 0..n {
            signal.connect(
                move |_, x: &u64| x.wrapping_mul(31).wrapping_add(k),
                Senders::Any,
            );
        }
        group.bench_with_input(BenchmarkId::new("signal", n), &n, |b, _| {
            b.iter(|| {
                // Sync receivers complete on the first poll.
                let out = signal
                    .send(Sender::of::<App>(), black_box(7))
                    .now_or_never();
                black_box(out)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, send);
criterion_main!(benches);
