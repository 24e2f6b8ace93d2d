//! Closing the race between a publisher learning its entry's id and the
//! tailing connection reading that entry back.
//!
//! Redis assigns the id, so a receipt can be held only once `XADD` has
//! answered; the tail, on its own connection, may read the entry first.
//! The writer numbers each batch that carries receipts and marks it done
//! once they are held; the tail, having read entries, waits until every
//! batch started before that read is done, then looks for their receipts.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;

/// Batches with receipts: how many were started, how many are done (in
/// order: one writer), and the tail waiting for them.
#[derive(Debug, Default)]
pub(crate) struct ReceiptBatches {
    started: AtomicU64,
    done: AtomicU64,
    waiting: AtomicWaker,
}

impl ReceiptBatches {
    /// Numbers a batch whose receipts will be held once written; call
    /// before sending it.
    pub(crate) fn start(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Batch `number`'s receipts are held (or dropped: not written).
    pub(crate) fn finish(&self, number: u64) {
        self.done.fetch_max(number, Ordering::SeqCst);
        self.waiting.wake();
    }

    /// Every batch started so far: what a read that just returned may hold
    /// entries of.
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Whether batch `number` and those before it are done.
    pub(crate) fn is_done_through(&self, number: u64) -> bool {
        self.done.load(Ordering::SeqCst) >= number
    }

    /// Resolves once batch `number` and those before it are done (one
    /// waiter: the tail).
    pub(crate) async fn done_through(&self, number: u64) {
        poll_fn(|cx| {
            if self.is_done_through(number) {
                return Poll::Ready(());
            }
            self.waiting.register(cx.waker());
            if self.is_done_through(number) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn a_reader_waits_for_the_batches_started_before_its_read() {
        let batches = ReceiptBatches::default();
        assert!(batches
            .done_through(batches.started())
            .now_or_never()
            .is_some());
        let first = batches.start();
        let second = batches.start();
        let target = batches.started();
        let mut waiting = Box::pin(batches.done_through(target));
        assert!((&mut waiting).now_or_never().is_none());
        batches.finish(first);
        assert!((&mut waiting).now_or_never().is_none());
        batches.finish(second);
        assert!(waiting.now_or_never().is_some());
    }
}
