//! What the `metrics` feature costs on publish fan-out (issue 12: at most
//! 1.05x). `metrics_cost/{off,prometheus}/N`: batches of 64 events
//! published to N in-memory carriers (1, 1 000, 10 000), each timed until
//! every carrier has written it, as `publish_fanout/library` of the
//! `fanout` benchmark, in whichever of two builds this is:
//!
//! - `off`: without the `metrics` feature; the core has no metrics code;
//! - `prometheus`: with it (`--features metrics`), Prometheus' recorder
//!   installed before the channels are opened, as the demo does, and its
//!   histograms drained every 5 seconds by a task on the benchmark's
//!   runtime, as the exporter's own upkeep task does
//!   (`PrometheusBuilder::install`; the demo drains them when scraped).
//!
//! The ratio comes from the two builds run in turn, several rounds, on the
//! same machine: `scripts/bench-metrics-cost`. One build alone:
//! `cargo bench -p tbone-dispatch-tokio --bench metrics_cost [--features metrics]`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

mod support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::{queue_variant, runtime, BATCH};
use tbone_dispatch_tokio::Tokio;

#[cfg(not(feature = "metrics"))]
const VARIANT: &str = "off";
#[cfg(feature = "metrics")]
const VARIANT: &str = "prometheus";

fn metrics_cost(c: &mut Criterion) {
    // Channels take their metric handles when they are opened: the
    // recorder comes first.
    let rt = runtime();
    #[cfg(feature = "metrics")]
    prometheus(&rt);
    let mut group = c.benchmark_group("metrics_cost");
    // Warm-up and measurement times are left to the command line: the
    // script runs many short rounds.
    group.sample_size(10);
    for n in [1usize, 1000, 10_000] {
        group.throughput(Throughput::Elements((n * BATCH) as u64));
        queue_variant::<Tokio>(&mut group, &rt, VARIANT, n);
    }
    group.finish();
}

/// Installs Prometheus' recorder as the process's, drains its histograms
/// as the exporter's upkeep task would (on `rt`), and checks that a channel's
/// metrics reach it: what is measured is what a deployment records.
#[cfg(feature = "metrics")]
fn prometheus(rt: &tokio::runtime::Runtime) {
    use tbone_dispatch_tokio::dispatch::observe;
    use tbone_dispatch_tokio::MemoryChannel;

    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the benchmark's process has no other recorder");
    rt.block_on(async {
        let channel = MemoryChannel::named("bench-metrics-check").expect("channel");
        channel.kickoff().expect("kickoff");
        channel.publish("e", &1).await.expect("publish");
        channel.flush().await;
    });
    handle.run_upkeep();
    let rendered = handle.render();
    for name in [observe::EVENTS_PUBLISHED, observe::EVENTS_RECEIVED] {
        assert!(
            rendered.contains(&format!("{name}{{channel=\"bench-metrics-check\"}} 1")),
            "Prometheus' recorder has no {name} of the channel:\n{rendered}"
        );
    }
    rt.spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
}

criterion_group!(benches, metrics_cost);
criterion_main!(benches);
