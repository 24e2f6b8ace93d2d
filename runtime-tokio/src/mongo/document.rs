//! TBone's document layout, `{_id, key, data}`, and the checks that keep a
//! malformed document written by someone else from reaching a carrier.

use mongodb::bson::{oid::ObjectId, Bson, Document};
use serde_json::{Map, Number, Value};
use tbone_dispatch::tailing::DocumentId;
use tbone_dispatch::{Event, Payload, MAX_DEPTH};

use super::MongoError;

/// The stored form of a published event.
pub(crate) fn to_document(id: ObjectId, event: &Event) -> Result<Document, MongoError> {
    let data: Value = serde_json::from_str(event.data().as_str())
        .map_err(|e| MongoError::Data(format!("event data is not JSON: {e}")))?;
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
            } else if let Some(f) = n.as_f64() {
                Bson::Double(f)
            } else {
                return Err(MongoError::Data(format!("number {n} has no BSON form")));
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

/// The document's `_id`, when it is an ObjectId (the only ids whose order
/// the tailing consumer can reason about).
pub(crate) fn document_id(document: &Document) -> Option<DocumentId> {
    match document.get("_id") {
        Some(Bson::ObjectId(id)) => Some(DocumentId(id.bytes())),
        _ => None,
    }
}

/// The event a stored document carries, or why it must be skipped.
pub(crate) fn to_event(document: &Document, max_payload: usize) -> Result<Event, String> {
    let key = match document.get("key") {
        Some(Bson::String(key)) => key.as_str(),
        Some(other) => {
            return Err(format!(
                "`key` is a {:?}, not a string",
                other.element_type()
            ))
        }
        None => return Err("it has no `key`".to_string()),
    };
    let data = match document.get("data") {
        None | Some(Bson::Null) => return Ok(Event::new(key, Payload::null())),
        Some(data) => bson_to_json(data, 0)?,
    };
    let payload = Payload::encode_with_limit(&data, max_payload)
        .map_err(|e| format!("its `data` is refused: {e}"))?;
    Ok(Event::new(key, payload))
}

fn bson_to_json(value: &Bson, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "its `data` is nested deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(match value {
        Bson::Null => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) => match Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => return Err(format!("its `data` holds {f}, which JSON cannot represent")),
        },
        Bson::String(s) => Value::String(s.clone()),
        // How TBone's serializers render these two.
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::DateTime(t) => Value::String(
            t.try_to_rfc3339_string()
                .map_err(|e| format!("its `data` holds a date out of range: {e}"))?,
        ),
        Bson::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| bson_to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Bson::Document(document) => {
            let mut map = Map::new();
            for (key, value) in document {
                map.insert(key.clone(), bson_to_json(value, depth + 1)?);
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
    use mongodb::bson::{doc, Binary};

    #[test]
    fn round_trips_tbone_documents() {
        let event = Event::new(
            "resource_create",
            Payload::encode(&serde_json::json!({"id": 1, "big": 1i64 << 40, "x": 1.5, "tags": ["a"], "n": null})).unwrap(),
        );
        let document = to_document(ObjectId::new(), &event).unwrap();
        assert_eq!(document.get_str("key").unwrap(), "resource_create");
        assert!(matches!(document.get("data"), Some(Bson::Document(_))));
        let back = to_event(&document, 1 << 20).unwrap();
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
        assert!(to_event(&doc! {"_id": id, "data": 1}, 1024).is_err());
        assert!(to_event(&doc! {"_id": id, "key": 5, "data": 1}, 1024).is_err());
        assert!(to_event(&doc! {"_id": id, "key": "k", "data": f64::NAN}, 1024).is_err());
        let binary = Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Generic,
            bytes: vec![1, 2],
        };
        assert!(to_event(&doc! {"_id": id, "key": "k", "data": {"b": binary}}, 1024).is_err());
        assert!(to_event(
            &doc! {"_id": id, "key": "k", "data": "x".repeat(2000)},
            1024
        )
        .is_err());
        let missing = to_event(&doc! {"_id": id, "key": "k"}, 1024).unwrap();
        assert_eq!(missing.data().as_str(), "null");
        assert_eq!(document_id(&doc! {"_id": 3}), None);
        assert_eq!(document_id(&doc! {"_id": id}), Some(DocumentId(id.bytes())));
    }
}
