//! The bounded queue every carrier and channel uses: portable (no executor
//! or reactor), and allocating nothing until an item arrives, so an idle
//! websocket's carrier costs no queue block.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::Stream;

/// Creates a bounded multi-producer, single-consumer queue holding at most
/// `capacity` items (a capacity of 0 is taken as 1).
///
/// It needs no executor or reactor, so every runtime and
/// [`ManualRuntime`](crate::testing::ManualRuntime) share it.
///
/// ```
/// use futures::StreamExt;
/// use tbone_dispatch::queue::{self, TrySendError};
///
/// let (tx, mut rx) = queue::bounded(1);
/// tx.try_send(1).unwrap();
/// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
/// assert_eq!(futures::executor::block_on(rx.next()), Some(1));
/// drop(tx);
/// assert_eq!(futures::executor::block_on(rx.next()), None);
/// ```
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        held: AtomicUsize::new(0),
        surplus: AtomicUsize::new(0),
        senders_waiting: AtomicBool::new(false),
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
            receiver_alive: true,
            receiver_waker: None,
            sender_wakers: Vec::new(),
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            local: VecDeque::new(),
        },
    )
}

struct Shared<T> {
    /// Items the receiver moved out to its own buffer and has not yielded
    /// yet: they still count against the capacity.
    held: AtomicUsize,
    /// Items queued past the capacity (a replay of history) and not yet
    /// yielded: they do not count against the capacity, so live items
    /// behind a long replay still find room.
    surplus: AtomicUsize,
    /// Whether a sender waits for room (so a pop from the receiver's own
    /// buffer must take the lock to wake it).
    senders_waiting: AtomicBool,
    state: Mutex<State<T>>,
}

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    senders: usize,
    receiver_alive: bool,
    receiver_waker: Option<Waker>,
    sender_wakers: Vec<Waker>,
}

impl<T> Shared<T> {
    fn has_room(&self, state: &State<T>) -> bool {
        let queued = state.items.len() + self.held.load(Ordering::Acquire);
        queued.saturating_sub(self.surplus.load(Ordering::Acquire)) < state.capacity
    }

    /// One item left the queue: it pays off the surplus first. (It may be
    /// an item queued before the surplus; the count is then short of room
    /// for a while, never over capacity, and exact once the surplus is
    /// paid.)
    fn yielded(&self) {
        if self.surplus.load(Ordering::Acquire) > 0 {
            let _ = self
                .surplus
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    // The queue's invariants hold between statements, so a panic elsewhere
    // while the lock was held leaves nothing half-done: ignore poisoning.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half of [`bounded`]. Cloning adds a sender.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half of [`bounded`], a [`Stream`] of the items.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    // Everything queued is taken at once under one lock, then yielded from
    // here: a writer draining a burst locks once, not once per item.
    local: VecDeque<T>,
}

impl<T> Sender<T> {
    fn poll_send(&self, cx: &mut Context<'_>, item: &mut Option<T>) -> Poll<Result<(), T>> {
        let mut state = self.shared.lock();
        let Some(value) = item.take() else {
            return Poll::Ready(Ok(()));
        };
        if !state.receiver_alive {
            return Poll::Ready(Err(value));
        }
        if self.shared.has_room(&state) {
            state.items.push_back(value);
            let waker = state.receiver_waker.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Ready(Ok(()));
        }
        *item = Some(value);
        if !state.sender_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.sender_wakers.push(cx.waker().clone());
        }
        self.shared.senders_waiting.store(true, Ordering::Release);
        Poll::Pending
    }
}

impl<T: Send + 'static> Sender<T> {
    /// Enqueues without waiting; hands the item back when the queue is full
    /// or its receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(TrySendError::Closed(item));
        }
        if !self.shared.has_room(&state) {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        let waker = state.receiver_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Enqueues items from `items`, in order and without waiting, until one
    /// does not fit, all under one lock: returns how many were queued and,
    /// if one was refused, why (with that item; the rest of `items` is left
    /// untouched). This is how a carrier takes a run of frames.
    pub fn try_send_all(
        &self,
        items: &mut dyn Iterator<Item = T>,
    ) -> (usize, Option<TrySendError<T>>) {
        let mut state = self.shared.lock();
        let mut queued = 0;
        let mut refused = None;
        for item in items {
            if !state.receiver_alive {
                refused = Some(TrySendError::Closed(item));
                break;
            }
            if !self.shared.has_room(&state) {
                refused = Some(TrySendError::Full(item));
                break;
            }
            state.items.push_back(item);
            queued += 1;
        }
        let waker = if queued > 0 {
            state.receiver_waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        (queued, refused)
    }

    /// Enqueues every item of `items` whatever the capacity (a replay of
    /// history, bounded by the history's own limits). Returns how many were
    /// queued: none once the receiver is gone.
    pub(crate) fn send_past_capacity(&self, items: &mut dyn Iterator<Item = T>) -> usize {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return 0;
        }
        let before = state.items.len();
        state.items.extend(items);
        let queued = state.items.len() - before;
        self.shared.surplus.fetch_add(queued, Ordering::AcqRel);
        let waker = if queued > 0 {
            state.receiver_waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        queued
    }

    /// Enqueues, waiting for room. Hands the item back if the receiver is
    /// gone.
    pub fn send(&self, item: T) -> impl Future<Output = Result<(), T>> + Send + '_ {
        SendFuture {
            sender: self,
            item: Some(item),
        }
    }

    /// Whether the receiver is gone, so nothing sent will ever be read.
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_alive
    }
}

struct SendFuture<'a, T> {
    sender: &'a Sender<T>,
    item: Option<T>,
}

impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.sender.poll_send(cx, &mut this.item)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            let waker = state.receiver_waker.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl<T> Receiver<T> {
    /// A handle that can close this queue from the receiving side while the
    /// receiver itself is elsewhere (boxed into a stream, say).
    pub fn closer(&self) -> Closer<T> {
        Closer {
            shared: self.shared.clone(),
        }
    }
}

/// Closes a queue from the receiving side: later sends fail (as when the
/// receiver is gone) while what is already queued stays for the receiver to
/// take. A send either lands before the close, and is received, or fails:
/// none is accepted and then lost. Made by [`Receiver::closer`].
///
/// ```
/// use futures::StreamExt;
/// use tbone_dispatch::queue::{self, TrySendError};
///
/// let (tx, mut rx) = queue::bounded(4);
/// tx.try_send(1).unwrap();
/// rx.closer().close();
/// assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
/// assert_eq!(futures::executor::block_on(rx.next()), Some(1));
/// ```
pub struct Closer<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Closer<T> {
    /// Refuses every later send; idempotent.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        let wakers = std::mem::take(&mut state.sender_wakers);
        drop(state);
        for waker in wakers {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for Closer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("queue::Closer").finish_non_exhaustive()
    }
}

// The receiver never pins its items: it only moves them in and out.
impl<T> Unpin for Receiver<T> {}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if let Some(item) = this.local.pop_front() {
            this.shared.held.fetch_sub(1, Ordering::AcqRel);
            this.shared.yielded();
            if this.shared.senders_waiting.load(Ordering::Acquire) {
                let wakers = {
                    let mut state = this.shared.lock();
                    this.shared.senders_waiting.store(false, Ordering::Release);
                    std::mem::take(&mut state.sender_wakers)
                };
                for waker in wakers {
                    waker.wake();
                }
            }
            return Poll::Ready(Some(item));
        }
        let mut state = this.shared.lock();
        if !state.items.is_empty() {
            std::mem::swap(&mut state.items, &mut this.local);
            this.shared
                .held
                .store(this.local.len() - 1, Ordering::Release);
            // Wake every waiting sender: one that was woken and then dropped
            // its send must not leave the others asleep.
            this.shared.senders_waiting.store(false, Ordering::Release);
            let wakers = std::mem::take(&mut state.sender_wakers);
            drop(state);
            for waker in wakers {
                waker.wake();
            }
            this.shared.yielded();
            return Poll::Ready(this.local.pop_front());
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        state.receiver_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        let items = std::mem::take(&mut state.items);
        self.shared.held.store(0, Ordering::Release);
        self.shared.surplus.store(0, Ordering::Release);
        let wakers = std::mem::take(&mut state.sender_wakers);
        drop(state);
        drop(items);
        for waker in wakers {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("queue::Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("queue::Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, StreamExt};

    /// The receiver takes everything queued at once into its own buffer;
    /// those items still count against the capacity until yielded, and a
    /// sender waiting for room is woken by a pop from that buffer.
    #[test]
    fn items_taken_in_bulk_still_bound_the_queue() {
        let (tx, mut rx) = bounded(3);
        for i in 1..=3 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
        assert_eq!(rx.next().now_or_never(), Some(Some(1)));
        tx.try_send(4).unwrap();
        assert_eq!(tx.try_send(5), Err(TrySendError::Full(5)));
        let mut waiting = Box::pin(tx.send(5));
        assert!(waiting.as_mut().now_or_never().is_none());
        assert_eq!(rx.next().now_or_never(), Some(Some(2)));
        assert_eq!(waiting.now_or_never(), Some(Ok(())));
        let rest: Vec<_> = (0..3)
            .filter_map(|_| rx.next().now_or_never().flatten())
            .collect();
        assert_eq!(rest, vec![3, 4, 5]);
    }

    #[test]
    fn send_waits_for_room_and_fails_when_receiver_is_gone() {
        let (tx, mut rx) = bounded(1);
        tx.try_send(1).unwrap();
        let mut waiting = Box::pin(tx.send(2));
        assert!(waiting.as_mut().now_or_never().is_none());
        assert_eq!(rx.next().now_or_never(), Some(Some(1)));
        assert_eq!(waiting.now_or_never(), Some(Ok(())));
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
        assert_eq!(tx.send(4).now_or_never(), Some(Err(4)));
    }

    #[test]
    fn receiver_ends_after_last_sender_and_drain() {
        let (tx, mut rx) = bounded(4);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        drop(tx);
        tx2.try_send(2).unwrap();
        drop(tx2);
        assert_eq!(rx.next().now_or_never(), Some(Some(1)));
        assert_eq!(rx.next().now_or_never(), Some(Some(2)));
        assert_eq!(rx.next().now_or_never(), Some(None));
    }
}

/// Why [`Sender::try_send`] handed an item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue is at capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}
