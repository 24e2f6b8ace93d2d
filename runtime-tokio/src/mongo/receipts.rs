//! Receipts of local publishers, held from the insert until the tailing
//! task reads their document back: how `publish_delivered` works across a
//! database.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tbone_dispatch::tailing::DocumentId;
use tbone_dispatch::Receipt;

/// Most receipts held at once: past it, the oldest is dropped (its
/// publisher is told the event was not delivered).
const MOST: usize = 16_384;

/// How long a receipt waits for its document: one that is never read back
/// (the channel is not kicked off, the capped collection wrapped) is
/// dropped after this, and its publisher told it was not delivered.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct Receipts {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    by_id: HashMap<DocumentId, Receipt>,
    /// Oldest first: what expiry pops, in constant time per receipt.
    order: VecDeque<(Instant, DocumentId)>,
}

impl Receipts {
    /// Holds `receipt` for the document `id`.
    pub(crate) fn hold(&self, id: DocumentId, receipt: Receipt) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while let Some(&(since, oldest)) = held.order.front() {
            let released = !held.by_id.contains_key(&oldest);
            let expired = now.saturating_duration_since(since) >= PATIENCE;
            // The order also keeps released receipts until they reach its
            // front: bounded too, behind one that is never released.
            let crowded = held.by_id.len() >= MOST || held.order.len() >= 2 * MOST;
            if !released && !expired && !crowded {
                break;
            }
            held.order.pop_front();
            // Dropped unfulfilled: its publisher learns it was not delivered.
            held.by_id.remove(&oldest);
        }
        held.by_id.insert(id, receipt);
        held.order.push_back((now, id));
    }

    /// The receipt held for document `id`, if any. (Its entry in the
    /// expiry order goes when it reaches the front.)
    pub(crate) fn release(&self, id: DocumentId) -> Option<Receipt> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.by_id.is_empty() {
            held.order.clear();
            return None;
        }
        held.by_id.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> DocumentId {
        let mut bytes = [0u8; 12];
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        DocumentId(bytes)
    }

    #[test]
    fn at_most_so_many_are_held_the_oldest_dropped() {
        let receipts = Receipts::default();
        let mut waiting = Vec::new();
        for n in 0..=MOST as u32 {
            let (receipt, delivered) = Receipt::pair();
            receipts.hold(id(n), receipt);
            waiting.push(delivered);
        }
        assert!(receipts.release(id(0)).is_none(), "the oldest was dropped");
        assert!(waiting[0].try_recv().is_err(), "its publisher is told");
        assert!(receipts.release(id(MOST as u32)).is_some());
        let held = receipts.held.lock().unwrap();
        assert_eq!(held.by_id.len(), MOST - 1);
        assert!(held.order.len() <= MOST);
    }

    #[test]
    fn released_receipts_leave_the_order_too() {
        let receipts = Receipts::default();
        let (stuck, _waiting) = Receipt::pair();
        receipts.hold(id(0), stuck);
        for n in 1..=(4 * MOST) as u32 {
            let (receipt, _) = Receipt::pair();
            receipts.hold(id(n), receipt);
            assert!(receipts.release(id(n)).is_some());
        }
        let held = receipts.held.lock().unwrap();
        assert!(held.order.len() <= 2 * MOST, "{}", held.order.len());
    }
}
