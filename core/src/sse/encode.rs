//! The `text/event-stream` wire format: how frames, keep-alives and the
//! reconnection hint are written. Pure functions, no state.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use crate::Frame;

/// The `event:` name of the frame that tells a resuming client that the
/// events it missed cannot be replayed: listen for it with
/// `source.addEventListener("recovery_failed", ...)`.
pub const RECOVERY_FAILED_EVENT: &str = "recovery_failed";

/// The keep-alive comment: ignored by every `EventSource`, but written, so
/// that a server notices a client that is gone when the write fails.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Appends `frame` to `out` as one server-sent event.
///
/// - An event frame with a position (see [`Frame::position`]):
///   `id: <position>` then its `data:` lines. The browser keeps the id and
///   sends it back as `Last-Event-ID` when it reconnects.
/// - The frame saying that recovery failed ([`Frame::is_recovery_failed`]):
///   `event: recovery_failed` then its `data:` lines, and no id.
/// - Any other frame: its `data:` lines alone.
///
/// The frame's text goes out as one `data:` line per line of text (split
/// at `\n`, `\r\n` or `\r`, as an `EventSource` splits them), so the
/// client's `event.data` is the text with its line breaks as `\n`.
/// A blank line ends the event.
///
/// ```
/// use bytes::BytesMut;
/// use tbone_dispatch::sse::encode_frame;
/// use tbone_dispatch::{Frame, Position};
///
/// let mut out = BytesMut::new();
/// let frame = Frame::from("first\nsecond").with_position(&Position::new("7f-2").unwrap());
/// encode_frame(&frame, &mut out);
/// assert_eq!(&out[..], b"id: 7f-2\ndata: first\ndata: second\n\n");
/// ```
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) {
    out.reserve(frame.len() + 32);
    if let Some(position) = frame.position() {
        // A position is printable ASCII without spaces: never a line break
        // or a NUL, which would end or void the `id:` field.
        out.put_slice(b"id: ");
        out.put_slice(position.as_bytes());
        out.put_u8(b'\n');
    } else if frame.is_recovery_failed() {
        out.put_slice(b"event: ");
        out.put_slice(RECOVERY_FAILED_EVENT.as_bytes());
        out.put_u8(b'\n');
    }
    for line in lines(frame.as_str()) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Appends the reconnection hint: `retry: <milliseconds>`, how long an
/// `EventSource` waits before it reconnects after the stream ends.
///
/// ```
/// use std::time::Duration;
/// use bytes::BytesMut;
/// use tbone_dispatch::sse::encode_retry;
///
/// let mut out = BytesMut::new();
/// encode_retry(Duration::from_secs(3), &mut out);
/// assert_eq!(&out[..], b"retry: 3000\n\n");
/// ```
pub fn encode_retry(delay: Duration, out: &mut BytesMut) {
    out.put_slice(format!("retry: {}\n\n", delay.as_millis()).as_bytes());
}

/// The lines of `text` as an event stream parser sees them: split at
/// `\r\n`, `\n` or `\r`. An empty text is one empty line, and a text that
/// ends with a line break ends with an empty line, so that the client gets
/// the text back with its line breaks as `\n`.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(end) => {
                let skip = if current[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[end + skip..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_an_event_stream_parser() {
        let split = |text| lines(text).collect::<Vec<_>>();
        assert_eq!(split("one"), ["one"]);
        assert_eq!(split(""), [""]);
        assert_eq!(split("a\nb\r\nc\rd"), ["a", "b", "c", "d"]);
        assert_eq!(split("end\n"), ["end", ""]);
        assert_eq!(split("\r\n\r\n"), ["", "", ""]);
    }
}
