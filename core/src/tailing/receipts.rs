//! Receipts of local publishers, held from the write until the tailing
//! consumer reads their event back: how `publish_delivered` works across a
//! database (MongoDB, Redis).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Receipt;

/// Most receipts held at once: past it, the oldest is dropped (its
/// publisher is told the event was not delivered).
pub const MOST_RECEIPTS: usize = 16_384;

/// How long a receipt waits for its event: one that is never read back
/// (the channel is not kicked off, the capped collection or stream was
/// trimmed past it) is dropped after this, and its publisher told it was
/// not delivered.
pub const RECEIPT_PATIENCE: Duration = Duration::from_secs(60);

/// The receipts of this instance's publishers, by the id the database gave
/// (or will give) their event, until the tailing consumer reads that id
/// back and [releases](HeldReceipts::release) the receipt to the event.
/// Bounded in count ([`MOST_RECEIPTS`]) and in time ([`RECEIPT_PATIENCE`]);
/// time is an argument, so the holder is a pure structure.
///
/// ```
/// use std::time::Instant;
/// use tbone_dispatch::tailing::HeldReceipts;
/// use tbone_dispatch::Receipt;
///
/// let held = HeldReceipts::<u64>::default();
/// let (receipt, _delivered) = Receipt::pair();
/// held.hold(7, receipt, Instant::now());
/// assert!(held.release(&7).is_some(), "read back: given to the event");
/// assert!(held.release(&7).is_none());
/// ```
#[derive(Debug)]
pub struct HeldReceipts<Id> {
    held: Mutex<Held<Id>>,
}

#[derive(Debug)]
struct Held<Id> {
    by_id: HashMap<Id, Receipt>,
    /// Oldest first: what expiry pops, in constant time per receipt.
    order: VecDeque<(Instant, Id)>,
}

impl<Id> Default for HeldReceipts<Id> {
    fn default() -> Self {
        HeldReceipts {
            held: Mutex::new(Held {
                by_id: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }
}

impl<Id: Hash + Eq + Clone> HeldReceipts<Id> {
    /// Holds `receipt` for the event stored as `id`, at time `now`
    /// (dropping, unfulfilled, those that waited too long or crowd out the
    /// newest).
    pub fn hold(&self, id: Id, receipt: Receipt, now: Instant) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((since, oldest)) = held.order.front() {
            let released = !held.by_id.contains_key(oldest);
            let expired = now.saturating_duration_since(*since) >= RECEIPT_PATIENCE;
            // The order also keeps released receipts until they reach its
            // front: bounded too, behind one that is never released.
            let crowded =
                held.by_id.len() >= MOST_RECEIPTS || held.order.len() >= 2 * MOST_RECEIPTS;
            if !released && !expired && !crowded {
                break;
            }
            if let Some((_, oldest)) = held.order.pop_front() {
                // Dropped unfulfilled: its publisher learns it was not
                // delivered.
                held.by_id.remove(&oldest);
            }
        }
        held.by_id.insert(id.clone(), receipt);
        held.order.push_back((now, id));
    }

    /// The receipt held for `id`, if any. (Its entry in the expiry order
    /// goes when it reaches the front.)
    pub fn release(&self, id: &Id) -> Option<Receipt> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.by_id.is_empty() {
            held.order.clear();
            return None;
        }
        held.by_id.remove(id)
    }

    /// How many receipts are held.
    pub fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .len()
    }

    /// Whether no receipt is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_so_many_are_held_the_oldest_dropped() {
        let receipts = HeldReceipts::default();
        let now = Instant::now();
        let mut waiting = Vec::new();
        for n in 0..=MOST_RECEIPTS {
            let (receipt, delivered) = Receipt::pair();
            receipts.hold(n, receipt, now);
            waiting.push(delivered);
        }
        assert!(receipts.release(&0).is_none(), "the oldest was dropped");
        assert!(waiting[0].try_recv().is_err(), "its publisher is told");
        assert!(receipts.release(&MOST_RECEIPTS).is_some());
        assert_eq!(receipts.len(), MOST_RECEIPTS - 1);
        let held = receipts.held.lock().unwrap();
        assert!(held.order.len() <= MOST_RECEIPTS);
    }

    #[test]
    fn released_receipts_leave_the_order_too() {
        let receipts = HeldReceipts::default();
        let now = Instant::now();
        let (stuck, _waiting) = Receipt::pair();
        receipts.hold(0, stuck, now);
        for n in 1..=4 * MOST_RECEIPTS {
            let (receipt, _) = Receipt::pair();
            receipts.hold(n, receipt, now);
            assert!(receipts.release(&n).is_some());
        }
        let held = receipts.held.lock().unwrap();
        assert!(
            held.order.len() <= 2 * MOST_RECEIPTS,
            "{}",
            held.order.len()
        );
    }

    #[test]
    fn a_receipt_never_read_back_expires() {
        let receipts = HeldReceipts::default();
        let start = Instant::now();
        let (old, mut told) = Receipt::pair();
        receipts.hold(1, old, start);
        let (new, _) = Receipt::pair();
        receipts.hold(2, new, start + RECEIPT_PATIENCE);
        assert!(receipts.release(&1).is_none());
        assert!(told.try_recv().is_err(), "dropped: not delivered");
        assert!(receipts.release(&2).is_some());
    }
}
