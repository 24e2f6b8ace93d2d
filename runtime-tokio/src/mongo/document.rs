//! TBone's document layout, `{_id, key, data}`, and the checks that keep a
//! malformed document written by someone else from reaching a carrier.

use mongodb::bson::{oid::ObjectId, Bson, Document, RawBsonRef, RawDocument};
use serde_json::{Map, Number, Value};
use tbone_dispatch::tailing::DocumentId;
use tbone_dispatch::{Event, Payload, MAX_DEPTH};

use super::MongoError;

/// The stored form of a published event.
pub(crate) fn to_document(id: ObjectId, event: &Event) -> Result<Document, MongoError> {
    let data: Value = serde_json::from_str(event.data().as_str())
        .map_err(|e| MongoError::data("event data is not JSON", e))?;
    let mut document = Document::new();
    document.insert("_id", id);
    document.insert("key", event.key());
    document.insert("data", json_to_bson(data)?);
    Ok(document)
}

fn json_to_bson(value: Value) -> Result<Bson, MongoError> {
    Ok(match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                match i32::try_from(i) {
                    Ok(small) => Bson::Int32(small),
                    Err(_) => Bson::Int64(i),
                }
            } else if n.is_u64() {
                // BSON has no unsigned 64-bit integer: as a double it would
                // reach subscribers changed (and differ from what a memory
                // channel delivers).
                return Err(MongoError::refused(format!(
                    "the integer {n} is above i64::MAX, which MongoDB cannot store exactly; send it as a string"
                )));
            } else if let Some(f) = n.as_f64() {
                Bson::Double(f)
            } else {
                return Err(MongoError::refused(format!("number {n} has no BSON form")));
            }
        }
        Value::String(s) => Bson::String(s),
        Value::Array(items) => Bson::Array(
            items
                .into_iter()
                .map(json_to_bson)
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut document = Document::new();
            for (key, value) in map {
                document.insert(key, json_to_bson(value)?);
            }
            Bson::Document(document)
        }
    })
}

// Documents are read raw (`RawDocumentBuf`) and converted here with an
// explicit depth limit: deserializing a `Document` recurses once per level
// of nesting, and a document nested a hundred-odd levels deep, written by
// anyone, overflowed a tokio worker's stack in the driver's cursor and
// aborted the process (found by the soak suite's fuzzing).

/// The document's `_id`, when it is an ObjectId (the only ids whose order
/// the tailing consumer can reason about).
pub(crate) fn document_id(document: &RawDocument) -> Option<DocumentId> {
    match document.get("_id") {
        Ok(Some(RawBsonRef::ObjectId(id))) => Some(DocumentId(id.bytes())),
        _ => None,
    }
}

/// The event a stored document carries, or why it must be skipped.
pub(crate) fn to_event(document: &RawDocument, max_payload: usize) -> Result<Event, String> {
    let field = |name: &str| {
        document
            .get(name)
            .map_err(|e| format!("it is not valid BSON: {e}"))
    };
    let key = match field("key")? {
        Some(RawBsonRef::String(key)) => key,
        Some(other) => {
            return Err(format!(
                "`key` is a {:?}, not a string",
                other.element_type()
            ))
        }
        None => return Err("it has no `key`".to_string()),
    };
    let data = match field("data")? {
        None | Some(RawBsonRef::Null) => return Ok(Event::new(key, Payload::null())),
        Some(data) => bson_to_json(data, 0)?,
    };
    let payload = Payload::encode_with_limit(&data, max_payload)
        .map_err(|e| format!("its `data` is refused: {e}"))?;
    Ok(Event::new(key, payload))
}

fn bson_to_json(value: RawBsonRef<'_>, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "its `data` is nested deeper than {MAX_DEPTH} levels"
        ));
    }
    let malformed = |e: mongodb::bson::raw::Error| format!("its `data` is not valid BSON: {e}");
    Ok(match value {
        RawBsonRef::Null => Value::Null,
        RawBsonRef::Boolean(b) => Value::Bool(b),
        RawBsonRef::Int32(i) => Value::from(i),
        RawBsonRef::Int64(i) => Value::from(i),
        RawBsonRef::Double(f) => match Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None => return Err(format!("its `data` holds {f}, which JSON cannot represent")),
        },
        RawBsonRef::String(s) => Value::String(s.to_owned()),
        // How TBone's serializers render these two.
        RawBsonRef::ObjectId(id) => Value::String(id.to_hex()),
        RawBsonRef::DateTime(t) => Value::String(
            t.try_to_rfc3339_string()
                .map_err(|e| format!("its `data` holds a date out of range: {e}"))?,
        ),
        RawBsonRef::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| bson_to_json(item.map_err(malformed)?, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        RawBsonRef::Document(document) => {
            let mut map = Map::new();
            for entry in document {
                let (key, value) = entry.map_err(malformed)?;
                map.insert(key.to_owned(), bson_to_json(value, depth + 1)?);
            }
            Value::Object(map)
        }
        other => {
            return Err(format!(
                "its `data` holds a BSON {:?}, which has no JSON form",
                other.element_type()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, Binary, RawDocumentBuf};

    fn raw(document: &Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(document).unwrap()
    }

    #[test]
    fn round_trips_tbone_documents() {
        let event = Event::new(
            "resource_create",
            Payload::encode(&serde_json::json!({"id": 1, "big": 1i64 << 40, "x": 1.5, "tags": ["a"], "n": null})).unwrap(),
        );
        let document = to_document(ObjectId::new(), &event).unwrap();
        assert_eq!(document.get_str("key").unwrap(), "resource_create");
        assert!(matches!(document.get("data"), Some(Bson::Document(_))));
        let back = to_event(&raw(&document), 1 << 20).unwrap();
        assert_eq!(back.key(), "resource_create");
        let value: Value = serde_json::from_str(back.data().as_str()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id": 1, "big": 1i64 << 40, "x": 1.5, "tags": ["a"], "n": null})
        );
    }

    #[test]
    fn refuses_documents_a_carrier_must_not_see() {
        let id = ObjectId::new();
        assert!(to_event(&raw(&doc! {"_id": id, "data": 1}), 1024).is_err());
        assert!(to_event(&raw(&doc! {"_id": id, "key": 5, "data": 1}), 1024).is_err());
        assert!(to_event(&raw(&doc! {"_id": id, "key": "k", "data": f64::NAN}), 1024).is_err());
        let binary = Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Generic,
            bytes: vec![1, 2],
        };
        assert!(to_event(
            &raw(&doc! {"_id": id, "key": "k", "data": {"b": binary}}),
            1024
        )
        .is_err());
        assert!(to_event(
            &raw(&doc! {"_id": id, "key": "k", "data": "x".repeat(2000)}),
            1024
        )
        .is_err());
        let missing = to_event(&raw(&doc! {"_id": id, "key": "k"}), 1024).unwrap();
        assert_eq!(missing.data().as_str(), "null");
        assert_eq!(document_id(&raw(&doc! {"_id": 3})), None);
        assert_eq!(
            document_id(&raw(&doc! {"_id": id})),
            Some(DocumentId(id.bytes()))
        );
    }

    /// `{"key": "k", "data": {"d": {"d": ... 1}}}`, `levels` deep, built as
    /// bytes (building a `Document` that deep would itself recurse).
    fn nested(levels: usize) -> RawDocumentBuf {
        fn document(elements: &[u8]) -> Vec<u8> {
            let mut bytes = ((elements.len() + 5) as i32).to_le_bytes().to_vec();
            bytes.extend_from_slice(elements);
            bytes.push(0);
            bytes
        }
        let mut inner = document(&[&[0x10, b'd', 0][..], &1i32.to_le_bytes()].concat());
        for _ in 1..levels {
            inner = document(&[&[0x03, b'd', 0][..], &inner].concat());
        }
        let mut top = vec![0x02, b'k', b'e', b'y', 0];
        top.extend_from_slice(&2i32.to_le_bytes());
        top.extend_from_slice(b"k\0");
        top.extend_from_slice(&[0x03, b'd', b'a', b't', b'a', 0]);
        top.extend_from_slice(&inner);
        RawDocumentBuf::from_bytes(document(&top)).unwrap()
    }

    /// Found by the soak suite's fuzzing: a document nested 120 levels deep,
    /// inserted by anyone, overflowed the stack of the tokio worker running
    /// the tailing task (in the driver's `Document` deserialization) and
    /// aborted the process. Raw documents are converted with a bounded
    /// depth, so the stack a conversion needs does not grow with the input.
    #[test]
    fn deep_documents_are_refused_within_a_small_stack() {
        let deep = nested(2_000);
        let shallow = nested(MAX_DEPTH);
        let converted = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || (to_event(&deep, 1 << 20), to_event(&shallow, 1 << 20)))
            .unwrap()
            .join()
            .expect("converting nested documents must not overflow the stack");
        let error = converted.0.unwrap_err();
        assert!(error.contains("nested deeper"), "{error}");
        let event = converted.1.unwrap();
        assert_eq!(event.key(), "k");
        assert!(event.data().as_str().starts_with(r#"{"d":{"d":"#));
    }
}
