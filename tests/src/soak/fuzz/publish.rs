//! Part 3: event names and data given to `publish` on a tokio
//! `MemoryChannel`: any `Serialize` shape (every serde data model type,
//! bytes that are not UTF-8, maps keyed by anything, NaN and infinities,
//! nesting around the depth limit, payloads around the size limit, a
//! `Serialize` that fails) under names of any length and content.
//!
//! The oracle: an event is accepted exactly when its name fits and its
//! data is JSON that any consumer can read back with serde_json's default
//! settings (finite numbers, keys that serialize as strings, at most
//! `MAX_DEPTH` levels, at most the size limit). An accepted event reaches
//! a subscriber as exactly the TBone frame of that JSON; a refused one
//! comes back as the typed error naming one of its problems, and nothing
//! is sent.

use std::cell::RefCell;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestCaseResult};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde::ser::{SerializeStruct, SerializeStructVariant, SerializeTuple, SerializeTupleVariant};
use tbone_dispatch::{
    PayloadError, PublishError, DEFAULT_MAX_EVENT_NAME, DEFAULT_MAX_PAYLOAD, MAX_DEPTH,
};
use tbone_dispatch_tokio::{MemoryChannel, Tokio};

use super::{ensure, run_cases, runner, shorten};
use crate::new_carrier;
use crate::soak::{Profile, Row};

/// Field names of the generated structs.
const FIELDS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// A value of any shape of serde's data model.
#[derive(Clone, Debug)]
pub enum Data {
    None,
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    F32(f32),
    Str(String),
    Char(char),
    /// `serialize_bytes`: any bytes, UTF-8 or not.
    Bytes(Vec<u8>),
    Unit,
    UnitStruct,
    Some(Box<Data>),
    Seq(Vec<Data>),
    Tuple(Vec<Data>),
    /// Keys of any shape.
    Map(Vec<(Data, Data)>),
    /// Fields named from `FIELDS` (at most six).
    Struct(Vec<Data>),
    NewtypeStruct(Box<Data>),
    UnitVariant,
    NewtypeVariant(Box<Data>),
    TupleVariant(Vec<Data>),
    StructVariant(Vec<Data>),
    /// A value whose `Serialize` fails.
    Refuses,
    /// A string of this many bytes (huge data from a small input).
    Huge(usize),
    /// A sequence of this many zeros.
    Zeros(usize),
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::None => s.serialize_none(),
            Data::Bool(v) => s.serialize_bool(*v),
            Data::I64(v) => s.serialize_i64(*v),
            Data::U64(v) => s.serialize_u64(*v),
            Data::I128(v) => s.serialize_i128(*v),
            Data::U128(v) => s.serialize_u128(*v),
            Data::F64(v) => s.serialize_f64(*v),
            Data::F32(v) => s.serialize_f32(*v),
            Data::Str(v) => s.serialize_str(v),
            Data::Char(v) => s.serialize_char(*v),
            Data::Bytes(v) => s.serialize_bytes(v),
            Data::Unit => s.serialize_unit(),
            Data::UnitStruct => s.serialize_unit_struct("Unit"),
            Data::Some(v) => s.serialize_some(v.as_ref()),
            Data::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Data::Tuple(items) => {
                let mut tuple = s.serialize_tuple(items.len())?;
                for item in items {
                    tuple.serialize_element(item)?;
                }
                tuple.end()
            }
            Data::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_key(key)?;
                    map.serialize_value(value)?;
                }
                map.end()
            }
            Data::Struct(fields) => {
                let mut st = s.serialize_struct("Struct", fields.len().min(FIELDS.len()))?;
                for (name, field) in FIELDS.iter().zip(fields) {
                    st.serialize_field(name, field)?;
                }
                st.end()
            }
            Data::NewtypeStruct(v) => s.serialize_newtype_struct("Newtype", v.as_ref()),
            Data::UnitVariant => s.serialize_unit_variant("Enum", 0, "Unit"),
            Data::NewtypeVariant(v) => {
                s.serialize_newtype_variant("Enum", 1, "Newtype", v.as_ref())
            }
            Data::TupleVariant(items) => {
                let mut tv = s.serialize_tuple_variant("Enum", 2, "Tuple", items.len())?;
                for item in items {
                    tv.serialize_field(item)?;
                }
                tv.end()
            }
            Data::StructVariant(fields) => {
                let len = fields.len().min(FIELDS.len());
                let mut sv = s.serialize_struct_variant("Enum", 3, "Struct", len)?;
                for (name, field) in FIELDS.iter().zip(fields) {
                    sv.serialize_field(name, field)?;
                }
                sv.end()
            }
            Data::Refuses => Err(ser::Error::custom("this value refuses to be serialized")),
            Data::Huge(len) => s.serialize_str(&"x".repeat(*len)),
            Data::Zeros(len) => {
                let mut seq = s.serialize_seq(Some(*len))?;
                for _ in 0..*len {
                    seq.serialize_element(&0u8)?;
                }
                seq.end()
            }
        }
    }
}

impl Data {
    /// Nesting of arrays and objects in the JSON serde_json writes for it
    /// (keys count as values: a compound key is refused, possibly for its
    /// depth first).
    fn json_depth(&self) -> usize {
        let deepest = |items: &[Data]| items.iter().map(Data::json_depth).max().unwrap_or(0);
        match self {
            Data::Seq(items) | Data::Tuple(items) | Data::Struct(items) => 1 + deepest(items),
            Data::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.json_depth().max(v.json_depth()))
                    .max()
                    .unwrap_or(0)
            }
            // `[1,2]`, `{"Newtype":v}`, `{"Tuple":[..]}`, `{"Struct":{..}}`.
            Data::Bytes(_) | Data::Zeros(_) => 1,
            Data::NewtypeVariant(v) => 1 + v.json_depth(),
            Data::TupleVariant(items) | Data::StructVariant(items) => 2 + deepest(items),
            Data::Some(v) | Data::NewtypeStruct(v) => v.json_depth(),
            _ => 0,
        }
    }

    fn any(&self, found: &impl Fn(&Data) -> bool) -> bool {
        if found(self) {
            return true;
        }
        match self {
            Data::Seq(items)
            | Data::Tuple(items)
            | Data::Struct(items)
            | Data::TupleVariant(items)
            | Data::StructVariant(items) => items.iter().any(|d| d.any(found)),
            Data::Map(entries) => entries.iter().any(|(k, v)| k.any(found) || v.any(found)),
            Data::Some(v) | Data::NewtypeStruct(v) | Data::NewtypeVariant(v) => v.any(found),
            _ => false,
        }
    }

    fn has_non_finite(&self) -> bool {
        self.any(&|d| match d {
            Data::F64(v) => !v.is_finite(),
            Data::F32(v) => !v.is_finite(),
            _ => false,
        })
    }

    /// Bytes of the huge leaves (an upper bound's main term, for data that
    /// has no plain serialization to measure).
    fn huge_bytes(&self) -> usize {
        let mut total = 0;
        self.sum_huge(&mut total);
        total
    }

    fn sum_huge(&self, total: &mut usize) {
        match self {
            Data::Huge(n) => *total += n,
            Data::Zeros(n) => *total += 2 * n,
            Data::Seq(items)
            | Data::Tuple(items)
            | Data::Struct(items)
            | Data::TupleVariant(items)
            | Data::StructVariant(items) => items.iter().for_each(|d| d.sum_huge(total)),
            Data::Map(entries) => entries.iter().for_each(|(k, v)| {
                k.sum_huge(total);
                v.sum_huge(total);
            }),
            Data::Some(v) | Data::NewtypeStruct(v) | Data::NewtypeVariant(v) => v.sum_huge(total),
            _ => {}
        }
    }
}

fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64;
    f64::POSITIVE | f64::NEGATIVE | f64::NORMAL | f64::SUBNORMAL | f64::ZERO
}

fn leaf() -> impl Strategy<Value = Data> {
    prop_oneof![
        2 => Just(Data::None),
        2 => any::<bool>().prop_map(Data::Bool),
        3 => any::<i64>().prop_map(Data::I64),
        2 => any::<u64>().prop_map(Data::U64),
        1 => any::<i128>().prop_map(Data::I128),
        1 => any::<u128>().prop_map(Data::U128),
        4 => finite_f64().prop_map(Data::F64),
        1 => proptest::num::f64::ANY.prop_map(Data::F64),
        1 => proptest::num::f32::ANY.prop_map(Data::F32),
        6 => any::<String>().prop_map(Data::Str),
        1 => any::<char>().prop_map(Data::Char),
        2 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Data::Bytes),
        1 => Just(Data::Unit),
        1 => Just(Data::UnitStruct),
        1 => Just(Data::UnitVariant),
    ]
}

/// Mostly string keys; sometimes anything (numbers and booleans are
/// written as strings, compound keys are refused).
fn key(inner: impl Strategy<Value = Data> + Clone) -> impl Strategy<Value = Data> {
    prop_oneof![
        8 => "\\PC{0,8}".prop_map(Data::Str),
        1 => leaf(),
        1 => inner,
    ]
}

fn tree() -> impl Strategy<Value = Data> {
    leaf().prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 0..6).prop_map(Data::Seq),
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Data::Tuple),
            3 => prop::collection::vec((key(inner.clone()), inner.clone()), 0..6).prop_map(Data::Map),
            1 => prop::collection::vec(inner.clone(), 0..=6).prop_map(Data::Struct),
            1 => inner.clone().prop_map(|d| Data::NewtypeStruct(Box::new(d))),
            1 => inner.clone().prop_map(|d| Data::NewtypeVariant(Box::new(d))),
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Data::TupleVariant),
            1 => prop::collection::vec(inner.clone(), 0..=6).prop_map(Data::StructVariant),
            1 => inner.prop_map(|d| Data::Some(Box::new(d))),
        ]
    })
}

#[derive(Clone, Copy, Debug)]
enum Wrap {
    Seq,
    Map,
    Struct,
    NewtypeVariant,
    TupleVariant,
    StructVariant,
    Some,
    NewtypeStruct,
}

/// Nesting around the depth limit, with every kind of container.
fn deep() -> impl Strategy<Value = Data> {
    let wraps = prop::sample::select(vec![
        Wrap::Seq,
        Wrap::Map,
        Wrap::Struct,
        Wrap::NewtypeVariant,
        Wrap::TupleVariant,
        Wrap::StructVariant,
        Wrap::Some,
        Wrap::NewtypeStruct,
    ]);
    (
        prop::collection::vec(wraps, 1..=3),
        60usize..=140,
        prop_oneof![4 => leaf(), 1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(Data::Bytes)],
    )
        .prop_map(|(wraps, levels, leaf)| {
            let mut data = leaf;
            for level in 0..levels {
                data = match wraps[level % wraps.len()] {
                    Wrap::Seq => Data::Seq(vec![data]),
                    Wrap::Map => Data::Map(vec![(Data::Str("k".into()), data)]),
                    Wrap::Struct => Data::Struct(vec![data]),
                    Wrap::NewtypeVariant => Data::NewtypeVariant(Box::new(data)),
                    Wrap::TupleVariant => Data::TupleVariant(vec![data]),
                    Wrap::StructVariant => Data::StructVariant(vec![data]),
                    Wrap::Some => Data::Some(Box::new(data)),
                    Wrap::NewtypeStruct => Data::NewtypeStruct(Box::new(data)),
                };
            }
            data
        })
}

/// Payloads around the size limit.
fn huge() -> impl Strategy<Value = Data> {
    let limit = DEFAULT_MAX_PAYLOAD;
    prop_oneof![
        2 => (limit - 4..=limit).prop_map(Data::Huge),
        1 => (1_000usize..200_000).prop_map(Data::Huge),
        1 => (limit / 2 - 4..=limit / 2 + 4).prop_map(Data::Zeros),
        1 => (limit - 8..=limit + 8).prop_map(|n| Data::Seq(vec![Data::Huge(n.saturating_sub(4))])),
    ]
}

fn data() -> impl Strategy<Value = Data> {
    // Huge data is rare: in a debug build each such case costs a hundred
    // times an ordinary one.
    prop_oneof![
        60 => tree(),
        15 => deep(),
        1 => huge(),
        4 => tree().prop_map(|d| Data::Seq(vec![d, Data::Refuses])),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z_]{1,16}",
        3 => any::<String>(),
        1 => "\\PC{250,262}",
        1 => Just("x".repeat(DEFAULT_MAX_EVENT_NAME)),
        1 => Just("x".repeat(DEFAULT_MAX_EVENT_NAME + 1)),
        1 => (1_000usize..100_000).prop_map(|n| "n".repeat(n)),
        1 => Just(String::new()),
    ]
}

/// The flush marker published after each input, on the same carrier.
const SENTINEL: &str = "\u{0}soak-fuzz-sentinel\u{0}";
const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Tally {
    tried: u64,
    accepted: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    refused: std::collections::BTreeMap<&'static str, u64>,
}

/// The kind of a publish error, for the oracle and the report.
fn kind(error: &PublishError) -> &'static str {
    match error {
        PublishError::EventNameTooLong { .. } => "name too long",
        PublishError::Payload { source, .. } => match source {
            PayloadError::NonFinite => "NaN/infinity",
            PayloadError::TooDeep { .. } => "too deep",
            PayloadError::TooLarge { .. } => "too large",
            PayloadError::Invalid(_) => "not JSON",
            _ => "other payload error",
        },
        _ => "other error",
    }
}

/// What the oracle expects: `Ok(json)` when the event must be accepted
/// (with the data's JSON text), otherwise the error kinds that may be
/// reported (one per problem the input has).
fn expect(name: &str, data: &Data) -> Result<String, Vec<&'static str>> {
    if name.len() > DEFAULT_MAX_EVENT_NAME {
        return Err(vec!["name too long"]);
    }
    let plain = serde_json::to_string(data);
    let mut problems = Vec::new();
    if data.has_non_finite() {
        problems.push("NaN/infinity");
    }
    if data.json_depth() > MAX_DEPTH {
        problems.push("too deep");
    }
    match &plain {
        Ok(json) if json.len() > DEFAULT_MAX_PAYLOAD => problems.push("too large"),
        Ok(_) => {}
        Err(_) => {
            problems.push("not JSON");
            if data.huge_bytes() + 10_000 > DEFAULT_MAX_PAYLOAD {
                problems.push("too large");
            }
        }
    }
    match plain {
        Ok(json) if problems.is_empty() => Ok(json),
        _ => Err(problems),
    }
}

async fn publish_case(
    channel: &MemoryChannel,
    name: &str,
    data: &Data,
    tally: &RefCell<Tally>,
) -> TestCaseResult {
    let (carrier, mut client) = new_carrier::<Tokio>();
    let subscribed = channel.subscribe(name, &carrier);
    ensure(
        subscribed.is_ok() == (name.len() <= DEFAULT_MAX_EVENT_NAME),
        || format!("subscribing a {}-byte name gave {subscribed:?}", name.len()),
    )?;
    channel
        .subscribe(SENTINEL, &carrier)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let expected = expect(name, data);
    let outcome = channel.publish(name, data).await;
    tally.borrow_mut().tried += 1;
    match (&expected, &outcome) {
        (Ok(_), Ok(())) => tally.borrow_mut().accepted += 1,
        (Err(kinds), Err(error)) => {
            *tally.borrow_mut().refused.entry(kind(error)).or_default() += 1;
            ensure(kinds.contains(&kind(error)), || {
                format!(
                    "refused as {:?} ({error}), but its problems are {kinds:?}",
                    kind(error)
                )
            })?;
        }
        (Ok(_), Err(error)) => {
            return Err(TestCaseError::fail(format!(
                "valid JSON data refused: {error}"
            )))
        }
        (Err(kinds), Ok(())) => {
            return Err(TestCaseError::fail(format!(
                "accepted although its problems are {kinds:?}"
            )))
        }
    }
    channel
        .publish(SENTINEL, &())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut frames = Vec::new();
    let arrived = tokio::time::timeout(WAIT, async {
        while let Some(frame) = client.next().await {
            if frame.as_str().contains("soak-fuzz-sentinel") {
                return true;
            }
            frames.push(frame);
        }
        false
    })
    .await;
    channel.unsubscribe_all(&carrier);
    ensure(arrived == Ok(true), || {
        format!("the event published after it never arrived ({arrived:?})")
    })?;
    let mut tally = tally.borrow_mut();
    match (expected, outcome) {
        (Ok(json), Ok(())) => {
            let wanted = format!(
                r#"{{"type":"event","payload":{{"name":{},"data":{json}}}}}"#,
                serde_json::to_string(name).unwrap_or_default()
            );
            let exact = frames.iter().filter(|f| f.as_str() == wanted).count() as u64;
            tally.delivered += exact.min(1);
            tally.lost += u64::from(exact == 0);
            tally.duplicates += (frames.len() as u64).saturating_sub(1);
            ensure(frames.len() == 1 && exact == 1, || {
                format!(
                    "expected exactly the frame {}, got {} frame(s): {}",
                    shorten(&wanted, 200),
                    frames.len(),
                    frames
                        .first()
                        .map(|f| shorten(f.as_str(), 200))
                        .unwrap_or_default()
                )
            })?;
            ensure(
                serde_json::from_str::<serde_json::Value>(&json).is_ok(),
                || {
                    format!(
                        "accepted data serde_json cannot read back: {}",
                        shorten(&json, 200)
                    )
                },
            )
        }
        _ => ensure(frames.is_empty(), || {
            format!(
                "a refused event was delivered: {}",
                shorten(frames[0].as_str(), 200)
            )
        }),
    }
}

/// Runs this part; returns its load for the row.
pub fn run(
    profile: Profile,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
    row: &mut Row,
) -> String {
    let cases = profile.pick(3_000, 100_000);
    let channel = match runtime.block_on(async {
        let channel = MemoryChannel::named("soak/fuzz/publish")?;
        channel.kickoff()?;
        Ok::<_, tbone_dispatch::ChannelError>(channel)
    }) {
        Ok(channel) => channel,
        Err(e) => {
            row.check(false, format!("publish: cannot open the channel: {e}"));
            return "publish: not run".into();
        }
    };
    let tally = RefCell::new(Tally::default());
    let mut runner = runner(seed, 3, cases, 1_000);
    run_cases(
        &mut runner,
        &(name(), data()),
        "publish",
        row,
        |(name, data)| runtime.block_on(publish_case(&channel, &name, &data, &tally)),
    );
    runtime.block_on(channel.stop());
    let tally = tally.into_inner();
    let refused: u64 = tally.refused.values().sum();
    row.published += tally.accepted;
    row.delivered += tally.delivered;
    row.lost += tally.lost;
    row.duplicates += tally.duplicates;
    row.errors += refused;
    let kinds: Vec<String> = tally
        .refused
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect();
    row.note(format!(
        "publish: {} name/data inputs, {} accepted (each delivered as its exact frame), {refused} refused with a typed error ({})",
        tally.tried,
        tally.accepted,
        kinds.join(", ")
    ));
    format!("{} publishes", tally.tried)
}
