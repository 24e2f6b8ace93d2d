//! Encoded frames: the bytes a carrier writes, shared by every carrier.

use std::fmt;

use bytes::{Buf, Bytes};

use crate::Position;

/// One encoded event, ready to be written to a carrier (a websocket text
/// frame, an SSE `data:` line, ...).
///
/// A frame is produced **once per published event** by the channel's
/// [`Envelope`](crate::Envelope) and then cloned for each subscriber; cloning
/// only bumps a reference count, so ten thousand carriers share one buffer.
/// The contents are always valid UTF-8 text.
///
/// Beside its text, a frame a channel delivers knows the [`Position`] of
/// its event ([`Frame::position`]), for carriers that send it apart from
/// the text (a server-sent event's `id:` line), and whether it is the frame
/// telling a resuming client that recovery failed
/// ([`Frame::is_recovery_failed`]). Frames are equal when their text is.
///
/// ```
/// use tbone_dispatch::Frame;
///
/// let frame = Frame::from(String::from(r#"{"hello":"world"}"#));
/// let copy = frame.clone(); // no copy of the bytes
/// assert_eq!(copy.as_str(), r#"{"hello":"world"}"#);
/// assert_eq!(frame.len(), 17);
/// assert_eq!(frame.position(), None);
/// ```
#[derive(Clone)]
pub struct Frame {
    /// The event's position, if it has one, then the text: one buffer, so
    /// that a frame stays as small and as cheap to clone for each carrier
    /// as its bytes alone. (A `Position` field beside them cost the fan-out
    /// to 10 000 carriers 8-15%.)
    bytes: Bytes,
    /// Where the text starts in `bytes`: the position's length.
    text: u8,
    kind: Kind,
}

/// What a frame stands for, beside its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    /// An event; its position precedes the text.
    Event,
    /// The envelope's `recovery_failed` frame.
    RecoveryFailed,
}

impl Frame {
    const fn plain(bytes: Bytes) -> Self {
        Frame {
            bytes,
            text: 0,
            kind: Kind::Plain,
        }
    }

    /// A frame over a static string, without allocating.
    pub const fn from_static(text: &'static str) -> Self {
        Frame::plain(Bytes::from_static(text.as_bytes()))
    }

    /// This frame, as the encoding of the event at `position` (what a
    /// channel does with each event it delivers). Copies the text once, to
    /// keep the position in the same buffer.
    ///
    /// ```
    /// use tbone_dispatch::{Frame, Position};
    ///
    /// let frame = Frame::from("{}").with_position(&Position::new("17a-3").unwrap());
    /// assert_eq!(frame.position(), Some("17a-3"));
    /// assert_eq!(frame, Frame::from("{}")); // equal: same text
    /// ```
    pub fn with_position(self, position: &Position) -> Self {
        let token = position.as_str();
        // Always fits: a position is at most 128 bytes.
        let Ok(text) = u8::try_from(token.len()) else {
            return self;
        };
        Frame {
            bytes: shared_copy(&[token.as_bytes(), self.as_bytes()]),
            text,
            kind: Kind::Event,
        }
    }

    /// The frame of the event at `position`, whose text `write` appends
    /// to the buffer it is given, right behind the position: what
    /// [`with_position`](Frame::with_position) makes from a frame already
    /// written. `capacity` is the text's expected length.
    ///
    /// Written straight into its own buffer, as a frame without a position
    /// is. (Copying it from a scratch buffer into one allocation beside
    /// its reference count saved the allocation its first share takes, but
    /// publishing to one client took about 6% longer: five alternating
    /// runs of the `resume` benchmark, 1.13x against 1.06x of history off
    /// on average.)
    pub(crate) fn at(
        position: &Position,
        capacity: usize,
        write: impl FnOnce(&mut String),
    ) -> Self {
        let token = position.as_str();
        // Always fits: a position is at most 128 bytes.
        let Ok(text) = u8::try_from(token.len()) else {
            let mut buffer = String::with_capacity(capacity);
            write(&mut buffer);
            return Frame::from(buffer);
        };
        Frame {
            bytes: written(token, capacity, write),
            text,
            kind: Kind::Event,
        }
    }

    /// The position of the event this frame encodes, when a channel
    /// delivered it with one (see
    /// [`Channel::subscribe_after`](crate::Channel::subscribe_after)): a
    /// valid [`Position`]'s text.
    pub fn position(&self) -> Option<&str> {
        match self.kind {
            // Copied from a `Position`: ASCII, so this never fails.
            Kind::Event => std::str::from_utf8(&self.bytes[..usize::from(self.text)]).ok(),
            Kind::Plain | Kind::RecoveryFailed => None,
        }
    }

    /// Marks this frame as the envelope's
    /// [`recovery_failed`](crate::Envelope::recovery_failed) frame.
    pub(crate) fn into_recovery_failed(self) -> Self {
        let text = usize::from(self.text);
        let mut bytes = self.bytes;
        bytes.advance(text);
        Frame {
            bytes,
            text: 0,
            kind: Kind::RecoveryFailed,
        }
    }

    /// Whether this is the frame
    /// [`Channel::subscribe_after`](crate::Channel::subscribe_after) sends
    /// a client whose position is not in the history (the envelope's
    /// [`recovery_failed`](crate::Envelope::recovery_failed)), so a carrier
    /// can send it its own way (an SSE carrier as an `event:
    /// recovery_failed`).
    pub fn is_recovery_failed(&self) -> bool {
        self.kind == Kind::RecoveryFailed
    }

    /// The frame as text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes a `String` or `&str`, so the text
        // is valid UTF-8, and the position before it is ASCII (written
        // first, and only appended to: `Frame::at` checks it in debug
        // builds), so the text starts on a character boundary; `Frame` never exposes the bytes
        // mutably. Re-validating here would cost O(len) per carrier per
        // event on the hot path.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(self.as_bytes())
        }
    }

    /// The frame's text as bytes (valid UTF-8), shared with every other
    /// clone.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[usize::from(self.text)..]
    }

    /// The shared bytes of the text, for carriers that write binary
    /// buffers. They are valid UTF-8, so they can be turned into a text
    /// message without copying.
    pub fn into_bytes(self) -> Bytes {
        let mut bytes = self.bytes;
        // Moves the start past the position: no copy, no reference count.
        bytes.advance(usize::from(self.text));
        bytes
    }

    /// Length of the text in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len() - usize::from(self.text)
    }

    /// Whether the frame holds no text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes of `token` then what `write` appends, in one buffer of their
/// own. `write` only appends (it is the crate's own envelopes): `as_str`
/// relies on the token staying in front.
fn written(token: &str, capacity: usize, write: impl FnOnce(&mut String)) -> Bytes {
    let mut buffer = String::with_capacity(token.len() + capacity);
    buffer.push_str(token);
    write(&mut buffer);
    debug_assert!(
        buffer.starts_with(token),
        "a frame's writer replaced its position"
    );
    Bytes::from(buffer)
}

/// Largest frame whose bytes and reference count share one allocation.
const LARGEST_INLINE: usize = 1024;

/// Up to `N` bytes beside the reference count `Bytes::from_owner` keeps:
/// one allocation for a frame copied with its position
/// ([`Frame::with_position`]). (A `Vec`'s bytes get their count in a
/// second allocation the first time they are shared.)
struct Inline<const N: usize> {
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The concatenation of `parts`, in a buffer that can be shared without
/// allocating again: inline up to [`LARGEST_INLINE`] bytes (rounded up to
/// a size class), otherwise an exact `Vec`.
fn shared_copy(parts: &[&[u8]]) -> Bytes {
    fn inline<const N: usize>(parts: &[&[u8]], len: usize) -> Bytes {
        let mut owner = Inline { len, bytes: [0; N] };
        let mut at = 0;
        for part in parts {
            owner.bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Bytes::from_owner(owner)
    }
    let len = parts.iter().map(|part| part.len()).sum();
    match len {
        0..=64 => inline::<64>(parts, len),
        65..=96 => inline::<96>(parts, len),
        97..=128 => inline::<128>(parts, len),
        129..=192 => inline::<192>(parts, len),
        193..=256 => inline::<256>(parts, len),
        257..=384 => inline::<384>(parts, len),
        385..=512 => inline::<512>(parts, len),
        513..=768 => inline::<768>(parts, len),
        769..=LARGEST_INLINE => inline::<LARGEST_INLINE>(parts, len),
        _ => Bytes::from(parts.concat()),
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Frame {}

impl std::hash::Hash for Frame {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Frame::plain(Bytes::from(text))
    }
}

impl From<&'static str> for Frame {
    fn from(text: &'static str) -> Self {
        Frame::from_static(text)
    }
}

impl AsRef<str> for Frame {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Frame").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_POSITION_LEN;

    #[test]
    fn the_position_travels_beside_the_text() {
        for len in [1, 24, MAX_POSITION_LEN] {
            let token = "7".repeat(len);
            let position = Position::new(&token).unwrap();
            let frame = Frame::from("{\"é\":1}".to_string()).with_position(&position);
            let copy = frame.clone();
            assert_eq!(copy.position(), Some(token.as_str()));
            assert_eq!((copy.as_str(), copy.len()), ("{\"é\":1}", 8));
            assert_eq!(&copy.clone().into_bytes()[..], "{\"é\":1}".as_bytes());
            assert_eq!(
                copy.as_bytes().as_ptr(),
                frame.as_bytes().as_ptr(),
                "shared"
            );
            assert!(!frame.is_recovery_failed());
            let failed = frame.into_recovery_failed();
            assert_eq!((failed.as_str(), failed.position()), ("{\"é\":1}", None));
            assert!(failed.is_recovery_failed());
        }
        assert_eq!(Frame::from("{}").position(), None);
    }

    #[test]
    fn a_frame_written_behind_its_position_is_the_same_as_one_copied_there() {
        for len in [1, 24, MAX_POSITION_LEN] {
            let position = Position::new(&"7".repeat(len)).unwrap();
            let text = "{\"é\":1}";
            let written = Frame::at(&position, text.len(), |out| out.push_str(text));
            let copied = Frame::from(text.to_string()).with_position(&position);
            assert_eq!(written, copied);
            assert_eq!(written.position(), copied.position());
            assert_eq!((written.as_str(), written.len()), (text, text.len()));
            assert_eq!(&written.clone().into_bytes()[..], text.as_bytes());
            assert!(!written.is_recovery_failed());
        }
    }
}
