//! Turns per document, so that the events of one document leave in the
//! order of its writes.
//!
//! Two writes of one document that run concurrently finish in some order,
//! then each sends its model signal; nothing ties the order of the signals
//! to the order of the writes, and a client that applies events as they
//! come can end with an older version than the stored one. A store that
//! holds the document's turn from before its write until its signal has
//! been sent makes the two orders one. Serializing was chosen over a
//! version in the event: the events stay TBone's (clients need no change),
//! and only writes of the same document wait for each other.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::lock::{Mutex as AsyncMutex, OwnedMutexGuard};

type Turns<K> = Arc<Mutex<HashMap<K, Arc<AsyncMutex<()>>>>>;

/// A table of turns by document key: [`WriteOrder::turn`] waits until no
/// other write of the same key holds its turn. A store takes the turn
/// before a write and drops it after the write's model signal was sent,
/// so the events of one document leave in the order of its writes
/// (`mongo::ModelCollection` does this for every write).
///
/// Writes of other keys do not wait. The table holds only keys with a turn
/// held or awaited: it is as large as the writes in progress, and empty
/// when none is. Clones share the table.
///
/// A receiver of the signal must not write the same document through the
/// same table: it would wait for the turn its own write holds.
///
/// ```
/// use tbone_dispatch::model::WriteOrder;
///
/// let order = WriteOrder::new();
/// futures::executor::block_on(async {
///     let turn = order.turn("entry-1").await;
///     // write entry-1, then send its post_save, then:
///     drop(turn);
/// });
/// assert!(order.is_empty(), "no write in progress, no key kept");
/// ```
pub struct WriteOrder<K> {
    turns: Turns<K>,
}

impl<K> Clone for WriteOrder<K> {
    fn clone(&self) -> Self {
        WriteOrder {
            turns: self.turns.clone(),
        }
    }
}

impl<K> Default for WriteOrder<K> {
    fn default() -> Self {
        WriteOrder {
            turns: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K> fmt::Debug for WriteOrder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteOrder")
            .field("keys", &lock(&self.turns).len())
            .finish()
    }
}

/// Only map operations run under the lock; none can leave it torn.
fn lock<K>(turns: &Turns<K>) -> MutexGuard<'_, HashMap<K, Arc<AsyncMutex<()>>>> {
    turns.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Eq + Hash + Clone + Send + 'static> WriteOrder<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the turn of `key`: until every write of `key` that took
    /// its turn earlier has dropped it. Hold the returned [`WriteTurn`]
    /// across the write and the sending of its signal.
    ///
    /// Dropping this future while it waits gives up the place (nothing is
    /// left in the table). Turns are not handed out first come, first
    /// served: the order of two waiting writes is open, and whichever goes
    /// first, its event goes first.
    pub async fn turn(&self, key: K) -> WriteTurn<K> {
        let claim = Claim::new(&self.turns, key);
        let held = claim.turn.clone().lock_owned().await;
        WriteTurn {
            _held: held,
            _claim: claim,
        }
    }

    /// How many keys have a turn held or awaited.
    pub fn len(&self) -> usize {
        lock(&self.turns).len()
    }

    /// Whether no key has a turn held or awaited.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The turn of one key, from [`WriteOrder::turn`]: the next write of the
/// key goes when this is dropped.
#[must_use = "dropping the turn lets the next write of the key go at once"]
pub struct WriteTurn<K: Eq + Hash> {
    // Released before the claim, so that the claim sees whether anyone
    // else still holds or awaits the key.
    _held: OwnedMutexGuard<()>,
    _claim: Claim<K>,
}

impl<K: Eq + Hash> fmt::Debug for WriteTurn<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTurn").finish_non_exhaustive()
    }
}

/// A write's interest in a key, from the moment it asks for the turn until
/// it has given it back: the key stays in the table while any claim on it
/// exists, and the last claim to go removes it.
struct Claim<K: Eq + Hash> {
    turns: Turns<K>,
    key: Option<K>,
    turn: Arc<AsyncMutex<()>>,
}

impl<K: Eq + Hash + Clone> Claim<K> {
    fn new(turns: &Turns<K>, key: K) -> Self {
        let turn = lock(turns).entry(key.clone()).or_default().clone();
        Claim {
            turns: turns.clone(),
            key: Some(key),
            turn,
        }
    }
}

impl<K: Eq + Hash> Drop for Claim<K> {
    fn drop(&mut self) {
        let mut turns = lock(&self.turns);
        // Every other claim holds a clone, and clones are made only under
        // this lock: two (the table's and ours) means no one else wants
        // the key, and no one can start to before it is gone.
        if Arc::strong_count(&self.turn) == 2 {
            if let Some(key) = self.key.take() {
                turns.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;

    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_key_waits_for_its_turn_and_other_keys_do_not() {
        let order = WriteOrder::new();
        let first = order.turn("a").now_or_never().expect("a free key");
        let mut second = pin!(order.turn("a"));
        assert!(second.as_mut().now_or_never().is_none(), "a is taken");
        let other = order.turn("b").now_or_never().expect("b does not wait");
        assert_eq!(order.len(), 2);
        drop(first);
        let second = futures::executor::block_on(second);
        drop((second, other));
        assert!(order.is_empty());
    }

    #[test]
    fn a_write_that_gives_up_waiting_leaves_nothing_behind() {
        let order = WriteOrder::new();
        let first = order.turn(1).now_or_never().expect("a free key");
        {
            let mut waiting = pin!(order.turn(1));
            let noop = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&noop);
            assert!(matches!(waiting.as_mut().poll(&mut cx), Poll::Pending));
        }
        assert_eq!(order.len(), 1, "the holder's key stays");
        drop(first);
        assert!(order.is_empty(), "the abandoned wait kept nothing");
        assert!(order.turn(1).now_or_never().is_some(), "the key is free");
    }
}
