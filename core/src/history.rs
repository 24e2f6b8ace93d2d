//! A channel's recent events, kept so that a client that reconnects
//! receives what it missed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Frame, Position};

/// How much of its recent stream a channel keeps for clients that resume:
/// at most `events` events, `bytes` bytes of frames, and nothing older than
/// `age`. Any limit at zero turns the history off.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch::HistoryLimits;
///
/// let limits = HistoryLimits::default().events(10_000).age(Duration::from_secs(60));
/// assert_eq!(limits.events, 10_000);
/// assert!(!HistoryLimits::off().is_on());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most events kept (default 1 000).
    pub events: usize,
    /// Most bytes of frames kept (default 1 MiB).
    pub bytes: usize,
    /// Oldest event kept (default 5 minutes).
    pub age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            events: 1_000,
            bytes: 1 << 20,
            age: Duration::from_secs(300),
        }
    }
}

impl HistoryLimits {
    /// No history: a client that resumes is told that recovery failed.
    pub fn off() -> Self {
        HistoryLimits {
            events: 0,
            bytes: 0,
            age: Duration::ZERO,
        }
    }

    /// Sets [`HistoryLimits::events`].
    pub fn events(mut self, events: usize) -> Self {
        self.events = events;
        self
    }

    /// Sets [`HistoryLimits::bytes`].
    pub fn bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    /// Sets [`HistoryLimits::age`].
    pub fn age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// Whether any history is kept.
    pub fn is_on(&self) -> bool {
        self.events > 0 && self.bytes > 0 && !self.age.is_zero()
    }
}

/// One event of the history.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Its position.
    pub position: Position,
    /// Its name.
    pub key: Arc<str>,
    /// The frame its subscribers received.
    pub frame: Frame,
    at: Instant,
}

/// The recent events of one channel, in delivery order, within
/// [`HistoryLimits`]: a plain data structure with no IO, locks or clock of
/// its own (time is an argument), so its rules can be tested alone.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tbone_dispatch::{Frame, History, HistoryLimits, Position};
///
/// let start = Instant::now();
/// let mut history = History::new(HistoryLimits::default().events(2));
/// for n in 1..=3 {
///     let position = Position::new(&format!("p{n}")).unwrap();
///     history.record(position, "e".into(), Frame::from(format!("{n}")), start);
/// }
/// // p1 was pushed out by the count limit: resuming from it cannot be exact.
/// assert!(history.after(&Position::new("p1").unwrap(), start).is_none());
/// let missed: Vec<_> = history
///     .after(&Position::new("p2").unwrap(), start)
///     .unwrap()
///     .map(|r| r.frame.as_str().to_string())
///     .collect();
/// assert_eq!(missed, ["3"]);
/// ```
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    entries: VecDeque<Recorded>,
    // Position -> sequence number of its entry; the front entry's is
    // `first`, so the entry's index is `sequence - first`.
    index: HashMap<Position, u64, BuildHasherDefault<Fnv>>,
    first: u64,
    bytes: usize,
}

impl History {
    /// An empty history within `limits`.
    pub fn new(limits: HistoryLimits) -> Self {
        History {
            limits,
            entries: VecDeque::new(),
            index: HashMap::default(),
            first: 0,
            bytes: 0,
        }
    }

    /// The limits it keeps to.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Whether it keeps anything.
    pub fn is_on(&self) -> bool {
        self.limits.is_on()
    }

    /// Appends a delivered event, then drops what falls outside the limits.
    /// A position recorded twice keeps its first entry (a backend read the
    /// same document again); the repeat is not recorded.
    pub fn record(&mut self, position: Position, key: Arc<str>, frame: Frame, now: Instant) {
        if !self.is_on() {
            return;
        }
        let sequence = self.first + self.entries.len() as u64;
        match self.index.entry(position.clone()) {
            Entry::Occupied(_) => return,
            Entry::Vacant(slot) => {
                slot.insert(sequence);
            }
        }
        self.bytes += frame.len();
        self.entries.push_back(Recorded {
            position,
            key,
            frame,
            at: now,
        });
        self.trim(now);
    }

    /// The events recorded after `position`, oldest first; `None` when
    /// `position` is not in the history (older than what it keeps, from
    /// another epoch, or never delivered here), so that resuming from it
    /// could miss events.
    pub fn after(
        &mut self,
        position: &Position,
        now: Instant,
    ) -> Option<impl Iterator<Item = &Recorded>> {
        self.trim(now);
        let sequence = *self.index.get(position)?;
        let start = usize::try_from(sequence - self.first + 1).ok()?;
        Some(self.entries.range(start..))
    }

    /// Events kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of frames kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The newest event's position.
    pub fn last(&self) -> Option<&Position> {
        self.entries.back().map(|recorded| &recorded.position)
    }

    fn trim(&mut self, now: Instant) {
        let limits = self.limits;
        // Older than this has expired (none when the age reaches back
        // before the clock's start).
        let cutoff = now.checked_sub(limits.age);
        while let Some(oldest) = self.entries.front() {
            let expired = cutoff.is_some_and(|cutoff| oldest.at < cutoff);
            if self.entries.len() <= limits.events && self.bytes <= limits.bytes && !expired {
                break;
            }
            if let Some(dropped) = self.entries.pop_front() {
                self.bytes -= dropped.frame.len();
                self.index.remove(&dropped.position);
                self.first += 1;
            }
        }
    }
}

/// FNV-1a, for the index of positions: SipHash, the default, was a
/// fifth of what keeping a history cost per event. Only positions the
/// channel delivered are inserted (clients' positions are only looked up),
/// so clients cannot flood a bucket.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn position(n: u32) -> Position {
        Position::new(&format!("p{n}")).unwrap()
    }

    fn fill(history: &mut History, range: std::ops::RangeInclusive<u32>, at: Instant) {
        for n in range {
            history.record(position(n), "e".into(), Frame::from(format!("{n:04}")), at);
        }
    }

    fn missed(history: &mut History, from: u32, now: Instant) -> Option<Vec<String>> {
        history
            .after(&position(from), now)
            .map(|events| events.map(|r| r.position.to_string()).collect())
    }

    #[test]
    fn resumes_after_the_position_in_order() {
        let now = Instant::now();
        let mut history = History::new(HistoryLimits::default());
        fill(&mut history, 1..=5, now);
        assert_eq!(missed(&mut history, 3, now).unwrap(), ["p4", "p5"]);
        assert_eq!(missed(&mut history, 5, now).unwrap(), Vec::<String>::new());
        assert_eq!(missed(&mut history, 9, now), None, "never delivered here");
    }

    #[test]
    fn keeps_within_count_bytes_and_age() {
        let start = Instant::now();
        let mut by_count = History::new(HistoryLimits::default().events(3));
        fill(&mut by_count, 1..=10, start);
        assert_eq!(by_count.len(), 3);
        assert_eq!(missed(&mut by_count, 7, start), None);
        assert_eq!(missed(&mut by_count, 8, start).unwrap(), ["p9", "p10"]);

        let mut by_bytes = History::new(HistoryLimits::default().bytes(8));
        fill(&mut by_bytes, 1..=10, start);
        assert_eq!((by_bytes.len(), by_bytes.bytes()), (2, 8));

        let mut by_age = History::new(HistoryLimits::default().age(Duration::from_secs(10)));
        fill(&mut by_age, 1..=2, start);
        fill(&mut by_age, 3..=3, start + Duration::from_secs(5));
        let later = start + Duration::from_secs(12);
        assert_eq!(missed(&mut by_age, 1, later), None, "aged out");
        assert_eq!(missed(&mut by_age, 3, later).unwrap(), Vec::<String>::new());
        assert_eq!(by_age.len(), 1);
    }

    #[test]
    fn off_keeps_nothing_and_repeats_are_not_recorded() {
        let now = Instant::now();
        let mut off = History::new(HistoryLimits::off());
        fill(&mut off, 1..=3, now);
        assert!(off.is_empty());
        assert_eq!(missed(&mut off, 1, now), None);

        let mut history = History::new(HistoryLimits::default());
        fill(&mut history, 1..=3, now);
        fill(&mut history, 2..=2, now);
        assert_eq!(missed(&mut history, 1, now).unwrap(), ["p2", "p3"]);
    }
}
