//! A sink that arrives after its carrier: how a socket is subscribed
//! before its handshake response goes out.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use futures::{FutureExt, Sink};

use crate::carrier::Outgoing;

/// The error of a socket sink, boxed: the carrier only reports it.
pub type SinkFailure = Box<dyn std::error::Error + Send + Sync>;

/// A socket's write half, with its error type erased.
pub(crate) type BoxSink = Pin<Box<dyn Sink<Outgoing, Error = SinkFailure> + Send>>;

/// Why a socket's carrier never got its sink.
#[derive(Debug)]
pub(crate) struct NeverAttached;

impl fmt::Display for NeverAttached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the websocket handshake did not complete")
    }
}

impl std::error::Error for NeverAttached {}

/// Holds frames back (the carrier's queue fills, nothing is lost) until
/// the socket's write half is attached; fails if it never is.
pub(crate) enum LateSink {
    Waiting(oneshot::Receiver<BoxSink>),
    Ready(BoxSink),
}

impl LateSink {
    pub(crate) fn new() -> (oneshot::Sender<BoxSink>, LateSink) {
        let (attach, waiting) = oneshot::channel();
        (attach, LateSink::Waiting(waiting))
    }

    /// The sink, if it was attached (taken from the oneshot if it is
    /// there), without waiting.
    fn attached(&mut self) -> Option<&mut BoxSink> {
        if let LateSink::Waiting(waiting) = self {
            if let Ok(Some(sink)) = waiting.try_recv() {
                *self = LateSink::Ready(sink);
            }
        }
        match self {
            LateSink::Ready(sink) => Some(sink),
            LateSink::Waiting(_) => None,
        }
    }

    fn ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<&mut BoxSink, SinkFailure>> {
        if let LateSink::Waiting(waiting) = self {
            match waiting.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(sink)) => *self = LateSink::Ready(sink),
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Box::new(NeverAttached))),
            }
        }
        match self {
            LateSink::Ready(sink) => Poll::Ready(Ok(sink)),
            LateSink::Waiting(_) => Poll::Ready(Err(Box::new(NeverAttached))),
        }
    }
}

impl Sink<Outgoing> for LateSink {
    type Error = SinkFailure;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkFailure>> {
        match self.ready(cx) {
            Poll::Ready(Ok(sink)) => sink.as_mut().poll_ready(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), SinkFailure> {
        match &mut *self {
            LateSink::Ready(sink) => sink.as_mut().start_send(item),
            // poll_ready said ready first, so the sink is here.
            LateSink::Waiting(_) => Err(Box::new(NeverAttached)),
        }
    }

    // A sink attached but not yet used (no frame was ever sent) must
    // still be flushed and closed: the websocket's answer to a client's
    // close frame waits in it.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkFailure>> {
        match self.attached() {
            Some(sink) => sink.as_mut().poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkFailure>> {
        match self.attached() {
            Some(sink) => sink.as_mut().poll_close(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// A sink whose errors become [`SinkFailure`]s on every call. (futures'
/// `sink_map_err` and `sink_err_into` map one error, then panic with
/// "polled MapErr after completion": a write that failed, then the close
/// frame on the way out, did that inside the carrier's writer.)
pub(crate) struct ErrInto<S>(pub(crate) S);

impl<S> Sink<Outgoing> for ErrInto<S>
where
    S: Sink<Outgoing> + Unpin,
    S::Error: Into<SinkFailure>,
{
    type Error = SinkFailure;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkFailure>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(Into::into)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), SinkFailure> {
        Pin::new(&mut self.0).start_send(item).map_err(Into::into)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkFailure>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(Into::into)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SinkFailure>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(Into::into)
    }
}
