//! Receipts of local publishers, held from the insert until the tailing
//! task reads their document back: how `publish_delivered` works across a
//! database.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tbone_dispatch::tailing::DocumentId;
use tbone_dispatch::Receipt;

/// Receipts held at once before old ones are dropped.
const CROWDED: usize = 4096;

/// How long a receipt waits for its document: one that is never read back
/// (the channel is not kicked off, the capped collection wrapped) is
/// dropped after this, and its publisher told it was not delivered.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct Receipts {
    pending: Mutex<HashMap<DocumentId, (Receipt, Instant)>>,
}

impl Receipts {
    /// Holds `receipt` for the document `id`.
    pub(crate) fn hold(&self, id: DocumentId, receipt: Receipt) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= CROWDED {
            pending.retain(|_, (_, since)| since.elapsed() < PATIENCE);
        }
        pending.insert(id, (receipt, Instant::now()));
    }

    /// The receipt held for document `id`, if any.
    pub(crate) fn release(&self, id: DocumentId) -> Option<Receipt> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_empty() {
            return None;
        }
        pending.remove(&id).map(|(receipt, _)| receipt)
    }
}
