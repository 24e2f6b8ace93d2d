//! Two real OS processes share one MongoChannel through the database: each
//! delivers every event, in the same order, to its own subscribers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use tbone_dispatch_tests::mongo::{database, mongo_uri, MONGO_WAIT};
use tbone_dispatch_tests::Tokio;
use tbone_dispatch_tokio::mongo::{self, MongoOptions};
use tbone_dispatch_tokio::{Carrier, Frame, MongoChannel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deliver_every_event_in_the_same_order() {
    tbone_dispatch_tests::init_logging();
    let db = database::<Tokio>("two_processes").await;
    let collection = "tbone_channel_processes";
    let channel: MongoChannel = mongo::builder("processes-parent", &db)
        .options(MongoOptions::default().collection(collection))
        .open()
        .unwrap();
    channel.kickoff().unwrap();
    let (socket, mut frames) = futures::channel::mpsc::unbounded::<Frame>();
    channel
        .subscribe("e", &Carrier::from_sink(socket).unwrap())
        .unwrap();

    let (parent_events, child_events) = (5, 3);
    let total = parent_events + child_events;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mongo_peer"))
        .args([
            mongo_uri().as_str(),
            db.name(),
            collection,
            &child_events.to_string(),
            &total.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot start the peer process");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading the peer's output");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Kickoff is "from now on": publish only once the peer is consuming.
    let ready = tokio::task::spawn_blocking(move || {
        let first = lines.recv_timeout(MONGO_WAIT).ok();
        (first, lines)
    });
    let (first, lines) = ready.await.unwrap();
    assert_eq!(first.as_deref(), Some("ready"), "the peer did not start");
    for i in 0..parent_events {
        channel.publish("e", &format!("parent-{i}")).await.unwrap();
    }

    let mut ours = Vec::new();
    tokio::time::timeout(MONGO_WAIT, async {
        while ours.len() < total {
            let frame = frames.next().await.expect("carrier closed");
            let value: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
            ours.push(value["payload"]["data"].to_string());
        }
    })
    .await
    .expect("the parent did not receive every event");

    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + MONGO_WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the peer process failed: {status:?}"
    );
    reader.join().unwrap();
    let theirs: Vec<String> = lines.try_iter().collect();
    assert_eq!(
        theirs, ours,
        "both processes saw the same events in the same order"
    );

    let position = |name: &str| {
        ours.iter()
            .position(|d| d == &format!("\"{name}\""))
            .unwrap()
    };
    for i in 1..parent_events {
        assert!(position(&format!("parent-{}", i - 1)) < position(&format!("parent-{i}")));
    }
    for i in 1..child_events {
        assert!(position(&format!("child-{}", i - 1)) < position(&format!("child-{i}")));
    }
}
