//! `Runtime` for async-std.

use std::future::Future;
use std::time::Duration;

use tbone_dispatch::{Runtime, SpawnError, Task};

/// async-std's global executor, as the core's [`Runtime`].
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
    fn spawn<F>(&self, task: F) -> Result<Task, SpawnError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (handle, run) = Task::new(task);
        // Dropping the JoinHandle detaches the task; the `Task` handle
        // tells when it ended.
        async_std::task::spawn(run);
        Ok(handle)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        async_std::task::sleep(duration)
    }
}
