//! Positions: where an event stands in its channel's stream, so that a
//! client that reconnects can say what it saw last.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The place of one delivered event in its channel's stream: a short token
/// the client keeps and gives back when it reconnects, to receive what it
/// missed (see [`Channel::subscribe_after`](crate::Channel::subscribe_after)).
///
/// Who makes it depends on the backend: MongoChannel's is the document's
/// ObjectId in hex (the same on every instance), a Redis stream's is the
/// entry id, and a channel whose backend gives none (MemoryChannel) numbers
/// its events itself as `<epoch>-<sequence>`, with an epoch chosen when the
/// channel starts, so that a position from another process or from before
/// a restart is recognised as foreign.
///
/// A position is 1 to 128 printable ASCII characters without `"`, `\` or
/// spaces: it goes into JSON frames and server-sent events' `id:` lines as
/// it is.
///
/// ```
/// use tbone_dispatch::Position;
///
/// let position: Position = "65a1b2c3d4e5f60718293a4b".parse().unwrap();
/// assert_eq!(position.as_str(), "65a1b2c3d4e5f60718293a4b");
/// assert!("has space".parse::<Position>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Position(Arc<str>);

/// Longest accepted position, in bytes.
pub const MAX_POSITION_LEN: usize = 128;

/// A text that cannot be a [`Position`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PositionError {
    /// Empty, or longer than [`MAX_POSITION_LEN`].
    #[error("a position is 1 to {MAX_POSITION_LEN} characters long, this one {len}")]
    Length {
        /// Its length in bytes.
        len: usize,
    },
    /// It holds a character positions never contain.
    #[error("a position holds printable ASCII other than `\"`, `\\` and space; this one holds {character:?}")]
    Character {
        /// The first character refused.
        character: char,
    },
}

impl Position {
    /// A position from a backend's own token.
    pub fn new(token: &str) -> Result<Self, PositionError> {
        if token.is_empty() || token.len() > MAX_POSITION_LEN {
            return Err(PositionError::Length { len: token.len() });
        }
        if let Some(character) = token
            .chars()
            .find(|c| !c.is_ascii_graphic() || *c == '"' || *c == '\\')
        {
            return Err(PositionError::Character { character });
        }
        Ok(Position(Arc::from(token)))
    }

    /// The token, as the client receives it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Position {
    type Err = PositionError;

    fn from_str(token: &str) -> Result<Self, PositionError> {
        Position::new(token)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({})", self.0)
    }
}

/// Numbers the events of a channel whose backend gives no positions:
/// `<epoch>-<sequence>`, the epoch unique to this numbering.
pub(crate) struct Sequence {
    epoch: String,
    next: u64,
}

impl Sequence {
    pub(crate) fn new() -> Self {
        // Distinct across processes (the clock) and within one (the
        // counter), so a position from elsewhere never matches.
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let epoch = nanos ^ STARTED.fetch_add(1, Ordering::Relaxed).rotate_left(48);
        Sequence {
            epoch: format!("{epoch:x}"),
            next: 0,
        }
    }

    pub(crate) fn next(&mut self) -> Position {
        self.next += 1;
        // Hex digits, a dash and decimal digits: always a valid position.
        // Written into a stack buffer and allocated once (`format!` took
        // two allocations and the formatting machinery, per event).
        let mut token = [0u8; 16 + 1 + 20];
        let epoch = self.epoch.as_bytes();
        token[..epoch.len()].copy_from_slice(epoch);
        token[epoch.len()] = b'-';
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = self.next;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let len = epoch.len() + 1 + digits.len() - at;
        token[epoch.len() + 1..len].copy_from_slice(&digits[at..]);
        // ASCII throughout.
        let text = std::str::from_utf8(&token[..len]).unwrap_or_default();
        Position(Arc::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_never_share_positions() {
        let (mut a, mut b) = (Sequence::new(), Sequence::new());
        let first = a.next();
        assert_ne!(first, b.next());
        assert_ne!(first, a.next());
        assert!(Position::new(first.as_str()).is_ok());
    }

    #[test]
    fn sequence_positions_are_the_epoch_a_dash_and_the_number() {
        let mut sequence = Sequence::new();
        for n in 1..=1_000u64 {
            let expected = format!("{}-{n}", sequence.epoch);
            assert_eq!(sequence.next().as_str(), expected);
        }
        sequence.next = u64::MAX - 1;
        let expected = format!("{}-{}", sequence.epoch, u64::MAX);
        assert_eq!(sequence.next().as_str(), expected);
    }

    #[test]
    fn tokens_that_would_break_a_frame_are_refused() {
        for bad in ["", "a b", "a\"b", "a\\b", "a\nb", "é", &"x".repeat(129)] {
            assert!(Position::new(bad).is_err(), "{bad:?}");
        }
        assert!(Position::new(&"x".repeat(128)).is_ok());
    }
}
