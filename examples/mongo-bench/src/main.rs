//! MongoChannel against the raw driver, in one run on one server:
//!
//! - latency: raw `insert_one` -> a task tailing with a tailable await
//!   cursor, versus
//!   `MongoChannel::publish` -> frame at a carrier (one event at a time);
//! - throughput: raw `insert_one` one event at a time, versus concurrent
//!   `publish` calls that the channel batches into `insert_many`.
//!
//! Needs `MONGODB_URI`; `scripts/bench-mongo` starts a test server and runs
//! this. Usage: `mongo-bench [EVENTS] [PUBLISHERS]` (defaults 200 and 32).

use std::time::{Duration, Instant};

use futures::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::{Acknowledgment, CursorType, WriteConcern};
use mongodb::Database;
use tbone_dispatch_tokio::mongo::{self, MongoOptions};
use tbone_dispatch_tokio::{Carrier, CarrierConfig, Frame, MongoChannel, Tokio};

const CAPACITY: u64 = 4096;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let uri = std::env::var("MONGODB_URI")
        .map_err(|_| "set MONGODB_URI (scripts/bench-mongo starts a test server for you)")?;
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let publishers: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let db = mongo::connect(&uri, "tbone_bench").await?;
    db.drop().await?;

    // Journaled is the channel's default (an acknowledged event survives
    // a server crash); `w: 1` alone is the cheaper opt-out.
    let mut latency = Vec::new();
    for journal in [true, false] {
        let raw = raw_insert_to_tail(&db, events, journal).await?;
        let lib = publish_to_deliver(&db, events, journal).await?;
        latency.push((journal, raw, lib));
    }
    let raw_rate = raw_single_inserts(&db, events * 2).await?;
    let lib_rate = batched_publishes(&db, events * 2, publishers).await?;

    println!("MongoChannel vs raw driver, {events} events each, server {uri}");
    for (journal, raw, lib) in &latency {
        let concern = if *journal {
            "journaled (w:1, j:true; the channel's default)"
        } else {
            "w:1 without journal (MongoOptions::journal(false))"
        };
        println!("\nlatency, one event at a time, {concern}");
        println!(
            "{:<44} {:>9} {:>9} {:>9}",
            "", "p50 ms", "p99 ms", "mean ms"
        );
        for (name, sample) in [
            ("raw insert_one -> tailing task", raw),
            ("MongoChannel publish -> carrier frame", lib),
        ] {
            println!(
                "{name:<44} {:>9.2} {:>9.2} {:>9.2}",
                ms(percentile(sample, 0.50)),
                ms(percentile(sample, 0.99)),
                ms(mean(sample))
            );
        }
        println!(
            "library overhead (p50 ratio): {:.2}x   (mean ratio): {:.2}x",
            ms(percentile(lib, 0.5)) / ms(percentile(raw, 0.5)),
            ms(mean(lib)) / ms(mean(raw))
        );
    }
    println!("\nthroughput, journaled");
    println!(
        "{:<44} {:>9.0} events/s",
        "raw insert_one, one at a time", raw_rate
    );
    println!(
        "{:<44} {:>9.0} events/s",
        format!("MongoChannel publish, {publishers} concurrent (batched)"),
        lib_rate
    );
    println!("batching gain: {:.1}x", lib_rate / raw_rate);
    db.drop().await?;
    Ok(())
}

async fn capped(db: &Database, name: &str) -> Result<mongodb::Collection<Document>, Failure> {
    db.create_collection(name)
        .capped(true)
        .size(CAPACITY * 1024)
        .max(CAPACITY)
        .await?;
    Ok(db.collection(name))
}

/// The raw driver as a live consumer sees it: a task keeps a tailable
/// await cursor open (its `getMore` already waiting on the server, as the
/// library's tailer's is), and the time is from `insert_one` to that task
/// holding the document. Inserting and then asking for the document in the
/// same task would never wait on the server's await-data wake-up, which a
/// real consumer always does.
async fn raw_insert_to_tail(
    db: &Database,
    events: usize,
    journal: bool,
) -> Result<Vec<Duration>, Failure> {
    let collection = capped(db, &format!("raw_latency_{journal}")).await?;
    collection
        .insert_one(doc! {"key": "warmup", "data": 0})
        .await?;
    let mut cursor = collection
        .find(doc! {})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_secs(1))
        .await?;
    cursor.next().await.ok_or("tail ended")??;
    let (arrived, mut arrivals) = futures::channel::mpsc::unbounded::<()>();
    let tail = tokio::spawn(async move {
        while let Some(Ok(_)) = cursor.next().await {
            if arrived.unbounded_send(()).is_err() {
                break;
            }
        }
    });
    let mut sample = Vec::with_capacity(events);
    for i in 0..events {
        let started = Instant::now();
        collection
            .insert_one(doc! {"key": "e", "data": {"i": i as i64}})
            .write_concern(concern(journal))
            .await?;
        arrivals.next().await.ok_or("tail ended")?;
        sample.push(started.elapsed());
    }
    tail.abort();
    Ok(sample)
}

/// Acknowledged (`w: 1`), and journaled if `journal`: the raw side uses
/// the same write concern as the channel it is compared with.
fn concern(journal: bool) -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Nodes(1))
        .journal(journal)
        .build()
}

async fn open_channel(db: &Database, name: &str, journal: bool) -> Result<MongoChannel, Failure> {
    let channel: MongoChannel = mongo::builder(name, db)
        .options(MongoOptions::default().capacity(CAPACITY).journal(journal))
        .open()?;
    channel.kickoff()?;
    Ok(channel)
}

async fn publish_to_deliver(
    db: &Database,
    events: usize,
    journal: bool,
) -> Result<Vec<Duration>, Failure> {
    let channel = open_channel(db, &format!("lib_latency_{journal}"), journal).await?;
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
    Ok(sample)
}

async fn raw_single_inserts(db: &Database, events: usize) -> Result<f64, Failure> {
    let collection = capped(db, "raw_rate").await?;
    let started = Instant::now();
    for i in 0..events {
        collection
            .insert_one(doc! {"key": "e", "data": {"i": i as i64}})
            .write_concern(concern(true))
            .await?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn batched_publishes(
    db: &Database,
    events: usize,
    publishers: usize,
) -> Result<f64, Failure> {
    let channel = open_channel(db, "lib_rate", true).await?;
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
                Ok::<(), tbone_dispatch_tokio::PublishError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((per_publisher * publishers) as f64 / started.elapsed().as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sample: &[Duration], q: f64) -> Duration {
    let mut sorted = sample.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn mean(sample: &[Duration]) -> Duration {
    sample.iter().sum::<Duration>() / sample.len().max(1) as u32
}
