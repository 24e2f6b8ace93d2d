//! Where a tailing consumer resumes: no loss, no duplicates, despite skewed
//! clocks. Pure logic, used by the MongoDB backend's tailing task.

use std::collections::{HashSet, VecDeque};
use std::fmt;

/// The 12 bytes of a MongoDB `ObjectId`, whose first four are the creation
/// time in seconds (big-endian). Kept as bytes so the core needs no BSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId(pub [u8; 12]);

impl DocumentId {
    /// The creation time, in seconds since the Unix epoch.
    pub fn seconds(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// The smallest id created at `seconds`: the bound of a `$gte` filter.
    pub fn floor(seconds: u32) -> Self {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&seconds.to_be_bytes());
        DocumentId(bytes)
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId(")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

/// The position of a tailing consumer in a stream of documents ordered by
/// insertion, whose ids carry their writer's clock.
///
/// Writers on other machines have other clocks, so ids arrive slightly out
/// of order. After a cursor dies, the consumer reopens it at
/// [`TailPosition::resume_from`] — a window *before* the newest id it has
/// seen — and passes every document through [`TailPosition::admit`], which
/// drops the ones already delivered. A document is lost only if its writer's
/// clock is behind by more than the window.
///
/// ```
/// use tbone_dispatch::tailing::{DocumentId, TailPosition};
///
/// let id = |secs: u32, n: u8| {
///     let mut b = DocumentId::floor(secs).0;
///     b[11] = n;
///     DocumentId(b)
/// };
/// let mut position = TailPosition::new(900, 30); // kicked off at t=900
/// assert_eq!(position.resume_from(), DocumentId::floor(900));
/// assert!(position.admit(id(1_005, 1)));
/// assert!(position.admit(id(1_003, 2))); // a writer with a slower clock
/// // The cursor died; the reopened cursor starts 30 s before the newest id.
/// assert_eq!(position.resume_from(), DocumentId::floor(975));
/// assert!(!position.admit(id(1_003, 2))); // seen: dropped
/// assert!(!position.admit(id(1_005, 1)));
/// assert!(position.admit(id(1_006, 3)));
/// ```
#[derive(Debug)]
pub struct TailPosition {
    kickoff: u32,
    window: u32,
    newest: Option<u32>,
    last: Option<DocumentId>,
    seen: HashSet<DocumentId>,
    order: VecDeque<DocumentId>,
}

impl TailPosition {
    /// A consumer that delivers documents created from `kickoff_seconds` on,
    /// tolerating writers whose clocks are up to `window_seconds` behind.
    pub fn new(kickoff_seconds: u32, window_seconds: u32) -> Self {
        TailPosition {
            kickoff: kickoff_seconds,
            window: window_seconds,
            newest: None,
            last: None,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// The lower bound for (re)opening the cursor: kickoff time at first,
    /// then the window before the newest id seen (never before kickoff).
    pub fn resume_from(&self) -> DocumentId {
        let from = match self.newest {
            None => self.kickoff,
            Some(newest) => newest.saturating_sub(self.window).max(self.kickoff),
        };
        DocumentId::floor(from)
    }

    /// Whether the document with this id should be delivered: false if it
    /// was delivered already (or predates kickoff). Records it otherwise.
    pub fn admit(&mut self, id: DocumentId) -> bool {
        if id.seconds() < self.kickoff || self.seen.contains(&id) {
            return false;
        }
        let newest = self.newest.map_or(id.seconds(), |n| n.max(id.seconds()));
        self.newest = Some(newest);
        self.last = Some(id);
        self.seen.insert(id);
        self.order.push_back(id);
        // Ids older than the window are never returned by a resumed cursor,
        // so they need not be remembered.
        let horizon = newest.saturating_sub(self.window);
        while let Some(oldest) = self.order.front() {
            if oldest.seconds() >= horizon {
                break;
            }
            self.seen.remove(oldest);
            self.order.pop_front();
        }
        true
    }

    /// The last document delivered, if any: if it is no longer in the
    /// collection when the cursor is reopened, documents were overwritten
    /// before they could be read (a gap).
    pub fn last_delivered(&self) -> Option<DocumentId> {
        self.last
    }

    /// How many ids are remembered for de-duplication.
    pub fn remembered(&self) -> usize {
        self.seen.len()
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
    fn forgets_ids_outside_the_window_and_never_resumes_before_kickoff() {
        let mut p = TailPosition::new(100, 10);
        assert_eq!(p.resume_from(), DocumentId::floor(100));
        assert!(p.admit(id(101, 0)));
        assert_eq!(
            p.resume_from(),
            DocumentId::floor(100),
            "clamped to kickoff"
        );
        for s in 102..200 {
            assert!(p.admit(id(s, s)));
        }
        assert!(p.remembered() <= 11, "remembers {}", p.remembered());
        assert_eq!(p.resume_from(), DocumentId::floor(189));
        assert!(!p.admit(id(50, 1)), "before kickoff");
        assert_eq!(p.last_delivered(), Some(id(199, 199)));
    }

    #[test]
    fn replaying_the_window_delivers_each_document_once() {
        let mut p = TailPosition::new(0, 5);
        let docs: Vec<_> = (0..40).map(|n| id(1000 + n / 4 - (n % 3), n)).collect();
        let delivered: Vec<_> = docs.iter().filter(|d| p.admit(**d)).collect();
        assert_eq!(delivered.len(), docs.len());
        let from = p.resume_from();
        let replayed = docs
            .iter()
            .filter(|d| **d >= from)
            .filter(|d| p.admit(**d))
            .count();
        assert_eq!(replayed, 0);
    }
}
