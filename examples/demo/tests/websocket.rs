//! The server on a loopback port: real HTTP, real websockets, the exact
//! frames each write produces, and graceful shutdown.

mod support;

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use serde_json::json;
use support::{connect, expected_frame, frame_for, http, memory_state, start, subscribed, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_reaches_the_socket_as_tbone_frames() {
    let server = start(memory_state()).await;
    let mut socket = connect(server.addr).await;
    subscribed(server.state.channel(), 1).await;

    let created = http(
        server.addr,
        "POST",
        "/api/entries/",
        Some(r#"{"author": "ann", "text": "hello"}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["_id"].as_str().unwrap().to_string();
    assert_eq!(
        frame_for(&mut socket, &id, WAIT).await,
        expected_frame("resource_create", &id, "ann", "hello")
    );

    let path = format!("/api/entries/{id}/");
    let replaced = http(
        server.addr,
        "PUT",
        &path,
        Some(r#"{"author": "bob", "text": "hi"}"#),
    )
    .await;
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert_eq!(
        frame_for(&mut socket, &id, WAIT).await,
        expected_frame("resource_update", &id, "bob", "hi")
    );

    let patched = http(server.addr, "PATCH", &path, Some(r#"{"text": "edited"}"#)).await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(
        frame_for(&mut socket, &id, WAIT).await,
        expected_frame("resource_update", &id, "bob", "edited")
    );

    let deleted = http(server.addr, "DELETE", &path, None).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(deleted.body, "");
    assert_eq!(
        frame_for(&mut socket, &id, WAIT).await,
        expected_frame("resource_delete", &id, "bob", "edited")
    );

    // A write that fails sends nothing: the next frame is about the next entry.
    let invalid = http(
        server.addr,
        "PUT",
        &path,
        Some(r#"{"author": "x", "text": "y"}"#),
    )
    .await;
    assert_eq!(invalid.status, 404);
    let next = http(
        server.addr,
        "POST",
        "/api/entries/",
        Some(r#"{"author": "cyd", "text": "last"}"#),
    )
    .await;
    let next_id = next.json()["_id"].as_str().unwrap().to_string();
    let frame = frame_for(&mut socket, &next_id, WAIT).await;
    assert_eq!(
        frame,
        expected_frame("resource_create", &next_id, "cyd", "last")
    );

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_gets_every_event_and_leaves_when_it_closes() {
    let server = start(memory_state()).await;
    let mut first = connect(server.addr).await;
    let mut second = connect(server.addr).await;
    subscribed(server.state.channel(), 2).await;

    let created = http(
        server.addr,
        "POST",
        "/api/entries/",
        Some(r#"{"author": "ann", "text": "to both"}"#),
    )
    .await;
    let id = created.json()["_id"].as_str().unwrap().to_string();
    let expected = expected_frame("resource_create", &id, "ann", "to both");
    assert_eq!(frame_for(&mut first, &id, WAIT).await, expected);
    assert_eq!(frame_for(&mut second, &id, WAIT).await, expected);

    // A client that closes leaves the channel; the other stays.
    first.close(None).await.unwrap();
    subscribed(server.state.channel(), 1).await;
    let patched = http(
        server.addr,
        "PATCH",
        &format!("/api/entries/{id}/"),
        Some(r#"{"text": "to one"}"#),
    )
    .await;
    assert_eq!(patched.status, 200);
    assert_eq!(
        frame_for(&mut second, &id, WAIT).await,
        expected_frame("resource_update", &id, "ann", "to one")
    );

    // A client that vanishes without a close handshake leaves too.
    drop(second);
    subscribed(server.state.channel(), 0).await;

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_and_stops_the_channel() {
    let server = start(memory_state()).await;
    let mut socket = connect(server.addr).await;
    subscribed(server.state.channel(), 1).await;
    let addr = server.addr;
    let state = server.state.clone();

    server.shutdown().await; // asserts the server ended and the channel stopped
    assert!(state.is_closing());
    // The client is told: a close frame with 1001 (going away).
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the socket was not closed on shutdown");
    assert_eq!(closed, Some(1001), "shutdown sends a close frame with 1001");
    // Nothing listens any more.
    let refused = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await;
    assert!(matches!(refused, Ok(Err(_))), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_the_api_over_real_http() {
    let server = start(memory_state()).await;

    let page = http(server.addr, "GET", "/", None).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    for hook in [
        r#"id="entry-form""#,
        r#"id="author""#,
        r#"id="text""#,
        r#"id="post""#,
        r#"id="entries""#,
        r#"id="status""#,
        r#"class="entry""#,
        r#"class="author""#,
        r#"class="text""#,
        "edit small",
        "delete small",
        "/ws/",
    ] {
        assert!(page.body.contains(hook), "the page lacks {hook}");
    }

    let created = http(
        server.addr,
        "POST",
        "/api/entries/",
        Some(r#"{"author": "ann", "text": "hello"}"#),
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("content-type"), Some("application/json"));
    let entry = created.json();
    let id = entry["_id"].as_str().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/entries/{id}/").as_str())
    );
    let list = http(server.addr, "GET", "/api/entries/", None).await;
    assert_eq!(list.json(), json!({"objects": [entry]}));

    let malformed = http(server.addr, "POST", "/api/entries/", Some("{")).await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("malformed JSON"));
    let wrong = http(server.addr, "DELETE", "/api/entries/", None).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET,HEAD,POST"));
    assert_eq!(
        wrong.json(),
        json!({"error": "method DELETE is not allowed here"})
    );

    // A plain GET on the socket's route is refused, as JSON too.
    let not_ws = http(server.addr, "GET", "/ws/", None).await;
    assert_eq!(not_ws.status, 400, "{not_ws:?}");
    assert!(not_ws.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("this is a websocket endpoint: "));

    server.shutdown().await;
}
