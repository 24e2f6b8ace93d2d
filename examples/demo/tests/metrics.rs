//! `/metrics`: the library's metrics in Prometheus' text format, counted
//! from a real socket and a real write.

mod support;

use support::{connect, frame_for, http, id, memory_state, start, subscribed, WAIT};

#[tokio::test]
async fn metrics_count_the_socket_and_the_event_of_a_write() {
    // Before the channel opens (the binary's `Server::build` does the same).
    assert!(tbone_dispatch_demo::metrics::recorder().is_some());
    let state = memory_state();
    let channel = state.channel().name().to_string();
    let server = start(state).await;
    let mut socket = connect(server.addr).await;
    subscribed(server.state.channel(), 1).await;

    let posted = http(
        server.addr,
        "POST",
        "/api/entries/",
        Some(r#"{"author":"ann","text":"counted"}"#),
    )
    .await;
    assert_eq!(posted.status, 201, "{posted:?}");
    let entry: serde_json::Value = serde_json::from_str(&posted.body).expect("JSON");
    frame_for(&mut socket, &id(&entry), WAIT).await;

    let scraped = http(server.addr, "GET", "/metrics", None).await;
    assert_eq!(scraped.status, 200, "{scraped:?}");
    assert!(
        scraped
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{scraped:?}"
    );
    let body = &scraped.body;
    let line = |name: &str| format!("{name}{{channel=\"{channel}\"}}");
    for (metric, value) in [
        (line("tbone_events_published_total"), 1),
        (line("tbone_events_received_total"), 1),
        (line("tbone_frames_delivered_total"), 1),
        (line("tbone_subscriptions"), 3),
        ("tbone_sockets_connected".to_string(), 1),
    ] {
        assert!(
            body.lines().any(|l| l == format!("{metric} {value}")),
            "no `{metric} {value}` in:\n{body}"
        );
    }
    assert!(
        body.contains(&line("tbone_delivery_latency_seconds_count")),
        "no latency histogram in:\n{body}"
    );
    server.shutdown().await;
}
