//! The control messages the model recognizes, parsed independently of
//! the library's own parser.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// A control message, as the server must understand it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    Subscribe(String),
    Unsubscribe(String),
    /// Names a channel the socket is not served on (fuzzed sockets are
    /// served on one channel, whose name no generated message spells).
    OtherChannel,
    /// `{"action":"resume",..}` on a socket not served with resume
    /// messages: an error frame, and the socket stays.
    Resume,
}

/// The top level of a JSON text, with an object's entries in order and
/// duplicates kept (a duplicated field makes a control message malformed).
enum Shape {
    Object(Vec<(String, Value)>),
    Array,
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Shape::Object(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Shape::Array)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
        }
        deserializer.deserialize_any(ShapeVisitor)
    }
}

/// The oracle for control messages: `{"action":"subscribe"|"unsubscribe",
/// "event":"<name>"}` or `{"action":"resume","position":"<pos>"|null}`, each
/// with an optional `"channel":"<name>"|null`, fields in any order, no other
/// or repeated field. A JSON object only, and the action a string: serde's
/// array spelling of a struct (`["subscribe","<name>"]`) and its map
/// spelling of a unit variant (`{"action":{"subscribe":null}}`) are not
/// control messages.
pub(crate) fn parse_control(text: &str) -> Option<Control> {
    let Shape::Object(entries) = serde_json::from_str::<Shape>(text).ok()? else {
        return None;
    };
    let field = |name: &str| {
        let mut found = entries.iter().filter(|(k, _)| k == name);
        let first = found.next();
        match (first, found.next()) {
            (Some((_, value)), None) => Ok(Some(value)),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(()),
        }
    };
    let optional_text = |name: &str| match field(name) {
        Ok(None | Some(Value::Null)) => Some(None),
        Ok(Some(Value::String(text))) => Some(Some(text.clone())),
        _ => None,
    };
    let action = match field("action").ok()?? {
        Value::String(action) => action.as_str(),
        _ => return None,
    };
    let known: &[&str] = match action {
        "subscribe" | "unsubscribe" => &["action", "event", "channel"],
        "resume" => &["action", "position", "channel"],
        _ => return None,
    };
    if entries.iter().any(|(k, _)| !known.contains(&k.as_str())) {
        return None;
    }
    let channel = optional_text("channel")?;
    if action == "resume" {
        optional_text("position")?;
        return Some(Control::Resume);
    }
    let event = field("event").ok()??.as_str()?.to_string();
    Some(match (channel, action == "subscribe") {
        (Some(_), _) => Control::OtherChannel,
        (None, true) => Control::Subscribe(event),
        (None, false) => Control::Unsubscribe(event),
    })
}
