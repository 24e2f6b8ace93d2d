//! RedisChannel rules, on every runtime, against a real server: the one
//! `scripts/test` starts (Debian's redis-server), or `REDIS_URL`. Without a
//! server these tests fail with a message saying how to get one; they
//! never skip.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tbone_dispatch::{Backend, Channel, Event, Payload};
use tbone_dispatch_redis::redis::{self as client, Value};
use tbone_dispatch_redis::{RedisBackend, RedisOptions, RedisServer, StreamId};

use crate::mongo::{collect_until, frames_n, try_run_script};
use crate::soak::proxy::Proxy;
use crate::{new_carrier, unique_name, within, TestRuntime};

/// Redis waits: generous, as a private server starts and restarts within
/// some of them.
pub const REDIS_WAIT: Duration = Duration::from_secs(20);

/// The server to test against; fails the test when there is none.
pub fn redis_url() -> String {
    try_redis_url().unwrap_or_else(|missing| panic!("{missing}"))
}

/// The server to test against, or why there is none (for callers that
/// report the failure themselves rather than panic).
pub fn try_redis_url() -> Result<String, &'static str> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => Err(
            "REDIS_URL is not set, so the Redis tests have no server. Run `scripts/test`, which \
             installs and starts Debian's redis-server, or `eval \"$(scripts/redis-test-server start)\"; \
             export REDIS_URL`, or set REDIS_URL=redis://HOST:PORT/ to use your own server.",
        ),
    }
}

/// The parsed server at `url`.
pub fn server_at(url: &str) -> RedisServer {
    RedisServer::parse(url).unwrap_or_else(|e| panic!("REDIS_URL {url}: {e}"))
}

/// Runs one command with the `redis` crate's blocking client (what another
/// writer, or an operator, does), on a connection of its own.
pub fn raw<T: client::FromRedisValue>(url: &str, command: &client::Cmd) -> T {
    let mut connection = client::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("cannot connect to the Redis test server at {url}: {e}"));
    command
        .query(&mut connection)
        .unwrap_or_else(|e| panic!("raw Redis command failed: {e}"))
}

/// A stream key unique to this runtime and test, emptied.
pub fn fresh_stream<R: TestRuntime>(url: &str, test: &str) -> String {
    let key = format!("tbt:{}:{test}", R::name());
    raw::<i64>(url, client::cmd("DEL").arg(&key));
    key
}

/// Options on `stream`, with quick reconnection (the tests cut and kill).
pub fn redis_options(stream: &str) -> RedisOptions {
    RedisOptions::default()
        .stream(stream)
        .error_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .command_timeout(Duration::from_secs(2))
}

type Redis<R> = Channel<RedisBackend<R>, R>;

fn open<R: TestRuntime>(name: &str, server: &RedisServer, options: RedisOptions) -> Redis<R> {
    let channel: Redis<R> = tbone_dispatch_redis::builder(&unique_name::<R>(name), server)
        .options(options)
        .open()
        .unwrap_or_else(|e| panic!("cannot open channel {name}: {e}"));
    channel.kickoff().unwrap();
    channel
}

/// `(field, value)` pairs of an entry as `XRANGE` returns it.
fn fields(entry: &Value) -> Vec<(String, String)> {
    let Value::Array(parts) = entry else {
        panic!("not an entry: {entry:?}")
    };
    let Value::Array(flat) = &parts[1] else {
        panic!("no fields: {entry:?}")
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("not text: {other:?}"),
    };
    flat.chunks(2)
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .collect()
}

pub async fn two_instances_each_deliver_every_event_in_order<R: TestRuntime>() {
    let url = redis_url();
    let stream = fresh_stream::<R>(&url, "two_instances");
    let a = open::<R>("redis-two-a", &server_at(&url), redis_options(&stream));
    let b = open::<R>("redis-two-b", &server_at(&url), redis_options(&stream));
    let (carrier_a, mut client_a) = new_carrier::<R>();
    let (carrier_b, mut client_b) = new_carrier::<R>();
    a.subscribe("e", &carrier_a).unwrap();
    b.subscribe("e", &carrier_b).unwrap();

    for i in 0..8 {
        a.publish("e", &i).await.unwrap();
    }
    // Concurrent publishes go out as one pipeline, in order.
    let concurrent = (8..40).map(|i| b.publish("e", &i));
    for published in futures::future::join_all(concurrent).await {
        published.unwrap();
    }
    let expected: Vec<serde_json::Value> = (0..40).map(serde_json::Value::from).collect();
    assert_eq!(
        frames_n::<R>(&mut client_a, 40, "all events on instance a").await,
        expected
    );
    assert_eq!(
        frames_n::<R>(&mut client_b, 40, "all events on instance b").await,
        expected
    );
    assert!(
        client_a.try_recv().is_err() && client_b.try_recv().is_err(),
        "no duplicates"
    );
    let (stats_a, stats_b) = (a.backend().stats(), b.backend().stats());
    assert_eq!((stats_a.added, stats_a.received), (8, 40), "{stats_a:?}");
    assert_eq!(stats_b.added, 32, "{stats_b:?}");
    assert!(
        stats_b.batches < 32,
        "[{}] concurrent publishes were batched: {stats_b:?}",
        R::name()
    );
}

pub async fn stores_entries_as_key_and_json_data<R: TestRuntime>() {
    let url = redis_url();
    let name = format!("layout-{}", R::name());
    raw::<i64>(
        &url,
        client::cmd("DEL").arg(format!("tbone_channel_{name}")),
    );
    let channel: Redis<R> = tbone_dispatch_redis::open(&name, &server_at(&url)).unwrap();
    channel.kickoff().unwrap();
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("resource_create", &carrier).unwrap();

    channel
        .publish(
            "resource_create",
            &serde_json::json!({"id": 1, "from": "rust"}),
        )
        .await
        .unwrap();
    let stream = format!("tbone_channel_{name}");
    let entries: Value = raw(&url, client::cmd("XRANGE").arg(&stream).arg("-").arg("+"));
    let Value::Array(entries) = entries else {
        panic!("{entries:?}")
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(
        fields(&entries[0]),
        vec![
            ("key".to_string(), "resource_create".to_string()),
            ("data".to_string(), r#"{"id":1,"from":"rust"}"#.to_string()),
        ],
        "[{}] the frame's JSON text, as is",
        R::name()
    );

    // What another writer adds, read by us.
    raw::<String>(
        &url,
        client::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("key")
            .arg("resource_create")
            .arg("data")
            .arg(r#"{"id": 2, "from": "redis-cli"}"#),
    );
    let frames = frames_n::<R>(&mut client, 2, "our event and the raw one").await;
    assert_eq!(frames[0], serde_json::json!({"id": 1, "from": "rust"}));
    assert_eq!(frames[1], serde_json::json!({"id": 2, "from": "redis-cli"}));
    channel.stop().await;
}

pub async fn entries_present_at_kickoff_are_never_delivered<R: TestRuntime>() {
    let url = redis_url();
    let stream = fresh_stream::<R>(&url, "present_at_kickoff");
    // Ids in the past by the server's clock: kickoff is placed in the
    // stream to within a round trip (earlier, never later).
    let time: Vec<String> = raw(&url, &client::cmd("TIME"));
    let now_ms: u64 = time[0].parse::<u64>().unwrap() * 1000;
    for (before, ago_ms) in [("long before", 20_000), ("just before", 1_000)] {
        raw::<String>(
            &url,
            client::cmd("XADD")
                .arg(&stream)
                .arg(format!("{}-0", now_ms - ago_ms))
                .arg("key")
                .arg("e")
                .arg("data")
                .arg(serde_json::json!(before).to_string()),
        );
    }
    let channel = open::<R>(
        "redis-present-at-kickoff",
        &server_at(&url),
        redis_options(&stream),
    );
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).unwrap();
    channel.publish("e", &"first").await.unwrap();
    assert_eq!(
        frames_n::<R>(&mut client, 1, "the first event").await,
        vec![serde_json::json!("first")],
        "[{}] only what was published after kickoff",
        R::name()
    );
}

pub async fn malformed_entries_are_skipped_and_counted<R: TestRuntime>() {
    let url = redis_url();
    let stream = fresh_stream::<R>(&url, "malformed");
    let channel = open::<R>(
        "redis-malformed",
        &server_at(&url),
        redis_options(&stream).max_payload_bytes(256),
    );
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).unwrap();
    channel.publish("e", &"first").await.unwrap();
    assert_eq!(
        frames_n::<R>(&mut client, 1, "the first event").await,
        vec!["first"]
    );

    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let long = serde_json::json!("x".repeat(1000)).to_string();
    let bad: Vec<Vec<(&str, &[u8])>> = vec![
        vec![("data", b"1")],
        vec![("key", b"e")],
        vec![("key", b""), ("data", b"1")],
        vec![("key", &[0xff, 0xfe]), ("data", b"1")],
        vec![("key", b"e"), ("data", b"{not json")],
        vec![("key", b"e"), ("data", b"NaN")],
        vec![("key", b"e"), ("data", deep.as_bytes())],
        vec![("key", b"e"), ("data", long.as_bytes())],
        vec![("key", b"e"), ("data", br#""good""#), ("by", b"someone")],
    ];
    for fields in bad {
        let mut command = client::cmd("XADD");
        command.arg(&stream).arg("*");
        for (name, value) in fields {
            command.arg(name).arg(value);
        }
        raw::<String>(&url, &command);
    }
    assert_eq!(
        frames_n::<R>(&mut client, 1, "the good entry").await,
        vec!["good"]
    );
    assert_eq!(channel.backend().stats().skipped, 8);
    assert!(
        client.try_recv().is_err(),
        "no malformed entry reached the carrier"
    );
}

pub async fn falling_behind_the_stream_reports_one_gap<R: TestRuntime>() {
    let url = redis_url();
    let stream = fresh_stream::<R>(&url, "gap");
    let backend = RedisBackend::new(
        R::default(),
        &server_at(&url),
        "gap",
        redis_options(&stream).capacity(8).buffer(1).read_count(4),
    );
    let publish = |i: i32| Event::new("e", Payload::encode(&i).unwrap());
    let mut events = backend.consume().unwrap();
    backend.publish(publish(0)).await.unwrap();
    let first = within::<R, _>(REDIS_WAIT, "the first event", events.next())
        .await
        .expect("the event stream ended");
    assert_eq!(first.data().as_str(), "0");
    let position = first.position().expect("a stream entry has a position");
    assert!(
        position.as_str().parse::<StreamId>().is_ok(),
        "the entry id: {position:?}"
    );

    // The consumer stops reading: the tail fills its one-event buffer and
    // stops reading while 400 more events make the stream trim (in whole
    // nodes of about 100 entries) far past it.
    let last = 400;
    for i in 1..=last {
        backend.publish(publish(i)).await.unwrap();
    }
    let mut received = Vec::new();
    within::<R, _>(REDIS_WAIT, "the newest event after the gap", async {
        while received.last() != Some(&last) {
            let event = events.next().await.expect("the event stream ended");
            received.push(event.data().decode::<i32>().unwrap());
        }
    })
    .await;
    let stats = backend.stats();
    assert_eq!(
        stats.gaps, 1,
        "one gap, reported once: {stats:?}, received {received:?}"
    );
    let unique: HashSet<_> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "no duplicates: {received:?}");
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order: {received:?}"
    );
    assert!(
        received.len() < last as usize,
        "some events were trimmed: {received:?}"
    );
    let newest: Vec<i32> = (last - 7..=last).collect();
    assert!(
        received.ends_with(&newest),
        "the newest (at least the capacity) survive: {received:?}"
    );
}

/// A tail that read entries 1..=100, the first node of the stream, and
/// is held (its buffer full) before its next read, while events
/// 101..=`last` are published with `MAXLEN ~ 100`: whole nodes of 100
/// entries are trimmed from the head. The events it delivers once the
/// consumer reads on, and its stats.
async fn held_after_the_first_node_while_trimmed<R: TestRuntime>(
    test: &str,
    last: i32,
    first_left: i32,
) -> (Vec<i32>, tbone_dispatch_redis::RedisStats) {
    let url = redis_url();
    let stream = fresh_stream::<R>(&url, test);
    // The buffer holds 99 events: the tail hands them over and then waits
    // with the 100th, its last entry read, before its next read.
    let backend = RedisBackend::new(
        R::default(),
        &server_at(&url),
        test,
        redis_options(&stream)
            .capacity(100)
            .buffer(99)
            .read_count(256),
    );
    let publish = |i: i32| Event::new("e", Payload::encode(&i).unwrap());
    let mut events = backend.consume().unwrap();
    for i in 1..=100 {
        backend.publish(publish(i)).await.unwrap();
    }
    crate::eventually::<R>("the tail to read the first 100 entries", || {
        backend.stats().received == 100
    })
    .await;
    for i in 101..=last {
        backend.publish(publish(i)).await.unwrap();
    }
    // What the test is about: the stream now starts at `first_left` (the
    // server keeps nodes of 100 entries, its default).
    let head: Value = raw(
        &url,
        client::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1),
    );
    let Value::Array(head) = head else {
        panic!("{head:?}")
    };
    assert_eq!(
        fields(&head[0])[1].1,
        first_left.to_string(),
        "[{}] precondition: trimmed in whole nodes of 100 entries (stream-node-max-entries)",
        R::name()
    );
    let mut received = Vec::new();
    within::<R, _>(REDIS_WAIT, "every event left", async {
        while received.last() != Some(&last) {
            let event = events.next().await.expect("the event stream ended");
            received.push(event.data().decode::<i32>().unwrap());
        }
    })
    .await;
    (received, backend.stats())
}

/// The tail's last entry read was trimmed, but every entry after it is
/// still there: nothing was lost, so no gap (it was reported as one when
/// the gap check asked only whether the last entry read was still there).
pub async fn a_trimmed_last_entry_with_the_rest_kept_is_no_gap<R: TestRuntime>() {
    let (received, stats) =
        held_after_the_first_node_while_trimmed::<R>("trimmed_last_entry", 200, 101).await;
    assert_eq!(received, (1..=200).collect::<Vec<_>>(), "[{}]", R::name());
    assert_eq!(stats.gaps, 0, "[{}] no gap: {stats:?}", R::name());
}

/// Entries after the tail's position trimmed before it read them: exactly
/// one gap, and the delivery carries on from the oldest entry left.
pub async fn entries_trimmed_before_they_were_read_are_one_gap<R: TestRuntime>() {
    let (received, stats) =
        held_after_the_first_node_while_trimmed::<R>("trimmed_unread", 300, 201).await;
    let expected: Vec<i32> = (1..=100).chain(201..=300).collect();
    assert_eq!(received, expected, "[{}]", R::name());
    assert_eq!(stats.gaps, 1, "[{}] one gap: {stats:?}", R::name());
}

/// `publish_delivered` on a RedisChannel resolves once this instance has
/// read its own entry back from the stream and queued it for its carriers,
/// with how many took it; the other instance delivers it too.
pub async fn publish_delivered_waits_for_the_instance_to_read_it_back<R: TestRuntime>() {
    let url = redis_url();
    let stream = fresh_stream::<R>(&url, "delivered");
    let a = open::<R>(
        "redis-delivered-a",
        &server_at(&url),
        redis_options(&stream),
    );
    let b = open::<R>(
        "redis-delivered-b",
        &server_at(&url),
        redis_options(&stream),
    );
    let (carrier_a, mut client_a) = new_carrier::<R>();
    let (carrier_b, mut client_b) = new_carrier::<R>();
    a.subscribe("e", &carrier_a).unwrap();
    b.subscribe("e", &carrier_b).unwrap();
    for i in 0..5 {
        let before = carrier_a.frames_queued();
        let delivered = within::<R, _>(
            REDIS_WAIT,
            "a delivered publish",
            a.publish_delivered("e", &i),
        )
        .await
        .unwrap_or_else(|e| panic!("[{}] publish_delivered: {e}", R::name()));
        assert_eq!(delivered.carriers, 1, "[{}] one local carrier", R::name());
        assert_eq!(
            carrier_a.frames_queued(),
            before + 1,
            "[{}] in the carrier's queue when it returns",
            R::name()
        );
    }
    // Many at once: the tail may read entries before their pipeline's
    // reply reaches the writer; each receipt still finds its event.
    let concurrent = (5..45).map(|i| a.publish_delivered("e", &i));
    let all = within::<R, _>(
        REDIS_WAIT,
        "40 concurrent delivered publishes",
        futures::future::join_all(concurrent),
    )
    .await;
    for delivered in all {
        let delivered = delivered.unwrap_or_else(|e| panic!("[{}] {e}", R::name()));
        assert_eq!(delivered.carriers, 1);
    }
    let expected: Vec<serde_json::Value> = (0..45).map(serde_json::Value::from).collect();
    assert_eq!(
        frames_n::<R>(&mut client_a, 45, "instance a").await,
        expected
    );
    assert_eq!(
        frames_n::<R>(&mut client_b, 45, "instance b").await,
        expected
    );
}

/// A private Redis server a test can kill and restart on the same port
/// and data (`scripts/redis-test-server`); stopped and removed on drop.
pub struct PrivateRedis {
    script: String,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
    pid: String,
    port: String,
    dir: String,
}

impl PrivateRedis {
    /// Starts a server with AOF persistence (`appendfsync always`).
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`PrivateRedis::start`], returning the script's error.
    pub fn try_start() -> Result<Self, String> {
        let script =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/redis-test-server").to_string();
        let vars = try_run_script(&script, &["start"])?;
        let var = |name: &str| {
            vars.get(name)
                .cloned()
                .ok_or_else(|| format!("{script} start printed no {name}: {vars:?}"))
        };
        Ok(PrivateRedis {
            url: var("REDIS_URL")?,
            pid: var("REDIS_PID")?,
            port: var("REDIS_PORT")?,
            dir: var("REDIS_DIR")?,
            script,
        })
    }

    /// The port (127.0.0.1), the same after a restart.
    pub fn port(&self) -> u16 {
        self.port
            .parse()
            .unwrap_or_else(|_| panic!("REDIS_PORT {:?} is not a port", self.port))
    }

    /// SIGKILL: no clean shutdown.
    pub fn try_kill(&self) -> Result<(), String> {
        try_run_script(&self.script, &["kill", &self.pid]).map(|_| ())
    }

    /// Starts again on the same port and data.
    pub fn try_restart(&mut self) -> Result<(), String> {
        let vars = try_run_script(
            &self.script,
            &["start", "--port", &self.port, "--dir", &self.dir],
        )?;
        self.pid = vars
            .get("REDIS_PID")
            .cloned()
            .ok_or_else(|| format!("{} start printed no REDIS_PID: {vars:?}", self.script))?;
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .args(["stop", &self.pid])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Counts of each integer frame until `marker` arrived.
async fn counts_until<R: TestRuntime>(
    client: &mut futures::channel::mpsc::UnboundedReceiver<tbone_dispatch::Frame>,
    marker: i64,
) -> (BTreeMap<i64, u32>, Vec<serde_json::Value>) {
    let seen = collect_until::<R>(client, "the marker", |seen| {
        seen.last() == Some(&serde_json::Value::from(marker))
    })
    .await;
    let mut counts = BTreeMap::new();
    for value in &seen {
        *counts.entry(value.as_i64().unwrap()).or_insert(0) += 1;
    }
    (counts, seen)
}

pub async fn server_killed_and_restarted_loses_and_repeats_nothing<R: TestRuntime>() {
    let server = PrivateRedis::start();
    let stream = "tbone_channel_restart";
    let a = open::<R>(
        "redis-restart-a",
        &server_at(&server.url),
        redis_options(stream),
    );
    let b = open::<R>(
        "redis-restart-b",
        &server_at(&server.url),
        redis_options(stream),
    );
    let (carrier_a, mut client_a) = new_carrier::<R>();
    let (carrier_b, mut client_b) = new_carrier::<R>();
    a.subscribe("e", &carrier_a).unwrap();
    b.subscribe("e", &carrier_b).unwrap();

    // SIGKILL from another thread while four publishers flow, so that the
    // crash lands among writes that were just acknowledged.
    let killed = Arc::new(AtomicBool::new(false));
    let killer = {
        let killed = killed.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            server.try_kill().unwrap();
            killed.store(true, Ordering::SeqCst);
            server
        })
    };
    let acknowledged = Mutex::new(Vec::new());
    let publisher = |first: i64| {
        let (a, killed, acknowledged) = (&a, &killed, &acknowledged);
        async move {
            let mut i = first;
            while !killed.load(Ordering::SeqCst) {
                if a.publish("e", &i).await.is_ok() {
                    acknowledged.lock().unwrap().push(i);
                }
                i += 4;
            }
        }
    };
    futures::future::join4(publisher(0), publisher(1), publisher(2), publisher(3)).await;
    let mut server = killer.join().expect("the killer thread panicked");
    // Errors, not silence: with the server down, a publish fails.
    let refused = within::<R, _>(
        REDIS_WAIT,
        "a publish during the outage",
        a.publish("e", &-1),
    )
    .await;
    assert!(
        refused.is_err(),
        "[{}] a publish with the server down must fail",
        R::name()
    );
    server.try_restart().unwrap();

    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(
        acknowledged.len() >= 10,
        "[{}] publishes flowed before the crash: {acknowledged:?}",
        R::name()
    );
    // A marker published last: once it arrives, anything earlier (a
    // duplicate included) has arrived too, since order is kept.
    let marker = 1_000_000;
    within::<R, _>(REDIS_WAIT, "publishing after the restart", async {
        while a.publish("e", &marker).await.is_err() {
            R::default().sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for (instance, client) in [("a", &mut client_a), ("b", &mut client_b)] {
        let (counts, seen) = counts_until::<R>(client, marker).await;
        for i in &acknowledged {
            assert_eq!(
                counts.get(i),
                Some(&1),
                "[{}] instance {instance}: acknowledged event {i} in {seen:?}",
                R::name()
            );
        }
        assert!(
            counts.values().all(|n| *n == 1),
            "[{}] instance {instance} repeated: {seen:?}",
            R::name()
        );
    }
    for channel in [&a, &b] {
        let stats = channel.backend().stats();
        assert!(stats.reconnected >= 1, "{stats:?}");
        assert_eq!(stats.gaps, 0, "{stats:?}");
    }
}

pub async fn a_cut_connection_is_survived<R: TestRuntime>() {
    let url = redis_url();
    let stream = fresh_stream::<R>(&url, "cut");
    let upstream = server_at(&url);
    // The proxy runs on a tokio runtime of its own, whatever `R` is.
    let proxies = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream.port()));
    let proxy = proxies
        .spawn(Proxy::start(upstream_addr))
        .await
        .expect("the proxy's runtime")
        .expect("starting the proxy");
    let through_proxy = server_at(&format!("redis://{}/", proxy.addr()));
    let a = open::<R>("redis-cut-a", &upstream, redis_options(&stream));
    let b = open::<R>("redis-cut-b", &through_proxy, redis_options(&stream));
    let (carrier_b, mut client_b) = new_carrier::<R>();
    b.subscribe("e", &carrier_b).unwrap();
    b.publish("e", &0).await.unwrap();
    for i in 1..5 {
        a.publish("e", &i).await.unwrap();
    }
    let before: Vec<serde_json::Value> = (0..5).map(serde_json::Value::from).collect();
    assert_eq!(
        frames_n::<R>(&mut client_b, 5, "before the cut").await,
        before
    );

    let cut = proxy.cut();
    assert!(
        cut >= 2,
        "b's publishing and tailing connections were cut: {cut}"
    );
    for i in 5..10 {
        a.publish("e", &i).await.unwrap();
    }
    // b publishes again: the first attempt may meet the dead connection
    // (an error, not silence), then it reconnects.
    within::<R, _>(REDIS_WAIT, "b publishing after the cut", async {
        while b.publish("e", &10).await.is_err() {
            R::default().sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (mut counts, seen) = counts_until::<R>(&mut client_b, 10).await;
    for i in 0..5 {
        *counts.entry(i).or_insert(0) += 1;
    }
    for i in 0..=10 {
        assert_eq!(
            counts.get(&i),
            Some(&1),
            "[{}] {i} once, in 0..5 then {seen:?}",
            R::name()
        );
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "[{}] repeated: 0..5 then {seen:?}",
        R::name()
    );
    assert!(b.backend().stats().reconnected >= 1);
    assert!(proxy.accepted() >= 4, "b reconnected through the proxy");
    drop(proxy);
    proxies.shutdown_background();
}

/// Found in review: the channel's stop only aborted the tailing task, so
/// it could still be running when the stop returned.
pub async fn stop_waits_for_the_tailing_task<R: TestRuntime>() {
    let url = redis_url();
    let stream = fresh_stream::<R>(&url, "stop-tail");
    let channel = open::<R>("redis-stop-tail", &server_at(&url), redis_options(&stream));
    let (carrier, mut client) = new_carrier::<R>();
    channel.subscribe("e", &carrier).unwrap();
    within::<R, _>(REDIS_WAIT, "a publish", channel.publish("e", &1))
        .await
        .unwrap();
    within::<R, _>(REDIS_WAIT, "the first event", client.next()).await;
    assert!(channel.backend().stats().tailing, "[{}] tailing", R::name());

    within::<R, _>(REDIS_WAIT, "the stop", channel.stop()).await;
    assert!(
        !channel.backend().stats().tailing,
        "[{}] the tailing task is gone when the stop returns",
        R::name()
    );
}
