//! `Runtime` for smol.

use std::future::Future;
use std::time::Duration;

use tbone_dispatch::{Runtime, SpawnError, Task};

/// smol's global executor, as the core's [`Runtime`].
///
/// ```
/// use tbone_dispatch_smol::{Runtime, Smol};
///
/// let (done, wait) = futures::channel::oneshot::channel();
/// Smol.spawn(async move { done.send(42).unwrap() }).unwrap();
/// assert_eq!(smol::block_on(wait).unwrap(), 42);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl Runtime for Smol {
    fn spawn<F>(&self, task: F) -> Result<Task, SpawnError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (handle, run) = Task::new(task);
        smol::spawn(run).detach();
        Ok(handle)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let timer = smol::Timer::after(duration);
        async move {
            timer.await;
        }
    }
}
