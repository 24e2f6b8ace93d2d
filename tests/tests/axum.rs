//! The axum carrier (tokio only): a `Router` whose route answers with
//! `tbone_dispatch_tokio::axum_socket::upgrade`, served by `axum::serve` on
//! 127.0.0.1, against real async-tungstenite clients.

use std::net::SocketAddr;

use async_tungstenite::tungstenite::Message;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures::StreamExt;
use serde_json::json;
use tbone_dispatch_tests::websocket::{
    connect, expect_close, next_message, next_text, tbone_frame,
};
use tbone_dispatch_tests::{eventually, init_logging, unique_name, wait, TestRuntime, Tokio};
use tbone_dispatch_tokio::{axum_socket, close_code, MemoryChannel, SocketOptions};

type AppState = (MemoryChannel, SocketOptions);

async fn events(ws: WebSocketUpgrade, State((channel, options)): State<AppState>) -> Response {
    axum_socket::upgrade(ws, channel, options)
}

/// A running channel and an axum app serving it at `/ws` on a fresh port.
async fn serve_app(test: &str, options: SocketOptions) -> (MemoryChannel, SocketAddr) {
    let channel = MemoryChannel::named(&unique_name::<Tokio>(test)).expect("open");
    channel.kickoff().expect("kickoff");
    let app = axum::Router::new()
        .route("/ws", get(events))
        .with_state((channel.clone(), options));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("listener address");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            panic!("axum::serve failed: {e}");
        }
    });
    (channel, addr)
}

#[test]
fn axum_clients_receive_exact_text_frames() {
    init_logging();
    Tokio::block_on(async {
        let (channel, addr) = serve_app("axum-exact", SocketOptions::new(["e"])).await;
        let (mut first, _) = connect::<Tokio>(addr).await;
        let (mut second, _) = connect::<Tokio>(addr).await;
        eventually::<Tokio>("both sockets subscribed", || {
            channel.subscriber_count("e") == 2
        })
        .await;
        wait::<Tokio, _>("publish", channel.publish("e", &json!({"id": 1})))
            .await
            .expect("publish");
        for client in [&mut first, &mut second] {
            assert_eq!(
                next_message::<Tokio>(client, "the frame").await,
                Message::text(tbone_frame("e", r#"{"id":1}"#))
            );
        }
    });
}

#[test]
fn axum_closing_a_client_removes_its_carrier() {
    init_logging();
    Tokio::block_on(async {
        let (channel, addr) = serve_app("axum-close", SocketOptions::new(["a", "b"])).await;
        let (mut leaving, _) = connect::<Tokio>(addr).await;
        let (mut staying, _) = connect::<Tokio>(addr).await;
        eventually::<Tokio>("both sockets subscribed to a and b", || {
            channel.subscription_count() == 4
        })
        .await;
        wait::<Tokio, _>("closing", leaving.close(None))
            .await
            .expect("close");
        eventually::<Tokio>("the closed socket to leave a and b", || {
            channel.subscription_count() == 2 && channel.carrier_count() == 1
        })
        .await;
        let echoed = wait::<Tokio, _>("the server's answer to the close", leaving.next()).await;
        assert!(
            matches!(echoed, Some(Ok(Message::Close(_)))),
            "the server should answer a close frame with one, got {echoed:?}"
        );
        wait::<Tokio, _>("publish", channel.publish("b", &json!(2)))
            .await
            .expect("publish");
        assert_eq!(
            next_text::<Tokio>(&mut staying, "b").await,
            tbone_frame("b", "2")
        );
    });
}

#[test]
fn axum_oversized_message_closes_with_1009() {
    init_logging();
    Tokio::block_on(async {
        let options = SocketOptions::new(["e"]).max_message_size(1024);
        let (channel, addr) = serve_app("axum-oversized", options).await;
        let (mut victim, _) = connect::<Tokio>(addr).await;
        let (mut bystander, _) = connect::<Tokio>(addr).await;
        eventually::<Tokio>("both sockets subscribed", || {
            channel.subscriber_count("e") == 2
        })
        .await;
        wait::<Tokio, _>(
            "sending 1000 bytes",
            bystander.send(Message::text("y".repeat(1000))),
        )
        .await
        .expect("send");
        wait::<Tokio, _>(
            "sending 64 KiB",
            victim.send(Message::text("y".repeat(64 * 1024))),
        )
        .await
        .expect("send");
        expect_close::<Tokio>(&mut victim, close_code::TOO_BIG, "the oversized message").await;
        eventually::<Tokio>("the oversized socket to leave", || {
            channel.subscriber_count("e") == 1
        })
        .await;
        wait::<Tokio, _>("publish", channel.publish("e", &json!(1)))
            .await
            .expect("publish");
        assert_eq!(
            next_text::<Tokio>(&mut bystander, "e").await,
            tbone_frame("e", "1")
        );
    });
}
