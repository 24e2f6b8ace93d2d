//! The few primitives a runtime crate supplies.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{AbortHandle, Abortable};

/// What the core needs from an async runtime: spawning a task and a timer.
///
/// The core never performs IO or blocks; everything that must run in the
/// background (a carrier's writer, a channel's consumer) is handed to
/// [`Runtime::spawn`]. The runtime crates implement this trait in a few
/// lines each (`tbone-dispatch-tokio`, `-async-std`, `-smol`), and
/// [`ManualRuntime`](crate::testing::ManualRuntime) implements it for
/// deterministic tests without any executor. Queues are the core's own
/// [`queue::bounded`](crate::queue::bounded) on every runtime.
///
/// ```
/// use std::future::Future;
/// use std::time::Duration;
/// use tbone_dispatch::{Runtime, SpawnError, Task};
///
/// /// Runs every task on a new OS thread: simple, not fast.
/// #[derive(Clone, Default)]
/// struct Threads;
///
/// impl Runtime for Threads {
///     fn spawn<F>(&self, task: F) -> Result<Task, SpawnError>
///     where
///         F: Future<Output = ()> + Send + 'static,
///     {
///         let (handle, run) = Task::new(task);
///         std::thread::spawn(move || futures::executor::block_on(run));
///         Ok(handle)
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
/// }
///
/// // The handle tells when the task has ended.
/// let task = Threads.spawn(async {}).unwrap();
/// futures::executor::block_on(task);
/// ```
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Runs `task` in the background until it completes, and returns its
    /// [`Task`] handle: await it for the task's end, or abort it. Dropping
    /// the handle leaves the task running.
    ///
    /// An implementation wraps the future with [`Task::new`] and spawns
    /// the future that returns.
    fn spawn<F>(&self, task: F) -> Result<Task, SpawnError>
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
}

/// A handle to a task started by [`Runtime::spawn`]: what shutdown needs to
/// stop a task and wait for its end.
///
/// The handle is a future that resolves once the task has ended, whether
/// it ran to completion, was aborted, or was dropped by its executor (a
/// runtime shutting down). Dropping the handle detaches the task.
///
/// ```
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::Runtime;
///
/// let runtime = ManualRuntime::new();
/// let mut task = runtime.spawn(futures::future::pending()).unwrap();
/// runtime.run_until_stalled();
/// assert!(!task.is_finished());
///
/// task.abort();
/// runtime.run_until_stalled();
/// assert!(task.is_finished());
/// futures::executor::block_on(task); // resolves at once
/// ```
#[derive(Debug)]
pub struct Task {
    abort: AbortHandle,
    ended: oneshot::Receiver<()>,
    finished: bool,
}

impl Task {
    /// Wraps `task` for a runtime's `spawn`: returns the handle, and the
    /// future the runtime runs in the task's place (it runs `task` unless
    /// aborted, then tells the handle).
    pub fn new<F>(task: F) -> (Task, impl Future<Output = ()> + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (abort, registration) = AbortHandle::new_pair();
        // Dropped unsent when the executor drops the task: the handle sees
        // that as an end too.
        let (ended_tx, ended) = oneshot::channel();
        let run = async move {
            let _ = Abortable::new(task, registration).await;
            let _ = ended_tx.send(());
        };
        (
            Task {
                abort,
                ended,
                finished: false,
            },
            run,
        )
    }

    /// Stops the task: it is dropped at its next poll, without running
    /// further. Awaiting the handle afterwards waits until the executor
    /// has done so.
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Whether the task has ended (completed, aborted or dropped).
    pub fn is_finished(&mut self) -> bool {
        if !self.finished {
            self.finished = !matches!(self.ended.try_recv(), Ok(None));
        }
        self.finished
    }
}

impl Future for Task {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.finished {
            return Poll::Ready(());
        }
        match Pin::new(&mut self.ended).poll(cx) {
            Poll::Ready(_) => {
                self.finished = true;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A runtime could not start a background task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// No runtime of this kind is running where the task was spawned.
    #[error("no {runtime} runtime is running on this thread: {remedy}")]
    NoRuntime {
        /// The runtime that was looked for.
        runtime: &'static str,
        /// What to do about it.
        remedy: &'static str,
    },
    /// The runtime has shut down and takes no new tasks.
    #[error("the {runtime} runtime has shut down and takes no new tasks")]
    ShutDown {
        /// The runtime.
        runtime: &'static str,
    },
    /// Another failure, from a runtime of the application's own.
    #[error("could not spawn a background task")]
    Other(#[source] Box<dyn StdError + Send + Sync>),
}
