//! `GET /sse/`: the library's SSE carrier delivers TBone's frame for each
//! write, with its position as the event id; a client that reconnects with
//! `Last-Event-ID` receives what it missed; the carrier leaves the channel
//! once its client goes away.

// Test helpers: a failed expectation here is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::{http, id, memory_state, start, subscribed, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

#[tokio::test]
async fn sse_clients_receive_frames_and_leave_on_disconnect() {
    let server = start(memory_state()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    write
        .write_all(b"GET /sse/ HTTP/1.1\r\nHost: demo\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(read).lines();
    let status = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    subscribed(server.state.channel(), 1).await;

    let created = http(
        server.addr,
        "POST",
        "/api/entries/",
        Some(r#"{"author":"Ada","text":"via sse"}"#),
    )
    .await;
    assert_eq!(created.status, 201);
    let created: Value = serde_json::from_str(&created.body).unwrap();

    let data = tokio::time::timeout(WAIT, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the stream ended");
            if let Some(data) = line.strip_prefix("data: ") {
                let frame: Value = serde_json::from_str(data).unwrap();
                if frame["payload"]["data"]["_id"] == created["_id"] {
                    return frame;
                }
            }
        }
    })
    .await
    .expect("no SSE frame for the created entry");
    assert_eq!(data["type"], "event");
    assert_eq!(data["payload"]["name"], "resource_create");
    assert_eq!(data["payload"]["data"]["text"], "via sse");
    assert_eq!(id(&data["payload"]["data"]), id(&created));

    // The client leaves: its carrier leaves the channel with no event
    // published (issue 12, defect 6: it used to wait for its next write).
    drop(lines);
    drop(write);
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.state.channel().subscription_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SSE carrier did not leave the channel without an event"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

/// Shutting down with an SSE client connected: the client gets the frame
/// of the entry acknowledged before the shutdown, then the end of the
/// stream, and the server stops (a graceful shutdown waits for every
/// response, so a stream that never ends would hold it forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_sse_streams_after_what_they_were_sent() {
    let server = start(memory_state()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    write
        .write_all(b"GET /sse/ HTTP/1.1\r\nHost: demo\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(read).lines();
    let status = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    subscribed(server.state.channel(), 1).await;

    let created = http(
        server.addr,
        "POST",
        "/api/entries/",
        Some(r#"{"author":"Ada","text":"last words"}"#),
    )
    .await;
    assert_eq!(created.status, 201);
    let created: Value = serde_json::from_str(&created.body).unwrap();

    server.shutdown().await; // asserts the server stopped in time
    let frames = tokio::time::timeout(WAIT, async {
        let mut frames = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(data) = line.strip_prefix("data: ") {
                frames.push(serde_json::from_str::<Value>(data).unwrap());
            }
        }
        frames
    })
    .await
    .expect("the SSE stream did not end on shutdown");
    // Model signals are process-wide: entries written by the other tests of
    // this binary, running at the same time, may arrive too.
    let ids: Vec<String> = frames.iter().map(|f| id(&f["payload"]["data"])).collect();
    assert!(
        ids.contains(&id(&created)),
        "the acknowledged entry must arrive before the end of the stream: {ids:?}"
    );
}

/// One server-sent event, as an `EventSource` would dispatch it.
#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// A client of `/sse/` over HTTP/1.1 that reads the chunked body and
/// splits it into events.
struct SseClient {
    reader: BufReader<OwnedReadHalf>,
    _write: OwnedWriteHalf,
    headers: Vec<(String, String)>,
    text: String,
}

impl SseClient {
    async fn connect(addr: SocketAddr, last_event_id: Option<&str>) -> SseClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut request =
            String::from("GET /sse/ HTTP/1.1\r\nHost: demo\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        write.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(read);
        let mut headers = Vec::new();
        tokio::time::timeout(WAIT, async {
            let mut status = String::new();
            reader.read_line(&mut status).await.unwrap();
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        })
        .await
        .expect("no response head");
        SseClient {
            reader,
            _write: write,
            headers,
            text: String::new(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next event (comments skipped), within [`WAIT`].
    async fn next_event(&mut self) -> SseEvent {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(end) = self.text.find("\n\n") {
                    let block: String = self.text.drain(..end + 2).collect();
                    if let Some(event) = parse_event(&block) {
                        return event;
                    }
                }
                self.read_chunk().await;
            }
        })
        .await
        .expect("no server-sent event in time")
    }

    /// Reads one chunk of the chunked body into `text`.
    async fn read_chunk(&mut self) {
        let mut size = String::new();
        self.reader.read_line(&mut size).await.unwrap();
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        assert_ne!(size, 0, "the event stream ended");
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.unwrap();
        chunk.truncate(size);
        self.text.push_str(&String::from_utf8(chunk).unwrap());
    }
}

fn parse_event(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines().filter(|line| !line.is_empty()) {
        match line.split_once(": ") {
            Some(("id", value)) => id = Some(value.to_string()),
            Some(("event", value)) => event = Some(value.to_string()),
            Some(("data", value)) => data.push(value),
            _ => assert!(line.starts_with(':'), "unexpected line {line:?}"),
        }
    }
    (!data.is_empty()).then(|| SseEvent {
        id,
        event,
        data: serde_json::from_str(&data.join("\n")).unwrap(),
    })
}

/// The next event about one of `ids` (entries written by this test: model
/// signals are process-wide, so other tests' entries arrive too).
async fn next_of(client: &mut SseClient, ids: &[String]) -> SseEvent {
    loop {
        let event = client.next_event().await;
        let about = event.data["payload"]["data"]["_id"]
            .as_str()
            .map(str::to_string);
        if about.is_some_and(|about| ids.contains(&about)) {
            return event;
        }
    }
}

async fn create(addr: SocketAddr, text: &str) -> String {
    let created = http(
        addr,
        "POST",
        "/api/entries/",
        Some(&format!(r#"{{"author":"Ada","text":"{text}"}}"#)),
    )
    .await;
    assert_eq!(created.status, 201);
    id(&serde_json::from_str(&created.body).unwrap())
}

/// A browser's `EventSource` reconnects with the id of the last event it
/// received: the entries created while it was away arrive once each, in
/// order, then the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_reconnect_with_last_event_id_receives_the_missed_entries_once() {
    let server = start(memory_state()).await;
    let mut first = SseClient::connect(server.addr, None).await;
    assert_eq!(first.header("content-type"), Some("text/event-stream"));
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    subscribed(server.state.channel(), 1).await;

    let seen = create(server.addr, "seen").await;
    let event = next_of(&mut first, std::slice::from_ref(&seen)).await;
    assert_eq!(event.data["payload"]["name"], "resource_create");
    let last_id = event.id.expect("events carry an id");
    drop(first);
    subscribed(server.state.channel(), 0).await;

    let missed = vec![
        create(server.addr, "missed 1").await,
        create(server.addr, "missed 2").await,
    ];
    let mut again = SseClient::connect(server.addr, Some(&last_id)).await;
    let mut ours = missed.clone();
    ours.push(seen.clone());
    for expected in &missed {
        let event = next_of(&mut again, &ours).await;
        assert_eq!(&id(&event.data["payload"]["data"]), expected, "in order");
        assert!(event.id.is_some());
    }
    subscribed(server.state.channel(), 1).await;
    let live = create(server.addr, "live").await;
    ours.push(live.clone());
    let event = next_of(&mut again, &ours).await;
    assert_eq!(
        id(&event.data["payload"]["data"]),
        live,
        "then live entries, none twice"
    );
    server.shutdown().await;
}

/// An id the server cannot resume from (another process, or too old):
/// the client is told, as an `event: recovery_failed`, then gets live
/// entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_unknown_last_event_id_gets_recovery_failed_then_live_entries() {
    let server = start(memory_state()).await;
    let mut client = SseClient::connect(server.addr, Some("ffff-12")).await;
    let event = client.next_event().await;
    assert_eq!(event.event.as_deref(), Some("recovery_failed"));
    assert_eq!(event.data["type"], "recovery_failed");
    assert_eq!(event.data["position"], "ffff-12");
    assert_eq!(event.id, None);

    subscribed(server.state.channel(), 1).await;
    let live = create(server.addr, "after recovery").await;
    let event = next_of(&mut client, std::slice::from_ref(&live)).await;
    assert!(event.event.is_none() && event.id.is_some());
    server.shutdown().await;
}
