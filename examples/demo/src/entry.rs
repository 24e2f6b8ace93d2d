//! The chat entry model and the validation of request bodies.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest accepted author, in characters (after trimming).
pub const MAX_AUTHOR_CHARS: usize = 64;
/// Longest accepted text, in characters (after trimming).
pub const MAX_TEXT_CHARS: usize = 2000;

/// One chat entry. Stored as a
/// [`Record<Entry>`](tbone_dispatch_tokio::mongo::Record), which serializes
/// as `{"_id": "<24 hex>", "author": ..., "text": ...}`; the type is also
/// the [`Sender`](tbone_dispatch_tokio::Sender) of its model signals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Who wrote it: 1 to 64 characters, trimmed.
    pub author: String,
    /// What they wrote: 1 to 2000 characters, trimmed.
    pub text: String,
}

/// A partial update (`PATCH`): the fields to change, already validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryPatch {
    /// The new author, if it changes.
    pub author: Option<String>,
    /// The new text, if it changes.
    pub text: Option<String>,
}

impl EntryPatch {
    /// Applies the patch to `entry`.
    pub fn apply(&self, entry: &mut Entry) {
        if let Some(author) = &self.author {
            entry.author.clone_from(author);
        }
        if let Some(text) = &self.text {
            entry.text.clone_from(text);
        }
    }
}

/// Why a request body is not a valid entry; the message is what the client
/// reads in `{"error": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The body is JSON but not an object.
    #[error("the body must be a JSON object with \"author\" and \"text\"")]
    NotAnObject,
    /// A required field is absent.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A field is not a string.
    #[error("{0} must be a string")]
    NotAString(&'static str),
    /// A field is empty or only whitespace.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A field is longer than allowed.
    #[error("{field} must be at most {max} characters (got {len})")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in characters, after trimming.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A `PATCH` that changes nothing.
    #[error("nothing to update: give \"author\", \"text\" or both")]
    NothingToUpdate,
}

const FIELDS: [(&str, usize); 2] = [("author", MAX_AUTHOR_CHARS), ("text", MAX_TEXT_CHARS)];

/// Validates one field if present: a string, non-empty once trimmed, at
/// most `max` characters. Returns the trimmed value.
fn field(
    body: &Map<String, Value>,
    name: &'static str,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    let Some(value) = body.get(name) else {
        return Ok(None);
    };
    let Value::String(value) = value else {
        return Err(ValidationError::NotAString(name));
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(ValidationError::Empty(name));
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValidationError::TooLong {
            field: name,
            len,
            max,
        });
    }
    Ok(Some(value.to_string()))
}

fn object(body: &Value) -> Result<&Map<String, Value>, ValidationError> {
    body.as_object().ok_or(ValidationError::NotAnObject)
}

impl Entry {
    /// A complete entry from a `POST` or `PUT` body: both fields required.
    /// Other fields (such as `_id`) are ignored.
    pub fn from_body(body: &Value) -> Result<Entry, ValidationError> {
        let body = object(body)?;
        let [(author, max_author), (text, max_text)] = FIELDS;
        let author = field(body, author, max_author)?.ok_or(ValidationError::Missing(author))?;
        let text = field(body, text, max_text)?.ok_or(ValidationError::Missing(text))?;
        Ok(Entry { author, text })
    }
}

impl EntryPatch {
    /// A partial update from a `PATCH` body: at least one field.
    pub fn from_body(body: &Value) -> Result<EntryPatch, ValidationError> {
        let body = object(body)?;
        let [(author, max_author), (text, max_text)] = FIELDS;
        let patch = EntryPatch {
            author: field(body, author, max_author)?,
            text: field(body, text, max_text)?,
        };
        if patch == EntryPatch::default() {
            return Err(ValidationError::NothingToUpdate);
        }
        Ok(patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trims_and_counts_characters() {
        let entry = Entry::from_body(&json!({"author": "  ann ", "text": "é".repeat(2000)}));
        let entry = entry.unwrap();
        assert_eq!(entry.author, "ann");
        assert_eq!(entry.text.chars().count(), 2000);
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            (
                json!([1]),
                "the body must be a JSON object with \"author\" and \"text\"",
            ),
            (json!({"text": "x"}), "author is required"),
            (json!({"author": "a"}), "text is required"),
            (json!({"author": 5, "text": "x"}), "author must be a string"),
            (
                json!({"author": " ", "text": "x"}),
                "author must not be empty",
            ),
            (
                json!({"author": "a".repeat(65), "text": "x"}),
                "author must be at most 64 characters (got 65)",
            ),
        ];
        for (body, message) in cases {
            assert_eq!(Entry::from_body(&body).unwrap_err().to_string(), message);
        }
        assert_eq!(
            EntryPatch::from_body(&json!({"other": 1})).unwrap_err(),
            ValidationError::NothingToUpdate
        );
        assert_eq!(
            EntryPatch::from_body(&json!({"text": null})).unwrap_err(),
            ValidationError::NotAString("text")
        );
    }

    #[test]
    fn patch_applies_given_fields_only() {
        let mut entry = Entry {
            author: "ann".into(),
            text: "hi".into(),
        };
        EntryPatch::from_body(&json!({"text": "bye"}))
            .unwrap()
            .apply(&mut entry);
        assert_eq!(entry.author, "ann");
        assert_eq!(entry.text, "bye");
    }
}
