//! `RedisBackend`: events shared by every instance through a Redis stream.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::Instrument;

use futures::channel::oneshot;
use futures::StreamExt;
use tbone_dispatch::tailing::{Alive, HeldReceipts};
use tbone_dispatch::{
    queue, Backend, BackendError, Event, EventStream, Position, Receipt, Stored, Task,
};

use crate::history::{stored_after, LiveFrom};
use crate::in_flight::ReceiptBatches;
use crate::tail::tail;
use crate::writer::write_batches;
use crate::{Connect, RedisOptions, RedisServer, StreamId};

/// Counters of a [`RedisBackend`], read with [`RedisBackend::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Events added to the stream and acknowledged.
    pub added: u64,
    /// Pipelines of `XADD`s the server answered.
    pub batches: u64,
    /// Events whose `XADD` was not acknowledged (the publisher got an
    /// error).
    pub failed: u64,
    /// Events read from the stream and handed to the channel.
    pub received: u64,
    /// Malformed entries skipped (no `key` or `data` field, text that is
    /// not UTF-8, data that is not JSON within the limits).
    pub skipped: u64,
    /// Times the consumer found entries after its position trimmed from
    /// the stream before it could read them (each such gap counted once).
    pub gaps: u64,
    /// Times the tailing connection was made again after it failed.
    pub reconnected: u64,
    /// Whether the tailing task is alive (from `kickoff` until the channel
    /// stops: [`Channel::stop`](tbone_dispatch::Channel::stop) waits for it
    /// to end).
    pub tailing: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) added: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) reconnected: AtomicU64,
    pub(crate) tailing: Arc<std::sync::atomic::AtomicBool>,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the writer, the tail and the backend share.
#[derive(Debug)]
pub(crate) struct Shared<R> {
    pub(crate) runtime: R,
    pub(crate) server: RedisServer,
    pub(crate) stream: String,
    pub(crate) options: RedisOptions,
    pub(crate) counters: Counters,
    /// Receipts of local publishers, by the id their entry was given.
    pub(crate) receipts: HeldReceipts<StreamId>,
    pub(crate) receipt_batches: ReceiptBatches,
    /// Where the tail started (for resuming clients).
    pub(crate) live_from: LiveFrom,
}

/// One publish waiting for the writer.
pub(crate) struct PublishRequest {
    pub(crate) event: Event,
    pub(crate) receipt: Option<Receipt>,
    pub(crate) ack: oneshot::Sender<Result<(), BackendError>>,
}

/// The RedisChannel transport: every published event is one entry
/// `{key, data}` (`data` the event's JSON text, as frames carry it) of the
/// stream `tbone_channel_<name>`, and every instance reads that stream to
/// deliver each event to its own subscribers, in the stream's order.
///
/// - Publishing resolves once `XADD` was acknowledged, and fails with an
///   error otherwise (within [`RedisOptions::command_timeout`]).
///   Concurrent publishes are written together in one pipeline, in order.
///   Whether an acknowledged event survives a crash of the server is the
///   server's persistence: `appendonly yes` with `appendfsync always`
///   writes it to disk before answering.
/// - An instance delivers the entries added from its kickoff on: the
///   kickoff is placed in the stream by the server's clock (`TIME`, which
///   stream ids carry), early by at most one round trip, never late.
/// - The tail reads with a blocking `XREAD` on a connection of its own,
///   strictly after the last entry it read: after a lost connection or a
///   server restart it resumes there (with backoff and jitter), with no
///   loss and no duplicate. When entries after its position were trimmed
///   before it read them (the consumer fell
///   [`capacity`](RedisOptions::capacity) behind), it reports a gap once (a
///   warning and [`RedisStats::gaps`]) and carries on from the oldest entry
///   left.
/// - A client resuming from a position this instance's history does not
///   hold is answered from the stream itself
///   ([`Backend::stored_after`]), while its position is still there.
/// - Malformed entries written by others are skipped with a warning and
///   counted; they never reach a carrier.
///
/// It runs natively on the runtime `R` (tasks, timers and its TCP stream);
/// open a channel with [`open`](crate::open) or [`builder`](crate::builder)
/// (or the runtime crate's `redis` module).
pub struct RedisBackend<R: Connect> {
    shared: Arc<Shared<R>>,
    publish: queue::Sender<PublishRequest>,
    closed: AtomicBool,
    writer: Mutex<Option<Task>>,
    /// Why the writer task could not be started, if it could not.
    no_writer: Option<String>,
    tail: Mutex<Option<Task>>,
}

impl<R: Connect> fmt::Debug for RedisBackend<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("server", &self.shared.server)
            .field("stream", &self.shared.stream)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<R: Connect> RedisBackend<R> {
    /// A backend for channel `channel` on `server`, running its tasks on
    /// `runtime`. Connections are made on first use (publishing, or
    /// [`Backend::consume`]) and made again whenever they fail.
    pub fn new(runtime: R, server: &RedisServer, channel: &str, options: RedisOptions) -> Self {
        let (publish, requests) = queue::bounded(options.publish_queue);
        let shared = Arc::new(Shared {
            stream: options.stream_name(channel),
            runtime,
            server: server.clone(),
            options,
            counters: Counters::default(),
            receipts: HeldReceipts::default(),
            receipt_batches: ReceiptBatches::default(),
            live_from: LiveFrom::default(),
        });
        // A runtime that refuses the task leaves the request queue without
        // a reader: every publish then fails, saying why.
        let (writer, no_writer) = match shared
            .runtime
            .spawn(write_batches(shared.clone(), requests))
        {
            Ok(task) => (Some(task), None),
            Err(error) => {
                tracing::error!(stream = %shared.stream, %error, "cannot start the Redis channel's writer; publishing will fail");
                (None, Some(error.to_string()))
            }
        };
        RedisBackend {
            shared,
            publish,
            closed: AtomicBool::new(false),
            writer: Mutex::new(writer),
            no_writer,
            tail: Mutex::new(None),
        }
    }

    /// The stream's key.
    pub fn stream_name(&self) -> &str {
        &self.shared.stream
    }

    /// The server.
    pub fn server(&self) -> &RedisServer {
        &self.shared.server
    }

    /// The backend's counters.
    pub fn stats(&self) -> RedisStats {
        let c = &self.shared.counters;
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        RedisStats {
            added: read(&c.added),
            batches: read(&c.batches),
            failed: read(&c.failed),
            received: read(&c.received),
            skipped: read(&c.skipped),
            gaps: read(&c.gaps),
            reconnected: read(&c.reconnected),
            tailing: c.tailing.load(Ordering::Acquire),
        }
    }
}

fn abort(task: &Mutex<Option<Task>>) {
    if let Some(task) = task.lock().unwrap_or_else(PoisonError::into_inner).take() {
        task.abort();
    }
}

impl<R: Connect> Drop for RedisBackend<R> {
    fn drop(&mut self) {
        abort(&self.writer);
        abort(&self.tail);
    }
}

impl<R: Connect> Backend for RedisBackend<R> {
    async fn publish(&self, mut event: Event) -> Result<(), BackendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BackendError::Closed);
        }
        if let Some(reason) = &self.no_writer {
            return Err(BackendError::msg(format!(
                "Redis: the channel's writer task could not be started: {reason}; open the channel from within a running runtime"
            )));
        }
        let receipt = event.take_receipt();
        let (ack, acked) = oneshot::channel();
        self.publish
            .send(PublishRequest {
                event,
                receipt,
                ack,
            })
            .await
            .map_err(|_| BackendError::Closed)?;
        acked.await.map_err(|_| BackendError::Closed)?
    }

    fn consume(&self) -> Result<EventStream, BackendError> {
        let mut tailing = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tailing.is_some() {
            return Err(BackendError::AlreadyConsumed);
        }
        let kickoff = self.shared.runtime.now();
        let (events, stream) = queue::bounded(self.shared.options.buffer);
        let alive = Alive::raise(&self.shared.counters.tailing);
        let tailing_task = tail(self.shared.clone(), kickoff, events);
        let task = self
            .shared
            .runtime
            .spawn(
                async move {
                    let _alive = alive;
                    tailing_task.await;
                }
                .instrument(tracing::debug_span!(
                    "tail",
                    stream = %self.shared.stream
                )),
            )
            .map_err(|e| {
                BackendError::with_source("cannot start the Redis channel's tailing task", e)
            })?;
        *tailing = Some(task);
        Ok(stream.boxed())
    }

    /// The entries after `after` in the stream, for a client resuming from
    /// a position this instance's history does not hold (see
    /// [`Channel::resume`](tbone_dispatch::Channel::resume)).
    async fn stored_after(&self, after: &Position) -> Result<Option<Stored>, BackendError> {
        stored_after(&self.shared, after).await.map_err(|error| {
            BackendError::with_source(
                format!(
                    "cannot read what stream {} stores for a resuming client",
                    self.shared.stream
                ),
                error,
            )
        })
    }

    /// Stops the tailing task and waits until it is gone, so that a
    /// runtime dropped right after the channel's stop finds none of this
    /// channel's work still running. The writer stays until the backend is
    /// dropped: publishes already handed to it are answered.
    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tail) = tail {
            tail.abort();
            tail.await;
        }
    }
}
