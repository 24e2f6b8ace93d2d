//! The replies to one round trip of the tail, `XINFO STREAM` then a
//! blocking `XREAD`: the stream's state just before the read, and what the
//! read returned. A reply that is neither entries of the stream nor the
//! read's timeout is an error, never "nothing new": taken for a timeout,
//! it could hide entries.

use std::fmt;

use redis::Value;

use crate::entry::{entry, shorten, Entry};
use crate::gap::StreamState;
use crate::StreamId;

/// What one round trip was answered.
#[derive(Debug)]
pub(crate) struct Round {
    /// The stream just before the read.
    pub(crate) state: StreamState,
    /// What the read returned.
    pub(crate) read: Read,
}

/// What one blocking `XREAD` returned.
#[derive(Debug)]
pub(crate) enum Read {
    /// Nothing was added within the block (the server's nil reply).
    TimedOut,
    /// The entries after the position, oldest first (at least one).
    Entries(Vec<Entry>),
}

/// A round trip whose replies cannot be used.
#[derive(Debug, PartialEq)]
pub(crate) enum RoundError {
    /// The server refused a command: its error reply.
    Refused(Value),
    /// A reply that is not what the command answers, or none.
    Malformed {
        /// The command, and what was wrong with its reply.
        what: String,
        /// The reply, shortened.
        reply: Shown,
    },
}

/// Text shown as is where a reply is expected.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Shown(pub(crate) String);

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed(what: impl Into<String>, reply: &Value) -> RoundError {
    RoundError::Malformed {
        what: what.into(),
        reply: Shown(shorten(reply)),
    }
}

/// Reads the replies to `XINFO STREAM stream` and `XREAD ... STREAMS stream
/// <position>`, in that order.
pub(crate) fn parse_round(
    replies: Vec<Value>,
    stream: &str,
    max_payload: usize,
) -> Result<Round, RoundError> {
    let answered = replies.len();
    let mut replies = replies.into_iter();
    let (Some(info), Some(read), None) = (replies.next(), replies.next(), replies.next()) else {
        return Err(RoundError::Malformed {
            what: format!("{answered} replies to XINFO STREAM and XREAD (2 commands)"),
            reply: Shown(String::new()),
        });
    };
    Ok(Round {
        state: stream_state(info)?,
        read: stream_read(read, stream, max_payload)?,
    })
}

/// The reply to `XINFO STREAM`: a missing stream is an empty one.
fn stream_state(reply: Value) -> Result<StreamState, RoundError> {
    const WHAT: &str = "XINFO STREAM";
    let fields: Vec<(Value, Value)> = match reply {
        Value::ServerError(error) if error.details() == Some("no such key") => {
            return Ok(StreamState::MISSING)
        }
        Value::ServerError(_) => return Err(RoundError::Refused(reply)),
        // RESP2: a flat array of names and values; RESP3: a map.
        Value::Array(flat) if flat.len() % 2 == 0 => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
        }
        Value::Map(pairs) => pairs,
        other => return Err(malformed(format!("{WHAT}: not a list of fields"), &other)),
    };
    let (mut length, mut added, mut last_generated, mut first) = (None, None, None, None);
    for (name, value) in fields {
        let refused = |field: &str| malformed(format!("{WHAT}: its `{field}`"), &value);
        match text(&name) {
            Some("length") => length = Some(count(&value).ok_or_else(|| refused("length"))?),
            Some("entries-added") => {
                added = Some(count(&value).ok_or_else(|| refused("entries-added"))?)
            }
            Some("last-generated-id") => {
                last_generated = Some(id(&value).ok_or_else(|| refused("last-generated-id"))?)
            }
            Some("first-entry") => {
                first = match &value {
                    Value::Nil => None,
                    Value::Array(parts) => Some(
                        parts
                            .first()
                            .and_then(id)
                            .ok_or_else(|| refused("first-entry"))?,
                    ),
                    _ => return Err(refused("first-entry")),
                }
            }
            _ => {}
        }
    }
    let (Some(length), Some(last_generated)) = (length, last_generated) else {
        return Err(RoundError::Malformed {
            what: format!("{WHAT}: no `length` or `last-generated-id`"),
            reply: Shown(String::new()),
        });
    };
    if (length == 0) != first.is_none() {
        return Err(RoundError::Malformed {
            what: format!("{WHAT}: length {length} with first entry {first:?}"),
            reply: Shown(String::new()),
        });
    }
    Ok(StreamState {
        length,
        added,
        last_generated,
        first,
    })
}

/// The reply to `XREAD` on `stream` alone: nil (timed out), or that
/// stream's entries. XREAD leaves out a stream with no new entry, and
/// answers nil when none has one, so no stream, another stream, or a
/// stream without entries is malformed.
fn stream_read(reply: Value, stream: &str, max_payload: usize) -> Result<Read, RoundError> {
    const WHAT: &str = "XREAD";
    let streams: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Read::TimedOut),
        Value::ServerError(_) => return Err(RoundError::Refused(reply)),
        // RESP2: [[name, entries]]; RESP3: {name: entries}.
        Value::Array(streams) => streams
            .into_iter()
            .map(|pair| match pair {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(name), Some(entries)) => Ok((name, entries)),
                        _ => Err(malformed(format!("{WHAT}: not a stream"), &Value::Nil)),
                    }
                }
                other => Err(malformed(format!("{WHAT}: not a stream"), &other)),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams,
        other => {
            return Err(malformed(
                format!("{WHAT}: neither entries nor nil"),
                &other,
            ))
        }
    };
    let streams_len = streams.len();
    let mut streams = streams.into_iter();
    let (Some((name, items)), None) = (streams.next(), streams.next()) else {
        return Err(RoundError::Malformed {
            what: format!("{WHAT}: {streams_len} streams in the reply of a read of one"),
            reply: Shown(String::new()),
        });
    };
    if text(&name) != Some(stream) {
        return Err(malformed(
            format!("{WHAT}: entries of another stream"),
            &name,
        ));
    }
    let items = match items {
        Value::Array(items) if !items.is_empty() => items,
        other => return Err(malformed(format!("{WHAT}: no entries"), &other)),
    };
    let entries = items
        .into_iter()
        .map(|item| entry(item, max_payload))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| RoundError::Malformed {
            what: format!("{WHAT}: {why}"),
            reply: Shown(String::new()),
        })?;
    Ok(Read::Entries(entries))
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

fn count(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

fn id(value: &Value) -> Option<StreamId> {
    text(value)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "tbone_channel_x";

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn item(id: &str, data: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk("key"), bulk("e"), bulk("data"), bulk(data)]),
        ])
    }

    /// `XINFO STREAM` as Redis 7.0 answers it (RESP2).
    fn info(length: i64, first: Option<&str>, last: &str, added: i64) -> Value {
        Value::Array(vec![
            bulk("length"),
            Value::Int(length),
            bulk("radix-tree-keys"),
            Value::Int(1),
            bulk("last-generated-id"),
            bulk(last),
            bulk("max-deleted-entry-id"),
            bulk("0-0"),
            bulk("entries-added"),
            Value::Int(added),
            bulk("groups"),
            Value::Int(0),
            bulk("first-entry"),
            first.map_or(Value::Nil, |id| item(id, "1")),
            bulk("last-entry"),
            item(last, "1"),
        ])
    }

    fn read_of(stream: &str, items: Vec<Value>) -> Value {
        Value::Array(vec![Value::Array(vec![bulk(stream), Value::Array(items)])])
    }

    fn server_error(text: &str) -> Value {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap()
    }

    fn parse(replies: Vec<Value>) -> Result<Round, RoundError> {
        parse_round(replies, STREAM, 1024)
    }

    #[test]
    fn reads_the_state_and_the_entries() {
        let round = parse(vec![
            info(3, Some("5-0"), "6-1", 9),
            read_of(STREAM, vec![item("6-0", "1"), item("6-1", "{oops")]),
        ])
        .unwrap();
        assert_eq!(
            round.state,
            StreamState {
                length: 3,
                added: Some(9),
                last_generated: StreamId::new(6, 1),
                first: Some(StreamId::new(5, 0)),
            }
        );
        let Read::Entries(entries) = round.read else {
            panic!("{:?}", round.read)
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, StreamId::new(6, 0));
        assert!(entries[0].event.is_ok());
        assert!(
            entries[1].event.is_err(),
            "a bad entry is skipped, not fatal"
        );
    }

    #[test]
    fn nil_is_a_timeout_and_a_missing_stream_is_empty() {
        let round = parse(vec![server_error("ERR no such key"), Value::Nil]).unwrap();
        assert_eq!(round.state, StreamState::MISSING);
        assert!(matches!(round.read, Read::TimedOut));
        // RESP3 and servers before 7.0 (no entries-added).
        let resp3 = Value::Map(vec![
            (bulk("length"), Value::Int(0)),
            (bulk("last-generated-id"), bulk("0-0")),
            (bulk("first-entry"), Value::Nil),
        ]);
        let round = parse(vec![resp3, Value::Nil]).unwrap();
        assert_eq!(round.state.added, None);
    }

    /// The review's finding: a missing reply to XREAD was taken for its
    /// timeout (nothing new), which could hide entries.
    #[test]
    fn a_missing_or_malformed_read_is_an_error_not_a_timeout() {
        let state = || info(1, Some("1-0"), "1-0", 1);
        let refused = |replies: Vec<Value>| match parse(replies) {
            Err(RoundError::Malformed { what, .. }) => what,
            other => panic!("not refused as malformed: {other:?}"),
        };
        assert!(refused(vec![state()]).contains("1 replies"));
        assert!(refused(vec![]).contains("0 replies"));
        assert!(refused(vec![state(), Value::Nil, Value::Nil]).contains("3 replies"));
        assert!(refused(vec![state(), Value::Array(vec![])]).contains("0 streams"));
        assert!(refused(vec![state(), Value::Int(0)]).contains("neither entries nor nil"));
        assert!(refused(vec![state(), Value::Okay]).contains("neither entries nor nil"));
        assert!(refused(vec![state(), read_of(STREAM, vec![])]).contains("no entries"));
        assert!(
            refused(vec![state(), read_of("other", vec![item("2-0", "1")])])
                .contains("another stream")
        );
        let two = Value::Array(vec![
            Value::Array(vec![bulk(STREAM), Value::Array(vec![item("2-0", "1")])]),
            Value::Array(vec![bulk(STREAM), Value::Array(vec![item("3-0", "1")])]),
        ]);
        assert!(refused(vec![state(), two]).contains("2 streams"));
        let no_id = read_of(STREAM, vec![Value::Array(vec![Value::Nil, Value::Nil])]);
        assert!(refused(vec![state(), no_id]).contains("readable id"));
        assert!(refused(vec![Value::Int(1), Value::Nil]).contains("XINFO"));
        let no_length = Value::Array(vec![bulk("last-generated-id"), bulk("1-0")]);
        assert!(refused(vec![no_length, Value::Nil]).contains("no `length`"));
    }

    #[test]
    fn errors_from_the_server_are_refusals() {
        let wrong_type =
            server_error("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert!(matches!(
            parse(vec![wrong_type.clone(), Value::Nil]),
            Err(RoundError::Refused(_))
        ));
        assert!(matches!(
            parse(vec![info(0, None, "0-0", 0), wrong_type]),
            Err(RoundError::Refused(_))
        ));
    }
}
