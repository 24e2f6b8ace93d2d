//! The client's half of the socket.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::Sink;
use tbone_dispatch::Outgoing;

use super::model::SinkKind;

#[derive(Default)]
pub(super) struct Recorded {
    pub(super) items: Vec<Outgoing>,
    pub(super) closed: bool,
}

/// The server's sink: records what it is given, per its [`SinkKind`].
pub(super) struct ClientSink {
    pub(super) kind: SinkKind,
    pub(super) taken: usize,
    pub(super) record: Arc<Mutex<Recorded>>,
}

impl ClientSink {
    fn record(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink<Outgoing> for ClientSink {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        // A stalled client is never ready; nothing will wake the writer,
        // which must give up on its own (close timeout).
        match self.kind {
            SinkKind::Stalled => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), String> {
        if let SinkKind::FailAfter(n) = self.kind {
            if self.taken >= n {
                return Err("the client's connection broke".into());
            }
        }
        self.taken += 1;
        self.record().items.push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        match self.kind {
            SinkKind::Stalled => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        if self.kind == SinkKind::Stalled {
            return Poll::Pending;
        }
        self.record().closed = true;
        Poll::Ready(Ok(()))
    }
}
