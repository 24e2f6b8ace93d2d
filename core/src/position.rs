//! Positions: where an event stands in its channel's stream, so that a
//! client that reconnects can say what it saw last.

use std::fmt;
use std::hash::{Hash, Hasher};
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
/// it is. Two positions are equal when their text is.
///
/// ```
/// use tbone_dispatch::Position;
///
/// let position: Position = "65a1b2c3d4e5f60718293a4b".parse().unwrap();
/// assert_eq!(position.as_str(), "65a1b2c3d4e5f60718293a4b");
/// assert!("has space".parse::<Position>().is_err());
/// ```
#[derive(Clone)]
pub struct Position(Repr);

/// Longest accepted position, in bytes.
pub const MAX_POSITION_LEN: usize = 128;

/// Tokens up to this long are held in place. It covers ObjectIds (24),
/// Redis entry ids (about 15 today) and every position a channel numbers
/// itself (at most [`NUMBERED`]), in the room a numbered one takes.
const INLINE: usize = 46;

/// Longest position a [`Sequence`] mints: 16 hex digits, a dash and 20
/// decimal digits.
const NUMBERED: usize = 16 + 1 + 20;

/// Where a position's text is. Only ASCII is ever stored in place: `new`
/// checks it, `Sequence` writes hex and decimal digits and a dash.
#[derive(Clone)]
enum Repr {
    /// A token held in place: making, cloning and dropping one allocates
    /// nothing. (MemoryChannel minted one `Arc<str>` per event: an
    /// allocation and a free per event, with the history on.)
    Inline { len: u8, bytes: [u8; INLINE] },
    /// `<epoch>-<n>` minted by a channel's [`Sequence`], held in place;
    /// `dash` is where the dash is. Its history finds it by arithmetic,
    /// with `n` at hand.
    Numbered {
        len: u8,
        dash: u8,
        bytes: [u8; NUMBERED],
        n: u64,
    },
    /// A longer token.
    Shared(Arc<str>),
}

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
        if token.len() > INLINE {
            return Ok(Position(Repr::Shared(Arc::from(token))));
        }
        let mut bytes = [0; INLINE];
        bytes[..token.len()].copy_from_slice(token.as_bytes());
        Ok(Position(Repr::Inline {
            // At most INLINE.
            len: token.len() as u8,
            bytes,
        }))
    }

    /// The token, as the client receives it.
    pub fn as_str(&self) -> &str {
        let ascii: &[u8] = match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Numbered { len, bytes, .. } => &bytes[..usize::from(*len)],
            Repr::Shared(token) => return token,
        };
        // SAFETY: only ASCII is stored in place (see `Repr`), and ASCII is
        // valid UTF-8. This runs for every event a channel encodes, records
        // or looks up: validating again would cost a pass over the text.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(ascii)
        }
    }

    /// The epoch and number of a position a channel's [`Sequence`]
    /// minted; `None` for any other, even one with the same text (a
    /// client's, parsed with [`Position::new`]).
    #[inline]
    pub(crate) fn numbered(&self) -> Option<(Epoch, u64)> {
        match &self.0 {
            Repr::Numbered { dash, bytes, n, .. } => {
                let mut head = [0; 16];
                head.copy_from_slice(&bytes[..16]);
                let word = u128::from_le_bytes(head);
                // Only the epoch's bytes: those before the dash.
                let mask = u128::MAX
                    .checked_shr(128 - 8 * u32::from(*dash))
                    .unwrap_or(0);
                Some((Epoch(word & mask), *n))
            }
            Repr::Inline { .. } | Repr::Shared(_) => None,
        }
    }
}

/// A numbering's epoch as a value, compared without a call: the text's
/// bytes (1 to 16 hex digits, never NUL) packed in a `u128`, zero
/// padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Epoch(u128);

impl Epoch {
    /// `None` when `text` is no epoch (empty, or longer than 16 bytes).
    fn from_text(text: &str) -> Option<Epoch> {
        if text.is_empty() || text.len() > 16 {
            return None;
        }
        let mut head = [0; 16];
        head[..text.len()].copy_from_slice(text.as_bytes());
        Some(Epoch(u128::from_le_bytes(head)))
    }
}

impl Position {
    /// The position numbered `n` of the numbering `epoch`: the text a
    /// [`Sequence`] of that epoch minted as its `n`th, with its number (a
    /// history keeps no position for its channel's own events: it makes
    /// them again from their number when it replays them).
    pub(crate) fn numbered_at(epoch: Epoch, n: u64) -> Position {
        let head = epoch.0.to_le_bytes();
        // An epoch's text has no NUL (see `Epoch`).
        let dash = head.iter().position(|byte| *byte == 0).unwrap_or(16);
        let mut bytes = [0; NUMBERED];
        bytes[..dash].copy_from_slice(&head[..dash]);
        bytes[dash] = b'-';
        let mut digits = [0; 20];
        let mut at = digits.len();
        let mut rest = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let number = &digits[at..];
        bytes[dash + 1..dash + 1 + number.len()].copy_from_slice(number);
        Position(Repr::Numbered {
            // At most 16 + 1 + 20 = NUMBERED.
            len: (dash + 1 + number.len()) as u8,
            dash: dash as u8,
            bytes,
            n,
        })
    }
}

/// The epoch and number of a text of the form `<epoch>-<decimal number>`
/// (what a [`Sequence`] mints), the number without leading zeros or sign;
/// `None` for any other text.
pub(crate) fn split_numbered(text: &str) -> Option<(Epoch, u64)> {
    let (epoch, number) = text.rsplit_once('-')?;
    if number.len() > 1 && number.starts_with('0') {
        return None;
    }
    Some((Epoch::from_text(epoch)?, parse_decimal(number)?))
}

/// Decimal digits only (no sign), within `u64`.
fn parse_decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0u64, |n, digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

impl PartialEq for Position {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Position {}

impl Hash for Position {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
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
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({})", self.as_str())
    }
}

/// Numbers the events of a channel whose backend gives none:
/// `<epoch>-<sequence>`, the epoch unique to this numbering.
pub(crate) struct Sequence {
    /// The last position's text, `<epoch>-<last>`, counted up in place.
    text: [u8; NUMBERED],
    len: u8,
    /// Where the dash is: the epoch's length.
    dash: u8,
    last: u64,
}

impl Sequence {
    pub(crate) fn new() -> Self {
        // Distinct across processes (the clock) and within one (the
        // counter), so a position from elsewhere never matches.
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Sequence::with_epoch(nanos ^ STARTED.fetch_add(1, Ordering::Relaxed).rotate_left(48))
    }

    fn with_epoch(epoch: u64) -> Self {
        let mut text = [0; NUMBERED];
        let mut len = 0;
        for shift in (0..16).rev() {
            let digit = (epoch >> (shift * 4)) & 0xf;
            if len == 0 && digit == 0 && shift > 0 {
                continue;
            }
            text[len] = b"0123456789abcdef"[digit as usize];
            len += 1;
        }
        let dash = len;
        text[dash] = b'-';
        text[dash + 1] = b'0';
        Sequence {
            text,
            len: (dash + 2) as u8,
            dash: dash as u8,
            last: 0,
        }
    }

    /// The epoch's text.
    #[cfg(test)]
    fn epoch(&self) -> &str {
        std::str::from_utf8(&self.text[..usize::from(self.dash)]).unwrap_or_default()
    }

    /// Continues the numbering after `last` (for tests near the end).
    #[cfg(test)]
    fn skip_to(&mut self, last: u64) {
        let mut fresh = Sequence {
            text: self.text,
            len: self.dash + 2,
            dash: self.dash,
            last: 0,
        };
        let digits = last.to_string();
        let start = usize::from(self.dash) + 1;
        fresh.text[start..start + digits.len()].copy_from_slice(digits.as_bytes());
        fresh.len = (start + digits.len()) as u8;
        fresh.last = last;
        *self = fresh;
    }

    /// The next position: the first is number 1. Counts up the decimal
    /// digits of the last one in place (formatting the number anew was
    /// most of what minting a position cost).
    #[inline]
    pub(crate) fn next(&mut self) -> Position {
        self.last = self.last.wrapping_add(1);
        let start = usize::from(self.dash) + 1;
        let len = usize::from(self.len);
        let digits = &mut self.text[start..len];
        let carried = match digits.iter().rposition(|digit| *digit != b'9') {
            Some(at) => {
                digits[at] += 1;
                for digit in &mut digits[at + 1..] {
                    *digit = b'0';
                }
                false
            }
            None => true,
        };
        if self.last == 0 {
            // Wrapped past u64::MAX: `0` again.
            self.text[start] = b'0';
            self.len = (start + 1) as u8;
        } else if carried {
            // All nines: one more digit (at most 20, u64::MAX's).
            self.text[start] = b'1';
            self.text[start + 1..=len].fill(b'0');
            self.len += 1;
        }
        Position(Repr::Numbered {
            len: self.len,
            dash: self.dash,
            bytes: self.text,
            n: self.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbered_position_is_made_again_from_its_epoch_and_number() {
        let mut sequence = Sequence::new();
        let mut minted: Vec<Position> = (0..12).map(|_| sequence.next()).collect();
        sequence.skip_to(u64::MAX - 1);
        minted.push(sequence.next());
        for position in minted {
            let (epoch, n) = position.numbered().unwrap();
            let again = Position::numbered_at(epoch, n);
            assert_eq!(again.as_str(), position.as_str());
            assert_eq!(again.numbered(), Some((epoch, n)));
        }
    }

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
        let epoch = sequence.epoch().to_string();
        assert_eq!(
            epoch,
            format!("{:x}", u64::from_str_radix(&epoch, 16).unwrap())
        );
        for n in 1..=100_000u64 {
            let position = sequence.next();
            assert_eq!(position.as_str(), format!("{epoch}-{n}"));
            assert_eq!(
                position.numbered(),
                Some((Epoch::from_text(&epoch).unwrap(), n))
            );
        }
        for epoch in [0, 1, 0xabc, u64::MAX] {
            let mut sequence = Sequence::with_epoch(epoch);
            for last in [8, 9, 98, 99, 999, 10u64.pow(19) - 1, u64::MAX - 2] {
                sequence.skip_to(last);
                for n in last + 1..=last + 2 {
                    let position = sequence.next();
                    assert_eq!(position.as_str(), format!("{epoch:x}-{n}"));
                    assert_eq!(position.numbered().map(|(_, n)| n), Some(n));
                }
            }
            // Past u64::MAX it wraps (a channel would need 584 years at
            // a billion events a second).
            assert_eq!(sequence.next().as_str(), format!("{epoch:x}-0"));
            assert_eq!(sequence.next().as_str(), format!("{epoch:x}-1"));
        }
    }

    #[test]
    fn positions_are_equal_by_their_text_however_they_are_held() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |position: &Position| {
            let mut hasher = DefaultHasher::new();
            position.hash(&mut hasher);
            hasher.finish()
        };
        let minted = Sequence::with_epoch(0x17a).next();
        assert!(std::mem::size_of::<Position>() <= 48);
        let parsed = Position::new("17a-1").unwrap();
        assert_eq!(minted, parsed);
        assert_eq!(hash(&minted), hash(&parsed));
        assert_eq!(
            (minted.to_string(), format!("{parsed:?}")),
            ("17a-1".into(), "Position(17a-1)".into())
        );
        // Only the minted one is known as the channel's own numbering.
        assert_eq!(
            minted.numbered(),
            Some((Epoch::from_text("17a").unwrap(), 1))
        );
        assert_eq!(minted.numbered(), split_numbered("17a-1"));
        for epoch in [0, 0xf, u64::MAX] {
            let mut sequence = Sequence::with_epoch(epoch);
            let minted = sequence.next();
            assert_eq!(
                minted.numbered(),
                split_numbered(minted.as_str()),
                "{minted}"
            );
            assert_ne!(minted.numbered(), split_numbered(&format!("{epoch:x}0-1")));
        }
        assert_eq!(parsed.numbered(), None);
        for len in [1, INLINE, INLINE + 1, MAX_POSITION_LEN] {
            let token = "x".repeat(len);
            let position = Position::new(&token).unwrap();
            assert_eq!(position.as_str(), token);
            assert_eq!(position.clone(), Position::new(&token).unwrap());
        }
    }

    #[test]
    fn numbered_texts_split_into_epoch_and_number() {
        let epoch = |text| Epoch::from_text(text).unwrap();
        assert_eq!(split_numbered("17a-3"), Some((epoch("17a"), 3)));
        assert_eq!(
            split_numbered("ffffffffffffffff-18446744073709551615"),
            Some((epoch("ffffffffffffffff"), u64::MAX))
        );
        assert_ne!(epoch("17a"), epoch("17a0"));
        assert_ne!(epoch("17a"), epoch("7a"));
        for other in [
            "17a",
            "-3",
            "17a-",
            "17a-03",
            "17a-+3",
            "17a-3x",
            "17a-18446744073709551616",
            "10000000000000000-1",
        ] {
            assert_eq!(split_numbered(other), None, "{other}");
        }
    }

    #[test]
    fn tokens_that_would_break_a_frame_are_refused() {
        for bad in ["", "a b", "a\"b", "a\\b", "a\nb", "é", &"x".repeat(129)] {
            assert!(Position::new(bad).is_err(), "{bad:?}");
        }
        assert!(Position::new(&"x".repeat(128)).is_ok());
    }
}
