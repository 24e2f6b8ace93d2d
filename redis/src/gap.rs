//! Telling a gap, entries removed from the stream before the tail read
//! them, from the ordinary trimming of entries it has already read.
//!
//! `XADD ... MAXLEN ~` trims whole nodes from the stream's head, so the
//! entry the tail read last is often trimmed while every entry after it is
//! still there: no loss. Whether an entry after the tail's position went
//! cannot be asked directly (Redis 7.0 records `XDEL`s in
//! `max-deleted-entry-id`, not trims), but the stream counts every entry
//! ever added (`entries-added`, Redis 7.0 and later): the entries added
//! after the tail's position, less those it read, less those still there
//! after it, were removed unread. Those still there are known when every
//! entry of the stream is after the position (the stream's `length`), or
//! when a read returned all there were (the read itself).

use crate::StreamId;

/// What `XINFO STREAM` said about the stream just before one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamState {
    /// Entries in the stream.
    pub(crate) length: u64,
    /// Entries ever added (`entries-added`); `None` from a server before
    /// Redis 7.0, which does not count them.
    pub(crate) added: Option<u64>,
    /// The last id the stream gave out (`last-generated-id`), even if that
    /// entry is gone.
    pub(crate) last_generated: StreamId,
    /// The oldest entry still there, if any.
    pub(crate) first: Option<StreamId>,
}

impl StreamState {
    /// A stream that does not exist: nothing added yet, or deleted.
    pub(crate) const MISSING: StreamState = StreamState {
        length: 0,
        added: Some(0),
        last_generated: StreamId::new(0, 0),
        first: None,
    };
}

/// Entries found removed before the tail read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// This many.
    Entries(u64),
    /// Some, uncounted: the server does not count the entries added (before
    /// Redis 7.0), or the stream was deleted with entries still unread.
    Uncounted,
}

/// The tail's account of the entries added after its position.
#[derive(Debug, Default)]
pub(crate) struct GapWatch {
    /// Entries added after the position, not read and not reported lost:
    /// as of the last state seen, less those read since (so below zero when
    /// a blocking read returned entries the next state has not counted
    /// yet). `None` until a state makes it known.
    unread: Option<i64>,
    /// `entries-added` in the last state seen.
    added: Option<u64>,
    /// The last entry read, and the position a gap was last reported at:
    /// for servers that do not count entries added.
    last_read: Option<StreamId>,
    reported_at: Option<StreamId>,
}

impl GapWatch {
    /// Accounts for one read after `position`: `state` is the stream just
    /// before it, `read` the ids it returned (in order), `drained` whether
    /// it returned fewer than it asked for (all there were). Returns the
    /// entries after `position` found removed before they could be read.
    pub(crate) fn observe(
        &mut self,
        position: StreamId,
        state: &StreamState,
        read: &[StreamId],
        drained: bool,
    ) -> Option<Lost> {
        let lost = match state.added {
            Some(added) => self.count(position, state, added, read, drained),
            None => self.guess(position, state),
        };
        if let Some(unread) = &mut self.unread {
            *unread = unread.saturating_sub(to_i64(read.len() as u64));
        }
        if let Some(last) = read.last() {
            self.last_read = Some(*last);
        }
        lost
    }

    fn count(
        &mut self,
        position: StreamId,
        state: &StreamState,
        added: u64,
        read: &[StreamId],
        drained: bool,
    ) -> Option<Lost> {
        let mut lost = None;
        match self.added.replace(added) {
            Some(before) if added >= before => {
                if let Some(unread) = &mut self.unread {
                    *unread = unread.saturating_add(to_i64(added - before));
                }
            }
            Some(_) => {
                // Fewer ever added than before: the stream was deleted (and
                // maybe made again), with whatever was still unread in it.
                if self.unread.is_some_and(|unread| unread > 0) {
                    lost = Some(Lost::Uncounted);
                }
                self.unread = None;
            }
            None => self.unread = None,
        }
        if state.last_generated <= position {
            // Nothing was ever added after the position.
            self.unread = Some(0);
        }
        let still_there = if state.first.is_none_or(|first| first > position) {
            Some(state.length)
        } else if drained {
            // All there were after the position; those added since the
            // state are counted by the next one.
            Some(
                read.iter()
                    .filter(|id| **id <= state.last_generated)
                    .count() as u64,
            )
        } else {
            None
        };
        if let Some(still_there) = still_there.map(to_i64) {
            if let Some(unread) = self.unread.filter(|unread| *unread > still_there) {
                if lost.is_none() {
                    lost = Some(Lost::Entries(unread.abs_diff(still_there)));
                }
            }
            self.unread = Some(still_there);
        }
        lost
    }

    /// Without a count of entries added: the last entry read gone means
    /// entries after it may have gone too (reported once per position),
    /// though often they did not.
    fn guess(&mut self, position: StreamId, state: &StreamState) -> Option<Lost> {
        self.unread = None;
        self.added = None;
        let last = self.last_read.filter(|last| *last == position)?;
        let gone = state.first.is_none_or(|first| first > last);
        (gone && self.reported_at != Some(last)).then(|| {
            self.reported_at = Some(last);
            Lost::Uncounted
        })
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> StreamId {
        StreamId::new(n, 0)
    }

    fn ids(range: std::ops::RangeInclusive<u64>) -> Vec<StreamId> {
        range.map(id).collect()
    }

    /// The stream holding entries `first..=last` (numbered as their ids),
    /// `added` having been added in all.
    fn holding(first: u64, last: u64, added: u64) -> StreamState {
        StreamState {
            length: last + 1 - first,
            added: Some(added),
            last_generated: id(last),
            first: Some(id(first)),
        }
    }

    /// A tail that read 1..=100 and is behind while entries are added;
    /// then `trimmed_through` is the last entry trimmed, `added` the last
    /// one added.
    fn behind_then(trimmed_through: u64, added: u64) -> Option<Lost> {
        let mut watch = GapWatch::default();
        let read_count = 256;
        // Kickoff on an empty stream, then a read that drained 1..=100.
        assert_eq!(watch.observe(id(0), &StreamState::MISSING, &[], true), None);
        assert_eq!(
            watch.observe(id(0), &holding(1, 100, 100), &ids(1..=100), true),
            None
        );
        let state = holding(trimmed_through + 1, added, added);
        let returned = ids(trimmed_through + 1..=added.min(trimmed_through + read_count));
        watch.observe(
            id(100),
            &state,
            &returned,
            returned.len() < read_count as usize,
        )
    }

    /// The review's false gap: the entry read last (100) was trimmed with
    /// its node, every entry after it is still there.
    #[test]
    fn the_last_entry_read_trimmed_alone_is_no_gap() {
        assert_eq!(behind_then(100, 200), None);
    }

    #[test]
    fn entries_after_the_position_trimmed_unread_are_a_gap_counted() {
        assert_eq!(behind_then(200, 300), Some(Lost::Entries(100)));
        assert_eq!(behind_then(101, 300), Some(Lost::Entries(1)));
    }

    #[test]
    fn a_gap_is_reported_once_and_reading_on_finds_no_other() {
        let mut watch = GapWatch::default();
        watch.observe(id(0), &holding(1, 10, 10), &ids(1..=10), true);
        // 90 more added, 1..=50 trimmed: 11..=50 lost. The read returns
        // 4 of the rest (not drained).
        let state = holding(51, 100, 100);
        assert_eq!(
            watch.observe(id(10), &state, &ids(51..=54), false),
            Some(Lost::Entries(40))
        );
        assert_eq!(watch.observe(id(54), &state, &ids(55..=58), false), None);
        assert_eq!(watch.observe(id(58), &state, &ids(59..=100), true), None);
        // More added and the head trimmed again, nothing unread lost.
        assert_eq!(
            watch.observe(id(100), &holding(101, 150, 150), &ids(101..=150), true),
            None
        );
        assert_eq!(
            watch.observe(id(150), &holding(101, 150, 150), &[], true),
            None
        );
    }

    #[test]
    fn a_blocking_read_returns_entries_the_next_state_counts() {
        let mut watch = GapWatch::default();
        // Nothing after the position: the read blocks, then returns two
        // entries added after the state.
        assert_eq!(
            watch.observe(id(5), &holding(1, 5, 5), &ids(6..=7), true),
            None
        );
        // 8..=9 added too; the head trimmed through 6 (read already).
        assert_eq!(
            watch.observe(id(7), &holding(7, 9, 9), &ids(8..=9), true),
            None
        );
        // Then trimmed past 9 while 10..=20 were added: 10..=14 lost.
        assert_eq!(
            watch.observe(id(9), &holding(15, 20, 20), &ids(15..=20), true),
            Some(Lost::Entries(5))
        );
    }

    #[test]
    fn a_deleted_newest_entry_found_by_a_drained_read_is_a_gap() {
        let mut watch = GapWatch::default();
        watch.observe(id(0), &holding(1, 3, 3), &ids(1..=3), true);
        // 4 and 5 added, 5 deleted (XDEL) before the read: 5 is the last
        // generated id, but the read returns only 4.
        let state = StreamState {
            length: 4,
            added: Some(5),
            last_generated: id(5),
            first: Some(id(1)),
        };
        assert_eq!(
            watch.observe(id(3), &state, &ids(4..=4), true),
            Some(Lost::Entries(1))
        );
    }

    #[test]
    fn a_deleted_stream_with_unread_entries_is_a_gap_of_unknown_size() {
        let mut watch = GapWatch::default();
        watch.observe(id(0), &holding(1, 10, 10), &ids(1..=4), false);
        // Deleted with 5..=10 unread, then made again by new entries.
        assert_eq!(
            watch.observe(id(4), &holding(20, 21, 2), &ids(20..=21), true),
            Some(Lost::Uncounted)
        );
        assert_eq!(
            watch.observe(id(21), &holding(20, 23, 4), &ids(22..=23), true),
            None
        );
        // Deleted when everything had been read: nothing known lost.
        assert_eq!(
            watch.observe(id(23), &StreamState::MISSING, &[], true),
            None
        );
    }

    #[test]
    fn without_a_count_of_entries_added_a_trimmed_last_entry_is_reported_once() {
        let mut watch = GapWatch::default();
        let old = |first, last| StreamState {
            added: None,
            ..holding(first, last, 0)
        };
        assert_eq!(watch.observe(id(0), &old(1, 10), &ids(1..=10), true), None);
        assert_eq!(
            watch.observe(id(10), &old(5, 12), &ids(11..=12), true),
            None
        );
        assert_eq!(
            watch.observe(id(12), &old(30, 40), &ids(30..=40), true),
            Some(Lost::Uncounted)
        );
        assert_eq!(
            watch.observe(id(40), &old(41, 42), &ids(41..=42), true),
            Some(Lost::Uncounted)
        );
        // Emptied: reported once, however many reads find it so.
        let emptied = StreamState {
            length: 0,
            first: None,
            ..old(1, 42)
        };
        assert_eq!(
            watch.observe(id(42), &emptied, &[], true),
            Some(Lost::Uncounted)
        );
        assert_eq!(watch.observe(id(42), &emptied, &[], true), None);
    }
}
