//! RedisChannel against the raw `redis` client, and against MongoChannel,
//! in one run on the test servers:
//!
//! - latency: raw `XADD` -> a task reading with a blocking `XREAD`, versus
//!   `RedisChannel::publish` -> frame at a carrier (one event at a time);
//! - throughput: raw `XADD` one at a time, versus 32 concurrent `publish`
//!   calls that the channel batches into one pipeline;
//! - the same channel measurements on MongoChannel (journaled, its
//!   default), for choosing between the two.
//!
//! Needs `REDIS_URL` and `MONGODB_URI`; `scripts/bench-redis` starts both
//! test servers and runs this. Usage:
//! `redis-bench [EVENTS] [PUBLISHERS] [MONGO_EVENTS]` (defaults 1000 per
//! latency round, 32, 200).

mod channel;
mod raw;
mod sample;

use tbone_dispatch_tokio::mongo::{self, MongoOptions};
use tbone_dispatch_tokio::redis::{self, redis as client, RedisOptions};
use tbone_dispatch_tokio::{MongoChannel, RedisChannel};

use sample::{ms, Sample};

/// Latency rounds, alternating raw and channel.
const ROUNDS: usize = 5;

/// Entries (documents) kept, on both servers.
pub const CAPACITY: u64 = 4096;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str) -> Result<String, Failure> {
    std::env::var(name).map_err(|_| {
        format!("set {name} (scripts/bench-redis starts the test servers for you)").into()
    })
}

fn arg(args: &mut impl Iterator<Item = String>, default: usize) -> Result<usize, Failure> {
    Ok(args.next().map_or(Ok(default), |a| a.parse())?)
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let redis_url = env("REDIS_URL")?;
    let mongo_uri = env("MONGODB_URI")?;
    let mut args = std::env::args().skip(1);
    let events = arg(&mut args, 1000)?;
    let publishers = arg(&mut args, 32)?;
    let mongo_events = arg(&mut args, 200)?;

    let mut flush = client::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = client::cmd("FLUSHDB").query_async(&mut flush).await?;
    let server = redis::connect(&redis_url).await?;
    let open_redis = |name: &str| -> Result<RedisChannel, Failure> {
        let channel: RedisChannel = redis::builder(name, &server)
            .options(RedisOptions::default().capacity(CAPACITY))
            .open()?;
        channel.kickoff()?;
        Ok(channel)
    };
    let db = mongo::connect(&mongo_uri, "tbone_redis_bench").await?;
    db.drop().await?;
    let open_mongo = |name: &str| -> Result<MongoChannel, Failure> {
        let channel: MongoChannel = mongo::builder(name, &db)
            .options(MongoOptions::default().capacity(CAPACITY))
            .open()?;
        channel.kickoff()?;
        Ok(channel)
    };

    // Raw and channel latency in alternating rounds, so that drift of the
    // machine (shared, 2 cores) hits both sides; the ratios are the medians
    // of the rounds' ratios.
    let latency_channel = open_redis("latency")?;
    let (mut raw_latency, mut lib_latency, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let stream = format!("bench:raw_latency_{round}");
        let raw = raw::latency(&redis_url, &stream, events).await?;
        let lib = channel::latency(&latency_channel, events).await?;
        ratios.push((
            ms(lib.quantile(0.5)) / ms(raw.quantile(0.5)),
            ms(lib.quantile(0.99)) / ms(raw.quantile(0.99)),
        ));
        raw_latency.extend(raw.0);
        lib_latency.extend(lib.0);
    }
    let (raw_latency, lib_latency) = (Sample(raw_latency), Sample(lib_latency));
    let raw_rate = raw::one_at_a_time(&redis_url, "bench:raw_rate", events * 2).await?;
    let lib_rate = channel::concurrent(&open_redis("rate")?, events * 2, publishers).await?;

    let redis_same = channel::latency(&open_redis("redis_same_latency")?, mongo_events).await?;
    let mongo_same = channel::latency(&open_mongo("mongo_same_latency")?, mongo_events).await?;
    let redis_same_rate = channel::concurrent(
        &open_redis("redis_same_rate")?,
        mongo_events * 4,
        publishers,
    )
    .await?;
    let mongo_same_rate = channel::concurrent(
        &open_mongo("mongo_same_rate")?,
        mongo_events * 4,
        publishers,
    )
    .await?;

    println!("RedisChannel vs the raw redis client, {events} events x {ROUNDS} rounds, server {redis_url}");
    println!("\nlatency, one event at a time");
    print_header();
    print_latency("raw XADD -> blocking XREAD task", &raw_latency);
    print_latency("RedisChannel publish -> carrier frame", &lib_latency);
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "library overhead, median of {ROUNDS} rounds: p50 {:.2}x, p99 {:.2}x (target: at most 1.2x); rounds: {}",
        median(ratios.iter().map(|r| r.0).collect()),
        median(ratios.iter().map(|r| r.1).collect()),
        ratios
            .iter()
            .map(|(p50, p99)| format!("{p50:.2}/{p99:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!("\nthroughput");
    println!(
        "{:<44} {:>9.0} events/s",
        "raw XADD, one at a time", raw_rate
    );
    println!(
        "{:<44} {:>9.0} events/s",
        format!("RedisChannel publish, {publishers} concurrent"),
        lib_rate
    );
    println!(
        "batching gain: {:.1}x (target: at least 5x)",
        lib_rate / raw_rate
    );

    println!("\nRedisChannel vs MongoChannel (journaled), same load, server {mongo_uri}");
    println!("latency, {mongo_events} events one at a time");
    print_header();
    print_latency("RedisChannel publish -> carrier frame", &redis_same);
    print_latency("MongoChannel publish -> carrier frame", &mongo_same);
    println!(
        "throughput, {} events from {publishers} concurrent publishers",
        mongo_events * 4
    );
    println!("{:<44} {:>9.0} events/s", "RedisChannel", redis_same_rate);
    println!("{:<44} {:>9.0} events/s", "MongoChannel", mongo_same_rate);
    println!(
        "Redis/Mongo: latency p50 {:.2}x, throughput {:.1}x",
        ms(redis_same.quantile(0.5)) / ms(mongo_same.quantile(0.5)),
        redis_same_rate / mongo_same_rate
    );
    db.drop().await?;
    let _: () = client::cmd("FLUSHDB").query_async(&mut flush).await?;
    Ok(())
}

fn print_header() {
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "", "p50 ms", "p99 ms", "mean ms"
    );
}

fn print_latency(name: &str, sample: &Sample) {
    println!(
        "{name:<44} {:>9.3} {:>9.3} {:>9.3}",
        ms(sample.quantile(0.50)),
        ms(sample.quantile(0.99)),
        ms(sample.mean())
    );
}
