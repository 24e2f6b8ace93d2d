//! Server-sent events (`tbone_dispatch::sse`) over real HTTP on each
//! runtime: the core's plain byte stream, sent by a minimal HTTP/1.1
//! server written on the runtime's own TCP ([`TestRuntime::accept_loopback`]),
//! read by a raw client. What any HTTP server on tokio, async-std or smol
//! gets: resume from `Last-Event-ID`, and a departed client removed with no
//! event published.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{self, Either};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use serde_json::{json, Value};
use tbone_dispatch::sse::{self, SseOptions};
use tbone_dispatch::{Backend, Channel};
use tbone_dispatch_tokio::mongo::{self, MongoBackend, MongoOptions};

use crate::mongo::{connect_to, database, database_name, mongo_uri, MONGO_WAIT};
use crate::websocket::{open_running, publish, ClientIo};
use crate::{eventually, new_carrier, next_frames, unique_name, wait, within, TestRuntime, WAIT};

/// The events the suite's SSE server streams.
const EVENTS: &[&str] = &["tick"];

/// Largest request head the server reads.
const MAX_HEAD: usize = 8 * 1024;

/// How the server notices that its client went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    /// It reads the connection while it streams (as hyper does): the end
    /// of the client's side ends the response at once.
    Reads,
    /// It only writes: a departed client shows when a write fails, which
    /// only the stream's keep-alive comments cause when no event comes.
    WritesOnly,
}

/// The suite's SSE server; stops accepting when dropped.
struct SseServer {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Serves `channel`'s [`EVENTS`] as server-sent events on a fresh port,
/// one task per connection: reads the request head, answers with
/// `sse::RESPONSE_HEADERS` and `sse::stream` as the body (close-delimited,
/// `Connection: close`), and drops the body when the client is gone, as
/// `watch` notices it.
fn spawn_sse_server<B: Backend, R: TestRuntime>(
    channel: &Channel<B, R>,
    options: SseOptions,
    watch: Watch,
) -> SseServer {
    let (addr, mut incoming) = R::accept_loopback();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let runtime = R::default();
    let channel = channel.clone();
    let accept_loop = {
        let runtime = runtime.clone();
        async move {
            loop {
                match future::select(incoming.next(), &mut stopped).await {
                    Either::Left((Some(Ok((io, _peer))), _)) => {
                        let served = serve_one(io, channel.clone(), options.clone(), watch);
                        runtime.spawn(served).expect("spawning a connection's task");
                    }
                    Either::Left((Some(Err(error)), _)) => {
                        tracing::warn!(%error, "the SSE test server could not accept");
                    }
                    Either::Left((None, _)) | Either::Right(_) => break,
                }
            }
        }
    };
    runtime
        .spawn(accept_loop)
        .expect("spawning the accept loop");
    SseServer { addr, _stop: stop }
}

async fn serve_one<B: Backend, R: TestRuntime>(
    mut io: ClientIo,
    channel: Channel<B, R>,
    options: SseOptions,
    watch: Watch,
) {
    let Some(head) = read_head(&mut io).await else {
        return;
    };
    let last_event_id = header(&head, sse::LAST_EVENT_ID).and_then(sse::last_event_id);
    let mut body = match sse::stream(&channel, EVENTS, last_event_id, options).await {
        Ok(body) => body,
        Err(error) => {
            let refusal = format!("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{error}", error.to_string().len());
            let _ = io.write_all(refusal.as_bytes()).await;
            return;
        }
    };
    let mut response = String::from("HTTP/1.1 200 OK\r\nConnection: close\r\n");
    for (name, value) in sse::RESPONSE_HEADERS {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    if io.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = io.split();
    let send = async move {
        while let Some(Ok(chunk)) = body.next().await {
            if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
        // Dropping the body here is what tells the carrier to leave.
    };
    match watch {
        Watch::WritesOnly => send.await,
        Watch::Reads => {
            let gone = async move {
                let mut scratch = [0u8; 64];
                while let Ok(read) = reader.read(&mut scratch).await {
                    if read == 0 {
                        break;
                    }
                }
            };
            future::select(pin!(send), pin!(gone)).await;
        }
    }
}

/// The request head (up to the blank line), or `None` if the client
/// sent none.
async fn read_head(io: &mut ClientIo) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || io.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// The value of header `name` (case-insensitive) in a request head.
fn header<'h>(head: &'h [u8], name: &str) -> Option<&'h [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (field, value) = line.split_at(colon);
        field
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| value[1..].strip_suffix(b"\r").unwrap_or(&value[1..]))
    })
}

/// One event, as an `EventSource` dispatches it.
#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    data: Value,
}

/// A raw HTTP/1.1 client of the suite's server.
struct SseClient {
    io: ClientIo,
    text: String,
}

impl SseClient {
    /// Connects and requests the stream, with `Last-Event-ID` if given;
    /// fails the test unless the answer is a 200 event stream.
    async fn connect<R: TestRuntime>(addr: SocketAddr, last_event_id: Option<&str>) -> SseClient {
        let (mut io, _) = wait::<R, _>("connecting", R::connect_tcp(addr))
            .await
            .expect("connect");
        let mut request =
            String::from("GET /sse/ HTTP/1.1\r\nHost: suite\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        io.write_all(request.as_bytes())
            .await
            .expect("sending the request");
        let mut received = Vec::new();
        let head_end = wait::<R, _>("the response head", async {
            let mut buffer = [0u8; 1024];
            loop {
                if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let read = io.read(&mut buffer).await.expect("reading the response");
                assert_ne!(
                    read,
                    0,
                    "[{}] the server closed before answering",
                    R::name()
                );
                received.extend_from_slice(&buffer[..read]);
            }
        })
        .await;
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "[{}] {head}", R::name());
        assert!(
            head.contains("content-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("cache-control: no-cache\r\n"), "{head}");
        let text = String::from_utf8(received[head_end..].to_vec()).expect("UTF-8");
        SseClient { io, text }
    }

    /// The next event (comments skipped), within `limit`.
    async fn next_event<R: TestRuntime>(&mut self, limit: Duration) -> SseEvent {
        within::<R, _>(limit, "a server-sent event", async {
            let mut buffer = [0u8; 4096];
            loop {
                while let Some(end) = self.text.find("\n\n") {
                    let block: String = self.text.drain(..end + 2).collect();
                    if let Some(event) = parse_event(&block) {
                        return event;
                    }
                }
                let read = self.io.read(&mut buffer).await.expect("reading the stream");
                assert_ne!(read, 0, "[{}] the event stream ended", R::name());
                self.text
                    .push_str(std::str::from_utf8(&buffer[..read]).expect("UTF-8"));
            }
        })
        .await
    }

    /// The `data` of the next `n` TBone event frames, with their ids,
    /// each within `limit`.
    async fn next_ticks<R: TestRuntime>(
        &mut self,
        n: usize,
        limit: Duration,
    ) -> Vec<(String, Value)> {
        let mut ticks = Vec::with_capacity(n);
        while ticks.len() < n {
            let event = self.next_event::<R>(limit).await;
            assert_eq!(event.data["type"], "event", "{event:?}");
            let id = event
                .id
                .unwrap_or_else(|| panic!("an event without id: {:?}", event.data));
            ticks.push((id, event.data["payload"]["data"].clone()));
        }
        ticks
    }
}

fn parse_event(block: &str) -> Option<SseEvent> {
    let (mut id, mut data) = (None, Vec::new());
    for line in block
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with(':'))
    {
        match line.split_once(": ") {
            Some(("id", value)) => id = Some(value.to_string()),
            Some(("data", value)) => data.push(value),
            _ => panic!("unexpected line {line:?} in {block:?}"),
        }
    }
    (!data.is_empty()).then(|| SseEvent {
        id,
        data: serde_json::from_str(&data.join("\n")).expect("a JSON frame"),
    })
}

/// A client that reconnects with the id of the last event it received
/// gets exactly the events published while it was away, in order, then
/// the live ones, none twice; also while events keep being published
/// during the reconnect.
pub async fn last_event_id_resumes_exactly_the_missed_events<R: TestRuntime>() {
    let channel = open_running::<R>("sse-resume");
    let server = spawn_sse_server(&channel, SseOptions::default(), Watch::Reads);
    let mut first = SseClient::connect::<R>(server.addr, None).await;
    eventually::<R>("the stream subscribed", || {
        channel.subscriber_count("tick") == 1
    })
    .await;
    for n in 1..=3 {
        publish(&channel, "tick", &json!(n)).await;
    }
    let seen = first.next_ticks::<R>(3, WAIT).await;
    assert_eq!(
        seen.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let last_id = seen[2].0.clone();
    drop(first);
    eventually::<R>("the first stream gone", || {
        channel.subscriber_count("tick") == 0
    })
    .await;

    // Missed while away: 4 and 5; then a publisher keeps going while the
    // client reconnects, until 5 events after it is subscribed again.
    publish(&channel, "tick", &json!(4)).await;
    publish(&channel, "tick", &json!(5)).await;
    let publisher = {
        let channel = channel.clone();
        async move {
            let mut n = 5;
            let mut after_subscribed = 0;
            while after_subscribed < 5 {
                if channel.subscriber_count("tick") == 1 {
                    after_subscribed += 1;
                }
                n += 1;
                publish(&channel, "tick", &json!(n)).await;
                R::default().sleep(Duration::from_micros(200)).await;
            }
            n
        }
    };
    let (last, mut again) = future::join(
        publisher,
        SseClient::connect::<R>(server.addr, Some(&last_id)),
    )
    .await;
    let resumed = again.next_ticks::<R>(last - 3, WAIT).await;
    let numbers: Vec<Value> = resumed.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(
        numbers,
        (4..=last).map(|n| json!(n)).collect::<Vec<_>>(),
        "[{}] exactly the missed events, in order, then the live ones",
        R::name()
    );
    publish(&channel, "tick", &json!(last + 1)).await;
    let (_, live) = again.next_ticks::<R>(1, WAIT).await.remove(0);
    assert_eq!(live, json!(last + 1));
    let ids: BTreeSet<_> = seen.iter().chain(&resumed).map(|(id, _)| id).collect();
    assert_eq!(
        ids.len(),
        seen.len() + resumed.len(),
        "every event its own id"
    );
}

/// A client that closes its connection is removed at once by a server
/// that reads the connection (the body is dropped, the carrier leaves):
/// no event published, no keep-alive needed.
pub async fn a_client_that_leaves_is_removed_without_an_event<R: TestRuntime>() {
    let channel = open_running::<R>("sse-leaves");
    let server = spawn_sse_server(
        &channel,
        SseOptions::default().keep_alive(None),
        Watch::Reads,
    );
    let client = SseClient::connect::<R>(server.addr, None).await;
    eventually::<R>("the stream subscribed", || {
        channel.subscriber_count("tick") == 1
    })
    .await;
    drop(client);
    eventually::<R>("the departed client removed", || {
        channel.subscriber_count("tick") == 0
    })
    .await;
    assert_eq!(channel.stats().published, 0, "no event was published");
}

/// A server that never reads finds a departed client when a write fails:
/// with no event published, the stream's keep-alive comments are those
/// writes, so the client is removed after a keep-alive interval or two.
pub async fn a_server_that_only_writes_finds_a_departed_client_by_its_keep_alive<R: TestRuntime>() {
    let channel = open_running::<R>("sse-keep-alive");
    let options = SseOptions::default().keep_alive(Some(Duration::from_millis(50)));
    let server = spawn_sse_server(&channel, options, Watch::WritesOnly);
    let mut client = SseClient::connect::<R>(server.addr, None).await;
    eventually::<R>("the stream subscribed", || {
        channel.subscriber_count("tick") == 1
    })
    .await;
    // The comments arrive while the client is there.
    wait::<R, _>("a keep-alive comment", async {
        let mut buffer = [0u8; 256];
        while !client.text.contains(": keep-alive\n\n") {
            let read = client
                .io
                .read(&mut buffer)
                .await
                .expect("reading the stream");
            assert_ne!(read, 0, "the event stream ended");
            client
                .text
                .push_str(std::str::from_utf8(&buffer[..read]).expect("UTF-8"));
        }
    })
    .await;
    drop(client);
    eventually::<R>("the departed client removed", || {
        channel.subscriber_count("tick") == 0
    })
    .await;
    assert_eq!(channel.stats().published, 0, "no event was published");
}

/// The collection of the SSE tests on MongoDB.
const COLLECTION: &str = "tbone_channel_sse";

/// A MongoChannel instance called `name` on `db`'s SSE collection, kicked
/// off.
fn mongo_on<R: TestRuntime>(name: &str, db: &mongodb::Database) -> Channel<MongoBackend, R> {
    let channel: Channel<MongoBackend, R> = mongo::builder(&unique_name::<R>(name), db)
        .options(MongoOptions::default().collection(COLLECTION))
        .open()
        .unwrap_or_else(|e| panic!("cannot open channel {name}: {e}"));
    channel.kickoff().expect("kickoff");
    channel
}

/// MongoChannel's event ids are the documents' ObjectIds, the same on
/// every instance: an `EventSource` that leaves instance A reconnects to
/// instance B with A's last id and gets exactly what it missed, then the
/// live events.
pub async fn last_event_id_resumes_on_another_mongo_instance<R: TestRuntime>() {
    let test = "sse_resume_instance";
    let db_a = database::<R>(test).await;
    let db_b = connect_to(&mongo_uri(), &database_name::<R>(test)).await;
    let (a, b) = (mongo_on::<R>("sse-a", &db_a), mongo_on::<R>("sse-b", &db_b));
    let server_a = spawn_sse_server(&a, SseOptions::default(), Watch::Reads);
    let server_b = spawn_sse_server(&b, SseOptions::default(), Watch::Reads);
    // Tells when B has delivered (and so holds) what A's client saw.
    let (witness, mut delivered_on_b) = new_carrier::<R>();
    b.subscribe("tick", &witness).expect("subscribe");

    let mut first = SseClient::connect::<R>(server_a.addr, None).await;
    eventually::<R>("the stream subscribed on A", || {
        a.subscriber_count("tick") == 1
    })
    .await;
    for n in 0..3 {
        a.publish("tick", &n).await.expect("publish");
    }
    let seen = first.next_ticks::<R>(3, MONGO_WAIT).await;
    assert_eq!(
        seen.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let last_id = seen[2].0.clone();
    assert_eq!(last_id.len(), 24, "an ObjectId: {last_id}");
    drop(first);
    eventually::<R>("the stream gone from A", || a.subscriber_count("tick") == 0).await;

    for n in 3..5 {
        a.publish("tick", &n).await.expect("publish");
    }
    within::<R, _>(
        MONGO_WAIT,
        "B delivering the events",
        next_frames::<R>(&mut delivered_on_b, 5, "B's events"),
    )
    .await;
    let mut again = SseClient::connect::<R>(server_b.addr, Some(&last_id)).await;
    let missed = again.next_ticks::<R>(2, MONGO_WAIT).await;
    assert_eq!(
        missed.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>(),
        [3, 4],
        "[{}] exactly the missed events, from the other instance",
        R::name()
    );
    a.publish("tick", &5).await.expect("publish");
    let (_, live) = again.next_ticks::<R>(1, MONGO_WAIT).await.remove(0);
    assert_eq!(live, json!(5));
}
