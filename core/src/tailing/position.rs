//! Where a tailing consumer starts and resumes in a stream of documents
//! whose ids carry their writer's clock.

use std::collections::{HashSet, VecDeque};

use super::DocumentId;

/// What [`TailPosition::admit`] decided about a document the cursor read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// Not seen before and written after kickoff: deliver it.
    Deliver,
    /// Delivered already (a reopened cursor read it again): drop it.
    Duplicate,
    /// In the collection before kickoff (listed then, or the
    /// [newest present](TailPosition::newest_present)), or from a writer
    /// whose clock is behind by more than the window: not for this
    /// consumer.
    BeforeStart,
}

/// The position of a tailing consumer in a stream of documents ordered by
/// insertion, whose ids carry their writer's clock.
///
/// Writers on other machines have other clocks, so ids arrive slightly out
/// of order, and a document written after kickoff can carry an older time
/// than the documents written before it. So the consumer does not start at
/// its kickoff's time: it lists the ids present at kickoff from
/// [`TailPosition::resume_from`] on ([`TailPosition::present_at_kickoff`]),
/// opens its cursor at [`TailPosition::resume_from`] — the window before
/// kickoff, then the window before the newest id delivered — and passes
/// every document through [`TailPosition::admit`], which drops those
/// present at kickoff and those already delivered. A document is missed
/// only if its writer's clock is behind by more than the window.
///
/// A tailable cursor whose query matches nothing is dead at once on
/// MongoDB, so the first cursor must match something: when no document
/// present is within the window, the consumer gives the newest one
/// ([`TailPosition::newest_present`]) and [`TailPosition::resume_from`]
/// starts at it until a document is delivered; it is read, and dropped as
/// present. Only an empty collection leaves the cursor nothing to match.
///
/// Memory is bounded twice: an id is forgotten once it is older than the
/// window before the newest delivered (no reopened cursor reads it again),
/// and at most `remember` delivered ids are kept (a reopened cursor reads
/// at most the collection's capacity of documents, and the ids delivered
/// among them are the last ones delivered).
///
/// ```
/// use tbone_dispatch::tailing::{Admission, DocumentId, TailPosition};
///
/// let id = |secs: u32, n: u8| {
///     let mut b = DocumentId::floor(secs).0;
///     b[11] = n;
///     DocumentId(b)
/// };
/// // Kicked off at t=1000, 30 s window, remembering up to 100 ids.
/// let mut position = TailPosition::new(1_000, 30, 100);
/// assert_eq!(position.resume_from(), DocumentId::floor(970));
/// position.present_at_kickoff([id(990, 1)]); // listed from t=970 on
/// assert_eq!(position.admit(id(990, 1)), Admission::BeforeStart);
/// assert_eq!(position.admit(id(1_005, 2)), Admission::Deliver);
/// // A writer whose clock is 10 s behind, after kickoff: delivered.
/// assert_eq!(position.admit(id(995, 3)), Admission::Deliver);
/// // The cursor died; the reopened cursor starts 30 s before the newest id
/// // and reads some documents again.
/// assert_eq!(position.resume_from(), DocumentId::floor(975));
/// assert_eq!(position.admit(id(990, 1)), Admission::BeforeStart);
/// assert_eq!(position.admit(id(1_005, 2)), Admission::Duplicate);
/// assert_eq!(position.admit(id(995, 3)), Admission::Duplicate);
/// assert_eq!(position.admit(id(1_006, 4)), Admission::Deliver);
///
/// // Kicked off on a collection whose newest document is an hour old.
/// let mut idle = TailPosition::new(5_000, 30, 100);
/// idle.present_at_kickoff([]); // nothing from t=4970 on
/// idle.newest_present(id(1_400, 9));
/// assert_eq!(idle.resume_from(), id(1_400, 9), "the first query matches it");
/// assert_eq!(idle.admit(id(1_400, 9)), Admission::BeforeStart);
/// assert_eq!(idle.admit(id(5_001, 1)), Admission::Deliver);
/// assert_eq!(idle.resume_from(), DocumentId::floor(4_971));
/// ```
#[derive(Debug)]
pub struct TailPosition {
    kickoff: u32,
    window: u32,
    remember: usize,
    /// The newest time delivered, never before kickoff.
    newest: u32,
    last: Option<DocumentId>,
    delivered: HashSet<DocumentId>,
    /// `delivered`, in the order of delivery.
    order: VecDeque<DocumentId>,
    present: HashSet<DocumentId>,
    /// The newest document present at kickoff, when none was within the
    /// window: the bound of the cursor until something is delivered.
    anchor: Option<DocumentId>,
}

impl TailPosition {
    /// A consumer kicked off at `kickoff_seconds` that delivers what is
    /// written from then on, tolerating writers whose clocks are up to
    /// `window_seconds` behind, and remembering at most `remember` (at
    /// least 1) delivered ids: the capacity of the collection.
    pub fn new(kickoff_seconds: u32, window_seconds: u32, remember: usize) -> Self {
        TailPosition {
            kickoff: kickoff_seconds,
            window: window_seconds,
            remember: remember.max(1),
            newest: kickoff_seconds,
            last: None,
            delivered: HashSet::new(),
            order: VecDeque::new(),
            present: HashSet::new(),
            anchor: None,
        }
    }

    /// The ids in the collection at kickoff, from
    /// [`TailPosition::resume_from`] on (older ones are never read), listed
    /// before the first cursor opens. They are not delivered — unless they
    /// carry the kickoff's time or later: those may have been written after
    /// kickoff, before the listing.
    pub fn present_at_kickoff(&mut self, ids: impl IntoIterator<Item = DocumentId>) {
        let kickoff = self.kickoff;
        self.present
            .extend(ids.into_iter().filter(|id| id.seconds() < kickoff));
    }

    /// The newest document in the collection at kickoff (the last one
    /// inserted), given when none is from [`TailPosition::resume_from`] on:
    /// until a document is delivered, the cursor opens at it, so that its
    /// query matches at least that one. A document this consumer would
    /// deliver is never given here: it is admitted as any other.
    pub fn newest_present(&mut self, id: DocumentId) {
        self.anchor = Some(id);
    }

    /// The lower bound for (re)opening the cursor: the window before the
    /// newest id delivered, or before kickoff while none is newer; before
    /// the first delivery, no later than the
    /// [newest present](TailPosition::newest_present) document.
    pub fn resume_from(&self) -> DocumentId {
        let window = self.window_start();
        match self.anchor {
            Some(anchor) if self.last.is_none() => window.min(anchor),
            _ => window,
        }
    }

    /// The window before the newest id delivered, or before kickoff.
    fn window_start(&self) -> DocumentId {
        DocumentId::floor(self.newest.saturating_sub(self.window))
    }

    /// What to do with the document with this id; a delivered one is
    /// recorded.
    pub fn admit(&mut self, id: DocumentId) -> Admission {
        if self.delivered.contains(&id) {
            return Admission::Duplicate;
        }
        // Not the moving bound of `resume_from`: a live cursor still
        // delivers what a writer far behind the newest one writes.
        if self.present.contains(&id) || id < self.start() {
            return Admission::BeforeStart;
        }
        let horizon_before = self.window_start();
        self.newest = self.newest.max(id.seconds());
        self.last = Some(id);
        self.delivered.insert(id);
        self.order.push_back(id);
        self.forget(horizon_before);
        Admission::Deliver
    }

    /// Drops what no reopened cursor can return: ids older than the window
    /// before the newest, and delivered ids beyond `remember`.
    fn forget(&mut self, horizon_before: DocumentId) {
        let horizon = self.window_start();
        while let Some(oldest) = self.order.front() {
            if *oldest >= horizon && self.order.len() <= self.remember {
                break;
            }
            self.delivered.remove(oldest);
            self.order.pop_front();
        }
        if horizon > horizon_before {
            self.present.retain(|id| *id >= horizon);
        }
    }

    /// The last document delivered, if any: if it is no longer in the
    /// collection when the cursor is reopened, documents were overwritten
    /// before they could be read (a gap).
    pub fn last_delivered(&self) -> Option<DocumentId> {
        self.last
    }

    /// How many ids are remembered: delivered ones and ones present at
    /// kickoff.
    pub fn remembered(&self) -> usize {
        self.delivered.len() + self.present.len()
    }

    /// Which documents this consumer delivers, as decided at its start
    /// (once [`present_at_kickoff`](TailPosition::present_at_kickoff) is
    /// given): for a client resuming from the collection, the documents
    /// it does not deliver must come from the collection itself.
    pub fn live_filter(&self) -> LiveFilter {
        LiveFilter {
            start: self.start(),
            present: self.present.clone(),
        }
    }

    /// Documents older than this are not for this consumer.
    fn start(&self) -> DocumentId {
        DocumentId::floor(self.kickoff.saturating_sub(self.window))
    }
}

/// Which documents a tailing consumer delivers: those from its start on
/// that were not present at kickoff (a snapshot of its [`TailPosition`]
/// taken after the listing).
///
/// ```
/// use tbone_dispatch::tailing::{DocumentId, TailPosition};
///
/// let id = |secs: u32, n: u8| {
///     let mut bytes = DocumentId::floor(secs).0;
///     bytes[11] = n;
///     DocumentId(bytes)
/// };
/// let mut position = TailPosition::new(5_000, 30, 100);
/// position.present_at_kickoff([id(4_990, 1)]);
/// let live = position.live_filter();
/// assert!(!live.delivers(id(4_990, 1)), "present at kickoff");
/// assert!(!live.delivers(id(4_000, 1)), "before the window");
/// assert!(live.delivers(id(4_990, 2)), "a slow writer after kickoff");
/// assert!(live.delivers(id(5_001, 1)));
/// ```
#[derive(Clone, Debug)]
pub struct LiveFilter {
    start: DocumentId,
    present: HashSet<DocumentId>,
}

impl LiveFilter {
    /// Whether the consumer delivers (or delivered) the document `id`.
    pub fn delivers(&self, id: DocumentId) -> bool {
        id >= self.start && !self.present.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(secs: u32, n: u32) -> DocumentId {
        let mut b = DocumentId::floor(secs).0;
        b[8..].copy_from_slice(&n.to_be_bytes());
        DocumentId(b)
    }

    #[test]
    fn forgets_ids_outside_the_window() {
        let mut p = TailPosition::new(100, 10, 1_000);
        assert_eq!(p.resume_from(), DocumentId::floor(90));
        assert_eq!(p.admit(id(101, 0)), Admission::Deliver);
        assert_eq!(p.resume_from(), DocumentId::floor(91));
        for s in 102..200 {
            assert_eq!(p.admit(id(s, s)), Admission::Deliver);
        }
        assert!(p.remembered() <= 11, "remembers {}", p.remembered());
        assert_eq!(p.resume_from(), DocumentId::floor(189));
        assert_eq!(p.last_delivered(), Some(id(199, 199)));
        // Behind the newest by more than the window, but written after the
        // start: a live cursor delivers it (a reopened one would not read it).
        assert_eq!(p.admit(id(150, 1)), Admission::Deliver);
        assert_eq!(
            p.admit(id(89, 1)),
            Admission::BeforeStart,
            "before the start"
        );
    }

    /// Issue 12, defect 4: the set was bounded by time only, so a burst
    /// within the window grew it with the burst.
    #[test]
    fn remembers_at_most_the_given_count() {
        let mut p = TailPosition::new(100, 30, 64);
        for n in 0..10_000 {
            assert_eq!(p.admit(id(100, n)), Admission::Deliver);
        }
        assert_eq!(p.remembered(), 64);
        // The last 64 delivered are what a reopened cursor on a collection
        // of 64 documents can return: all are still recognised.
        for n in 10_000 - 64..10_000 {
            assert_eq!(p.admit(id(100, n)), Admission::Duplicate, "{n}");
        }
    }

    /// Issue 12, defect 3: documents older than the kickoff's second were
    /// dropped (and counted as duplicates), so a writer whose clock is
    /// behind lost its events at a consumer's start.
    #[test]
    fn slow_writers_after_kickoff_are_delivered_and_present_documents_are_not() {
        let mut p = TailPosition::new(1_000, 30, 100);
        p.present_at_kickoff([id(980, 1), id(999, 2), id(1_000, 3)]);
        assert_eq!(p.admit(id(980, 1)), Admission::BeforeStart);
        assert_eq!(p.admit(id(999, 2)), Admission::BeforeStart);
        // Listed after kickoff (the listing is not instantaneous): it may
        // have been published after kickoff, which is what TBone delivers.
        assert_eq!(p.admit(id(1_000, 3)), Admission::Deliver);
        assert_eq!(p.admit(id(995, 4)), Admission::Deliver, "5 s slow");
        assert_eq!(p.admit(id(971, 5)), Admission::Deliver, "29 s slow");
        assert_eq!(p.admit(id(969, 6)), Admission::BeforeStart, "31 s slow");
        // Replayed after a reopen: duplicates are what was delivered, the
        // rest is still before the start.
        assert_eq!(p.resume_from(), DocumentId::floor(970));
        assert_eq!(p.admit(id(980, 1)), Admission::BeforeStart);
        assert_eq!(p.admit(id(1_000, 3)), Admission::Duplicate);
        assert_eq!(p.admit(id(995, 4)), Admission::Duplicate);
    }

    #[test]
    fn present_ids_are_forgotten_once_no_cursor_can_return_them() {
        let mut p = TailPosition::new(1_000, 30, 100);
        p.present_at_kickoff((975..1_000).map(|s| id(s, s)));
        assert_eq!(p.remembered(), 25);
        assert_eq!(p.admit(id(1_020, 0)), Admission::Deliver);
        assert_eq!(p.resume_from(), DocumentId::floor(990));
        assert_eq!(
            p.remembered(),
            1 + 10,
            "present from 990 on, and 1 delivered"
        );
        assert_eq!(p.admit(id(995, 995)), Admission::BeforeStart);
    }

    /// Issue 12, defect 4: when every document present was older than the
    /// window, the first query (`_id >= kickoff - window`) matched nothing,
    /// and MongoDB ends such a tailable cursor at once: an idle instance
    /// reopened it about every second, scanning the collection each time.
    /// The first query now matches the newest document present.
    #[test]
    fn the_first_query_matches_the_newest_present_document() {
        let mut p = TailPosition::new(1_000, 30, 100);
        p.present_at_kickoff([]);
        p.newest_present(id(400, 7));
        let newest = id(400, 7);
        assert!(
            p.resume_from() <= newest,
            "the first query must match the newest present document: from {:?}",
            p.resume_from()
        );
        assert_eq!(
            p.admit(newest),
            Admission::BeforeStart,
            "and not deliver it"
        );
        // Reopened before anything was delivered: still from it.
        assert!(p.resume_from() <= newest);
        // Once a document is delivered, the window before it (which holds it).
        assert_eq!(p.admit(id(1_001, 1)), Admission::Deliver);
        assert_eq!(p.resume_from(), DocumentId::floor(971));
        assert_eq!(p.admit(newest), Admission::BeforeStart);
    }

    #[test]
    fn documents_present_within_the_window_keep_the_window_as_the_bound() {
        let mut p = TailPosition::new(1_000, 30, 100);
        p.present_at_kickoff([id(990, 1)]);
        p.newest_present(id(990, 1));
        assert_eq!(p.resume_from(), DocumentId::floor(970), "not later");
        assert_eq!(p.admit(id(990, 1)), Admission::BeforeStart);
        assert_eq!(p.admit(id(975, 2)), Admission::Deliver, "25 s slow");
    }

    #[test]
    fn replaying_the_window_delivers_each_document_once() {
        let mut p = TailPosition::new(1_000, 5, 1_000);
        let docs: Vec<_> = (0..40).map(|n| id(1000 + n / 4 - (n % 3), n)).collect();
        let delivered = docs
            .iter()
            .filter(|d| p.admit(**d) == Admission::Deliver)
            .count();
        assert_eq!(delivered, docs.len());
        let from = p.resume_from();
        let replayed: Vec<_> = docs
            .iter()
            .filter(|d| **d >= from)
            .map(|d| p.admit(*d))
            .collect();
        assert!(!replayed.is_empty());
        assert!(replayed.iter().all(|a| *a == Admission::Duplicate));
    }
}
