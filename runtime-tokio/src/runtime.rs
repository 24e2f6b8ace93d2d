//! `Runtime` for tokio.

use std::future::Future;
use std::time::Duration;

use tbone_dispatch::{queue, Runtime, SpawnError};
use tokio::runtime::Handle;

/// The tokio runtime, as the core's [`Runtime`].
///
/// `Tokio::default()` spawns onto whichever tokio runtime is current when a
/// task is spawned; [`Tokio::with_handle`] pins one runtime, for code that
/// runs outside it.
///
/// ```
/// use tbone_dispatch_tokio::{Runtime, Tokio};
///
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let tokio = Tokio::with_handle(rt.handle().clone());
/// let (done, wait) = futures::channel::oneshot::channel();
/// tokio.spawn(async move { done.send(42).unwrap() }).unwrap();
/// assert_eq!(rt.block_on(wait).unwrap(), 42);
///
/// // Outside any runtime, spawning is an error, not a panic.
/// assert!(Tokio::default().spawn(async {}).is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Tokio {
    handle: Option<Handle>,
}

impl Tokio {
    /// Spawns onto the runtime behind `handle`, wherever it is called from.
    pub fn with_handle(handle: Handle) -> Self {
        Tokio {
            handle: Some(handle),
        }
    }

    fn handle(&self) -> Result<Handle, SpawnError> {
        match &self.handle {
            Some(handle) => Ok(handle.clone()),
            None => Handle::try_current().map_err(|_| {
                SpawnError::new(
                    "no tokio runtime is running on this thread; call from within a tokio runtime or use Tokio::with_handle",
                )
            }),
        }
    }
}

impl Runtime for Tokio {
    // The core's portable queue rather than tokio's mpsc: tokio allocates a
    // block of 32 slots per queue up front (1.7 KiB per carrier, so per
    // idle websocket), the portable queue nothing until an item arrives.
    type Sender<T: Send + 'static> = queue::Sender<T>;
    type Receiver<T: Send + 'static> = queue::Receiver<T>;

    fn spawn<F>(&self, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle()?.spawn(task);
        Ok(())
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }

    fn bounded<T: Send + 'static>(
        &self,
        capacity: usize,
    ) -> (queue::Sender<T>, queue::Receiver<T>) {
        queue::bounded(capacity)
    }
}
