//! Sinks, backends and envelopes written only against the public API, as a
//! user of the crate would write them.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::{Sink, StreamExt};
use tbone_dispatch::{
    Backend, BackendError, Envelope, Event, EventStream, Frame, Payload, TBoneEnvelope,
};

/// Where a [`FailingSink`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    /// `poll_ready` returns the error.
    Ready,
    /// `poll_ready` succeeds, `start_send` returns the error.
    Send,
}

/// A sink whose first write fails, like a socket that died.
#[derive(Debug)]
pub struct FailingSink {
    fail_on: FailOn,
    message: &'static str,
}

impl FailingSink {
    /// A sink failing at `fail_on` with `message`.
    pub fn new(fail_on: FailOn, message: &'static str) -> Self {
        FailingSink { fail_on, message }
    }
}

impl Sink<Frame> for FailingSink {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        match self.fail_on {
            FailOn::Ready => Poll::Ready(Err(self.message.to_string())),
            FailOn::Send => Poll::Ready(Ok(())),
        }
    }

    fn start_send(self: Pin<&mut Self>, _frame: Frame) -> Result<(), String> {
        Err(self.message.to_string())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
}

/// A sink that never becomes ready: a client that stopped reading. Closing
/// it succeeds, so the carrier's writer can end.
#[derive(Debug, Default)]
pub struct StuckSink;

impl Sink<Frame> for StuckSink {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Pending
    }

    fn start_send(self: Pin<&mut Self>, _frame: Frame) -> Result<(), String> {
        Err("StuckSink::start_send called without poll_ready being Ready".to_string())
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
}

/// TBone's envelope, counting how many frames it encoded.
#[derive(Clone, Debug, Default)]
pub struct CountingEnvelope {
    /// Frames encoded so far.
    pub encoded: Arc<AtomicUsize>,
}

impl CountingEnvelope {
    /// Frames encoded so far.
    pub fn count(&self) -> usize {
        self.encoded.load(Ordering::SeqCst)
    }
}

impl Envelope for CountingEnvelope {
    fn encode(&self, event: &str, data: &Payload) -> Frame {
        self.encoded.fetch_add(1, Ordering::SeqCst);
        TBoneEnvelope.encode(event, data)
    }
}

/// A line protocol: `<event> <data>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinesEnvelope;

impl Envelope for LinesEnvelope {
    fn encode(&self, event: &str, data: &Payload) -> Frame {
        Frame::from(format!("{event} {data}"))
    }
}

/// A backend that logs every published event and loops it back to its
/// channel's consumer through a futures channel.
#[derive(Debug)]
pub struct LoopbackBackend {
    log: Mutex<Vec<Event>>,
    tx: mpsc::UnboundedSender<Event>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    closed: AtomicBool,
}

impl Default for LoopbackBackend {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded();
        LoopbackBackend {
            log: Mutex::new(Vec::new()),
            tx,
            rx: Mutex::new(Some(rx)),
            closed: AtomicBool::new(false),
        }
    }
}

impl LoopbackBackend {
    /// Event names published so far, in order.
    pub fn published(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .map(|e| e.key().to_string())
            .collect()
    }

    /// Whether the channel called `close` (after its consumer stopped).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Whether the stream handed out by `consume` was dropped.
    pub fn stream_dropped(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Backend for LoopbackBackend {
    async fn publish(&self, event: Event) -> Result<(), BackendError> {
        self.log.lock().expect("log lock").push(event.clone());
        self.tx.unbounded_send(event).map_err(|e| {
            BackendError::with_source("loopback consumer is gone", e.into_send_error())
        })
    }

    fn consume(&self) -> Result<EventStream, BackendError> {
        let rx = self
            .rx
            .lock()
            .expect("rx lock")
            .take()
            .ok_or(BackendError::AlreadyConsumed)?;
        Ok(rx.boxed())
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// A backend that refuses to publish and, optionally, to consume.
#[derive(Debug, Default)]
pub struct FailingBackend {
    /// Whether `consume` fails too.
    pub refuse_consume: bool,
}

impl Backend for FailingBackend {
    async fn publish(&self, _event: Event) -> Result<(), BackendError> {
        Err(BackendError::msg("disk full"))
    }

    fn consume(&self) -> Result<EventStream, BackendError> {
        if self.refuse_consume {
            Err(BackendError::msg("cannot reach the database"))
        } else {
            Ok(futures::stream::pending().boxed())
        }
    }
}
