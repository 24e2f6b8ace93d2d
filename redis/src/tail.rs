//! The tailing task: follows the stream with a blocking `XREAD` on its own
//! connection and hands every new entry to the channel, resuming strictly
//! after the last entry read whenever the connection is made again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use tbone_dispatch::tailing::Backoff;
use tbone_dispatch::{queue, Event};

use crate::backend::{bump, Shared};
use crate::connection::{within, Connection};
use crate::gap::{GapWatch, Lost};
use crate::tail_reply::{parse_round, Read, Round, RoundError};
use crate::{Connect, RedisError, StreamId};

const READING: &str = "reading the stream";

pub(crate) async fn tail<R: Connect>(
    shared: Arc<Shared<R>>,
    kickoff: Instant,
    events: queue::Sender<Event>,
) {
    let options = &shared.options;
    let mut failing = Backoff::new(options.error_backoff);
    let mut connection: Option<Connection> = None;
    let mut connected_before = false;
    // Where the next read starts (exclusive): known once the server's
    // clock gave the kickoff's place in the stream.
    let mut position: Option<StreamId> = None;
    // Whether entries after the position were trimmed before being read.
    let mut gaps = GapWatch::default();
    loop {
        if events.is_closed() {
            return;
        }
        let open = match &mut connection {
            Some(open) => open,
            None => {
                match Connection::open(&shared.runtime, &shared.server, options.command_timeout)
                    .await
                {
                    Ok(open) => {
                        if connected_before {
                            bump(&shared.counters.reconnected);
                            tracing::info!(stream = %shared.stream, "tailing connection made again; resuming after the last entry read");
                        }
                        connected_before = true;
                        connection.insert(open)
                    }
                    Err(error) => {
                        tracing::warn!(stream = %shared.stream, %error, "cannot connect the tailing connection; retrying");
                        shared.runtime.sleep(failing.delay()).await;
                        continue;
                    }
                }
            }
        };
        let from = match position {
            Some(from) => from,
            None => match start(&shared, open, kickoff).await {
                Ok(from) => {
                    shared.live_from.set(from);
                    *position.insert(from)
                }
                Err(error) => {
                    tracing::warn!(stream = %shared.stream, %error, "cannot place the kickoff in the stream; retrying");
                    connection = None;
                    shared.runtime.sleep(failing.delay()).await;
                    continue;
                }
            },
        };
        let round = match read(&shared, open, from).await {
            Ok(round) => round,
            Err(error) => {
                if matches!(
                    error,
                    RedisError::Reply { .. } | RedisError::ReplyCount { .. }
                ) {
                    tracing::warn!(stream = %shared.stream, %error, "the tailing connection's reply is not a stream read, nor its timeout (a protocol error, which could hide entries); reconnecting and reading again after the last entry read");
                } else {
                    tracing::warn!(stream = %shared.stream, %error, "the tailing connection failed; reconnecting");
                }
                connection = None;
                shared.runtime.sleep(failing.delay()).await;
                continue;
            }
        };
        failing.reset();
        let entries = match round.read {
            Read::TimedOut => Vec::new(),
            Read::Entries(entries) => entries,
        };
        let ids: Vec<StreamId> = entries.iter().map(|entry| entry.id).collect();
        let drained = entries.len() < options.read_count;
        if let Some(lost) = gaps.observe(from, &round.state, &ids, drained) {
            bump(&shared.counters.gaps);
            tbone_dispatch::observe::record_gap(&shared.stream);
            match lost {
                Lost::Entries(lost) => tracing::warn!(
                    stream = %shared.stream,
                    after = %from,
                    lost,
                    "the consumer fell behind the stream: entries after its position were trimmed before it read them; continuing with the oldest remaining"
                ),
                Lost::Uncounted => tracing::warn!(
                    stream = %shared.stream,
                    after = %from,
                    "entries after the consumer's position may have been removed before it read them (the stream was deleted, or the server does not count entries added: Redis before 7.0); continuing with the oldest remaining"
                ),
            }
        }
        if entries.is_empty() {
            continue;
        }
        // This instance's publishers may not know these entries' ids yet:
        // wait (boundedly) for every batch that could hold them.
        let batches = shared.receipt_batches.started();
        if !shared.receipt_batches.is_done_through(batches)
            && within(
                &shared.runtime,
                options.command_timeout,
                shared.receipt_batches.done_through(batches),
            )
            .await
            .is_none()
        {
            tracing::debug!(stream = %shared.stream, "publishers' receipts not settled in time; delivering without them");
        }
        for entry in entries {
            position = Some(entry.id);
            match entry.event {
                Ok(event) => {
                    bump(&shared.counters.received);
                    // The entry's id is the event's place in the stream, the
                    // same on every instance.
                    let event = match entry.id.position() {
                        Some(position) => event.with_position(position),
                        None => event,
                    };
                    let event = match shared.receipts.release(&entry.id) {
                        Some(receipt) => event.with_receipt(receipt),
                        None => event,
                    };
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                Err(reason) => {
                    bump(&shared.counters.skipped);
                    tracing::warn!(stream = %shared.stream, id = %entry.id, %reason, "skipping a malformed stream entry");
                }
            }
        }
    }
}

/// Where kickoff falls in the stream: ids carry the server's clock, so the
/// server's time now, less the time since kickoff on ours. The server read
/// its clock before its answer reached us, so the place found is at or
/// before the kickoff (by at most that round trip): an entry added after
/// kickoff is never missed.
async fn start<R: Connect>(
    shared: &Shared<R>,
    open: &mut Connection,
    kickoff: Instant,
) -> Result<StreamId, RedisError> {
    let context = "asking the server's time";
    let mut pipeline = redis::pipe();
    pipeline.cmd("TIME");
    let reply = open
        .send(
            &shared.runtime,
            &pipeline,
            shared.options.command_timeout,
            context,
        )
        .await?;
    let since_kickoff = shared.runtime.now().saturating_duration_since(kickoff);
    let now_us = match reply.first() {
        Some(Value::Array(parts)) if parts.len() == 2 => number(&parts[0])
            .zip(number(&parts[1]))
            .map(|(secs, micros)| secs.saturating_mul(1_000_000).saturating_add(micros)),
        _ => None,
    }
    .ok_or_else(|| open.unexpected(context, &reply))?;
    Ok(kickoff_in_stream(now_us, since_kickoff))
}

/// The place, in a stream whose ids carry the server's clock, of a kickoff
/// `since_kickoff` before the server's clock read `server_now_us`.
fn kickoff_in_stream(server_now_us: u64, since_kickoff: Duration) -> StreamId {
    // In microseconds: rounding each to milliseconds first could place
    // kickoff a millisecond late, after an event published at once.
    let since_us = u64::try_from(since_kickoff.as_micros()).unwrap_or(u64::MAX);
    StreamId::before(server_now_us.saturating_sub(since_us) / 1000)
}

/// A number in a `TIME` reply.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::BulkString(digits) => std::str::from_utf8(digits).ok()?.parse().ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// One blocking `XREAD` after `from`, preceded in the same round trip by
/// `XINFO STREAM`: the stream as it was just before the read, to tell
/// whether entries after `from` were removed unread (`gap.rs`).
async fn read<R: Connect>(
    shared: &Shared<R>,
    open: &mut Connection,
    from: StreamId,
) -> Result<Round, RedisError> {
    let options = &shared.options;
    let mut pipeline = redis::pipe();
    pipeline.cmd("XINFO").arg("STREAM").arg(&shared.stream);
    let block_ms = u64::try_from(options.block.as_millis()).unwrap_or(u64::MAX);
    pipeline
        .cmd("XREAD")
        .arg("COUNT")
        .arg(options.read_count)
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(&shared.stream)
        .arg(from.to_string());
    let limit = options.block + options.command_timeout;
    let replies = open
        .send(&shared.runtime, &pipeline, limit, READING)
        .await?;
    parse_round(replies, &shared.stream, options.max_payload).map_err(|error| match error {
        RoundError::Refused(reply) => refused(open, &reply),
        RoundError::Malformed { what, reply } => {
            open.unexpected(&format!("{READING}: {what}"), &reply)
        }
    })
}

fn refused(open: &Connection, reply: &Value) -> RedisError {
    open.refused(READING, reply)
        .unwrap_or_else(|| open.unexpected(READING, reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the benchmark: an event published right after kickoff, in
    /// the same millisecond, was never delivered, because the server's time
    /// and the time since kickoff were each rounded down to milliseconds
    /// before the subtraction.
    #[test]
    fn an_event_in_the_kickoff_millisecond_is_after_the_start() {
        // Kickoff at 999.950 ms on the server's clock; TIME read at 1000.900
        // ms, 0.950 ms later.
        let start = kickoff_in_stream(1_000_900, Duration::from_micros(950));
        let published_at_once = StreamId::new(999, 0);
        assert!(
            start < published_at_once,
            "{start} must precede {published_at_once}"
        );
        let long_before = StreamId::new(998, 7);
        assert!(start > long_before, "{start} must follow {long_before}");
    }
}
