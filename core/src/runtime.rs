//! The few primitives a runtime crate supplies.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::Stream;

/// What the core needs from an async runtime: spawning a task, a timer, and
/// a bounded queue.
///
/// The core never performs IO or blocks; everything that must run in the
/// background (a carrier's writer, a channel's consumer) is handed to
/// [`Runtime::spawn`]. The runtime crates implement this trait in a few dozen
/// lines each (`tbone-dispatch-tokio`, `-async-std`, `-smol`), and
/// [`ManualRuntime`](crate::testing::ManualRuntime) implements it for
/// deterministic tests without any executor.
///
/// A runtime may bring its own queue (tokio's `mpsc`) or use the core's
/// portable [`queue::bounded`](crate::queue::bounded).
///
/// ```
/// use std::future::Future;
/// use std::time::Duration;
/// use tbone_dispatch::{queue, Runtime, SpawnError};
///
/// /// Runs every task on a new OS thread: simple, not fast.
/// #[derive(Clone, Default)]
/// struct Threads;
///
/// impl Runtime for Threads {
///     type Sender<T: Send + 'static> = queue::Sender<T>;
///     type Receiver<T: Send + 'static> = queue::Receiver<T>;
///
///     fn spawn<F>(&self, task: F) -> Result<(), SpawnError>
///     where
///         F: Future<Output = ()> + Send + 'static,
///     {
///         std::thread::spawn(move || futures::executor::block_on(task));
///         Ok(())
///     }
///
///     fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
///         let (done, wait) = futures::channel::oneshot::channel::<()>();
///         std::thread::spawn(move || {
///             std::thread::sleep(duration);
///             let _ = done.send(());
///         });
///         async move {
///             let _ = wait.await;
///         }
///     }
///
///     fn bounded<T: Send + 'static>(&self, capacity: usize) -> (queue::Sender<T>, queue::Receiver<T>) {
///         queue::bounded(capacity)
///     }
/// }
/// ```
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The sending half of this runtime's bounded queue.
    type Sender<T: Send + 'static>: QueueSender<T>;
    /// The receiving half of this runtime's bounded queue: a stream that
    /// ends once every sender is gone and the queue is drained.
    type Receiver<T: Send + 'static>: Stream<Item = T> + Send + Unpin + 'static;

    /// Runs `task` in the background until it completes.
    fn spawn<F>(&self, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = ()> + Send + 'static;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static;

    /// The current time on this runtime's clock: the time the socket
    /// session's state machine is given, consistent with [`Runtime::sleep`].
    /// The default is the system's monotonic clock; a runtime with virtual
    /// time ([`ManualRuntime`](crate::testing::ManualRuntime)) returns its own.
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// A queue holding at most `capacity` items (at least one).
    fn bounded<T: Send + 'static>(&self, capacity: usize) -> (Self::Sender<T>, Self::Receiver<T>);
}

/// The sending half of a bounded queue, as the core uses it.
pub trait QueueSender<T>: Clone + Send + Sync + 'static {
    /// Enqueues without waiting; hands the item back when the queue is full
    /// or its receiver is gone.
    fn try_send(&self, item: T) -> Result<(), TrySendError<T>>;

    /// Enqueues, waiting for room. Hands the item back if the receiver is
    /// gone.
    fn send(&self, item: T) -> impl Future<Output = Result<(), T>> + Send;

    /// Whether the receiver is gone, so nothing sent will ever be read.
    fn is_closed(&self) -> bool;

    /// Enqueues items from `items`, in order and without waiting, until one
    /// does not fit: returns how many were queued and, if one was refused,
    /// why (with that item; the rest of `items` is left untouched). The
    /// default calls [`QueueSender::try_send`] for each; a queue may do it
    /// under one lock (the portable queue does), which is how a carrier
    /// takes a run of frames.
    fn try_send_all(&self, items: &mut dyn Iterator<Item = T>) -> (usize, Option<TrySendError<T>>) {
        let mut queued = 0;
        for item in items {
            match self.try_send(item) {
                Ok(()) => queued += 1,
                Err(refused) => return (queued, Some(refused)),
            }
        }
        (queued, None)
    }
}

/// Why [`QueueSender::try_send`] handed an item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue is at capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// A runtime could not start a background task.
#[derive(Debug, thiserror::Error)]
#[error("could not spawn a background task: {reason}")]
pub struct SpawnError {
    reason: String,
}

impl SpawnError {
    /// A spawn failure with a reason that tells the user what to do.
    pub fn new(reason: impl Into<String>) -> Self {
        SpawnError {
            reason: reason.into(),
        }
    }
}
