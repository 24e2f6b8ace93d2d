//! Event data, validated once as JSON text.

use std::cell::Cell;
use std::fmt;
use std::io;

use bytes::Bytes;
use serde::ser::{self, Serialize, Serializer};

/// Deepest nesting of arrays and objects accepted in event data. Matches
/// `serde_json`'s own limit when it parses (its recursion limit of 128 stops
/// at the 128th level), so whatever we accept can be read back by any
/// consumer using the default settings. The envelope adds its own levels
/// around the data (two for [`TBoneEnvelope`](crate::TBoneEnvelope)).
pub const MAX_DEPTH: usize = 127;

/// Default limit on the encoded size of one event's data (1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// The data of one event, encoded as compact JSON text exactly once.
///
/// A `Payload` can only be built from values that are valid JSON: encoding
/// refuses NaN and infinities (which `serde_json` would silently turn into
/// `null`), map keys that are not strings, numbers or booleans, nesting
/// deeper than [`MAX_DEPTH`], and data larger than the given limit.
///
/// ```
/// use std::collections::BTreeMap;
/// use tbone_dispatch::{Payload, PayloadError};
///
/// let data = Payload::encode(&serde_json::json!({"id": 7, "text": "hi"})).unwrap();
/// assert_eq!(data.as_str(), r#"{"id":7,"text":"hi"}"#);
///
/// assert!(matches!(Payload::encode(&f64::NAN), Err(PayloadError::NonFinite)));
///
/// let mut by_point = BTreeMap::new();
/// by_point.insert((1, 2), "a tuple is no JSON key");
/// assert!(matches!(Payload::encode(&by_point), Err(PayloadError::Invalid(_))));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Bytes);

/// Why event data could not be turned into a [`Payload`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// A float was NaN or infinite; JSON has no representation for it.
    #[error("the data holds a NaN or infinite number, which JSON cannot represent; replace it (for example with null) before publishing")]
    NonFinite,
    /// Arrays or objects nested deeper than [`MAX_DEPTH`].
    #[error("the data is nested more than {max} levels deep; flatten it before publishing")]
    TooDeep {
        /// The limit that was crossed.
        max: usize,
    },
    /// The encoded data is larger than the limit.
    #[error("the encoded data is larger than the limit of {max} bytes; send a reference to the data instead, or raise the channel's max_payload_bytes")]
    TooLarge {
        /// The limit that was crossed.
        max: usize,
    },
    /// Anything else `serde_json` refused: a map key that is not a string,
    /// a failing `Serialize` implementation, text that is not JSON.
    #[error("the data is not representable as JSON: {0}")]
    Invalid(#[source] serde_json::Error),
}

impl Payload {
    /// Encodes `data` as compact JSON, with the default size limit
    /// ([`DEFAULT_MAX_PAYLOAD`]).
    pub fn encode<T: Serialize + ?Sized>(data: &T) -> Result<Self, PayloadError> {
        Self::encode_with_limit(data, DEFAULT_MAX_PAYLOAD)
    }

    /// Encodes `data` as compact JSON, refusing more than `max_bytes`.
    pub fn encode_with_limit<T: Serialize + ?Sized>(
        data: &T,
        max_bytes: usize,
    ) -> Result<Self, PayloadError> {
        let problem = Cell::new(None);
        let mut writer = LimitedWriter {
            buf: Vec::with_capacity(64),
            max: max_bytes,
        };
        let checked = Checked {
            value: data,
            depth: 0,
            problem: &problem,
        };
        let result = checked.serialize(&mut serde_json::Serializer::new(&mut writer));
        if let Some(problem) = problem.take() {
            return Err(problem);
        }
        if let Err(err) = result {
            if err.is_io() {
                return Err(PayloadError::TooLarge { max: max_bytes });
            }
            return Err(PayloadError::Invalid(err));
        }
        Ok(Payload(Bytes::from(writer.buf)))
    }

    /// Takes JSON text from outside (a stored document, a client) after
    /// checking that it is one well-formed JSON value within the depth and
    /// size limits. The text is kept as given, not re-encoded.
    ///
    /// ```
    /// use tbone_dispatch::Payload;
    ///
    /// assert_eq!(Payload::from_json("[1, 2]").unwrap().as_str(), "[1, 2]");
    /// assert!(Payload::from_json("{oops").is_err());
    /// ```
    pub fn from_json(text: &str) -> Result<Self, PayloadError> {
        Self::from_json_with_limit(text, DEFAULT_MAX_PAYLOAD)
    }

    /// [`Payload::from_json`] with an explicit size limit.
    pub fn from_json_with_limit(text: &str, max_bytes: usize) -> Result<Self, PayloadError> {
        if text.len() > max_bytes {
            return Err(PayloadError::TooLarge { max: max_bytes });
        }
        // Checked before parsing, so hostile nesting never reaches a
        // recursive parser.
        if nesting_depth(text) > MAX_DEPTH {
            return Err(PayloadError::TooDeep { max: MAX_DEPTH });
        }
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(PayloadError::Invalid)?;
        Ok(Payload(Bytes::copy_from_slice(text.as_bytes())))
    }

    /// `text`, which is a copy of a payload's text (a history's copy of an
    /// event's data): checked to be UTF-8, not parsed again. Anything else
    /// (never, short of a bug) becomes `null`, logged.
    pub(crate) fn copied(text: Vec<u8>) -> Self {
        match String::from_utf8(text) {
            Ok(text) => Payload(Bytes::from(text)),
            Err(error) => {
                tracing::error!(%error, "a copy of event data is not UTF-8; replaced by null");
                Payload::null()
            }
        }
    }

    /// The JSON `null`: the data of an event published without data.
    pub fn null() -> Self {
        Payload(Bytes::from_static(b"null"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        // SAFETY: built only from serde_json output or from a `&str`, both
        // valid UTF-8, and never mutated.
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: the shortest JSON value is one byte. Present for
    /// symmetry with [`Payload::len`].
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the JSON text into a typed value.
    pub fn decode<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Payload").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deepest nesting of arrays and objects in JSON text (brackets inside
/// strings do not count). Malformed text gets some number; the parser
/// rejects it afterwards.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

struct LimitedWriter {
    buf: Vec<u8>,
    max: usize,
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(io::Error::other("payload too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// serde_json writes NaN and infinities as `null` and has no depth limit when
// serializing, so every value passes through this wrapper, which checks
// floats and depth on the way and forwards everything else unchanged.
struct Checked<'a, T: ?Sized> {
    value: &'a T,
    depth: usize,
    problem: &'a Cell<Option<PayloadError>>,
}

impl<T: Serialize + ?Sized> Serialize for Checked<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Checker {
            inner: serializer,
            depth: self.depth,
            problem: self.problem,
        })
    }
}

struct Checker<'a, S> {
    inner: S,
    depth: usize,
    problem: &'a Cell<Option<PayloadError>>,
}

impl<'a, S> Checker<'a, S> {
    fn fail<E: ser::Error>(&self, problem: PayloadError) -> E {
        let message = problem.to_string();
        self.problem.set(Some(problem));
        E::custom(message)
    }

    fn wrap<'v, T: ?Sized>(&self, value: &'v T) -> Checked<'v, T>
    where
        'a: 'v,
    {
        Checked {
            value,
            depth: self.depth,
            problem: self.problem,
        }
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
            self.inner.$method(v)
        })*
    };
}

// `$levels`: how many levels of JSON the compound opens (two for tuple and
// struct variants, which serde_json writes as `{"Variant":[..]}` and
// `{"Variant":{..}}`), so that the depth counted is the depth of the text.
macro_rules! open_compound {
    ($self:ident, $levels:expr, $method:ident($($arg:expr),*)) => {{
        let (depth, problem) = ($self.depth, $self.problem);
        if depth + $levels > MAX_DEPTH {
            return Err($self.fail(PayloadError::TooDeep { max: MAX_DEPTH }));
        }
        let inner = $self.inner.$method($($arg),*)?;
        Ok(Compound {
            inner,
            depth: depth + $levels,
            problem,
        })
    }};
}

impl<'a, S: Serializer> Serializer for Checker<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_unit_struct(&'static str),
    );

    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        // serde_json writes bytes as an array of numbers: one level.
        if self.depth >= MAX_DEPTH {
            return Err(self.fail(PayloadError::TooDeep { max: MAX_DEPTH }));
        }
        self.inner.serialize_bytes(v)
    }

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if !v.is_finite() {
            return Err(self.fail(PayloadError::NonFinite));
        }
        self.inner.serialize_f32(v)
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if !v.is_finite() {
            return Err(self.fail(PayloadError::NonFinite));
        }
        self.inner.serialize_f64(v)
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let wrapped = self.wrap(value);
        self.inner.serialize_some(&wrapped)
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let wrapped = self.wrap(value);
        self.inner.serialize_newtype_struct(name, &wrapped)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.fail(PayloadError::TooDeep { max: MAX_DEPTH }));
        }
        let wrapped = Checked {
            value,
            depth: self.depth + 1,
            problem: self.problem,
        };
        self.inner
            .serialize_newtype_variant(name, index, variant, &wrapped)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        open_compound!(self, 1, serialize_seq(len))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        open_compound!(self, 1, serialize_tuple(len))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        open_compound!(self, 1, serialize_tuple_struct(name, len))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        open_compound!(self, 2, serialize_tuple_variant(name, index, variant, len))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        open_compound!(self, 1, serialize_map(len))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        open_compound!(self, 1, serialize_struct(name, len))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        open_compound!(self, 2, serialize_struct_variant(name, index, variant, len))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

struct Compound<'a, C> {
    inner: C,
    depth: usize,
    problem: &'a Cell<Option<PayloadError>>,
}

impl<C> Compound<'_, C> {
    fn wrap<'v, T: ?Sized>(&self, value: &'v T) -> Checked<'v, T>
    where
        Self: 'v,
    {
        Checked {
            value,
            depth: self.depth,
            problem: self.problem,
        }
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident) => {
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                let wrapped = self.wrap(value);
                self.inner.$method(&wrapped)
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        let wrapped = self.wrap(key);
        self.inner.serialize_key(&wrapped)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let wrapped = self.wrap(value);
        self.inner.serialize_value(&wrapped)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

macro_rules! compound_fields {
    ($trait:ident) => {
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), C::Error> {
                let wrapped = self.wrap(value);
                self.inner.serialize_field(key, &wrapped)
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.inner.skip_field(key)
            }

            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    };
}

compound_fields!(SerializeStruct);
compound_fields!(SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn encodes_compact_json() {
        let p = Payload::encode(&serde_json::json!({"a": [1, 2.5, null, "x"]})).unwrap();
        assert_eq!(p.as_str(), r#"{"a":[1,2.5,null,"x"]}"#);
        assert_eq!(Payload::encode(&()).unwrap().as_str(), "null");
        assert_eq!(Payload::encode(&None::<u8>).unwrap().as_str(), "null");
    }

    #[test]
    fn refuses_non_finite_floats_anywhere() {
        assert!(matches!(
            Payload::encode(&f64::NAN),
            Err(PayloadError::NonFinite)
        ));
        assert!(matches!(
            Payload::encode(&f32::INFINITY),
            Err(PayloadError::NonFinite)
        ));
        assert!(matches!(
            Payload::encode(&vec![1.0, f64::NEG_INFINITY]),
            Err(PayloadError::NonFinite)
        ));
        assert!(matches!(
            Payload::encode(&Some(f64::NAN)),
            Err(PayloadError::NonFinite)
        ));
        let mut m = HashMap::new();
        m.insert("k", vec![Some(f64::NAN)]);
        assert!(matches!(Payload::encode(&m), Err(PayloadError::NonFinite)));
    }

    #[test]
    fn refuses_non_scalar_map_keys() {
        let mut m = BTreeMap::new();
        m.insert(vec![1], 1);
        assert!(matches!(Payload::encode(&m), Err(PayloadError::Invalid(_))));
        // Integer keys have a canonical string form, as in Python's json.
        let mut n = BTreeMap::new();
        n.insert(3, "x");
        assert_eq!(Payload::encode(&n).unwrap().as_str(), r#"{"3":"x"}"#);
    }

    #[test]
    fn refuses_deep_nesting_and_large_data() {
        let mut v = serde_json::Value::Null;
        for _ in 0..MAX_DEPTH + 1 {
            v = serde_json::Value::Array(vec![v]);
        }
        assert!(matches!(
            Payload::encode(&v),
            Err(PayloadError::TooDeep { .. })
        ));
        let big = "x".repeat(100);
        assert!(matches!(
            Payload::encode_with_limit(&big, 50),
            Err(PayloadError::TooLarge { max: 50 })
        ));
        assert!(Payload::encode_with_limit(&big, 102).is_ok());
    }

    #[test]
    fn accepts_nesting_at_the_limit() {
        let mut v = serde_json::Value::Null;
        for _ in 0..MAX_DEPTH {
            v = serde_json::Value::Array(vec![v]);
        }
        let p = Payload::encode(&v).unwrap();
        assert!(Payload::from_json(p.as_str()).is_ok());
        // Found by the soak suite's fuzzing: the limit was 128, one level
        // more than serde_json reads with its default settings.
        assert!(serde_json::from_str::<serde_json::Value>(p.as_str()).is_ok());
        let deeper = serde_json::Value::Array(vec![v]);
        assert!(serde_json::from_str::<serde_json::Value>(&deeper.to_string()).is_err());
        assert!(matches!(
            Payload::encode(&deeper),
            Err(PayloadError::TooDeep { .. })
        ));
    }

    #[test]
    fn depth_is_the_depth_of_the_json_text() {
        // Found by the soak suite's fuzzing: tuple and struct variants are
        // two levels of JSON and bytes one, yet were counted as one and
        // zero, so data serde_json cannot read back was accepted.
        #[derive(serde::Serialize)]
        enum Nest {
            Tuple(Box<Nest>, u8),
            Struct { inner: Box<Nest> },
            Leaf,
        }
        let tuples = |n: usize| (0..n).fold(Nest::Leaf, |d, _| Nest::Tuple(Box::new(d), 0));
        let structs =
            |n: usize| (0..n).fold(Nest::Leaf, |d, _| Nest::Struct { inner: Box::new(d) });
        for at_limit in [tuples(MAX_DEPTH / 2), structs(MAX_DEPTH / 2)] {
            let p = Payload::encode(&at_limit).unwrap();
            assert!(serde_json::from_str::<serde_json::Value>(p.as_str()).is_ok());
        }
        for over in [tuples(MAX_DEPTH / 2 + 1), structs(MAX_DEPTH / 2 + 1)] {
            assert!(matches!(
                Payload::encode(&over),
                Err(PayloadError::TooDeep { .. })
            ));
        }

        /// Bytes inside `.0` arrays.
        struct BytesIn(usize);
        impl Serialize for BytesIn {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                if self.0 == 0 {
                    return s.serialize_bytes(&[0xff, 0xfe]);
                }
                let mut seq = s.serialize_seq(Some(1))?;
                seq.serialize_element(&BytesIn(self.0 - 1))?;
                seq.end()
            }
        }
        let p = Payload::encode(&BytesIn(MAX_DEPTH - 1)).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(p.as_str()).is_ok());
        assert!(matches!(
            Payload::encode(&BytesIn(MAX_DEPTH)),
            Err(PayloadError::TooDeep { .. })
        ));
    }

    #[test]
    fn from_json_checks_text() {
        assert!(Payload::from_json("{\"a\":1}").is_ok());
        assert!(Payload::from_json("1 2").is_err());
        assert!(Payload::from_json("").is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(
            Payload::from_json(&deep),
            Err(PayloadError::TooDeep { .. })
        ));
        assert!(matches!(
            Payload::from_json_with_limit("[1,2,3]", 3),
            Err(PayloadError::TooLarge { .. })
        ));
        let brackets_in_strings = format!("[\"{}\\\"\"]", "[".repeat(300));
        assert!(Payload::from_json(&brackets_in_strings).is_ok());
    }
}
