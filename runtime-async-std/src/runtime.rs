//! `Runtime` for async-std.

use std::future::Future;
use std::time::Duration;

use tbone_dispatch::{queue, Runtime, SpawnError};

/// async-std's global executor, as the core's [`Runtime`]. Queues are the
/// core's portable [`queue::bounded`].
///
/// ```
/// use tbone_dispatch_async_std::{AsyncStd, Runtime};
///
/// let (done, wait) = futures::channel::oneshot::channel();
/// AsyncStd.spawn(async move { done.send(42).unwrap() }).unwrap();
/// assert_eq!(async_std::task::block_on(wait).unwrap(), 42);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Sender<T: Send + 'static> = queue::Sender<T>;
    type Receiver<T: Send + 'static> = queue::Receiver<T>;

    fn spawn<F>(&self, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Dropping the JoinHandle detaches the task.
        async_std::task::spawn(task);
        Ok(())
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        async_std::task::sleep(duration)
    }

    fn bounded<T: Send + 'static>(
        &self,
        capacity: usize,
    ) -> (queue::Sender<T>, queue::Receiver<T>) {
        queue::bounded(capacity)
    }
}
