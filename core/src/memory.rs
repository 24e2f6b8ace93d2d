//! MemoryChannel's backend: an in-process queue.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use futures::StreamExt;

use crate::backend::{Backend, BackendError, Event, EventStream};
use crate::queue;
use crate::runtime::Runtime;

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
pub struct MemoryBackend {
    // The portable queue whatever the runtime: it can be closed from the
    // receiving side without losing what it holds, which `close` needs.
    tx: queue::Sender<Event>,
    rx: Mutex<Option<queue::Receiver<Event>>>,
    closer: queue::Closer<Event>,
}

impl MemoryBackend {
    /// A backend holding up to [`DEFAULT_MEMORY_CAPACITY`] pending events.
    ///
    /// It takes the channel's runtime, as every backend factory given to
    /// [`ChannelBuilder::open`](crate::ChannelBuilder::open) does, and needs
    /// nothing from it.
    pub fn new<R: Runtime>(runtime: &R) -> Self {
        Self::with_capacity(runtime, DEFAULT_MEMORY_CAPACITY)
    }

    /// A backend holding up to `capacity` pending events.
    pub fn with_capacity<R: Runtime>(_runtime: &R, capacity: usize) -> Self {
        let (tx, rx) = queue::bounded(capacity);
        MemoryBackend {
            tx,
            closer: rx.closer(),
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl Backend for MemoryBackend {
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

    /// Refuses later publishes; what was accepted before stays in the queue
    /// for the consumer's final drain. (A publish racing with the stop thus
    /// either is delivered or fails with `Stopped`, never returns `Ok` and
    /// vanishes.)
    async fn close(&self) {
        self.closer.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt;

    use super::MemoryBackend;
    use crate::backend::{Backend, BackendError, Event};
    use crate::payload::Payload;
    use crate::testing::ManualRuntime;

    fn event(n: u32) -> Event {
        Event::new("e", Payload::from_json(&n.to_string()).unwrap())
    }

    /// What a stop relies on: once closed, a publish fails instead of
    /// landing after the consumer's last drain, and what was accepted
    /// before the close is still there to drain.
    #[test]
    fn close_refuses_later_publishes_and_keeps_what_was_accepted() {
        futures::executor::block_on(async {
            let backend = MemoryBackend::new(&ManualRuntime::new());
            let mut events = backend.consume().unwrap();
            backend.publish(event(1)).await.unwrap();
            backend.close().await;
            assert!(matches!(
                backend.publish(event(2)).await,
                Err(BackendError::Closed)
            ));
            let first = events.next().await.unwrap();
            assert_eq!(first.data().as_str(), "1");
            assert!(futures::FutureExt::now_or_never(events.next()).is_none());
        });
    }
}
