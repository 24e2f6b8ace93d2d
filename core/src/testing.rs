//! A deterministic runtime for unit-testing dispatch logic without IO.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt};

use crate::runtime::{Runtime, SpawnError, Task};

/// A runtime driven by hand: tasks run only inside [`ManualRuntime::run`] or
/// [`ManualRuntime::run_until_stalled`], on the calling thread, and time
/// moves only with [`ManualRuntime::advance`].
///
/// This is how the crate keeps its promise that dispatch logic can be unit
/// tested without IO, threads or a real clock: the same channels, carriers
/// and signals as in production, stepped deterministically.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::Runtime;
///
/// let runtime = ManualRuntime::new();
/// let sleep = runtime.sleep(Duration::from_secs(5));
/// let mut sleep = Box::pin(sleep);
/// assert!(runtime.run_for(sleep.as_mut()).is_none()); // time stands still
/// runtime.advance(Duration::from_secs(5));
/// assert!(runtime.run_for(sleep.as_mut()).is_some());
/// ```
#[derive(Clone, Default)]
pub struct ManualRuntime {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    incoming: Mutex<Vec<BoxFuture<'static, ()>>>,
    tasks: Mutex<FuturesUnordered<BoxFuture<'static, ()>>>,
    clock: Mutex<Clock>,
}

struct Clock {
    /// The instant that stands for time zero, so [`Runtime::now`] can
    /// answer in `Instant`s.
    start: Instant,
    now: Duration,
    sleepers: Vec<(Duration, Arc<Timer>)>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            start: Instant::now(),
            now: Duration::ZERO,
            sleepers: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Timer {
    fired: AtomicBool,
    waker: AtomicWaker,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for ManualRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualRuntime")
            .field("elapsed", &self.elapsed())
            .field("tasks", &self.task_count())
            .finish()
    }
}

impl ManualRuntime {
    /// A runtime with no tasks, at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Polls spawned tasks until none can make progress. Returns how many
    /// tasks are still pending.
    pub fn run_until_stalled(&self) -> usize {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        loop {
            flag.0.store(false, Ordering::SeqCst);
            let spawned = self.poll_tasks(&waker);
            if !spawned && !flag.0.load(Ordering::SeqCst) {
                return self.task_count();
            }
        }
    }

    // One pass: adopt newly spawned tasks, then poll the ready ones.
    // Returns whether new tasks were adopted.
    fn poll_tasks(&self, waker: &Waker) -> bool {
        let fresh = std::mem::take(&mut *lock(&self.inner.incoming));
        let adopted = !fresh.is_empty();
        let mut tasks = lock(&self.inner.tasks);
        tasks.extend(fresh);
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(())) = tasks.poll_next_unpin(&mut cx) {}
        adopted
    }

    /// Drives `future` together with the spawned tasks until it completes
    /// (`Some(output)`) or nothing can make progress any more (`None`:
    /// it waits for something that will not happen without outside help,
    /// such as [`ManualRuntime::advance`]).
    pub fn run<F: Future>(&self, future: F) -> Option<F::Output> {
        let mut future = pin!(future);
        self.run_for(future.as_mut())
    }

    /// [`ManualRuntime::run`] for a future that stays with the caller, so it
    /// can be resumed after `None`.
    pub fn run_for<F: Future + ?Sized>(&self, mut future: Pin<&mut F>) -> Option<F::Output> {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            flag.0.store(false, Ordering::SeqCst);
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Some(output);
            }
            let spawned = self.poll_tasks(&waker);
            if !spawned && !flag.0.load(Ordering::SeqCst) {
                return None;
            }
        }
    }

    /// Moves time forward, fires the timers that are due and runs tasks
    /// until stalled.
    pub fn advance(&self, by: Duration) {
        let due: Vec<Arc<Timer>> = {
            let mut clock = lock(&self.inner.clock);
            clock.now += by;
            let now = clock.now;
            let (due, pending) = std::mem::take(&mut clock.sleepers)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            clock.sleepers = pending;
            due.into_iter().map(|(_, timer)| timer).collect()
        };
        for timer in due {
            timer.fired.store(true, Ordering::SeqCst);
            timer.waker.wake();
        }
        self.run_until_stalled();
    }

    /// Time elapsed on this runtime's clock since it was created.
    pub fn elapsed(&self) -> Duration {
        lock(&self.inner.clock).now
    }

    /// Drops every task, as a runtime that shuts down does (a tokio
    /// runtime at the end of `#[tokio::test]`): what a channel whose
    /// consumer died with its runtime looks like.
    pub fn shutdown(&self) {
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        let fresh = std::mem::take(&mut *lock(&self.inner.incoming));
        drop((tasks, fresh));
    }

    /// Tasks spawned and not yet finished.
    pub fn task_count(&self) -> usize {
        lock(&self.inner.tasks).len() + lock(&self.inner.incoming).len()
    }
}

impl Runtime for ManualRuntime {
    fn spawn<F>(&self, task: F) -> Result<Task, SpawnError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (handle, run) = Task::new(task);
        lock(&self.inner.incoming).push(run.boxed());
        Ok(handle)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let timer = Arc::new(Timer::default());
        {
            let mut clock = lock(&self.inner.clock);
            if duration.is_zero() {
                timer.fired.store(true, Ordering::SeqCst);
            } else {
                let at = clock.now + duration;
                clock.sleepers.push((at, timer.clone()));
            }
        }
        futures::future::poll_fn(move |cx| {
            if timer.fired.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            timer.waker.register(cx.waker());
            if timer.fired.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// The virtual clock: the instant of creation plus the time
    /// [`ManualRuntime::advance`] moved forward.
    fn now(&self) -> Instant {
        let clock = lock(&self.inner.clock);
        clock.start + clock.now
    }
}
