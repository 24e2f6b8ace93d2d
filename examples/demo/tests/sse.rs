//! `GET /sse/`: the custom SSE carrier delivers TBone's frame for each write
//! and leaves the channel once its client goes away.

mod support;

use serde_json::Value;
use support::{http, id, memory_state, start, subscribed, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
