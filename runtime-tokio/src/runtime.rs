//! `Runtime` for tokio.

use std::future::Future;
use std::time::Duration;

use futures::future::Either;
use tbone_dispatch::{Runtime, SpawnError, Task};
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
            None => Handle::try_current().map_err(|_| SpawnError::NoRuntime {
                runtime: "tokio",
                remedy: "call from within a tokio runtime, or pin one with Tokio::with_handle",
            }),
        }
    }
}

impl Runtime for Tokio {
    fn spawn<F>(&self, task: F) -> Result<Task, SpawnError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.handle()?;
        let (task, run) = Task::new(task);
        // Dropping the JoinHandle detaches the task; the `Task` tells when
        // it ended (a runtime shutting down drops it, which counts).
        handle.spawn(run);
        Ok(task)
    }

    /// A timer of this value's runtime (the pinned one, or the current
    /// one), so it works when polled from any executor. Outside every tokio
    /// runtime, a thread sleeps instead: slower, but never a panic.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        // No `async` block around the `Sleep`: each keep-alive timer of an
        // idle socket is this future, boxed.
        match self.handle() {
            Ok(handle) => {
                // A `Sleep` belongs to the timer of the runtime it is made in.
                let _inside = handle.enter();
                Either::Left(tokio::time::sleep(duration))
            }
            Err(_) => Either::Right(sleep_on_a_thread(duration)),
        }
    }

    /// tokio's clock, so that a socket session's time agrees with its
    /// timers under `tokio::time::pause()` too.
    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// Sleeps on a thread of its own: for a timer made outside every tokio
/// runtime.
fn sleep_on_a_thread(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
    let (done, wait) = futures::channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(duration);
        let _ = done.send(());
    });
    async move {
        let _ = wait.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tbone_dispatch::Runtime;

    use super::Tokio;

    /// Found in review: `sleep` ignored the handle, so a `Tokio` pinned to
    /// a runtime panicked ("no reactor running") when its timer was made
    /// outside that runtime, as a channel's driver does on another
    /// executor.
    #[test]
    fn sleep_uses_the_pinned_runtime_from_any_executor() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let pinned = Tokio::with_handle(runtime.handle().clone());
        let started = Instant::now();
        futures::executor::block_on(pinned.sleep(Duration::from_millis(20)));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn sleep_outside_every_runtime_still_sleeps() {
        let started = Instant::now();
        futures::executor::block_on(Tokio::default().sleep(Duration::from_millis(20)));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
