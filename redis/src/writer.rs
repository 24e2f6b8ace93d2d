//! The writer task: what publishers queued, written as one pipeline of
//! `XADD`s on the publishing connection.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use redis::Value;
use tbone_dispatch::{queue, BackendError, Runtime};

use crate::backend::{bump, PublishRequest, Shared};
use crate::connection::Connection;
use crate::entry::{DATA, KEY};
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

/// One reply per request: the entry's id, or why it was not added.
async fn write<R: Connect>(
    shared: &Shared<R>,
    connection: &mut Option<Connection>,
    batch: &[PublishRequest],
) -> Result<Vec<Result<StreamId, RedisError>>, RedisError> {
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
    let replies = match open
        .send(&shared.runtime, &pipeline, options.command_timeout, CONTEXT)
        .await
    {
        Ok(replies) => {
            bump(&shared.counters.batches);
            replies
        }
        Err(error) => {
            if error.breaks_connection() {
                *connection = None;
            }
            return Err(error);
        }
    };
    Ok(replies
        .iter()
        .map(|reply| match reply {
            Value::BulkString(id) => {
                StreamId::from_bytes(id).ok_or_else(|| open.unexpected(CONTEXT, reply))
            }
            other => Err(open
                .refused(CONTEXT, other)
                .unwrap_or_else(|| open.unexpected(CONTEXT, other))),
        })
        .collect())
}

/// Tells each publisher how its event fared; holds the receipts of those
/// written until the tail reads them back.
fn answer<R: Runtime>(
    shared: &Shared<R>,
    batch: Vec<PublishRequest>,
    outcome: Result<Vec<Result<StreamId, RedisError>>, RedisError>,
) {
    let counters = &shared.counters;
    let now = shared.runtime.now();
    match outcome {
        Ok(ids) => {
            for (request, id) in batch.into_iter().zip(ids) {
                let result = match id {
                    Ok(id) => {
                        bump(&counters.added);
                        if let Some(receipt) = request.receipt {
                            shared.receipts.hold(id, receipt, now);
                        }
                        Ok(())
                    }
                    Err(error) => {
                        bump(&counters.failed);
                        tracing::warn!(stream = %shared.stream, %error, "XADD refused");
                        Err(BackendError::from(error))
                    }
                };
                let _ = request.ack.send(result);
            }
        }
        Err(error) => {
            tracing::warn!(stream = %shared.stream, %error, events = batch.len(), "publishing failed");
            let message = format!(
                "Redis: the write of this event was not acknowledged (it may still have been added): {error}"
            );
            for request in batch {
                bump(&counters.failed);
                let _ = request.ack.send(Err(BackendError::msg(message.clone())));
            }
        }
    }
}
