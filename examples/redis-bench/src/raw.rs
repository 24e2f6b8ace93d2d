//! The baseline: the raw `redis` client doing `XADD` and, in another task
//! on its own connection, a blocking `XREAD` loop: what an application
//! would write by hand.

use std::time::Instant;

use futures::StreamExt;
use tbone_dispatch_tokio::redis::redis::{self, aio::MultiplexedConnection, Value};

use crate::sample::Sample;
use crate::{Failure, CAPACITY};

async fn connection(url: &str) -> Result<MultiplexedConnection, Failure> {
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?)
}

fn xadd(stream: &str, i: usize) -> redis::Cmd {
    let mut command = redis::cmd("XADD");
    command
        .arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(CAPACITY)
        .arg("*")
        .arg("key")
        .arg("e")
        .arg("data")
        .arg(format!(r#"{{"i":{i}}}"#));
    command
}

/// The last entry id of `value`, an `XREAD` reply for one stream.
fn last_id(value: &Value) -> Option<(String, usize)> {
    let Value::Array(streams) = value else {
        return None;
    };
    let Value::Array(pair) = streams.first()? else {
        return None;
    };
    let Value::Array(entries) = pair.get(1)? else {
        return None;
    };
    let Value::Array(last) = entries.last()? else {
        return None;
    };
    match last.first()? {
        Value::BulkString(id) => Some((String::from_utf8_lossy(id).into_owned(), entries.len())),
        _ => None,
    }
}

/// `XADD` -> the reading task holding the entry, one event at a time.
pub async fn latency(url: &str, stream: &str, events: usize) -> Result<Sample, Failure> {
    let mut writer = connection(url).await?;
    let mut reader = connection(url).await?;
    let first: String = xadd(stream, 0).query_async(&mut writer).await?;
    let (arrived, mut arrivals) = futures::channel::mpsc::unbounded::<()>();
    let key = stream.to_string();
    let reading = tokio::spawn(async move {
        let mut last = first;
        loop {
            let reply: Result<Value, _> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(256)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&key)
                .arg(&last)
                .query_async(&mut reader)
                .await;
            let Ok(reply) = reply else { return };
            if let Some((id, count)) = last_id(&reply) {
                last = id;
                for _ in 0..count {
                    if arrived.unbounded_send(()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut sample = Vec::with_capacity(events);
    for i in 0..events {
        let started = Instant::now();
        let _: String = xadd(stream, i).query_async(&mut writer).await?;
        arrivals.next().await.ok_or("the reading task ended")?;
        sample.push(started.elapsed());
    }
    reading.abort();
    Ok(Sample(sample))
}

/// `XADD`s one at a time, each awaited: events/s.
pub async fn one_at_a_time(url: &str, stream: &str, events: usize) -> Result<f64, Failure> {
    let mut writer = connection(url).await?;
    let started = Instant::now();
    for i in 0..events {
        let _: String = xadd(stream, i).query_async(&mut writer).await?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}
