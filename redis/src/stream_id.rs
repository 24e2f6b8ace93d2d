//! Redis stream entry ids: `<milliseconds>-<sequence>`, ordered, the same
//! on every instance reading the stream.

use std::fmt;
use std::str::FromStr;

/// The id of one stream entry, as Redis assigns it on `XADD`: ordered,
/// unique within the stream, and the same for every instance reading it.
/// The tailing consumer resumes strictly after the last id it delivered.
///
/// ```
/// use tbone_dispatch_redis::StreamId;
///
/// let id: StreamId = "1700000000000-3".parse().unwrap();
/// assert_eq!((id.ms(), id.seq()), (1_700_000_000_000, 3));
/// assert!(id < "1700000000001-0".parse().unwrap());
/// assert_eq!(id.to_string(), "1700000000000-3");
/// assert!("12".parse::<StreamId>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    /// The id `ms-seq`.
    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The entry's position, as its events carry it (`ms-seq`, the same on
    /// every instance).
    pub(crate) fn position(self) -> Option<tbone_dispatch::Position> {
        tbone_dispatch::Position::new(&self.to_string()).ok()
    }

    /// The milliseconds part (the server's clock when the entry was added).
    pub fn ms(&self) -> u64 {
        self.ms
    }

    /// The sequence number within that millisecond.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The largest id before every entry added at `ms` or later: reading
    /// after it delivers what was added from `ms` on.
    pub fn before(ms: u64) -> Self {
        match ms.checked_sub(1) {
            Some(earlier) => StreamId::new(earlier, u64::MAX),
            None => StreamId::new(0, 0),
        }
    }

    /// Parses the bytes of an id as Redis sends them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Text that is not `<u64>-<u64>`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a stream id (<milliseconds>-<sequence>)")]
pub struct NotAStreamId(String);

impl FromStr for StreamId {
    type Err = NotAStreamId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || NotAStreamId(text.chars().take(64).collect());
        let (ms, seq) = text.split_once('-').ok_or_else(refused)?;
        Ok(StreamId {
            ms: ms.parse().map_err(|_| refused())?,
            seq: seq.parse().map_err(|_| refused())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_a_millisecond_is_after_everything_earlier() {
        assert_eq!(StreamId::before(0), StreamId::new(0, 0));
        let start = StreamId::before(1000);
        assert!(start > StreamId::new(999, u64::MAX - 1));
        assert!(start < StreamId::new(1000, 0));
        assert_eq!(start.to_string(), format!("999-{}", u64::MAX));
        assert_eq!(start.to_string().parse::<StreamId>().unwrap(), start);
    }
}
