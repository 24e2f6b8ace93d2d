//! A channel's recent events, kept so that a client that reconnects
//! receives what it missed.

mod data_ring;

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use data_ring::DataRing;

use crate::position::{split_numbered, Epoch};
use crate::{Frame, Payload, Position};

/// How much of its recent stream a channel keeps for clients that resume:
/// at most `events` events, `bytes` bytes (of event data, and of frames
/// kept for replays), and nothing older than `age`. Any limit at zero
/// turns the history off.
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
    /// Most bytes kept (default 1 MiB): the events' data (the JSON text
    /// of their [`Payload`]s), and the frames kept for replays
    /// ([`History::replay`]; dropped before any event). An event whose
    /// data alone is larger empties the history. The buffer holding the
    /// data grows to the next power of two above the most it held, and is
    /// kept.
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

/// One event of a [`History`], as [`History::after`] reads it back: its
/// position, its name and its data, from which a channel encodes the
/// frame it replays.
///
/// ```
/// use std::time::Instant;
/// use tbone_dispatch::{History, HistoryLimits, Payload, Position};
///
/// let now = Instant::now();
/// let mut history = History::new(HistoryLimits::default());
/// for (n, name) in ["joined", "said"].into_iter().enumerate() {
///     let position = Position::new(&format!("p{n}")).unwrap();
///     history.record(position, name.into(), &Payload::encode(&n).unwrap(), now);
/// }
/// let missed: Vec<_> = history.after(&Position::new("p0").unwrap(), now).unwrap().collect();
/// assert_eq!(missed[0].position().as_str(), "p1");
/// assert_eq!(missed[0].key(), "said");
/// assert_eq!(missed[0].data().as_str(), "1");
/// ```
#[derive(Clone)]
pub struct Recorded<'a> {
    position: Position,
    key: &'a str,
    /// Its data, in up to two pieces (the history's ring may wrap inside).
    data: (&'a [u8], &'a [u8]),
}

impl Recorded<'_> {
    /// Its position.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Its name.
    pub fn key(&self) -> &str {
        self.key
    }

    /// Its data: a copy of what was recorded.
    pub fn data(&self) -> Payload {
        let (front, back) = self.data;
        Payload::copied([front, back].concat())
    }
}

impl fmt::Debug for Recorded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorded")
            .field("position", &self.position)
            .field("key", &self.key)
            .field("data", &self.data())
            .finish()
    }
}

/// Consecutive entries recorded together: one name, one time, and
/// whether their positions are kept (`History::positions`) or the line
/// places them. A run of events delivered at once is one run here, so that
/// what the history keeps per event is the end of its data
/// (`History::ends`).
#[derive(Debug)]
struct Run {
    key: Arc<str>,
    at: Instant,
    /// The sequence number of its first entry (possibly dropped since).
    first: u64,
    indexed: bool,
}

/// The recent events of one channel, in delivery order, within
/// [`HistoryLimits`]: a plain data structure with no IO, locks or clock of
/// its own (time is an argument), so its rules can be tested alone.
///
/// It keeps each event's position, name and data, not its frame: keeping
/// an event copies its data into one ring of bytes, and dropping it frees
/// nothing (but the frame a replay kept). The first replay of an event
/// encodes its frame again ([`History::replay`]), and keeps it for the
/// next while the byte limit leaves room.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tbone_dispatch::{History, HistoryLimits, Payload, Position};
///
/// let start = Instant::now();
/// let mut history = History::new(HistoryLimits::default().events(2));
/// for n in 1..=3 {
///     let position = Position::new(&format!("p{n}")).unwrap();
///     history.record(position, "e".into(), &Payload::encode(&n).unwrap(), start);
/// }
/// // p1 was pushed out by the count limit: resuming from it cannot be exact.
/// assert!(history.after(&Position::new("p1").unwrap(), start).is_none());
/// let missed: Vec<_> = history
///     .after(&Position::new("p2").unwrap(), start)
///     .unwrap()
///     .map(|r| (r.position().to_string(), r.data().as_str().to_string()))
///     .collect();
/// assert_eq!(missed, [("p3".to_string(), "3".to_string())]);
/// ```
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    // Entries have sequence numbers; the oldest's is `first`, so an
    // entry's index is `sequence - first`. Per entry, `ends` holds where
    // its data ends in `data` (it starts where the previous one's ends);
    // `runs` its name and time; `frames` its frame once replayed (only as
    // far as replays reached).
    ends: VecDeque<u64>,
    runs: VecDeque<Run>,
    frames: VecDeque<Option<Frame>>,
    data: DataRing,
    // A channel's own positions are found, and made again, by arithmetic
    // (`line`); any other position (a backend's) is kept in `positions`
    // (by sequence number, oldest first) and found by `index`: position
    // -> sequence number.
    positions: VecDeque<(u64, Position)>,
    index: HashMap<Position, u64, BuildHasherDefault<Fnv>>,
    line: Option<Line>,
    first: u64,
    /// Bytes of the frames kept for replays.
    frame_bytes: usize,
}

/// Where a channel's own positions are, with no position kept per event
/// (an index insert and remove, then a position's copy and a name's
/// reference count per event, were most of what keeping a history cost a
/// MemoryChannel): the entry of `<epoch>-<n>` is the one with sequence
/// number `n + offset` (wrapping), if that entry is on the line; a lookup
/// checks that the text asked for is exactly the one the line gives that
/// entry, so a position of another epoch, or another spelling of its
/// number, is not found. Set by the first position of the numbering
/// recorded, and again by the next one when no entry is on it; a position
/// that does not fall on it (numbers taken by other positions, another
/// epoch) is kept and indexed.
#[derive(Debug)]
struct Line {
    epoch: Epoch,
    offset: u64,
}

impl Line {
    /// The sequence number of the entry it places position `n` of `epoch`
    /// at; `None` for another epoch.
    fn sequence(&self, epoch: Epoch, n: u64) -> Option<u64> {
        (epoch == self.epoch).then(|| n.wrapping_add(self.offset))
    }

    /// The position of the entry with sequence number `sequence`.
    fn position(&self, sequence: u64) -> Position {
        Position::numbered_at(self.epoch, sequence.wrapping_sub(self.offset))
    }
}

/// Reads entries in order from an index on: their names, positions and
/// data, kept apart from one another, are followed with cursors.
struct Reader<'a> {
    history: &'a History,
    /// The run of the entry read last.
    run: usize,
    /// The next kept position.
    kept: usize,
    /// Where the next entry's data starts.
    start: u64,
}

/// One entry as a [`Reader`] finds it.
struct Found<'a> {
    key: &'a str,
    indexed: bool,
    /// Where its data is.
    start: u64,
    len: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the entry with index `at`.
    fn new(history: &'a History, at: usize) -> Self {
        let sequence = history.first + at as u64;
        Reader {
            history,
            run: history.run_of(sequence),
            kept: history.positions.partition_point(|(s, _)| *s < sequence),
            start: history.start_of(at),
        }
    }

    /// The entry with index `at`, the one after the last read.
    fn next(&mut self, at: usize) -> Option<Found<'a>> {
        let history = self.history;
        let sequence = history.first + at as u64;
        while history
            .runs
            .get(self.run + 1)
            .is_some_and(|run| run.first <= sequence)
        {
            self.run += 1;
        }
        let run = history.runs.get(self.run)?;
        let end = *history.ends.get(at)?;
        let start = self.start;
        self.start = end;
        if run.indexed {
            self.kept += 1;
        }
        Some(Found {
            key: &run.key,
            indexed: run.indexed,
            start,
            len: usize::try_from(end - start).ok()?,
        })
    }

    /// What `found`, the entry with index `at`, replays.
    fn recorded(&self, at: usize, found: Found<'a>) -> Option<Recorded<'a>> {
        let history = self.history;
        let sequence = history.first + at as u64;
        let position = if found.indexed {
            self.kept
                .checked_sub(1)
                .and_then(|kept| history.positions.get(kept))
                .map(|(_, p)| p.clone())
        } else {
            history.line.as_ref().map(|line| line.position(sequence))
        };
        // Never None: every indexed entry has its kept position, every
        // other is on the line.
        let Some(position) = position else {
            tracing::error!(
                sequence,
                start = found.start,
                "a history entry without its position; not replayed"
            );
            return None;
        };
        Some(Recorded {
            position,
            key: found.key,
            data: history.data.get(found.start, found.len),
        })
    }
}

impl History {
    /// An empty history within `limits`.
    pub fn new(limits: HistoryLimits) -> Self {
        History {
            limits,
            ends: VecDeque::new(),
            runs: VecDeque::new(),
            frames: VecDeque::new(),
            data: DataRing::default(),
            positions: VecDeque::new(),
            index: HashMap::default(),
            line: None,
            first: 0,
            frame_bytes: 0,
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
    pub fn record(&mut self, position: Position, key: Arc<str>, data: &Payload, now: Instant) {
        if !self.is_on() {
            return;
        }
        let cutoff = now.checked_sub(self.limits.age);
        let key = self.shared_key(&key);
        self.push(&position, &key, data, now, cutoff);
    }

    /// Records a run of events named `key` delivered at `now`, as
    /// [`record`](History::record) does each in turn.
    ///
    /// A channel's own positions, each the next on the line, take a fast
    /// way: appended with no check against what is kept (the line puts
    /// them after it, and with nothing indexed no other entry can hold
    /// their text), and trimmed once for the run. That keeps what
    /// trimming after each would: the longest newest part within the
    /// limits.
    pub(crate) fn record_run<'a>(
        &mut self,
        key: &Arc<str>,
        run: impl IntoIterator<Item = (&'a Position, &'a Payload)>,
        now: Instant,
    ) {
        if !self.is_on() {
            return;
        }
        // Once for the run: what `push` would do for each.
        let cutoff = now.checked_sub(self.limits.age);
        let key = self.shared_key(key);
        let mut untrimmed = false;
        // Whether the newest run is this one's (its name and time, on the
        // line): checked once, not per event.
        let mut in_run = false;
        for (position, data) in run {
            let next_on_line = self.index.is_empty()
                && data.len() <= self.limits.bytes
                && match (position.numbered(), &self.line) {
                    (Some((epoch, n)), Some(line)) => {
                        line.sequence(epoch, n) == Some(self.next_sequence())
                    }
                    _ => false,
                };
            if next_on_line {
                if !in_run {
                    self.open_run(&key, now, false);
                    in_run = true;
                }
                self.append_data(data);
                untrimmed = true;
                // Past the byte limit (large events): trimmed now, so that
                // the ring never holds much more than the limit.
                if self.bytes() > self.limits.bytes {
                    self.trim(cutoff);
                    untrimmed = false;
                }
                continue;
            }
            if untrimmed {
                self.trim(cutoff);
                untrimmed = false;
            }
            in_run = false;
            self.push(position, &key, data, now, cutoff);
        }
        if untrimmed {
            self.trim(cutoff);
        }
    }

    /// `key`, or the newest entry's name when it is the same text, so that
    /// `append` finds it by its pointer (publishers give each event a name
    /// of its own).
    fn shared_key(&self, key: &Arc<str>) -> Arc<str> {
        match self.runs.back() {
            Some(last) if *last.key == **key => last.key.clone(),
            _ => key.clone(),
        }
    }

    /// Appends an event unless its position is held already, then drops
    /// what falls outside the limits, `cutoff` being the oldest time kept.
    fn push(
        &mut self,
        position: &Position,
        key: &Arc<str>,
        data: &Payload,
        now: Instant,
        cutoff: Option<Instant>,
    ) {
        let sequence = self.next_sequence();
        let on_line = match position.numbered() {
            Some((epoch, n)) => match &mut self.line {
                Some(line) if line.sequence(epoch, n) == Some(sequence) => true,
                // No entry is on the line (the first position of the
                // numbering, or every entry is indexed): it starts here.
                line if self.index.len() == self.ends.len() => {
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
        let too_large = data.len() > self.limits.bytes;
        if on_line {
            // Its place on the line is the next entry, so it can only have
            // been recorded already as another kind of position with the
            // same text, in the index.
            if !self.index.is_empty() && self.index.contains_key(position) {
                return;
            }
        } else {
            if self.on_line(position).is_some() {
                return;
            }
            match self.index.entry(position.clone()) {
                Slot::Occupied(_) => return,
                Slot::Vacant(slot) if !too_large => {
                    slot.insert(sequence);
                    self.positions.push_back((sequence, position.clone()));
                }
                Slot::Vacant(_) => {}
            }
        }
        if too_large {
            // It would push out everything, itself included: not copied.
            self.clear();
            return;
        }
        self.append(key, now, !on_line, data);
        self.trim(cutoff);
    }

    /// Appends an entry (its position, if kept, is kept already).
    fn append(&mut self, key: &Arc<str>, at: Instant, indexed: bool, data: &Payload) {
        self.open_run(key, at, indexed);
        self.append_data(data);
    }

    /// Makes the newest run the one of the next entry: named `key`,
    /// recorded `at`, its position kept or not.
    fn open_run(&mut self, key: &Arc<str>, at: Instant, indexed: bool) {
        let same_run = self.runs.back().is_some_and(|run| {
            Arc::ptr_eq(&run.key, key) && run.at == at && run.indexed == indexed
        });
        if !same_run {
            self.runs.push_back(Run {
                key: key.clone(),
                at,
                first: self.next_sequence(),
                indexed,
            });
        }
    }

    /// Appends the next entry's data: the newest run is its.
    #[inline]
    fn append_data(&mut self, data: &Payload) {
        self.data.push(data.as_str().as_bytes());
        self.ends.push_back(self.data.end());
    }

    /// The events recorded after `position`, oldest first; `None` when
    /// `position` is not in the history (older than what it keeps, from
    /// another epoch, or never delivered here), so that resuming from it
    /// could miss events.
    pub fn after(
        &mut self,
        position: &Position,
        now: Instant,
    ) -> Option<impl Iterator<Item = Recorded<'_>>> {
        let from = self.start_after(position, now)?;
        let mut reader = Reader::new(self, from);
        Some((from..self.ends.len()).filter_map(move |at| {
            let found = reader.next(at)?;
            reader.recorded(at, found)
        }))
    }

    /// The frames replaying to a client what was recorded after
    /// `position`, for the events whose name it `wants`, oldest first;
    /// `None` as for [`after`](History::after). Each event's frame is made
    /// by `encode` the first time it is replayed, then kept with the event
    /// (counted in [`bytes`](History::bytes)) for the next client: a
    /// thousand clients resuming at once encode each event once. Frames
    /// are kept only while the byte limit leaves room, and they are the
    /// first to go when an event needs it: keeping them never pushes out
    /// an event.
    ///
    /// ```
    /// use std::time::Instant;
    /// use tbone_dispatch::{Frame, History, HistoryLimits, Payload, Position};
    ///
    /// let now = Instant::now();
    /// let mut history = History::new(HistoryLimits::default());
    /// for n in 0..3 {
    ///     let position = Position::new(&format!("p{n}")).unwrap();
    ///     history.record(position, "tick".into(), &Payload::encode(&n).unwrap(), now);
    /// }
    /// let encode = |r: &tbone_dispatch::Recorded<'_>| Frame::from(format!("tick {}", r.data()));
    /// let from = Position::new("p0").unwrap();
    /// let frames = history.replay(&from, now, |name| name == "tick", encode).unwrap();
    /// assert_eq!(frames, [Frame::from("tick 1"), Frame::from("tick 2")]);
    /// // The next client gets the same frames, not encoded again.
    /// let again = history.replay(&from, now, |_| true, |_| unreachable!()).unwrap();
    /// assert_eq!(again, frames);
    /// ```
    pub fn replay(
        &mut self,
        position: &Position,
        now: Instant,
        wants: impl Fn(&str) -> bool,
        mut encode: impl FnMut(&Recorded<'_>) -> Frame,
    ) -> Option<Vec<Frame>> {
        let from = self.start_after(position, now)?;
        let mut frames = Vec::new();
        let mut made = Vec::new();
        let mut reader = Reader::new(self, from);
        for at in from..self.ends.len() {
            let Some(found) = reader.next(at) else {
                continue;
            };
            if !wants(found.key) {
                continue;
            }
            if let Some(Some(frame)) = self.frames.get(at) {
                frames.push(frame.clone());
                continue;
            }
            let Some(recorded) = reader.recorded(at, found) else {
                continue;
            };
            let frame = encode(&recorded);
            made.push((at, frame.clone()));
            frames.push(frame);
        }
        for (at, frame) in made {
            // Kept while they fit: a frame can be made again, an event
            // pushed out cannot.
            if self.bytes() + frame.len() > self.limits.bytes {
                break;
            }
            if self.frames.len() <= at {
                self.frames.resize(at + 1, None);
            }
            self.frame_bytes += frame.len();
            self.frames[at] = Some(frame);
        }
        Some(frames)
    }

    /// Drops what has aged out by `now`, then finds the index of the
    /// entry after `position`'s; `None` when the history does not hold it.
    fn start_after(&mut self, position: &Position, now: Instant) -> Option<usize> {
        self.trim(now.checked_sub(self.limits.age));
        usize::try_from(self.find(position)? - self.first + 1).ok()
    }

    /// Events kept.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes kept: the events' data, and the frames kept for replays
    /// ([`replay`](History::replay)).
    pub fn bytes(&self) -> usize {
        self.data.len() + self.frame_bytes
    }

    /// The newest event's position.
    pub fn last(&self) -> Option<Position> {
        let run = self.runs.back()?;
        if self.ends.is_empty() {
            return None;
        }
        if run.indexed {
            return self.positions.back().map(|(_, position)| position.clone());
        }
        let sequence = self.next_sequence() - 1;
        self.line.as_ref().map(|line| line.position(sequence))
    }

    /// The sequence number the next entry recorded takes.
    fn next_sequence(&self) -> u64 {
        self.first + self.ends.len() as u64
    }

    /// The index in `runs` of the run holding the entry `sequence`.
    fn run_of(&self, sequence: u64) -> usize {
        self.runs
            .partition_point(|run| run.first <= sequence)
            .saturating_sub(1)
    }

    /// Where the data of the entry with index `at` starts.
    fn start_of(&self, at: usize) -> u64 {
        match at.checked_sub(1) {
            Some(previous) => self.ends.get(previous).copied().unwrap_or(0),
            None => self.data.first(),
        }
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
    /// that entry is on the line and this is exactly its position's text.
    fn on_line(&self, position: &Position) -> Option<u64> {
        let line = self.line.as_ref()?;
        let (epoch, n) = split_numbered(position.as_str())?;
        let sequence = line.sequence(epoch, n)?;
        let at = usize::try_from(sequence.checked_sub(self.first)?).ok()?;
        if at >= self.ends.len() {
            return None;
        }
        let run = self.runs.get(self.run_of(sequence))?;
        (!run.indexed && line.position(sequence) == *position).then_some(sequence)
    }

    /// Drops every entry.
    fn clear(&mut self) {
        let all = self.ends.len();
        self.drop_oldest(all);
    }

    /// Drops the oldest entries while any limit is exceeded; older than
    /// `cutoff` has expired (none when the age reaches back before the
    /// clock's start).
    fn trim(&mut self, cutoff: Option<Instant>) {
        let limits = self.limits;
        while let Some(oldest) = self.runs.front() {
            if self.ends.is_empty() {
                break;
            }
            if cutoff.is_some_and(|cutoff| oldest.at < cutoff) {
                // The whole run has expired.
                let next = self.runs.get(1).map_or(u64::MAX, |run| run.first);
                let entries = usize::try_from(next - self.first).unwrap_or(usize::MAX);
                self.drop_oldest(entries);
                continue;
            }
            let over = self.ends.len().saturating_sub(limits.events);
            if over > 0 {
                self.drop_oldest(over);
                continue;
            }
            if self.bytes() > limits.bytes {
                if self.frame_bytes > 0 {
                    // Frames kept for replays go first: they can be made
                    // again.
                    self.drop_frames(self.bytes() - limits.bytes);
                } else {
                    self.drop_oldest(1);
                }
                continue;
            }
            break;
        }
    }

    /// Drops frames kept for replays, oldest first, until `excess` bytes
    /// of them are gone (or all).
    fn drop_frames(&mut self, excess: usize) {
        let mut freed = 0;
        for kept in self.frames.iter_mut() {
            if freed >= excess {
                break;
            }
            if let Some(frame) = kept.take() {
                freed += frame.len();
                self.frame_bytes -= frame.len();
            }
        }
    }

    /// Drops the `count` oldest entries (at most all).
    fn drop_oldest(&mut self, count: usize) {
        let count = count.min(self.ends.len());
        let Some(end) = count.checked_sub(1).and_then(|last| self.ends.get(last)) else {
            return;
        };
        let len = usize::try_from(end - self.data.first()).unwrap_or(usize::MAX);
        self.data.drop_front(len);
        self.ends.drain(..count);
        let framed = count.min(self.frames.len());
        for frame in self.frames.drain(..framed).flatten() {
            self.frame_bytes -= frame.len();
        }
        self.first += count as u64;
        while self.positions.front().is_some_and(|(s, _)| *s < self.first) {
            if let Some((_, position)) = self.positions.pop_front() {
                self.index.remove(&position);
            }
        }
        if self.ends.is_empty() {
            self.runs.clear();
        } else {
            while self.runs.get(1).is_some_and(|run| run.first <= self.first) {
                self.runs.pop_front();
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
    use crate::position::Sequence;

    fn position(n: u32) -> Position {
        Position::new(&format!("p{n}")).unwrap()
    }

    fn fill(history: &mut History, range: std::ops::RangeInclusive<u32>, at: Instant) {
        for n in range {
            // Four bytes each: `"07"`.
            let data = Payload::from_json(&format!("\"{n:02}\"")).unwrap();
            history.record(position(n), "e".into(), &data, at);
        }
    }

    fn missed(history: &mut History, from: u32, now: Instant) -> Option<Vec<String>> {
        history
            .after(&position(from), now)
            .map(|events| events.map(|r| r.position().to_string()).collect())
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
            .map(|events| events.map(|r| r.position().to_string()).collect())
    }

    /// A history with `limits`, its channel's sequence, and the sequence's
    /// first `n` positions (not recorded).
    fn fresh(limits: HistoryLimits, n: usize) -> (History, Sequence, Vec<Position>) {
        let mut sequence = Sequence::new();
        let minted = mint(&mut sequence, n);
        (History::new(limits), sequence, minted)
    }

    /// A history with `limits` that recorded an event `e` with `data` at
    /// each of `positions`.
    fn holding(
        limits: HistoryLimits,
        positions: &[Position],
        data: &Payload,
        now: Instant,
    ) -> History {
        let mut history = History::new(limits);
        for position in positions {
            history.record(position.clone(), "e".into(), data, now);
        }
        history
    }

    /// The next `n` positions of `sequence`.
    fn mint(sequence: &mut Sequence, n: usize) -> Vec<Position> {
        (0..n).map(|_| sequence.next()).collect()
    }

    fn record(history: &mut History, position: &Position, now: Instant) {
        history.record(position.clone(), "e".into(), &Payload::null(), now);
    }

    #[test]
    fn data_larger_than_the_byte_limit_empties_the_history_and_is_not_kept() {
        let now = Instant::now();
        let (mut history, _, minted) = fresh(HistoryLimits::default().bytes(10), 4);
        let small = Payload::encode(&1).unwrap();
        let large = Payload::encode(&"more than ten bytes").unwrap();
        history.record(minted[0].clone(), "e".into(), &small, now);
        history.record(minted[1].clone(), "e".into(), &small, now);
        history.record(minted[2].clone(), "e".into(), &large, now);
        assert_eq!((history.len(), history.bytes()), (0, 0));
        history.record(minted[3].clone(), "e".into(), &small, now);
        assert_eq!((history.len(), history.bytes()), (1, 1));
        for (from, expected) in [(1, None), (2, None), (3, Some(vec![]))] {
            assert_eq!(
                replayed(&mut history, &minted[from], now),
                expected,
                "{from}"
            );
        }
        // A token too large is not indexed: it is no repeat later.
        let token = text("65a1b2c3d4e5f60718293a4b");
        history.record(token.clone(), "e".into(), &large, now);
        history.record(token.clone(), "e".into(), &small, now);
        assert_eq!(replayed(&mut history, &token, now), Some(vec![]));
    }

    #[test]
    fn replays_each_events_own_name_and_data() {
        let now = Instant::now();
        let mut sequence = Sequence::new();
        let mut history = History::new(HistoryLimits::default().events(50).bytes(200));
        let mut minted = vec![sequence.next()];
        history.record(minted[0].clone(), "a".into(), &Payload::null(), now);
        // Enough to wrap the ring of data several times.
        for n in 0..400u32 {
            let key: Arc<str> = if n.is_multiple_of(3) {
                "a".into()
            } else {
                "b".into()
            };
            let data = Payload::encode(&[n; 3]).unwrap();
            minted.push(sequence.next());
            history.record(minted[minted.len() - 1].clone(), key, &data, now);
        }
        let names = |n: u32| n.is_multiple_of(3);
        let kept_runs = 1
            + (401 - history.len() as u32..400)
                .filter(|n| names(*n) != names(n - 1))
                .count();
        assert_eq!(history.runs.len(), kept_runs, "one name per run kept");
        let oldest = minted[minted.len() - history.len()].clone();
        let kept: Vec<(String, String)> = history
            .after(&oldest, now)
            .unwrap()
            .map(|r| (r.key().to_string(), r.data().as_str().to_string()))
            .collect();
        let expected: Vec<(String, String)> = (400 - kept.len() as u32..400)
            .map(|n| {
                let key = if n.is_multiple_of(3) { "a" } else { "b" };
                (key.to_string(), format!("[{n},{n},{n}]"))
            })
            .collect();
        assert_eq!(kept, expected);
        assert!(history.bytes() <= 200);
    }

    #[test]
    fn a_run_of_large_events_never_holds_much_more_than_the_byte_limit() {
        let now = Instant::now();
        let mut sequence = Sequence::new();
        let mut history = History::new(HistoryLimits::default().bytes(1_000));
        let data = Payload::from_json(&format!("\"{}\"", "x".repeat(98))).unwrap();
        let first = sequence.next();
        history.record(first, "e".into(), &data, now);
        // A run of 256 events of 100 bytes: 25 600 bytes, 1 000 kept.
        let run = mint(&mut sequence, 256);
        history.record_run(&"e".into(), run.iter().map(|p| (p, &data)), now);
        assert_eq!((history.len(), history.bytes()), (10, 1_000));
        assert!(
            history.data.capacity() <= 2_048,
            "the ring grew to {} bytes",
            history.data.capacity()
        );
    }

    #[test]
    fn a_replay_encodes_each_wanted_event_once_and_counts_its_frames() {
        let now = Instant::now();
        let (mut history, mut sequence, minted) = fresh(HistoryLimits::default(), 5);
        for (n, position) in minted.iter().enumerate() {
            let key: Arc<str> = if n % 2 == 0 { "a".into() } else { "b".into() };
            history.record(position.clone(), key, &Payload::encode(&n).unwrap(), now);
        }
        let data = history.bytes();
        let encoded = std::cell::Cell::new(0);
        let encode = |recorded: &Recorded<'_>| {
            encoded.set(encoded.get() + 1);
            Frame::from(format!("{}:{}", recorded.key(), recorded.data().as_str()))
        };
        let texts = |frames: Option<Vec<Frame>>| -> Vec<String> {
            frames
                .unwrap()
                .iter()
                .map(|f| f.as_str().to_string())
                .collect()
        };
        let only_a = |key: &str| key == "a";
        assert_eq!(
            texts(history.replay(&minted[0], now, only_a, encode)),
            ["a:2", "a:4"]
        );
        assert_eq!(encoded.get(), 2);
        assert_eq!(history.bytes(), data + "a:2".len() + "a:4".len());
        // The next client reuses them; the "b" events are encoded once
        // their first client wants them.
        assert_eq!(
            texts(history.replay(&minted[0], now, |_| true, encode)),
            ["b:1", "a:2", "b:3", "a:4"]
        );
        assert_eq!(encoded.get(), 4);
        assert_eq!(
            history.replay(&text("nowhere"), now, |_| true, encode),
            None
        );
        // Dropping the events drops their frames.
        for position in (0..5).map(|_| sequence.next()) {
            history.record(position, "c".into(), &Payload::null(), now);
        }
        let kept = HistoryLimits::default().events;
        for position in (0..kept).map(|_| sequence.next()) {
            history.record(position, "c".into(), &Payload::null(), now);
        }
        assert_eq!(history.bytes(), kept * "null".len());
    }

    #[test]
    fn frames_kept_for_replays_count_against_the_byte_limit() {
        let now = Instant::now();
        let (_, mut sequence, minted) = fresh(HistoryLimits::default(), 10);
        let ab = Payload::encode(&"ab").unwrap();
        let mut history = holding(HistoryLimits::default().bytes(40), &minted, &ab, now);
        assert_eq!((history.len(), history.bytes()), (10, 40));
        let frames = history
            .replay(&minted[4], now, |_| true, |_| Frame::from("0123456789"))
            .unwrap();
        assert_eq!(frames.len(), 5, "the whole replay is returned");
        // Full: no frame is kept, and no event pushed out for one.
        assert_eq!((history.len(), history.bytes()), (10, 40));

        // With room for two frames, two are kept; a record that needs the
        // room drops frames before events.
        let mut history = holding(HistoryLimits::default().bytes(60), &minted, &ab, now);
        let encoded = std::cell::Cell::new(0);
        let encode = |_: &Recorded<'_>| {
            encoded.set(encoded.get() + 1);
            Frame::from("0123456789")
        };
        history.replay(&minted[4], now, |_| true, encode).unwrap();
        assert_eq!((history.len(), history.bytes()), (10, 60));
        history.replay(&minted[4], now, |_| true, encode).unwrap();
        assert_eq!(encoded.get(), 5 + 3, "two frames were kept");
        history.record(
            sequence.next(),
            "e".into(),
            &Payload::encode(&"ab").unwrap(),
            now,
        );
        assert_eq!(history.len(), 11, "a kept frame made room, not an event");
        assert_eq!(history.bytes(), 44 + 10);
    }

    #[test]
    fn a_channels_own_positions_are_found_by_their_number_and_checked() {
        let now = Instant::now();
        let (mut sequence, mut other) = (Sequence::new(), Sequence::new());
        let mut history = History::new(HistoryLimits::default().events(4));
        let minted = mint(&mut sequence, 6);
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
        /// A run recorded at once (the channel's way: its own positions
        /// appended, trimmed once) keeps exactly what recording its events
        /// one by one keeps, with tokens, gaps, large data and every limit.
        #[test]
        fn a_run_is_kept_as_its_events_one_by_one(
            events in 1..10usize,
            bytes in 1..120usize,
            age_ms in 1..2_000u64,
            runs in proptest::collection::vec(
                (proptest::collection::vec((0..6u8, 0..40usize), 1..24), 0..900u64),
                1..16,
            ),
        ) {
            let limits = HistoryLimits::default()
                .events(events)
                .bytes(bytes)
                .age(Duration::from_millis(age_ms));
            let start = Instant::now();
            let mut sequence = Sequence::new();
            let (mut at_once, mut one_by_one) = (History::new(limits), History::new(limits));
            let mut recorded: Vec<Position> = Vec::new();
            let mut now = start;
            for (n, (run, dt)) in runs.into_iter().enumerate() {
                now += Duration::from_millis(dt);
                let key: Arc<str> = if n % 2 == 0 { "a".into() } else { "b".into() };
                let events: Vec<(Position, Payload)> = run
                    .into_iter()
                    .filter_map(|(kind, size)| {
                        let position = match kind {
                            0..=2 => sequence.next(),
                            3 => {
                                // A number taken and never delivered.
                                sequence.next();
                                sequence.next()
                            }
                            4 => text(&format!("t{size}")),
                            _ => recorded.get(size % recorded.len().max(1)).cloned()?,
                        };
                        let data = Payload::from_json(&format!("\"{}\"", "x".repeat(size))).ok()?;
                        Some((position, data))
                    })
                    .collect();
                at_once.record_run(&key, events.iter().map(|(p, d)| (p, d)), now);
                for (position, data) in &events {
                    one_by_one.record(position.clone(), key.clone(), data, now);
                    recorded.push(position.clone());
                }
                proptest::prop_assert_eq!(at_once.len(), one_by_one.len());
                proptest::prop_assert_eq!(at_once.bytes(), one_by_one.bytes());
                proptest::prop_assert_eq!(at_once.last(), one_by_one.last());
                for position in &recorded {
                    let read = |history: &mut History| {
                        history.after(position, now).map(|events| {
                            events
                                .map(|r| (r.position().to_string(), r.key().to_string(), r.data().as_str().to_string()))
                                .collect::<Vec<_>>()
                        })
                    };
                    proptest::prop_assert_eq!(read(&mut at_once), read(&mut one_by_one), "after {}", position);
                }
            }
        }

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
