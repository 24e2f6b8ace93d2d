//! MongoDB mode: two instances on one database, each with its own
//! MongoChannel over one capped collection, see each other's writes live.
//!
//! Needs a MongoDB-compatible server at `MONGODB_URI` (scripts/test starts
//! one). Without it this test fails; it never skips.

mod support;

use serde_json::json;
use support::{
    connect, expected_frame, frame_for, http, mongodb_uri, start, subscribed, unique, MONGO_WAIT,
};
use tbone_dispatch_demo::{MongoConfig, MongoState};
use tbone_dispatch_tokio::mongo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_see_each_others_writes() {
    let uri = mongodb_uri();
    let database = unique("tbone_demo_test");
    let config = MongoConfig {
        uri: uri.clone(),
        database: database.clone(),
        entries: "entries".into(),
        // Two channel names (channels are singletons per name in a
        // process), one capped collection: what two processes sharing the
        // channel `pubsub` use.
        events: Some("tbone_channel_pubsub".into()),
    };
    let a = MongoState::mongo(&unique("demo-a"), &config)
        .await
        .expect("instance A starts");
    let b = MongoState::mongo(&unique("demo-b"), &config)
        .await
        .expect("instance B starts");
    // Model signals are process-wide: left connected, B would publish A's
    // writes itself. Disconnected, B learns of them only through MongoDB,
    // as a separate process would.
    assert!(b.disconnect_resource_events());
    let a = start(a).await;
    let b = start(b).await;

    let mut socket = connect(b.addr).await;
    subscribed(b.state.channel(), 1).await;

    let created = http(
        a.addr,
        "POST",
        "/api/entries/",
        Some(r#"{"author": "ann", "text": "from A"}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["_id"].as_str().unwrap().to_string();
    assert_eq!(
        frame_for(&mut socket, &id, MONGO_WAIT).await,
        expected_frame("resource_create", &id, "ann", "from A")
    );

    // B reads the entry A stored, and sees A's delete.
    let read = http(b.addr, "GET", &format!("/api/entries/{id}/"), None).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(
        read.json(),
        json!({"_id": id, "author": "ann", "text": "from A"})
    );
    let deleted = http(a.addr, "DELETE", &format!("/api/entries/{id}/"), None).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(
        frame_for(&mut socket, &id, MONGO_WAIT).await,
        expected_frame("resource_delete", &id, "ann", "from A")
    );

    a.shutdown().await;
    b.shutdown().await;
    let db = mongo::connect(&uri, &database).await.expect("connect");
    db.drop().await.expect("drop the test database");
}
