//! Part 4: documents written by others (another program, a buggy or
//! hostile writer) straight into a MongoChannel's capped collection with
//! the raw driver, while the channel tails it: `key` missing or of any
//! BSON type, `data` missing, nested, huge, or holding values JSON has no
//! form for (NaN, infinities, binary, regex, decimal, timestamps, code,
//! min/max keys, dates out of range), extra fields, `_id`s that are not
//! ObjectIds; valid documents mixed in.
//!
//! The oracle classifies each document the server stored: valid ones with
//! a key a carrier is subscribed to must be delivered exactly once, in
//! order, with the data rendered as TBone renders it (ObjectId as hex,
//! dates as RFC 3339); invalid ones must be counted in
//! `MongoStats::skipped` and never reach a carrier; documents the tailing
//! query cannot see (non-ObjectId `_id`) must be neither. After each batch
//! an event published through the channel must still arrive.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{
    self, doc, oid::ObjectId, spec::BinarySubtype, Bson, Document, RawDocumentBuf,
};
use mongodb::Database;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestCaseResult};
use serde_json::Value;
use tbone_dispatch::{Frame, MAX_DEPTH};
use tbone_dispatch_tokio::mongo::{self, MongoOptions, MongoStats};
use tbone_dispatch_tokio::{Carrier, MongoChannel, Tokio};

use super::{ensure, run_cases, runner, shorten};
use crate::mongo::{fast_failing, MONGO_WAIT};
use crate::new_carrier;
use crate::soak::{Profile, Row};

/// The channel's data limit: small, so oversized data is cheap to make.
const MAX_PAYLOAD: usize = 2048;
/// Keys the carrier is subscribed to.
const KEYS: [&str; 4] = ["k0", "k1", "ünï ✓", ""];
/// The key of the event published after each batch.
const SENTINEL: &str = "soak-fuzz-sentinel";
const DATABASE: &str = "tbt_soak_fuzz_documents";
const COLLECTION: &str = "tbone_channel_soak_fuzz";

/// A BSON value, with or without a JSON form.
#[derive(Clone, Debug)]
enum Val {
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    /// Any double: NaN and infinities included.
    F64(f64),
    Str(String),
    Oid([u8; 12]),
    /// Milliseconds since the epoch, in or out of RFC 3339's range.
    Date(i64),
    Array(Vec<Val>),
    Doc(Vec<(String, Val)>),
    Binary(Vec<u8>),
    Regex(String),
    Decimal([u8; 16]),
    Timestamp(u32, u32),
    Code(String),
    CodeWithScope(String),
    MinKey,
    MaxKey,
    Undefined,
    Symbol(String),
    /// A string of this many bytes.
    Huge(usize),
    /// A chain of this many nested documents around a leaf.
    Deep(usize),
}

impl Val {
    fn bson(&self) -> Bson {
        match self {
            Val::Null => Bson::Null,
            Val::Bool(b) => Bson::Boolean(*b),
            Val::I32(i) => Bson::Int32(*i),
            Val::I64(i) => Bson::Int64(*i),
            Val::F64(f) => Bson::Double(*f),
            Val::Str(s) => Bson::String(s.clone()),
            Val::Oid(bytes) => Bson::ObjectId(ObjectId::from_bytes(*bytes)),
            Val::Date(millis) => Bson::DateTime(bson::DateTime::from_millis(*millis)),
            Val::Array(items) => Bson::Array(items.iter().map(Val::bson).collect()),
            Val::Doc(fields) => {
                let mut document = Document::new();
                for (key, value) in fields {
                    document.insert(key.clone(), value.bson());
                }
                Bson::Document(document)
            }
            Val::Binary(bytes) => Bson::Binary(bson::Binary {
                subtype: BinarySubtype::Generic,
                bytes: bytes.clone(),
            }),
            Val::Regex(pattern) => Bson::RegularExpression(bson::Regex {
                pattern: pattern.clone(),
                options: "i".into(),
            }),
            Val::Decimal(bytes) => Bson::Decimal128(bson::Decimal128::from_bytes(*bytes)),
            Val::Timestamp(time, increment) => Bson::Timestamp(bson::Timestamp {
                time: *time,
                increment: *increment,
            }),
            Val::Code(code) => Bson::JavaScriptCode(code.clone()),
            Val::CodeWithScope(code) => {
                Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                    code: code.clone(),
                    scope: doc! {"x": 1},
                })
            }
            Val::MinKey => Bson::MinKey,
            Val::MaxKey => Bson::MaxKey,
            Val::Undefined => Bson::Undefined,
            Val::Symbol(s) => Bson::Symbol(s.clone()),
            Val::Huge(len) => Bson::String("h".repeat(*len)),
            Val::Deep(levels) => {
                (0..*levels).fold(Bson::Int32(1), |inner, _| Bson::Document(doc! {"d": inner}))
            }
        }
    }
}

/// The JSON a valid stored value is delivered as, or None when JSON has
/// no form for it: TBone renders ObjectIds as hex and dates as RFC 3339.
fn expected_json(value: &Bson) -> Option<Value> {
    Some(match value {
        Bson::Null => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Double(f) => Value::Number(serde_json::Number::from_f64(*f)?),
        Bson::String(s) => Value::String(s.clone()),
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::DateTime(t) => Value::String(t.try_to_rfc3339_string().ok()?),
        Bson::Array(items) => Value::Array(items.iter().map(expected_json).collect::<Option<_>>()?),
        Bson::Document(document) => Value::Object(
            document
                .iter()
                .map(|(k, v)| Some((k.clone(), expected_json(v)?)))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The `key` field.
#[derive(Clone, Debug)]
enum KeyField {
    Missing,
    /// One of [`KEYS`].
    Subscribed(usize),
    /// A string no carrier is subscribed to (longer than any event name
    /// may be, or arbitrary).
    Unsubscribed(String),
    /// Not a string.
    WrongType(Val),
}

/// The `_id` field.
#[derive(Clone, Debug)]
enum IdField {
    /// An ObjectId from the driver, as every writer makes them.
    Driver,
    /// Not an ObjectId: the tailing query (`_id >= ObjectId`) never sees it.
    Foreign(Val),
}

/// One document a writer inserts.
#[derive(Clone, Debug)]
struct DocSpec {
    id: IdField,
    key: KeyField,
    data: Option<Val>,
    extra: Vec<(String, Val)>,
    data_first: bool,
}

impl DocSpec {
    fn document(&self) -> Document {
        let mut document = Document::new();
        if let IdField::Foreign(id) = &self.id {
            document.insert("_id", id.bson());
        }
        let key = match &self.key {
            KeyField::Missing => None,
            KeyField::Subscribed(i) => Some(Bson::String(KEYS[i % KEYS.len()].to_string())),
            KeyField::Unsubscribed(key) => Some(Bson::String(key.clone())),
            KeyField::WrongType(value) => Some(value.bson()),
        };
        let data = self.data.as_ref().map(Val::bson);
        let mut fields = vec![("key", key), ("data", data)];
        if self.data_first {
            fields.reverse();
        }
        for (name, value) in fields {
            if let Some(value) = value {
                document.insert(name, value);
            }
        }
        for (name, value) in &self.extra {
            document.insert(format!("x_{name}"), value.bson());
        }
        document
    }
}

/// What must become of a stored document.
#[derive(Clone, Debug, PartialEq)]
enum Fate {
    /// Delivered to the carrier as exactly this frame (TBone's, with
    /// serde_json's rendering of the data: compared as text, since
    /// serde_json's default float parsing may be one ULP off).
    Delivered(String),
    /// Read and handed to the channel, but no carrier wants its key.
    Unrouted,
    /// Counted as malformed, never delivered.
    Skipped,
    /// Never read: its `_id` is not an ObjectId.
    Invisible,
}

fn fate(document: &Document) -> Fate {
    if !matches!(document.get("_id"), None | Some(Bson::ObjectId(_))) {
        return Fate::Invisible;
    }
    let Some(Bson::String(key)) = document.get("key") else {
        return Fate::Skipped;
    };
    let data = match document.get("data") {
        None | Some(Bson::Null) => Value::Null,
        Some(data) => match expected_json(data) {
            Some(json)
                if json_depth(&json) <= MAX_DEPTH
                    && serde_json::to_string(&json).map_or(usize::MAX, |s| s.len())
                        <= MAX_PAYLOAD =>
            {
                json
            }
            _ => return Fate::Skipped,
        },
    };
    if KEYS.contains(&key.as_str()) {
        Fate::Delivered(frame_text(
            key,
            &serde_json::to_string(&data).unwrap_or_default(),
        ))
    } else {
        Fate::Unrouted
    }
}

// ---------------------------------------------------------------------
// Strategies.

fn json_leaf() -> impl Strategy<Value = Val> {
    prop_oneof![
        1 => Just(Val::Null),
        1 => any::<bool>().prop_map(Val::Bool),
        2 => any::<i32>().prop_map(Val::I32),
        1 => any::<i64>().prop_map(Val::I64),
        2 => (-1e12f64..1e12).prop_map(Val::F64),
        3 => "\\PC{0,16}".prop_map(Val::Str),
        1 => any::<[u8; 12]>().prop_map(Val::Oid),
        // 1900..2200: inside RFC 3339's range.
        1 => (-2_208_988_800_000i64..7_258_118_400_000).prop_map(Val::Date),
    ]
}

fn bad_leaf() -> impl Strategy<Value = Val> {
    let no_json_form = prop_oneof![
        Just(Val::F64(f64::NAN)),
        Just(Val::F64(f64::INFINITY)),
        Just(Val::F64(f64::NEG_INFINITY)),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Val::Binary),
        "[a-z.*]{0,6}".prop_map(Val::Regex),
        any::<[u8; 16]>().prop_map(Val::Decimal),
        (any::<u32>(), any::<u32>()).prop_map(|(t, i)| Val::Timestamp(t, i)),
        "[a-z();]{0,12}".prop_map(Val::Code),
        "[a-z();]{0,12}".prop_map(Val::CodeWithScope),
        Just(Val::MinKey),
        Just(Val::MaxKey),
        Just(Val::Undefined),
        "[a-z]{0,6}".prop_map(Val::Symbol),
    ];
    // Years past 9999 (and before year 0): no RFC 3339 form. Rare: the
    // test server refuses to store them, and each refusal costs it a
    // reconnection of a second or more.
    let out_of_range = prop_oneof![
        253_402_300_800_000i64..i64::MAX / 2,
        i64::MIN / 2..-62_167_219_200_001i64
    ]
    .prop_map(Val::Date);
    prop_oneof![40 => no_json_form, 1 => out_of_range]
}

fn field_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ üé]{0,8}"
}

fn value() -> impl Strategy<Value = Val> {
    let leaf = prop_oneof![12 => json_leaf(), 1 => bad_leaf()];
    leaf.prop_recursive(5, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Val::Array),
            prop::collection::vec((field_name(), inner), 0..5).prop_map(Val::Doc),
        ]
    })
}

fn data() -> impl Strategy<Value = Val> {
    prop_oneof![
        16 => value(),
        1 => prop_oneof![
            (MAX_PAYLOAD - 8..MAX_PAYLOAD + 8).prop_map(Val::Huge),
            (10_000usize..300_000).prop_map(Val::Huge),
        ],
        1 => (90usize..140).prop_map(Val::Deep),
    ]
}

fn key_field() -> impl Strategy<Value = KeyField> {
    prop_oneof![
        12 => (0..KEYS.len()).prop_map(KeyField::Subscribed),
        1 => Just(KeyField::Missing),
        1 => prop_oneof![
            "[a-z]{1,8}",
            (257usize..600).prop_map(|n| "k".repeat(n)),
        ]
        .prop_map(KeyField::Unsubscribed),
        2 => prop_oneof![
            json_leaf().prop_filter("not a string", |v| !matches!(v, Val::Str(_))),
            bad_leaf(),
            value().prop_filter("not a string", |v| !matches!(v, Val::Str(_))),
        ]
        .prop_map(KeyField::WrongType),
    ]
}

fn doc_spec() -> impl Strategy<Value = DocSpec> {
    (
        prop_oneof![
            20 => Just(IdField::Driver),
            1 => prop_oneof![
                "[a-z]{1,8}".prop_map(Val::Str),
                any::<i32>().prop_map(Val::I32),
            ]
            .prop_map(IdField::Foreign),
        ],
        key_field(),
        prop::option::weighted(0.9, data()),
        prop::collection::vec((field_name(), value()), 0..2),
        any::<bool>(),
    )
        .prop_map(|(id, key, data, extra, data_first)| DocSpec {
            id,
            key,
            data,
            extra,
            data_first,
        })
}

// ---------------------------------------------------------------------
// Running.

#[derive(Default)]
struct Tally {
    batches: u64,
    inserted: u64,
    refused_by_server: u64,
    delivered: u64,
    expected: u64,
    lost: u64,
    duplicates: u64,
    unrouted: u64,
    skipped: u64,
    invisible: u64,
    sentinels: u64,
}

struct Part {
    db: Database,
    channel: MongoChannel,
    _carrier: Carrier,
    client: futures::lock::Mutex<futures::channel::mpsc::UnboundedReceiver<Frame>>,
    next: RefCell<u64>,
    /// Whether the last batch failed midway, leaving frames behind.
    dirty: RefCell<bool>,
    tally: RefCell<Tally>,
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// The TBone frame of an event (compared as text: serde_json's defaults
/// cannot parse a frame of data near the depth limit, whose envelope adds
/// two levels, and may read a float one ULP off).
fn frame_text(key: &str, data_json: &str) -> String {
    format!(
        r#"{{"type":"event","payload":{{"name":{},"data":{data_json}}}}}"#,
        serde_json::to_string(key).unwrap_or_default()
    )
}

/// Publishes the sentinel `n` and returns the frames that arrived before
/// it.
async fn flush(part: &Part, n: u64) -> Result<Vec<String>, String> {
    part.channel
        .publish(SENTINEL, &n)
        .await
        .map_err(|e| format!("publishing after the batch failed: {e}"))?;
    let mut before = Vec::new();
    let mut client = part.client.lock().await;
    let arrived = tokio::time::timeout(MONGO_WAIT, async {
        let sentinel = frame_text(SENTINEL, &n.to_string());
        let any_sentinel = frame_text(SENTINEL, "");
        let any_sentinel = any_sentinel.trim_end_matches('}');
        while let Some(frame) = client.next().await {
            if frame.as_str() == sentinel {
                return Ok(());
            }
            // A sentinel of an earlier, failed case is skipped.
            if !frame.as_str().starts_with(any_sentinel) {
                before.push(frame.as_str().to_string());
            }
        }
        Err("the carrier closed".to_string())
    })
    .await;
    match arrived {
        Ok(Ok(())) => Ok(before),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "the event published after the batch did not arrive within {MONGO_WAIT:?}"
        )),
    }
}

/// The next sentinel number.
fn next_sentinel(part: &Part) -> u64 {
    let mut next = part.next.borrow_mut();
    *next += 1;
    *next
}

async fn batch(part: &Part, specs: &[DocSpec]) -> TestCaseResult {
    // After a failed batch (then shrinking replays similar ones), what it
    // left in flight is flushed out first, so that batches stay independent.
    if part.dirty.replace(true) {
        flush(part, next_sentinel(part)).await.map_err(fail)?;
    }
    let collection = part.db.collection::<Document>(COLLECTION);
    let raw_collection = part.db.collection::<RawDocumentBuf>(COLLECTION);
    let before: MongoStats = part.channel.backend().stats();
    let mut ids = Vec::new();
    for spec in specs {
        match collection.insert_one(spec.document()).await {
            Ok(inserted) => ids.push(inserted.inserted_id),
            // The server may refuse what it cannot store (too deep, too
            // big): then there is nothing to tail.
            Err(e) => {
                tracing::debug!(%e, "the server refused a fuzzed document");
                part.tally.borrow_mut().refused_by_server += 1;
            }
        }
    }
    // The oracle judges the documents as stored, which is what the tailer
    // reads: a server may normalize some values (the test server stores
    // BSON `undefined` as null). One query for the batch: the test server
    // takes tens of milliseconds per round trip.
    let mut stored = HashMap::new();
    if !ids.is_empty() {
        let mut cursor = raw_collection
            .find(doc! {"_id": {"$in": ids.clone()}})
            .await
            .map_err(|e| fail(format!("reading back the batch: {e}")))?;
        while let Some(document) = cursor.next().await {
            let document = document.map_err(|e| fail(format!("reading back the batch: {e}")))?;
            let document = Document::try_from(document.as_ref())
                .map_err(|e| fail(format!("a stored document is not valid BSON: {e}")))?;
            let id = document
                .get("_id")
                .map(ToString::to_string)
                .unwrap_or_default();
            stored.insert(id, document);
        }
    }
    let mut fates = Vec::new();
    for id in &ids {
        let document = stored.remove(&id.to_string()).ok_or_else(|| {
            fail(format!(
                "the inserted document {id} is not in the collection"
            ))
        })?;
        fates.push(fate(&document));
    }
    let arrived = flush(part, next_sentinel(part)).await.map_err(fail)?;
    let after: MongoStats = part.channel.backend().stats();
    let wanted: Vec<String> = fates
        .iter()
        .filter_map(|f| match f {
            Fate::Delivered(frame) => Some(frame.clone()),
            _ => None,
        })
        .collect();
    let count = |fate: fn(&Fate) -> bool| fates.iter().filter(|f| fate(f)).count() as u64;
    let skipped = count(|f| *f == Fate::Skipped);
    let read = count(|f| matches!(f, Fate::Delivered(_) | Fate::Unrouted));
    {
        let mut tally = part.tally.borrow_mut();
        tally.batches += 1;
        tally.sentinels += 1;
        tally.inserted += fates.len() as u64;
        tally.expected += wanted.len() as u64;
        let delivered = wanted.iter().filter(|w| arrived.contains(w)).count() as u64;
        tally.delivered += delivered;
        tally.lost += wanted.len() as u64 - delivered;
        tally.duplicates += (arrived.len() as u64).saturating_sub(delivered);
        tally.unrouted += count(|f| *f == Fate::Unrouted);
        tally.skipped += skipped;
        tally.invisible += count(|f| *f == Fate::Invisible);
    }
    ensure(arrived == wanted, || {
        format!(
            "delivered {}, expected exactly {} in order",
            shorten(&format!("{arrived:?}"), 400),
            shorten(&format!("{wanted:?}"), 400)
        )
    })?;
    ensure(after.skipped - before.skipped == skipped, || {
        format!(
            "{} documents counted as skipped, the oracle says {skipped} ({fates:?})",
            after.skipped - before.skipped
        )
    })?;
    ensure(after.received - before.received == read + 1, || {
        format!(
            "{} documents received, the oracle says {} (the batch's valid ones and the event after it)",
            after.received - before.received,
            read + 1
        )
    })?;
    ensure(
        after.duplicates == before.duplicates && after.gaps == before.gaps,
        || format!("duplicates or gaps reported: before {before:?}, after {after:?}"),
    )?;
    part.dirty.replace(false);
    Ok(())
}

async fn setup(uri: &str) -> Result<Part, String> {
    let db = mongo::connect(&fast_failing(uri), DATABASE)
        .await
        .map_err(|e| format!("cannot connect to the MongoDB test server at {uri}: {e}"))?;
    db.drop()
        .await
        .map_err(|e| format!("cannot reset the test database: {e}"))?;
    let options = MongoOptions::default()
        .collection(COLLECTION)
        // Room for every document of a long run: the test server slows down
        // tenfold once a capped collection is full.
        .capacity(16_384)
        .message_size(4096)
        .max_payload_bytes(MAX_PAYLOAD)
        .await_time(Duration::from_millis(200))
        .empty_backoff(Duration::from_millis(10), Duration::from_millis(100));
    let channel: MongoChannel = mongo::builder("soak/fuzz/documents", &db)
        .options(options)
        .open()
        .map_err(|e| e.to_string())?;
    channel.kickoff().map_err(|e| e.to_string())?;
    let (carrier, client) = new_carrier::<Tokio>();
    for key in KEYS.iter().chain([&SENTINEL]) {
        channel
            .subscribe(key, &carrier)
            .map_err(|e| e.to_string())?;
    }
    let part = Part {
        db,
        channel,
        _carrier: carrier,
        client: futures::lock::Mutex::new(client),
        next: RefCell::new(0),
        dirty: RefCell::new(false),
        tally: RefCell::new(Tally::default()),
    };
    // The tailer is running once an event goes through.
    flush(&part, 0).await?;
    Ok(part)
}

/// Runs this part; returns its load for the row.
pub fn run(
    profile: Profile,
    seed: u64,
    runtime: &tokio::runtime::Runtime,
    row: &mut Row,
) -> String {
    let cases = profile.pick(100, 500);
    let uri = match crate::mongo::try_mongo_uri() {
        Ok(uri) => uri,
        Err(missing) => {
            row.check(false, format!("documents: {missing}"));
            return "documents: not run (no MongoDB)".into();
        }
    };
    let part = match runtime.block_on(setup(&uri)) {
        Ok(part) => part,
        Err(e) => {
            row.check(false, format!("documents: setup failed: {e}"));
            return "documents: not run".into();
        }
    };
    let mut runner = runner(seed, 4, cases, 32);
    run_cases(
        &mut runner,
        &prop::collection::vec(doc_spec(), 1..10),
        "capped-collection documents",
        row,
        |specs| runtime.block_on(batch(&part, &specs)),
    );
    let Part {
        channel, db, tally, ..
    } = part;
    runtime.block_on(async move {
        channel.stop().await;
        drop((channel, db));
        // The driver kills the tailing cursor in a task of its own; a
        // runtime shut down under it makes the driver panic (its pool
        // worker gone), so let it finish first.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let tally = tally.into_inner();
    row.published += tally.expected;
    row.delivered += tally.delivered;
    row.lost += tally.lost;
    row.duplicates += tally.duplicates;
    row.errors += tally.skipped;
    row.note(format!(
        "capped-collection documents: {} batches, {} documents stored by the server ({} refused by it): {} valid and delivered of {} expected, {} valid with a key no carrier wants, {} malformed and counted as skipped, {} with a non-ObjectId _id (never read); an event published after each batch arrived {} times",
        tally.batches,
        tally.inserted,
        tally.refused_by_server,
        tally.delivered,
        tally.expected,
        tally.unrouted,
        tally.skipped,
        tally.invisible,
        tally.sentinels
    ));
    format!("{} capped-collection documents", tally.inserted)
}
