//! The entry layout, `{key, data}` with `data` the event's JSON text, and
//! the checks that keep a malformed entry written by someone else from
//! reaching a carrier.

use redis::Value;
use tbone_dispatch::{Event, Payload};

use crate::StreamId;

/// The field holding the event's name.
pub(crate) const KEY: &str = "key";
/// The field holding the event's data, as JSON text.
pub(crate) const DATA: &str = "data";

/// One entry read from the stream: its id, and the event it carries or why
/// it must be skipped.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: StreamId,
    pub(crate) event: Result<Event, String>,
}

/// `[id, [field, value, ...]]`: the id must be readable (the position
/// depends on it); anything wrong with the fields only skips the entry.
pub(crate) fn entry(item: Value, max_payload: usize) -> Result<Entry, String> {
    let Value::Array(mut parts) = item else {
        return Err(shorten(&item));
    };
    if parts.len() != 2 {
        return Err(format!("an entry of {} parts", parts.len()));
    }
    let fields = parts.pop().unwrap_or(Value::Nil);
    let id = match parts.pop() {
        Some(Value::BulkString(id)) => StreamId::from_bytes(&id),
        Some(Value::SimpleString(id)) => id.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| "an entry without a readable id".to_string())?;
    Ok(Entry {
        id,
        event: to_event(fields, max_payload),
    })
}

/// The event an entry's fields carry, or why it must be skipped. Fields
/// other than `key` and `data` are ignored.
pub(crate) fn to_event(fields: Value, max_payload: usize) -> Result<Event, String> {
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut flat = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                pairs.push((name, value));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        other => return Err(format!("its fields are {}", shorten(&other))),
    };
    let (mut key, mut data) = (None, None);
    for (name, value) in pairs {
        match text(&name) {
            Some(KEY) => key = Some(value),
            Some(DATA) => data = Some(value),
            _ => {}
        }
    }
    let key = key.ok_or("it has no `key` field")?;
    let key = text(&key).ok_or("its `key` is not UTF-8 text")?;
    if key.is_empty() {
        return Err("its `key` is empty".into());
    }
    let data = data.ok_or("it has no `data` field")?;
    let data = text(&data).ok_or("its `data` is not UTF-8 text")?;
    let payload = Payload::from_json_with_limit(data, max_payload)
        .map_err(|e| format!("its `data` is refused: {e}"))?;
    Ok(Event::new(key, payload))
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// A reply in a log message: its shape, at most a line.
pub(crate) fn shorten(value: &Value) -> String {
    cut(format!("{value:?}"), 120)
}

/// `text` cut to at most `max` bytes (and `...`) on a character boundary:
/// replies from a server may hold any text.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_cut_on_a_character_boundary() {
        // 199 bytes, then a two-byte character across the 200th byte.
        let text = format!("{}é and more", "x".repeat(199));
        assert_eq!(cut(text, 200), format!("{}...", "x".repeat(199)));
        assert_eq!(cut("short".into(), 200), "short");
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn fields(pairs: &[(&str, &str)]) -> Value {
        Value::Array(
            pairs
                .iter()
                .flat_map(|(name, value)| [bulk(name), bulk(value)])
                .collect(),
        )
    }

    #[test]
    fn reads_entries_and_their_events() {
        let read = entry(
            Value::Array(vec![
                bulk("5-1"),
                fields(&[("key", "e"), ("data", r#"{"id":1}"#)]),
            ]),
            1024,
        )
        .unwrap();
        assert_eq!(read.id, StreamId::new(5, 1));
        let event = read.event.as_ref().unwrap();
        assert_eq!((event.key(), event.data().as_str()), ("e", r#"{"id":1}"#));
        let skipped = entry(
            Value::Array(vec![bulk("6-0"), fields(&[("key", "e")])]),
            1024,
        );
        assert_eq!(skipped.unwrap().id, StreamId::new(6, 0));
        assert!(entry(Value::Int(3), 1024).is_err());
        assert!(entry(Value::Array(vec![bulk("x"), fields(&[])]), 1024).is_err());
    }

    #[test]
    fn refuses_entries_a_carrier_must_not_see() {
        let refused = |pairs: &[(&str, &str)]| to_event(fields(pairs), 64).unwrap_err();
        assert!(refused(&[("data", "1")]).contains("no `key`"));
        assert!(refused(&[("key", "e")]).contains("no `data`"));
        assert!(refused(&[("key", ""), ("data", "1")]).contains("empty"));
        assert!(refused(&[("key", "e"), ("data", "{oops")]).contains("refused"));
        assert!(refused(&[("key", "e"), ("data", &"1".repeat(65))]).contains("refused"));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(to_event(fields(&[("key", "e"), ("data", &deep)]), 1 << 20).is_err());
        let binary = Value::Array(vec![
            bulk("key"),
            Value::BulkString(vec![0xff, 0xfe]),
            bulk("data"),
            bulk("1"),
        ]);
        assert!(to_event(binary, 64).unwrap_err().contains("UTF-8"));
        let extra = to_event(fields(&[("key", "e"), ("data", "2"), ("by", "x")]), 64).unwrap();
        assert_eq!(extra.data().as_str(), "2");
    }
}
