//! What a tailing task learns when it starts, for those who wait on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A value a tailing task sets once it has started (where its live stream
/// begins), which others await: a backend answering a resuming client
/// needs it. Set once; later sets replace it. No runtime needed: waiters
/// are woken by [`Start::set`]; bound the wait with your runtime's timer.
///
/// ```
/// use futures::FutureExt;
/// use tbone_dispatch::tailing::Start;
///
/// let start = Start::default();
/// let mut waiting = Box::pin(start.wait());
/// assert!((&mut waiting).now_or_never().is_none(), "not started yet");
/// start.set(42u64);
/// assert_eq!(waiting.now_or_never(), Some(42));
/// assert_eq!(start.get(), Some(42));
/// ```
#[derive(Debug)]
pub struct Start<T> {
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    value: Option<T>,
    waiters: Vec<Waker>,
}

impl<T> Default for Start<T> {
    fn default() -> Self {
        Start {
            state: Mutex::new(State {
                value: None,
                waiters: Vec::new(),
            }),
        }
    }
}

impl<T: Clone> Start<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Only a value swap and a waker list run under it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the value and wakes every waiter.
    pub fn set(&self, value: T) {
        let waiters = {
            let mut state = self.lock();
            state.value = Some(value);
            std::mem::take(&mut state.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The value, if set.
    pub fn get(&self) -> Option<T> {
        self.lock().value.clone()
    }

    /// Resolves with the value once it is set.
    pub fn wait(&self) -> impl Future<Output = T> + Send + '_
    where
        T: Send,
    {
        Waiting { start: self }
    }
}

struct Waiting<'a, T> {
    start: &'a Start<T>,
}

impl<T: Clone> Future for Waiting<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.start.lock();
        match &state.value {
            Some(value) => Poll::Ready(value.clone()),
            None => {
                if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    state.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
