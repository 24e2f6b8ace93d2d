//! A channel's recent events, kept so that a client that reconnects
//! receives what it missed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::position::{split_numbered, Epoch};
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
    /// Whether `History::index` holds its position (otherwise the line
    /// places it).
    indexed: bool,
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
    // Entries have sequence numbers; the front entry's is `first`, so an
    // entry's index is `sequence - first`. A channel's own positions are
    // found by arithmetic (`line`); any other position (a backend's) by
    // this index: position -> sequence number.
    index: HashMap<Position, u64, BuildHasherDefault<Fnv>>,
    line: Option<Line>,
    first: u64,
    bytes: usize,
}

/// Where a channel's own positions are, with no index to keep per event
/// (an insert and a remove per event were most of what keeping a history
/// cost a MemoryChannel): the entry of `<epoch>-<n>` is the one with
/// sequence number `n + offset` (wrapping), if that entry has that very
/// position; a lookup checks it, so a position of another epoch, or one
/// whose number is in range but whose entry differs, is not found.
/// Set by the first position of the numbering recorded, and again by the
/// next one when no entry is on it; a position that does not fall on it
/// (numbers taken by other positions, another epoch) goes in the index.
#[derive(Debug)]
struct Line {
    epoch: Epoch,
    offset: u64,
}

impl History {
    /// An empty history within `limits`.
    pub fn new(limits: HistoryLimits) -> Self {
        History {
            limits,
            entries: VecDeque::new(),
            index: HashMap::default(),
            line: None,
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
        let cutoff = now.checked_sub(self.limits.age);
        self.push(position, key, frame, now, cutoff);
    }

    /// Records a run of events named `key` delivered at `now`, as
    /// [`record`](History::record) does each in turn.
    pub(crate) fn record_run(
        &mut self,
        key: &Arc<str>,
        run: impl IntoIterator<Item = (Position, Frame)>,
        now: Instant,
    ) {
        if !self.is_on() {
            return;
        }
        // Once for the run: what `push` would do for each.
        let cutoff = now.checked_sub(self.limits.age);
        let key = self.shared_key(key);
        for (position, frame) in run {
            self.push(position, key.clone(), frame, now, cutoff);
        }
    }

    /// `key`, or the newest entry's name when it is the same text:
    /// consecutive events of one name share one, so that dropping an old
    /// entry frees no name.
    fn shared_key(&self, key: &Arc<str>) -> Arc<str> {
        match self.entries.back() {
            Some(last) if Arc::ptr_eq(&last.key, key) || *last.key == **key => last.key.clone(),
            _ => key.clone(),
        }
    }

    /// Appends an event unless its position is held already, then drops
    /// what falls outside the limits, `cutoff` being the oldest time kept.
    #[inline]
    fn push(
        &mut self,
        position: Position,
        key: Arc<str>,
        frame: Frame,
        now: Instant,
        cutoff: Option<Instant>,
    ) {
        let sequence = self.first + self.entries.len() as u64;
        let on_line = match position.numbered() {
            Some((epoch, n)) => match &mut self.line {
                Some(line) if n.wrapping_add(line.offset) == sequence && line.epoch == epoch => {
                    true
                }
                // No entry is on the line (the first position of the
                // numbering, or every entry is indexed): it starts here.
                line if self.index.len() == self.entries.len() => {
                    *line = Some(Line {
                        epoch,
                        offset: sequence.wrapping_sub(n),
                    });
                    true
                }
                _ => false,
            },
            None => false,
        };
        if on_line {
            // Its place on the line is the next entry, so it can only have
            // been recorded already as another kind of position with the
            // same text, in the index.
            if !self.index.is_empty() && self.index.contains_key(&position) {
                return;
            }
        } else {
            if self.on_line(&position).is_some() {
                return;
            }
            match self.index.entry(position.clone()) {
                Entry::Occupied(_) => return,
                Entry::Vacant(slot) => {
                    slot.insert(sequence);
                }
            }
        }
        let key = match self.entries.back() {
            Some(last) if Arc::ptr_eq(&last.key, &key) => key,
            _ => self.shared_key(&key),
        };
        self.bytes += frame.len();
        self.entries.push_back(Recorded {
            position,
            key,
            frame,
            at: now,
            indexed: !on_line,
        });
        self.trim(cutoff);
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
        self.trim(now.checked_sub(self.limits.age));
        let sequence = self.find(position)?;
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

    /// The sequence number of the entry holding `position`.
    fn find(&self, position: &Position) -> Option<u64> {
        self.on_line(position).or_else(|| {
            if self.index.is_empty() {
                return None;
            }
            self.index.get(position).copied()
        })
    }

    /// The sequence number of the entry the line places `position` at, if
    /// that entry holds it.
    fn on_line(&self, position: &Position) -> Option<u64> {
        let line = self.line.as_ref()?;
        let (epoch, n) = split_numbered(position.as_str())?;
        if epoch != line.epoch {
            return None;
        }
        let sequence = n.wrapping_add(line.offset);
        let at = usize::try_from(sequence.checked_sub(self.first)?).ok()?;
        let entry = self.entries.get(at)?;
        (!entry.indexed && entry.position == *position).then_some(sequence)
    }

    /// Drops the oldest entries while any limit is exceeded; older than
    /// `cutoff` has expired (none when the age reaches back before the
    /// clock's start).
    #[inline]
    fn trim(&mut self, cutoff: Option<Instant>) {
        let limits = self.limits;
        while let Some(oldest) = self.entries.front() {
            let expired = cutoff.is_some_and(|cutoff| oldest.at < cutoff);
            if self.entries.len() <= limits.events && self.bytes <= limits.bytes && !expired {
                break;
            }
            self.bytes -= oldest.frame.len();
            if oldest.indexed {
                self.index.remove(&oldest.position);
            }
            self.first += 1;
            // Dropped where it lies.
            self.entries.pop_front();
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
    use crate::position::Sequence;

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

    fn text(position: &str) -> Position {
        Position::new(position).unwrap()
    }

    fn replayed(history: &mut History, from: &Position, now: Instant) -> Option<Vec<String>> {
        history
            .after(from, now)
            .map(|events| events.map(|r| r.position.to_string()).collect())
    }

    fn record(history: &mut History, position: &Position, now: Instant) {
        history.record(position.clone(), "e".into(), Frame::from("f"), now);
    }

    #[test]
    fn a_channels_own_positions_are_found_by_their_number_and_checked() {
        let now = Instant::now();
        let (mut sequence, mut other) = (Sequence::new(), Sequence::new());
        let mut history = History::new(HistoryLimits::default().events(4));
        let minted: Vec<Position> = (0..6).map(|_| sequence.next()).collect();
        minted.iter().for_each(|p| record(&mut history, p, now));
        assert!(history.index.is_empty(), "no index for them");
        let epoch = minted[0].as_str().rsplit_once('-').unwrap().0;
        // The client sends the text back: the copy it parses finds it.
        assert_eq!(
            replayed(&mut history, &text(&format!("{epoch}-4")), now).unwrap(),
            [minted[4].to_string(), minted[5].to_string()]
        );
        assert_eq!(
            replayed(&mut history, &minted[5], now).unwrap(),
            Vec::<String>::new()
        );
        let other_epoch = other
            .next()
            .as_str()
            .rsplit_once('-')
            .unwrap()
            .0
            .to_string();
        for (asked, why) in [
            (format!("{epoch}-2"), "pushed out by the count"),
            (format!("{epoch}-0"), "never minted"),
            (format!("{epoch}-7"), "not delivered yet"),
            (
                format!("{epoch}-04"),
                "the number of an entry, but not its text",
            ),
            (
                format!("{other_epoch}-4"),
                "another epoch, the number of an entry",
            ),
            (format!("{epoch}-18446744073709551615"), "wraps around"),
            (format!("x{epoch}-4"), "another text"),
        ] {
            assert_eq!(
                replayed(&mut history, &text(&asked), now),
                None,
                "{asked}: {why}"
            );
        }
    }

    #[test]
    fn a_number_in_range_whose_entry_differs_answers_none() {
        let now = Instant::now();
        let mut sequence = Sequence::new();
        let mut history = History::new(HistoryLimits::default());
        let (one, two, three, four) = (
            sequence.next(),
            sequence.next(),
            sequence.next(),
            sequence.next(),
        );
        // 3 is never recorded: a backend's token takes its place, and 4
        // still falls on the line (its entry is the fourth).
        for position in [&one, &two, &text("65a1b2c3d4e5f60718293a4b"), &four] {
            record(&mut history, position, now);
        }
        assert_eq!(history.index.len(), 1, "the token only");
        assert_eq!(replayed(&mut history, &text(three.as_str()), now), None);
        assert_eq!(
            replayed(&mut history, &text("65a1b2c3d4e5f60718293a4b"), now).unwrap(),
            [four.to_string()]
        );
        assert_eq!(
            replayed(&mut history, &text(two.as_str()), now).unwrap(),
            ["65a1b2c3d4e5f60718293a4b".to_string(), four.to_string()]
        );
    }

    #[test]
    fn positions_off_the_line_are_indexed_and_repeats_of_either_kind_are_not_recorded() {
        let now = Instant::now();
        let (mut a, mut b) = (Sequence::new(), Sequence::new());
        let mut history = History::new(HistoryLimits::default().events(3));
        let (a1, a2, b1) = (a.next(), a.next(), b.next());
        record(&mut history, &a1, now);
        // The same text, parsed: a repeat.
        record(&mut history, &text(a1.as_str()), now);
        // A token first, then the same position minted: a repeat too.
        record(&mut history, &text(a2.as_str()), now);
        record(&mut history, &a2, now);
        // Another numbering's: in the index.
        record(&mut history, &b1, now);
        assert_eq!(history.len(), 3);
        assert_eq!(history.index.len(), 2);
        assert_eq!(
            replayed(&mut history, &text(a1.as_str()), now).unwrap(),
            [a2.to_string(), b1.to_string()]
        );
        assert_eq!(
            replayed(&mut history, &text(a2.as_str()), now).unwrap(),
            [b1.to_string()]
        );
        // Pushed out, indexed ones leave the index; with none of the
        // entries on the line, the next of the numbering starts it again.
        let (a3, a4) = (a.next(), a.next());
        record(&mut history, &a3, now);
        record(&mut history, &a4, now);
        assert_eq!(history.index.len(), 2, "b1 and a3, not a4");
        assert_eq!(replayed(&mut history, &a2, now), None);
        assert_eq!(
            replayed(&mut history, &text(a3.as_str()), now).unwrap(),
            [a4.to_string()]
        );
        assert_eq!(
            replayed(&mut history, &b1, now).unwrap(),
            [a3.to_string(), a4.to_string()]
        );
    }

    proptest::proptest! {
        /// A history holding a mix of its channel's own positions (some
        /// numbers skipped), another numbering's, tokens with the text of
        /// either, and backends' tokens, resumes like a plain list of what
        /// it accepted, cut to its count.
        #[test]
        fn any_mix_of_positions_resumes_like_a_list(
            keep in 1..8usize,
            steps in proptest::collection::vec((0..7u8, 0..16usize, 0..4u8), 1..150),
        ) {
            let now = Instant::now();
            let (mut own, mut other) = (Sequence::new(), Sequence::new());
            let mut history = History::new(HistoryLimits::default().events(keep));
            let mut minted: Vec<Position> = Vec::new();
            let mut held: Vec<Position> = Vec::new();
            for (kind, pick, ask) in steps {
                let recorded = match kind {
                    0..=2 => {
                        minted.push(own.next());
                        minted.last().cloned()
                    }
                    3 => {
                        // A number taken and never delivered: a gap.
                        minted.push(own.next());
                        None
                    }
                    4 => Some(other.next()),
                    5 if !minted.is_empty() => Some(text(minted[pick % minted.len()].as_str())),
                    _ => Some(text(&format!("p{pick}"))),
                };
                if let Some(position) = recorded {
                    if !held.contains(&position) {
                        held.push(position.clone());
                        if held.len() > keep {
                            held.remove(0);
                        }
                    }
                    record(&mut history, &position, now);
                }
                let asked = match ask {
                    0 if !minted.is_empty() => minted[pick % minted.len()].clone(),
                    1 if !minted.is_empty() => text(minted[pick % minted.len()].as_str()),
                    2 if !held.is_empty() => text(held[pick % held.len()].as_str()),
                    _ => text(&format!("p{pick}")),
                };
                let expected = held
                    .iter()
                    .position(|p| *p == asked)
                    .map(|i| held[i + 1..].iter().map(Position::to_string).collect::<Vec<_>>());
                proptest::prop_assert_eq!(replayed(&mut history, &asked, now), expected, "after {}", asked);
                proptest::prop_assert_eq!(history.len(), held.len());
                proptest::prop_assert!(history.index.len() <= history.len());
            }
        }
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
