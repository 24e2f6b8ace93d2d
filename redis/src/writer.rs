//! The writer task: what publishers queued, written as one pipeline of
//! `XADD`s on the publishing connection.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use redis::Value;
use tbone_dispatch::{queue, BackendError, Runtime};

use crate::backend::{bump, PublishRequest, Shared};
use crate::connection::Connection;
use crate::entry::{shorten, DATA, KEY};
use crate::{Connect, RedisError, StreamId};

const CONTEXT: &str = "adding events to the stream";

pub(crate) async fn write_batches<R: Connect>(
    shared: Arc<Shared<R>>,
    mut requests: queue::Receiver<PublishRequest>,
) {
    let mut connection = None;
    while let Some(first) = requests.next().await {
        let mut batch = vec![first];
        while batch.len() < shared.options.max_batch {
            match requests.next().now_or_never() {
                Some(Some(request)) => batch.push(request),
                _ => break,
            }
        }
        // Numbered before it is sent: the tail may read these entries
        // back before their ids reach us (see `in_flight`).
        let receipts = batch
            .iter()
            .any(|r| r.receipt.is_some())
            .then(|| shared.receipt_batches.start());
        let outcome = write(&shared, &mut connection, &batch).await;
        answer(&shared, batch, outcome);
        if let Some(number) = receipts {
            shared.receipt_batches.finish(number);
        }
    }
}

/// Sends the batch as one pipeline of `XADD`s: the server's replies, one
/// per command unless something is wrong (see [`pair`]).
async fn write<R: Connect>(
    shared: &Shared<R>,
    connection: &mut Option<Connection>,
    batch: &[PublishRequest],
) -> Result<Vec<Value>, RedisError> {
    let options = &shared.options;
    let open = match connection {
        Some(open) => open,
        None => connection.insert(
            Connection::open(&shared.runtime, &shared.server, options.command_timeout).await?,
        ),
    };
    let mut pipeline = redis::pipe();
    for request in batch {
        pipeline
            .cmd("XADD")
            .arg(&shared.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(options.capacity)
            .arg("*")
            .arg(KEY)
            .arg(request.event.key())
            .arg(DATA)
            .arg(request.event.data().as_str());
    }
    match open
        .send(&shared.runtime, &pipeline, options.command_timeout, CONTEXT)
        .await
    {
        Ok(replies) => {
            bump(&shared.counters.batches);
            if replies.len() != batch.len() {
                // Out of step: later replies could be taken for others'.
                *connection = None;
            }
            Ok(replies)
        }
        Err(error) => {
            if error.breaks_connection() {
                *connection = None;
            }
            Err(error)
        }
    }
}

/// What the server answered to one event's `XADD`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Answer {
    /// Added, under this id.
    Added(StreamId),
    /// Refused: the server's error reply.
    Refused(Value),
    /// A reply that is no entry id.
    Unreadable(Value),
    /// Not told apart: the replies to the batch were not one per event.
    Unmatched {
        /// Events in the batch.
        events: usize,
        /// Replies to it.
        replies: usize,
    },
}

/// Each request of a batch with the answer to its `XADD`, in order: every
/// request exactly once, whatever the replies. Replies answer a pipeline's
/// commands by their place alone, so when there are more or fewer than
/// requests none can be trusted to be a given request's: an id taken for
/// the wrong request would fulfil another publisher's receipt. Then every
/// request is `Unmatched` (its event may or may not have been added).
pub(crate) fn pair<T>(requests: Vec<T>, replies: Vec<Value>) -> Vec<(T, Answer)> {
    let (events, answered) = (requests.len(), replies.len());
    if events != answered {
        return requests
            .into_iter()
            .map(|request| {
                let unmatched = Answer::Unmatched {
                    events,
                    replies: answered,
                };
                (request, unmatched)
            })
            .collect();
    }
    requests
        .into_iter()
        .zip(replies)
        .map(|(request, reply)| {
            let answer = match reply {
                Value::BulkString(ref id) => match StreamId::from_bytes(id) {
                    Some(id) => Answer::Added(id),
                    None => Answer::Unreadable(reply),
                },
                Value::ServerError(_) => Answer::Refused(reply),
                other => Answer::Unreadable(other),
            };
            (request, answer)
        })
        .collect()
}

/// Tells each publisher how its event fared; holds the receipts of those
/// written until the tail reads them back.
fn answer<R: Runtime>(
    shared: &Shared<R>,
    batch: Vec<PublishRequest>,
    outcome: Result<Vec<Value>, RedisError>,
) {
    let counters = &shared.counters;
    let now = shared.runtime.now();
    let server = shared.server.to_string();
    let answers = match outcome {
        Ok(replies) => pair(batch, replies),
        // The connection found the count wrong first: the same answers.
        Err(RedisError::ReplyCount {
            commands, replies, ..
        }) => batch
            .into_iter()
            .map(|request| {
                let unmatched = Answer::Unmatched {
                    events: commands,
                    replies,
                };
                (request, unmatched)
            })
            .collect(),
        Err(error) => {
            tracing::warn!(stream = %shared.stream, %error, events = batch.len(), "publishing failed");
            let message = format!(
                "Redis: the write of this event was not acknowledged (it may still have been added): {error}"
            );
            for request in batch {
                bump(&counters.failed);
                let _ = request.ack.send(Err(BackendError::msg(message.clone())));
            }
            return;
        }
    };
    if let Some((_, Answer::Unmatched { events, replies })) = answers.first() {
        tracing::warn!(
            stream = %shared.stream,
            events,
            replies,
            "the server's replies to a pipeline of XADDs were not one per event, so none can be matched to its event: every publisher of the batch gets an error (its event may still have been added), and the connection is made again"
        );
    }
    for (request, answer) in answers {
        let result = match answer {
            Answer::Added(id) => {
                bump(&counters.added);
                if let Some(receipt) = request.receipt {
                    shared.receipts.hold(id, receipt, now);
                }
                Ok(())
            }
            Answer::Refused(reply) => {
                let error = match reply {
                    Value::ServerError(error) => RedisError::Command {
                        context: CONTEXT.to_string(),
                        server: server.clone(),
                        source: error.into(),
                    },
                    other => unreadable(&server, &other),
                };
                tracing::warn!(stream = %shared.stream, %error, "XADD refused");
                Err(error)
            }
            Answer::Unreadable(reply) => {
                let error = unreadable(&server, &reply);
                tracing::warn!(stream = %shared.stream, %error, "XADD's reply is no entry id");
                Err(error)
            }
            Answer::Unmatched { events, replies } => Err(RedisError::ReplyCount {
                context: CONTEXT.to_string(),
                server: server.clone(),
                commands: events,
                replies,
            }),
        };
        if result.is_err() {
            bump(&counters.failed);
        }
        let _ = request.ack.send(result.map_err(BackendError::from));
    }
}

fn unreadable(server: &str, reply: &Value) -> RedisError {
    RedisError::Reply {
        context: CONTEXT.to_string(),
        server: server.to_string(),
        reply: shorten(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn refusal() -> Value {
        redis::parse_redis_value(b"-ERR the stream is full\r\n").unwrap()
    }

    #[test]
    fn each_request_gets_the_reply_in_its_place() {
        let answers = pair(
            vec!["a", "b", "c", "d"],
            vec![id("5-0"), refusal(), Value::Okay, id("5-x")],
        );
        assert_eq!(
            answers,
            vec![
                ("a", Answer::Added(StreamId::new(5, 0))),
                ("b", Answer::Refused(refusal())),
                ("c", Answer::Unreadable(Value::Okay)),
                ("d", Answer::Unreadable(id("5-x"))),
            ]
        );
    }

    /// The review's finding: the batch's requests were zipped with the
    /// replies, so with fewer replies the last publishers were dropped
    /// unanswered, and with a reply missing in the middle every later
    /// publisher took (and held its receipt under) the next one's id.
    #[test]
    fn more_or_fewer_replies_than_requests_answer_every_request_with_an_error() {
        for replies in [
            vec![id("1-0"), id("2-0")],
            vec![id("1-0"), id("2-0"), id("3-0"), id("4-0")],
            vec![],
        ] {
            let answered = replies.len();
            let answers = pair(vec!["a", "b", "c"], replies);
            let expected = Answer::Unmatched {
                events: 3,
                replies: answered,
            };
            assert_eq!(
                answers,
                vec![
                    ("a", expected.clone()),
                    ("b", expected.clone()),
                    ("c", expected),
                ],
                "{answered} replies to 3 events"
            );
        }
        assert!(pair(Vec::<&str>::new(), vec![id("1-0")]).is_empty());
    }

    #[test]
    fn an_unmatched_reply_is_a_typed_error_saying_what_happened() {
        let error = RedisError::ReplyCount {
            context: CONTEXT.into(),
            server: "127.0.0.1:6379".into(),
            commands: 3,
            replies: 2,
        };
        assert!(error.breaks_connection());
        let shown = BackendError::from(error).to_string();
        assert!(
            shown.contains("2 replies to 3 commands") && shown.contains("may or may not"),
            "{shown}"
        );
    }
}
