//! The library's side: a channel's `publish` -> the frame at a carrier,
//! and concurrent publishers, for any backend (RedisChannel, MongoChannel).

use std::time::Instant;

use futures::StreamExt;
use tbone_dispatch_tokio::dispatch::{Backend, Channel};
use tbone_dispatch_tokio::{Carrier, CarrierConfig, Frame, PublishError, Tokio};

use crate::sample::Sample;
use crate::Failure;

/// `publish` -> frame at a subscribed carrier, one event at a time.
pub async fn latency<B: Backend>(
    channel: &Channel<B, Tokio>,
    events: usize,
) -> Result<Sample, Failure> {
    let (socket, mut frames) = futures::channel::mpsc::unbounded::<Frame>();
    let carrier = Carrier::new(&Tokio::default(), socket, CarrierConfig::default())?;
    channel.subscribe("e", &carrier)?;
    channel.publish("e", &"warmup").await?;
    frames.next().await.ok_or("carrier closed")?;
    let mut sample = Vec::with_capacity(events);
    for i in 0..events {
        let started = Instant::now();
        channel.publish("e", &serde_json::json!({"i": i})).await?;
        frames.next().await.ok_or("carrier closed")?;
        sample.push(started.elapsed());
    }
    channel.unsubscribe_all(&carrier);
    Ok(Sample(sample))
}

/// `publishers` tasks publishing `events` in all, each awaiting its
/// acknowledgement before the next: events/s.
pub async fn concurrent<B: Backend>(
    channel: &Channel<B, Tokio>,
    events: usize,
    publishers: usize,
) -> Result<f64, Failure> {
    channel.publish("e", &"warmup").await?;
    let per_publisher = events / publishers.max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let channel = channel.clone();
            tokio::spawn(async move {
                for i in 0..per_publisher {
                    channel
                        .publish("e", &serde_json::json!({"p": p, "i": i}))
                        .await?;
                }
                Ok::<(), PublishError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((per_publisher * publishers) as f64 / started.elapsed().as_secs_f64())
}
