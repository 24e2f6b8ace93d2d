//! MemoryChannel's backend: an in-process queue.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use futures::StreamExt;

use crate::backend::{Backend, BackendError, Event, EventStream};
use crate::runtime::{QueueSender, Runtime};

/// Default number of events a [`MemoryBackend`] holds before publishers wait.
pub const DEFAULT_MEMORY_CAPACITY: usize = 1024;

/// The in-process backend of a MemoryChannel: a bounded queue between
/// publishers and the channel's consumer, for a single instance of the
/// backend application.
///
/// Unlike TBone's `MemoryChannel`, every event taken off the queue is
/// delivered to the subscribers of its key. Publishing waits while the queue
/// is full (the consumer only moves frames into carrier queues, so it is
/// rarely behind), so no event is ever dropped here.
///
/// ```
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{ChannelBuilder, MemoryBackend};
///
/// let runtime = ManualRuntime::new();
/// let channel = ChannelBuilder::new("doc-memory-backend")
///     .open(runtime.clone(), |rt| MemoryBackend::with_capacity(rt, 16))
///     .unwrap();
/// # let _ = channel;
/// ```
pub struct MemoryBackend<R: Runtime> {
    tx: R::Sender<Event>,
    rx: Mutex<Option<R::Receiver<Event>>>,
}

impl<R: Runtime> MemoryBackend<R> {
    /// A backend holding up to [`DEFAULT_MEMORY_CAPACITY`] pending events.
    pub fn new(runtime: &R) -> Self {
        Self::with_capacity(runtime, DEFAULT_MEMORY_CAPACITY)
    }

    /// A backend holding up to `capacity` pending events.
    pub fn with_capacity(runtime: &R, capacity: usize) -> Self {
        let (tx, rx) = runtime.bounded(capacity);
        MemoryBackend {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl<R: Runtime> fmt::Debug for MemoryBackend<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl<R: Runtime> Backend for MemoryBackend<R> {
    async fn publish(&self, event: Event) -> Result<(), BackendError> {
        self.tx.send(event).await.map_err(|_| BackendError::Closed)
    }

    fn consume(&self) -> Result<EventStream, BackendError> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(BackendError::AlreadyConsumed)?;
        Ok(rx.boxed())
    }
}
