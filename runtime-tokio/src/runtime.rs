//! `Runtime` for tokio.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tbone_dispatch::{QueueSender, Runtime, SpawnError, TrySendError};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

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
    type Sender<T: Send + 'static> = TokioSender<T>;
    type Receiver<T: Send + 'static> = TokioReceiver<T>;

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

    fn bounded<T: Send + 'static>(&self, capacity: usize) -> (TokioSender<T>, TokioReceiver<T>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (TokioSender(tx), TokioReceiver(rx))
    }
}

/// The sending half of tokio's bounded `mpsc` queue, as the core uses it.
#[derive(Debug)]
pub struct TokioSender<T>(mpsc::Sender<T>);

impl<T> Clone for TokioSender<T> {
    fn clone(&self) -> Self {
        TokioSender(self.0.clone())
    }
}

impl<T: Send + 'static> QueueSender<T> for TokioSender<T> {
    fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.0.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(item) => TrySendError::Full(item),
            mpsc::error::TrySendError::Closed(item) => TrySendError::Closed(item),
        })
    }

    async fn send(&self, item: T) -> Result<(), T> {
        self.0.send(item).await.map_err(|e| e.0)
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The receiving half of tokio's bounded `mpsc` queue, as a [`Stream`].
#[derive(Debug)]
pub struct TokioReceiver<T>(mpsc::Receiver<T>);

impl<T> Stream for TokioReceiver<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
