//! TBone itself beside our MongoChannel on one database: TBone 0.5.0.4 from
//! PyPI (Python 3.8, motor 1.x, pymongo 3.x, installed by
//! `scripts/tbone-peer`, found through `TBONE_PYTHON`) runs its own
//! MongoChannel and its own websocket carrier in a Python process
//! (`tests/tbone/peer.py`). Events published by TBone reach our carriers,
//! events published by us reach TBone's carrier, whichever side created the
//! capped collection, and the test pins the exact bytes each side's
//! carriers send for the same data. Without `TBONE_PYTHON` or `MONGODB_URI`
//! the tests fail; they never skip.

mod peer;

use std::collections::BTreeSet;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document};
use mongodb::Database;
use serde_json::Value;
use tbone_dispatch_tests::mongo::{database, raw, MONGO_WAIT};
use tbone_dispatch_tests::Tokio;
use tbone_dispatch_tokio::mongo;
use tbone_dispatch_tokio::{Carrier, Frame, MongoChannel};

use peer::TbonePeer;

/// The event both sides subscribe to and publish.
const EVENT: &str = "e";

/// Event data as we write it, which is also the bytes our carriers send for
/// it whoever published it, and the same value as TBone's carrier writes it
/// (Python's `json.dumps`: spaces after `,` and `:`, non-ASCII escaped,
/// floats by `repr`). Keys are in sorted order, the order both sides keep.
const SAMPLES: [(&str, &str); 6] = [
    (
        r#"{"id":1,"nested":{"none":null,"ok":true},"tags":["a","b"],"text":"hello, world"}"#,
        r#"{"id": 1, "nested": {"none": null, "ok": true}, "tags": ["a", "b"], "text": "hello, world"}"#,
    ),
    (r#""café ✓ \"q\"\n""#, r#""caf\u00e9 \u2713 \"q\"\n""#),
    (
        "[0,-2,2147483648,9223372036854775807,1.5,1.0,0.1,1e+300]",
        "[0, -2, 2147483648, 9223372036854775807, 1.5, 1.0, 0.1, 1e+300]",
    ),
    ("null", "null"),
    (
        r#"{"empty":{},"list":[],"text":""}"#,
        r#"{"empty": {}, "list": [], "text": ""}"#,
    ),
    ("true", "true"),
];

/// A Python `datetime` TBone stores, and how each side's carriers show it:
/// ours as RFC 3339 in UTC with milliseconds (what MongoDB keeps), TBone's
/// as Python's `isoformat()` of the naive datetime pymongo reads back.
const DATETIME: &str = "2017-03-04T05:06:07.123000";
const DATETIME_OURS: &str = r#"{"at":"2017-03-04T05:06:07.123Z"}"#;
const DATETIME_TBONE: &str = r#"{"at": "2017-03-04T05:06:07.123000"}"#;

/// TBone's `create_channel` defaults, which ours share: 2^15 documents of
/// 1 KiB.
const CAPACITY: u64 = 1 << 15;
const SIZE: u64 = CAPACITY * 1024;

/// Which side starts first, and so creates the capped collection.
#[derive(Clone, Copy, Debug)]
enum Creator {
    Ours,
    Tbone,
}

/// Our frame for `data`: TBone's later `{"type": "event", "payload": ...}`
/// shape, compact.
fn our_frame(data: &str) -> String {
    format!(r#"{{"type":"event","payload":{{"name":"{EVENT}","data":{data}}}}}"#)
}

/// What TBone 0.5.0.4's websocket carrier sends for `data` (its `json.dumps`
/// text).
fn tbone_frame(data: &str) -> String {
    format!(r#"{{"event": "{EVENT}", "data": {data}}}"#)
}

/// Our side: channel `name` on `db`, kicked off, a carrier on [`EVENT`],
/// and tailing (a marker published and read back) before it returns.
struct Ours {
    channel: MongoChannel,
    frames: mpsc::UnboundedReceiver<Frame>,
    _carrier: Carrier,
}

impl Ours {
    async fn start(db: &Database, name: &str) -> Self {
        let channel: MongoChannel = mongo::open(name, db).unwrap();
        channel.kickoff().unwrap();
        let (socket, frames) = mpsc::unbounded::<Frame>();
        let carrier = Carrier::from_sink(socket).unwrap();
        channel.subscribe(EVENT, &carrier).unwrap();
        tokio::time::timeout(MONGO_WAIT, channel.publish_delivered("rust-ready", &()))
            .await
            .expect("our channel did not read its own marker back")
            .unwrap();
        Ours {
            channel,
            frames,
            _carrier: carrier,
        }
    }

    async fn frames(&mut self, n: usize) -> Vec<String> {
        let mut texts = Vec::with_capacity(n);
        tokio::time::timeout(MONGO_WAIT, async {
            while texts.len() < n {
                let frame = self.frames.next().await.expect("our carrier closed");
                texts.push(frame.as_str().to_string());
            }
        })
        .await
        .unwrap_or_else(|_| panic!("our carrier got {} of {n} frames: {texts:?}", texts.len()));
        texts
    }
}

/// The `data` of a frame of either side, decoded.
fn data_of(frame: &str) -> Value {
    let value: Value = serde_json::from_str(frame).unwrap();
    match value.get("payload") {
        Some(payload) => payload["data"].clone(),
        None => value["data"].clone(),
    }
}

async fn events_cross(creator: Creator) {
    tbone_dispatch_tests::init_logging();
    let name = match creator {
        Creator::Ours => "interop_ours_first",
        Creator::Tbone => "interop_tbone_first",
    };
    let db = database::<Tokio>(name).await;

    let (mut ours, mut tbone) = match creator {
        Creator::Ours => {
            let ours = Ours::start(&db, name).await;
            let mut tbone = TbonePeer::start(db.name(), name);
            assert_eq!(tbone.ready().await, "joined", "TBone joins our collection");
            (ours, tbone)
        }
        Creator::Tbone => {
            let mut tbone = TbonePeer::start(db.name(), name);
            let how = tbone.ready().await;
            // SecantusDB accepts TBone's autoIndexId=False; MongoDB 4.0 and
            // later refuse it, and then the peer creates the collection
            // with TBone's other options (see peer.py).
            assert!(
                how == "tbone" || how.starts_with("no-autoIndexId"),
                "TBone creates the collection: {how}"
            );
            eprintln!("collection created by: {how}");
            (Ours::start(&db, name).await, tbone)
        }
    };

    // TBone publishes: our carriers and TBone's own.
    for (data, _) in SAMPLES {
        tbone.publish(EVENT, data);
    }
    tbone.publish_datetime(EVENT, DATETIME);
    let expected_ours: Vec<String> = SAMPLES
        .iter()
        .map(|(data, _)| our_frame(data))
        .chain([our_frame(DATETIME_OURS)])
        .collect();
    let expected_tbone: Vec<String> = SAMPLES
        .iter()
        .map(|(_, data)| tbone_frame(data))
        .chain([tbone_frame(DATETIME_TBONE)])
        .collect();
    let ours_got = ours.frames(expected_ours.len()).await;
    let tbone_got = tbone.frames(expected_tbone.len()).await;
    assert_eq!(ours_got, expected_ours, "TBone's events on our carriers");
    assert_eq!(tbone_got, expected_tbone, "TBone's events on its carrier");
    for (theirs, ours) in tbone_got.iter().zip(&ours_got).take(SAMPLES.len()) {
        assert_eq!(data_of(theirs), data_of(ours), "one value on both sides");
    }

    // We publish: TBone's carrier and ours.
    for (data, _) in SAMPLES {
        let value: Value = serde_json::from_str(data).unwrap();
        ours.channel.publish(EVENT, &value).await.unwrap();
    }
    let expected_ours: Vec<String> = SAMPLES.iter().map(|(d, _)| our_frame(d)).collect();
    let expected_tbone: Vec<String> = SAMPLES.iter().map(|(_, d)| tbone_frame(d)).collect();
    assert_eq!(
        tbone.frames(SAMPLES.len()).await,
        expected_tbone,
        "our events on TBone's carrier"
    );
    assert_eq!(
        ours.frames(SAMPLES.len()).await,
        expected_ours,
        "our events on our carriers"
    );

    check_storage(&db, name, 2 * SAMPLES.len() + 1).await;
    tbone.quit().await;
}

/// One capped collection with TBone's size, and every document in TBone's
/// layout, `{_id: ObjectId, key, data}`, whoever wrote it.
async fn check_storage(db: &Database, name: &str, events: usize) {
    let collection_name = format!("tbone_channel_{name}");
    let (listing, filter) = (db.clone(), doc! {"name": &collection_name});
    let specs: Vec<_> = raw(async move {
        listing
            .list_collections()
            .filter(filter)
            .await?
            .try_collect()
            .await
    })
    .await;
    assert_eq!(specs.len(), 1, "one collection {collection_name}");
    let options = &specs[0].options;
    assert_eq!(
        (options.capped, options.size, options.max),
        (Some(true), Some(SIZE), Some(CAPACITY)),
        "the capped collection's options"
    );

    let collection = db.collection::<Document>(&collection_name);
    let documents: Vec<Document> =
        raw(async move { collection.find(doc! {}).await?.try_collect().await }).await;
    for document in &documents {
        let keys: BTreeSet<&str> = document.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["_id", "data", "key"]), "{document}");
        assert!(
            matches!(document.get("_id"), Some(Bson::ObjectId(_))),
            "{document}"
        );
    }
    let published = documents
        .iter()
        .filter(|d| d.get_str("key") == Ok(EVENT))
        .count();
    assert_eq!(published, events, "one document per event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_when_our_side_creates_the_collection() {
    events_cross(Creator::Ours).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_when_tbone_creates_the_collection() {
    events_cross(Creator::Tbone).await;
}
