//! Encoded frames: the bytes a carrier writes, shared by every carrier.

use std::fmt;

use bytes::Bytes;

/// One encoded event, ready to be written to a carrier (a websocket text
/// frame, an SSE `data:` line, ...).
///
/// A frame is produced **once per published event** by the channel's
/// [`Envelope`](crate::Envelope) and then cloned for each subscriber; cloning
/// only bumps a reference count, so ten thousand carriers share one buffer.
/// The contents are always valid UTF-8 text.
///
/// ```
/// use tbone_dispatch::Frame;
///
/// let frame = Frame::from(String::from(r#"{"hello":"world"}"#));
/// let copy = frame.clone(); // no copy of the bytes
/// assert_eq!(copy.as_str(), r#"{"hello":"world"}"#);
/// assert_eq!(frame.len(), 17);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Frame(Bytes);

impl Frame {
    /// A frame over a static string, without allocating.
    pub const fn from_static(text: &'static str) -> Self {
        Frame(Bytes::from_static(text.as_bytes()))
    }

    /// The frame as text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes a `String` or `&str`, so the bytes
        // are valid UTF-8; `Frame` never exposes them mutably. Re-validating
        // here would cost O(len) per carrier per event on the hot path.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The frame's bytes (valid UTF-8), shared with every other clone.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The shared bytes, for carriers that write binary buffers. The bytes
    /// are valid UTF-8, so they can be turned into a text message without
    /// copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Frame(Bytes::from(text))
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
