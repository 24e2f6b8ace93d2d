//! The SSE stream: a carrier whose client is a `text/event-stream` body.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::stream::FusedStream;
use futures::{FutureExt, Stream, StreamExt};

use super::encode::{encode_frame, encode_retry, KEEP_ALIVE};
use super::{SseError, SseOptions};
use crate::{Backend, Carrier, Channel, CloseReason, Frame, PresenceGuard, Resumed, Runtime};

/// Frames between the carrier's writer and the body: a hand-over only (the
/// carrier's own queue is what absorbs bursts and applies its overflow
/// policy).
const HAND_OVER: usize = 16;

/// Above this many bytes, the frames ready are handed to the server as
/// more than one chunk.
const MAX_CHUNK: usize = 64 * 1024;

type BoxedTimer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server-sent events response body: the events of one or more channels
/// as `text/event-stream` bytes, which any HTTP server can send as a
/// streaming body (axum: [`Body::from_stream`], hyper: a `StreamBody`).
///
/// It is a [`Carrier`] whose client is the body: subscribe it to channels
/// with [`SseStream::join`] (or build it with [`stream`](super::stream) for
/// one channel), then return it. The wire format:
///
/// - each event: `id: <position>` (when the channel gives positions: any
///   channel with a history, and MongoChannel), then its frame as
///   `data:` lines (see [`encode_frame`](super::encode_frame)), then a
///   blank line;
/// - when a `Last-Event-ID` could not be resumed from (older than the
///   channel's history, or from another process): `event: recovery_failed`
///   with the envelope's frame as data
///   (`{"type":"recovery_failed","position":"<the id>"}` by default; empty
///   when the id is no position at all), then the live events: the client
///   should reload what it shows;
/// - `: keep-alive` comments after [`SseOptions::keep_alive`] without a
///   write;
/// - `retry: <ms>` first, if [`SseOptions::retry`] is set.
///
/// When the server drops the body (its client went away, or a write
/// failed), the carrier closes at once and leaves every channel: no need
/// to wait for the next event. When the carrier closes on its own (the
/// channel stopped, the client fell too far behind under
/// [`OverflowPolicy::DropCarrier`](crate::OverflowPolicy::DropCarrier),
/// [`Carrier::close`]), the body ends after the frames it holds; an
/// `EventSource` then reconnects with `Last-Event-ID`.
///
/// ```
/// use futures::StreamExt;
/// use tbone_dispatch::sse::{SseOptions, SseStream};
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{ChannelBuilder, MemoryBackend};
///
/// let runtime = ManualRuntime::new();
/// let channel = ChannelBuilder::new("doc-sse-stream").open(runtime.clone(), MemoryBackend::new).unwrap();
/// channel.kickoff().unwrap();
///
/// // The request carried no Last-Event-ID: subscribe to live events.
/// let mut body = SseStream::new(&runtime, SseOptions::default()).unwrap();
/// assert_eq!(runtime.run(body.join(&channel, &["tick"], None)).unwrap().unwrap(), None);
///
/// runtime.run(channel.publish("tick", &1)).unwrap().unwrap();
/// let chunk = runtime.run(body.next()).unwrap().unwrap().unwrap();
/// let text = std::str::from_utf8(&chunk).unwrap();
/// assert!(text.starts_with("id: "));
/// assert!(text.ends_with("\ndata: {\"type\":\"event\",\"payload\":{\"name\":\"tick\",\"data\":1}}\n\n"));
///
/// // The client goes away: the body is dropped, the carrier leaves.
/// drop(body);
/// assert_eq!(channel.subscriber_count("tick"), 0);
/// ```
///
/// [`Body::from_stream`]: https://docs.rs/axum/latest/axum/body/struct.Body.html#method.from_stream
pub struct SseStream<R: Runtime> {
    carrier: Carrier<R>,
    frames: mpsc::Receiver<Frame>,
    // Closes the carrier when the body is dropped, which the server does
    // as soon as it sees its client go.
    _presence: PresenceGuard,
    runtime: R,
    keep_alive: Option<Duration>,
    timer: Option<BoxedTimer>,
    last_write: Instant,
    head: Option<Bytes>,
    end: Option<BoxedTimer>,
    ended: bool,
}

impl<R: Runtime> fmt::Debug for SseStream<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseStream")
            .field("carrier", &self.carrier)
            .field("keep_alive", &self.keep_alive)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> SseStream<R> {
    /// A body subscribed to nothing yet, whose carrier's writer runs on
    /// `runtime`. Fails if `options` are invalid or the runtime cannot
    /// spawn.
    pub fn new(runtime: &R, options: SseOptions) -> Result<Self, SseError> {
        if options.keep_alive == Some(Duration::ZERO) {
            return Err(SseError::ZeroKeepAlive);
        }
        let (sink, frames) = mpsc::channel(HAND_OVER);
        let carrier = Carrier::new(runtime, sink, options.carrier)?;
        let head = options.retry.map(|delay| {
            let mut out = BytesMut::new();
            encode_retry(delay, &mut out);
            out.freeze()
        });
        Ok(SseStream {
            _presence: carrier.presence_guard(),
            carrier,
            frames,
            runtime: runtime.clone(),
            keep_alive: options.keep_alive,
            timer: None,
            last_write: runtime.now(),
            head,
            end: None,
            ended: false,
        })
    }

    /// Subscribes this body to `events` of `channel`. With the request's
    /// `Last-Event-ID` (see [`last_event_id`](super::last_event_id)), the
    /// events the client missed since that id come first, then the live
    /// ones ([`Channel::resume`]: from the channel's history, or from
    /// what its backend stores), and the result says how that went; without one (`None`, or a blank id), it subscribes to live
    /// events and returns `None`.
    ///
    /// A `Last-Event-ID` is a position in one channel's stream: when a
    /// body joins several channels with the same id, the channels it does
    /// not belong to send `recovery_failed`.
    pub fn join<'a, B: Backend>(
        &self,
        channel: &'a Channel<B, R>,
        events: &'a [&'a str],
        last_event_id: Option<&'a str>,
    ) -> impl Future<Output = Result<Option<Resumed>, SseError>> + Send + 'a {
        // Owned, so that the future does not borrow the body (which is
        // `Send` but not `Sync`) and can be awaited in any handler.
        let carrier = self.carrier.clone();
        async move {
            match last_event_id.map(str::trim).filter(|id| !id.is_empty()) {
                Some(after) => Ok(Some(channel.resume(events, &carrier, after).await?)),
                None => {
                    for event in events {
                        channel.subscribe(event, &carrier)?;
                    }
                    Ok(None)
                }
            }
        }
    }

    /// The body's carrier: subscribe it to more events, read its counters,
    /// or close it ([`Carrier::close_after_queued`] ends the body after
    /// the frames it holds).
    pub fn carrier(&self) -> &Carrier<R> {
        &self.carrier
    }

    /// Ends the body gracefully once `signal` completes (a server shutting
    /// down): the carrier leaves its channels, the frames it holds are sent
    /// (within its close timeout), then the body ends, so a server that
    /// waits for its responses to finish is not held by this one.
    pub fn end_on<F>(mut self, signal: F) -> Self
    where
        F: Future + Send + 'static,
    {
        self.end = Some(Box::pin(signal.map(drop)));
        self
    }

    /// The next chunk of the body, if one is ready now.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(head));
        }
        if let Some(end) = self.end.as_mut() {
            if end.as_mut().poll(cx).is_ready() {
                self.end = None;
                self.carrier.close_after_queued(CloseReason::Closed);
            }
        }
        let mut out = BytesMut::new();
        let mut closed = false;
        while out.len() < MAX_CHUNK {
            match self.frames.poll_next_unpin(cx) {
                Poll::Ready(Some(frame)) => encode_frame(&frame, &mut out),
                Poll::Ready(None) => {
                    closed = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !out.is_empty() {
            return Poll::Ready(Some(out.freeze()));
        }
        if closed {
            return Poll::Ready(None);
        }
        match self.poll_keep_alive(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ready when the body has been idle for the keep-alive interval. One
    /// timer per interval, not per write: when it fires early (something
    /// was written meanwhile), it is set again for the rest.
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(interval) = self.keep_alive else {
            return Poll::Pending;
        };
        loop {
            let idle = self
                .runtime
                .now()
                .saturating_duration_since(self.last_write);
            let timer = match self.timer.as_mut() {
                Some(timer) => timer,
                None => {
                    if idle >= interval {
                        return Poll::Ready(());
                    }
                    self.timer
                        .insert(Box::pin(self.runtime.sleep(interval - idle)))
                }
            };
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => self.timer = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// Nothing of the body is pinned in place: its futures are boxed.
impl<R: Runtime> Unpin for SseStream<R> {}

impl<R: Runtime> Stream for SseStream<R> {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.poll_chunk(cx) {
            Poll::Ready(Some(chunk)) => {
                this.last_write = this.runtime.now();
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<R: Runtime> FusedStream for SseStream<R> {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

/// An SSE body subscribed to `events` of `channel`, from `last_event_id`
/// when the request carried one: [`SseStream::new`] on the channel's
/// runtime, then [`SseStream::join`]. Send it as the response body with
/// the headers of [`RESPONSE_HEADERS`](super::RESPONSE_HEADERS).
///
/// ```
/// use futures::StreamExt;
/// use tbone_dispatch::sse::{self, SseOptions};
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{ChannelBuilder, MemoryBackend};
///
/// let runtime = ManualRuntime::new();
/// let channel = ChannelBuilder::new("doc-sse-fn").open(runtime.clone(), MemoryBackend::new).unwrap();
/// channel.kickoff().unwrap();
///
/// // A client whose id is unknown here is told so, then gets live events.
/// let mut body = runtime
///     .run(sse::stream(&channel, &["tick"], Some("not-from-here"), SseOptions::default()))
///     .unwrap()
///     .unwrap();
/// let chunk = runtime.run(body.next()).unwrap().unwrap().unwrap();
/// assert_eq!(
///     &chunk[..],
///     b"event: recovery_failed\ndata: {\"type\":\"recovery_failed\",\"position\":\"not-from-here\"}\n\n"
/// );
/// ```
pub async fn stream<B: Backend, R: Runtime>(
    channel: &Channel<B, R>,
    events: &[&str],
    last_event_id: Option<&str>,
    options: SseOptions,
) -> Result<SseStream<R>, SseError> {
    let body = SseStream::new(channel.runtime(), options)?;
    body.join(channel, events, last_event_id).await?;
    Ok(body)
}
