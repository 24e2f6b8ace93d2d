//! Envelopes: how an event becomes the frame a client receives.

use std::fmt::Write as _;

use crate::{Frame, Payload, Position};

/// Turns one event (its name and its JSON data) into the frame every
/// subscriber of that event receives.
///
/// A channel calls its envelope **once per event**, and only when the event
/// has at least one local subscriber or the channel keeps a history (see
/// [`ChannelBuilder::history`](crate::ChannelBuilder::history)); the
/// resulting [`Frame`] is shared by all of them. The default is [`TBoneEnvelope`], TBone's wire format. Supply
/// another one with [`ChannelBuilder::envelope`](crate::ChannelBuilder::envelope)
/// to speak a different protocol.
///
/// ```
/// use tbone_dispatch::{Envelope, Frame, Payload};
///
/// /// Frames as `<event> <data>` lines, for a line-oriented client.
/// struct Lines;
///
/// impl Envelope for Lines {
///     fn encode(&self, event: &str, data: &Payload) -> Frame {
///         Frame::from(format!("{event} {data}"))
///     }
/// }
///
/// let frame = Lines.encode("ping", &Payload::encode(&1).unwrap());
/// assert_eq!(frame.as_str(), "ping 1");
/// ```
pub trait Envelope: Send + Sync + 'static {
    /// Encodes one event. `data` is already valid JSON text.
    fn encode(&self, event: &str, data: &Payload) -> Frame;

    /// Encodes one event that has a position (the channel keeps a history,
    /// or its backend gives positions). The default leaves the position
    /// out, as TBone's frame does; [`PositionedEnvelope`] puts it in.
    fn encode_at(&self, event: &str, data: &Payload, position: &Position) -> Frame {
        let _ = position;
        self.encode(event, data)
    }

    /// The frame a channel delivers for an event that has a position: the
    /// text of [`encode_at`](Envelope::encode_at), carrying the position
    /// for carriers that send it apart ([`Frame::position`]). Channels call
    /// this one. The default copies `encode_at`'s text once, behind the
    /// position ([`Frame::with_position`]); [`TBoneEnvelope`] and
    /// [`PositionedEnvelope`] write both into one buffer. An override
    /// must return `encode_at`'s text with that position.
    ///
    /// ```
    /// use tbone_dispatch::{Envelope, Payload, Position, TBoneEnvelope};
    ///
    /// let data = Payload::encode(&1).unwrap();
    /// let position = Position::new("17a-3").unwrap();
    /// let frame = TBoneEnvelope.encode_event("tick", &data, &position);
    /// assert_eq!(frame, TBoneEnvelope.encode_at("tick", &data, &position));
    /// assert_eq!(frame.position(), Some("17a-3"));
    /// ```
    fn encode_event(&self, event: &str, data: &Payload, position: &Position) -> Frame {
        self.encode_at(event, data, position)
            .with_position(position)
    }

    /// The frame that tells a resuming client that the events it missed
    /// cannot be replayed (its position is older than the history, or from
    /// another epoch), so it must reload. The default is
    /// `{"type":"recovery_failed","position":"<the client's position>"}` (empty
    /// when what the client sent was not a position at all).
    fn recovery_failed(&self, position: &str) -> Frame {
        let mut out = String::from(r#"{"type":"recovery_failed","position":"#);
        push_json_string(&mut out, position);
        out.push('}');
        Frame::from(out)
    }
}

/// The frame of TBone's current source:
/// `{"type":"event","payload":{"name":"<event>","data":<data>}}`, written
/// compactly (TBone's Python writes it with `json.dumps`' spaces, and
/// TBone 0.5.0.4 on PyPI sends `{"event": .., "data": ..}`; a JSON client
/// reads either the same way).
///
/// ```
/// use tbone_dispatch::{Envelope, Payload, TBoneEnvelope};
///
/// let data = Payload::encode(&serde_json::json!({"id": 1})).unwrap();
/// let frame = TBoneEnvelope.encode("resource_create", &data);
/// assert_eq!(
///     frame.as_str(),
///     r#"{"type":"event","payload":{"name":"resource_create","data":{"id":1}}}"#
/// );
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TBoneEnvelope;

const HEAD: &str = r#"{"type":"event","payload":{"name":"#;
const MIDDLE: &str = r#","data":"#;
const TAIL: &str = "}}";

impl TBoneEnvelope {
    /// The frame's length, when the event name needs no escaping.
    fn len(event: &str, data: &Payload) -> usize {
        HEAD.len() + event.len() + 2 + MIDDLE.len() + data.len() + TAIL.len()
    }

    fn write(out: &mut String, event: &str, data: &Payload) {
        out.push_str(HEAD);
        push_json_string(out, event);
        out.push_str(MIDDLE);
        out.push_str(data.as_str());
        out.push_str(TAIL);
    }
}

impl Envelope for TBoneEnvelope {
    fn encode(&self, event: &str, data: &Payload) -> Frame {
        let mut out = String::with_capacity(TBoneEnvelope::len(event, data));
        TBoneEnvelope::write(&mut out, event, data);
        Frame::from(out)
    }

    fn encode_event(&self, event: &str, data: &Payload, position: &Position) -> Frame {
        Frame::at(position, TBoneEnvelope::len(event, data), |out| {
            TBoneEnvelope::write(out, event, data);
        })
    }
}

/// TBone's frame with the event's position beside its payload, for clients
/// that resume after a reconnect:
/// `{"type":"event","payload":{"name":"<event>","data":<data>},"position":"<position>"}`.
/// TBone's own clients ignore the extra key. Events without a position
/// (no history, no backend position) get TBone's frame unchanged.
///
/// ```
/// use tbone_dispatch::{Envelope, Payload, Position, PositionedEnvelope};
///
/// let data = Payload::encode(&1).unwrap();
/// let position = Position::new("17a-3").unwrap();
/// assert_eq!(
///     PositionedEnvelope.encode_at("tick", &data, &position).as_str(),
///     r#"{"type":"event","payload":{"name":"tick","data":1},"position":"17a-3"}"#
/// );
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PositionedEnvelope;

/// What `PositionedEnvelope` writes between the data and the position,
/// and after it.
const POSITION_HEAD: &str = r#"},"position":""#;
const POSITION_TAIL: &str = "\"}";

impl PositionedEnvelope {
    /// The frame's length, when the event name needs no escaping.
    fn len(event: &str, data: &Payload, position: &Position) -> usize {
        HEAD.len()
            + event.len()
            + 2
            + MIDDLE.len()
            + data.len()
            + POSITION_HEAD.len()
            + position.as_str().len()
            + POSITION_TAIL.len()
    }

    fn write(out: &mut String, event: &str, data: &Payload, position: &Position) {
        out.push_str(HEAD);
        push_json_string(out, event);
        out.push_str(MIDDLE);
        out.push_str(data.as_str());
        // A position is printable ASCII without quotes or backslashes.
        out.push_str(POSITION_HEAD);
        out.push_str(position.as_str());
        out.push_str(POSITION_TAIL);
    }
}

impl Envelope for PositionedEnvelope {
    fn encode(&self, event: &str, data: &Payload) -> Frame {
        TBoneEnvelope.encode(event, data)
    }

    fn encode_at(&self, event: &str, data: &Payload, position: &Position) -> Frame {
        let mut out = String::with_capacity(PositionedEnvelope::len(event, data, position));
        PositionedEnvelope::write(&mut out, event, data, position);
        Frame::from(out)
    }

    fn encode_event(&self, event: &str, data: &Payload, position: &Position) -> Frame {
        Frame::at(
            position,
            PositionedEnvelope::len(event, data, position),
            |out| {
                PositionedEnvelope::write(out, event, data, position);
            },
        )
    }
}

/// Appends `text` as a JSON string literal (quotes included), escaping as
/// `serde_json` does.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_escaped_like_serde_json() {
        for name in [
            "plain",
            "quo\"te",
            "back\\slash",
            "new\nline",
            "\u{1}ctl",
            "ünï €",
            "",
        ] {
            let mut ours = String::new();
            push_json_string(&mut ours, name);
            assert_eq!(ours, serde_json::to_string(name).unwrap());
        }
    }

    #[test]
    fn events_are_written_behind_their_position_as_encode_at_writes_them() {
        struct Lines;
        impl Envelope for Lines {
            fn encode(&self, event: &str, data: &Payload) -> Frame {
                Frame::from(format!("{event} {data}"))
            }
        }
        let envelopes: [&dyn Envelope; 3] = [&TBoneEnvelope, &PositionedEnvelope, &Lines];
        let data = Payload::encode(&serde_json::json!({"a": [1, "é"]})).unwrap();
        let position = Position::new("17a-3").unwrap();
        for envelope in envelopes {
            for event in ["tick", "quo\"te", "ünï"] {
                let frame = envelope.encode_event(event, &data, &position);
                let expected = envelope.encode_at(event, &data, &position);
                assert_eq!(frame.as_str(), expected.as_str());
                assert_eq!(frame.position(), Some("17a-3"));
            }
        }
        assert_eq!(
            PositionedEnvelope::len("tick", &data, &position),
            PositionedEnvelope.encode_at("tick", &data, &position).len(),
            "exact capacity"
        );
        assert_eq!(
            TBoneEnvelope::len("tick", &data),
            TBoneEnvelope.encode("tick", &data).len()
        );
    }

    #[test]
    fn default_frame_is_tbone_byte_for_byte() {
        let frame = TBoneEnvelope.encode("resource_update", &Payload::null());
        assert_eq!(
            frame.as_str(),
            r#"{"type":"event","payload":{"name":"resource_update","data":null}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(parsed["payload"]["name"], "resource_update");
    }
}
