//! What a backend keeps after a position, and where it meets the live
//! stream: the second source of a resuming client's missed events, after
//! the channel's own history (see [`Backend::stored_after`]).

use std::time::Instant;

use crate::{Event, Frame, History, Position, Recorded};

/// Most events a backend replays from its store to one resuming client
/// ([`Backend::stored_after`](crate::Backend::stored_after)): a position
/// further back is answered as not stored, and the client is told that
/// recovery failed, so that one client cannot make an instance read and
/// hold an unbounded part of the store.
pub const MAX_STORED_REPLAY: usize = 10_000;

/// The events a backend still stores after a position, for a client that
/// resumes from a position its channel no longer holds in memory (a
/// MongoChannel reads them from its capped collection): the answer of
/// [`Backend::stored_after`](crate::Backend::stored_after).
///
/// Beside each event it says whether this instance's live stream delivers
/// it (or already did): events stored before the instance started, or
/// that its live stream skips, are never delivered live, so a resuming
/// client receives them from here; the others it receives from here only
/// if the channel delivered them before the client joined.
///
/// ```
/// use tbone_dispatch::{Event, Payload, Position, Stored};
///
/// // The client's position, as the backend writes it, is stored, and
/// // this instance's live stream delivered it.
/// let after = Position::new("65a1b2c3d4e5f60718293a4b").unwrap();
/// let mut stored = Stored::after(after, true);
/// let event = Event::new("tick", Payload::encode(&1).unwrap())
///     .with_position(Position::new("65a1b2c3d4e5f60718293a4c").unwrap());
/// stored.push(event, true);
/// assert_eq!(stored.len(), 1);
/// ```
#[derive(Debug)]
pub struct Stored {
    after: Position,
    after_is_live: bool,
    events: Vec<(Event, bool)>,
}

impl Stored {
    /// An answer for the stored position `after`, written as the backend
    /// writes its positions (a client may have sent another spelling of
    /// it); `after_is_live` says whether this instance's live stream
    /// delivers (or delivered) that event itself.
    pub fn after(after: Position, after_is_live: bool) -> Self {
        Stored {
            after,
            after_is_live,
            events: Vec::new(),
        }
    }

    /// The position asked about, as the backend writes it.
    pub fn position(&self) -> &Position {
        &self.after
    }

    /// Appends the next stored event, in the order the live stream
    /// delivers them. It must carry its position
    /// ([`Event::with_position`]); `live` says whether the live stream
    /// delivers it on this instance.
    pub fn push(&mut self, event: Event, live: bool) {
        self.events.push((event, live));
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, each with whether the live stream delivers it here.
    pub fn events(&self) -> impl Iterator<Item = (&Event, bool)> {
        self.events.iter().map(|(event, live)| (event, *live))
    }
}

/// The frames a client resuming from the stored position missed, given
/// what the backend stored after it (`stored`, with the frame of each
/// event the client wants, `None` for the others), the last backend
/// position the channel delivered (`last`) and its history;
/// `None` when it cannot be told yet without risking a gap or a duplicate
/// (this instance has not yet delivered the client's position, or it
/// delivered past what was read from the store and its history does not
/// reach back to it): the caller reads the store again a little later.
///
/// Must run under the lock that orders deliveries and subscriptions, so
/// that every frame not returned here reaches the client live.
pub(crate) fn missed_from_store(
    stored: &Stored,
    frames: &[Option<Frame>],
    last: Option<&Position>,
    history: &mut History,
    now: Instant,
    wants: impl Fn(&str) -> bool,
    encode: impl FnMut(&Recorded<'_>) -> Frame,
) -> Option<Vec<Frame>> {
    let after = &stored.after;
    // How many of the stored events the live stream has already delivered
    // (it delivers them in store order), and what it delivered beyond them.
    let (delivered_live, beyond): (usize, Vec<Frame>) = match last {
        // Nothing delivered yet: fine unless the client's own position is
        // one this instance will still deliver (it would see it twice).
        None if stored.after_is_live => return None,
        None => (0, Vec::new()),
        Some(last) if last == after => (0, Vec::new()),
        Some(last) => match stored
            .events
            .iter()
            .position(|(event, _)| event.position() == Some(last))
        {
            Some(at) if stored.events[at].1 => (live_through(stored, at), Vec::new()),
            // Never delivered live, yet the last delivered: inconsistent.
            Some(_) => return None,
            None => {
                // Delivered past the store's end as read (or still behind
                // the client): the history must continue from there.
                let anchor = stored
                    .events
                    .iter()
                    .rev()
                    .find(|(_, live)| *live)
                    .and_then(|(event, _)| event.position())
                    .unwrap_or(after);
                let beyond = history.replay(anchor, now, wants, encode)?;
                (
                    stored.events.iter().filter(|(_, live)| *live).count(),
                    beyond,
                )
            }
        },
    };
    let mut live_seen = 0;
    let mut missed = Vec::new();
    for ((_, live), frame) in stored.events.iter().zip(frames) {
        let replayed = if *live {
            live_seen += 1;
            live_seen <= delivered_live
        } else {
            true
        };
        if let (true, Some(frame)) = (replayed, frame) {
            missed.push(frame.clone());
        }
    }
    missed.extend(beyond);
    Some(missed)
}

/// How many live events there are up to and including index `at`.
fn live_through(stored: &Stored, at: usize) -> usize {
    stored.events[..=at]
        .iter()
        .filter(|(_, live)| *live)
        .count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{HistoryLimits, Payload};

    fn position(n: u32) -> Position {
        Position::new(&format!("p{n}")).unwrap()
    }

    /// Events p{n} for `live` and `earlier` numbers, in number order,
    /// stored after p{after}.
    fn store(
        after: u32,
        after_is_live: bool,
        live: &[u32],
        earlier: &[u32],
    ) -> (Stored, Vec<Option<Frame>>) {
        let mut all: Vec<(u32, bool)> = live
            .iter()
            .map(|n| (*n, true))
            .chain(earlier.iter().map(|n| (*n, false)))
            .collect();
        all.sort_unstable();
        let mut stored = Stored::after(position(after), after_is_live);
        let mut frames = Vec::new();
        for (n, live) in all {
            let event = Event::new("e", Payload::encode(&n).unwrap()).with_position(position(n));
            stored.push(event, live);
            frames.push(Some(Frame::from(format!("{n}"))));
        }
        (stored, frames)
    }

    fn history(delivered: std::ops::RangeInclusive<u32>, now: Instant) -> History {
        let mut history = History::new(HistoryLimits::default());
        for n in delivered {
            history.record(position(n), "e".into(), &Payload::encode(&n).unwrap(), now);
        }
        history
    }

    fn texts(frames: Option<Vec<Frame>>) -> Option<Vec<String>> {
        frames.map(|frames| frames.iter().map(|f| f.as_str().to_string()).collect())
    }

    fn missed(
        stored: &(Stored, Vec<Option<Frame>>),
        last: Option<u32>,
        history: &mut History,
        now: Instant,
    ) -> Option<Vec<String>> {
        texts(missed_from_store(
            &stored.0,
            &stored.1,
            last.map(position).as_ref(),
            history,
            now,
            |_| true,
            |recorded| Frame::from(recorded.data().as_str().to_string()),
        ))
    }

    #[test]
    fn events_from_before_the_start_are_replayed_live_ones_come_live() {
        let now = Instant::now();
        let mut empty = History::new(HistoryLimits::off());
        // Stored p2..p5; p2, p3 predate this instance, p4, p5 not yet
        // delivered: only p2, p3 are replayed.
        let stored = store(1, false, &[4, 5], &[2, 3]);
        assert_eq!(missed(&stored, None, &mut empty, now).unwrap(), ["2", "3"]);
        // p4 delivered: it is replayed too, p5 comes live.
        assert_eq!(
            missed(&stored, Some(4), &mut empty, now).unwrap(),
            ["2", "3", "4"]
        );
        assert_eq!(
            missed(&stored, Some(5), &mut empty, now).unwrap(),
            ["2", "3", "4", "5"]
        );
    }

    #[test]
    fn delivered_past_the_store_continues_from_the_history() {
        let now = Instant::now();
        let stored = store(3, false, &[4, 5], &[]);
        let mut delivered = history(4..=7, now);
        assert_eq!(
            missed(&stored, Some(7), &mut delivered, now).unwrap(),
            ["4", "5", "6", "7"]
        );
        // Without the history, that cannot be told: read again.
        let mut off = History::new(HistoryLimits::off());
        assert_eq!(missed(&stored, Some(7), &mut off, now), None);
    }

    #[test]
    fn an_instance_behind_the_client_waits() {
        let now = Instant::now();
        let mut off = History::new(HistoryLimits::off());
        // The client saw p3, which this instance still has to deliver.
        let stored = store(3, true, &[4, 5], &[]);
        assert_eq!(missed(&stored, None, &mut off, now), None);
        assert_eq!(missed(&stored, Some(2), &mut off, now), None);
        // Once it delivered p3, nothing is missed: p4 and p5 come live.
        assert_eq!(
            missed(&stored, Some(3), &mut off, now).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn only_the_wanted_events_are_replayed() {
        let now = Instant::now();
        let mut stored = Stored::after(position(1), false);
        let mut frames = Vec::new();
        for (n, key) in [(2, "a"), (3, "b"), (4, "a")] {
            stored.push(
                Event::new(key, Payload::encode(&n).unwrap()).with_position(position(n)),
                false,
            );
            // The channel encodes only the events the client wants.
            frames.push((key == "a").then(|| Frame::from(format!("{n}"))));
        }
        let mut off = History::new(HistoryLimits::off());
        let missed = missed_from_store(
            &stored,
            &frames,
            None,
            &mut off,
            now,
            |key| key == "a",
            |recorded| Frame::from(recorded.data().as_str().to_string()),
        );
        assert_eq!(texts(missed).unwrap(), ["2", "4"]);
    }

    #[test]
    fn the_backends_spelling_of_the_position_is_the_seam() {
        let now = Instant::now();
        let mut off = History::new(HistoryLimits::off());
        // The client sent "P3"; the backend stores it as "p3", and the
        // channel delivered it last: nothing was missed.
        let stored = store(3, true, &[4], &[]);
        assert_eq!(
            missed(&stored, Some(3), &mut off, now).unwrap(),
            Vec::<String>::new()
        );
    }
}
