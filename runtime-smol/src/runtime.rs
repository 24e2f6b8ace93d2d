//! `Runtime` for smol.

use std::future::Future;
use std::time::Duration;

use tbone_dispatch::{queue, Runtime, SpawnError};

/// smol's global executor, as the core's [`Runtime`]. Queues are the core's
/// portable [`queue::bounded`].
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
    type Sender<T: Send + 'static> = queue::Sender<T>;
    type Receiver<T: Send + 'static> = queue::Receiver<T>;

    fn spawn<F>(&self, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(task).detach();
        Ok(())
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let timer = smol::Timer::after(duration);
        async move {
            timer.await;
        }
    }

    fn bounded<T: Send + 'static>(
        &self,
        capacity: usize,
    ) -> (queue::Sender<T>, queue::Receiver<T>) {
        queue::bounded(capacity)
    }
}
