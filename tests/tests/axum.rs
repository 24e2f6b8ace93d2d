//! The axum carrier (tokio only): a `Router` whose route answers with
//! `tbone_dispatch_tokio::axum_socket::SocketUpgrade::serve`, served by
//! `axum::serve` on 127.0.0.1, against real async-tungstenite clients:
//! events, close codes, authorization and origins before the upgrade, and
//! TBone's requests answered through an axum `Router`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use async_tungstenite::tungstenite::Message;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tbone_dispatch_tests::duplex::{request, response, send_json, BySession};
use tbone_dispatch_tests::websocket::{
    connect, connect_with, expect_close, next_message, next_text, refused_status, tbone_frame,
};
use tbone_dispatch_tests::{eventually, init_logging, unique_name, wait, TestRuntime, Tokio};
use tbone_dispatch_tokio::axum_socket::{router_multiplexer, SocketUpgrade};
use tbone_dispatch_tokio::{close_code, MemoryChannel, SocketOptions};

type AppState = (MemoryChannel, SocketOptions);

async fn events(ws: SocketUpgrade, State((channel, options)): State<AppState>) -> Response {
    ws.serve(&channel, options).await
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

/// An authorizer that needs a cookie or a header decides before the
/// upgrade: a client without it gets HTTP 401, one with an unknown session
/// 403 (its handshake fails with that status, nothing is subscribed); a
/// page of another host gets 403 whatever its credentials; a client with
/// them is served.
#[test]
fn axum_authorizer_and_origin_refuse_before_the_upgrade() {
    init_logging();
    Tokio::block_on(async {
        let options = SocketOptions::new(["e", "admin_audit"]).authorize(BySession);
        let (channel, addr) = serve_app("axum-authorize", options).await;
        let session = ("Cookie", "session=user-token");
        for (headers, status, what) in [
            (vec![], 401, "no credentials"),
            (
                vec![("Cookie", "session=stolen")],
                403,
                "an unknown session",
            ),
            (
                vec![("Origin", "https://evil.example"), session],
                403,
                "a foreign origin",
            ),
        ] {
            let (got, _) = refused_status::<Tokio>(addr, &headers).await;
            assert_eq!(got, status, "the HTTP status for {what}");
        }
        assert_eq!(
            channel.carrier_count(),
            0,
            "refused clients are not subscribed"
        );

        let own = format!("http://{addr}");
        let (mut user, _) = connect_with::<Tokio>(addr, &[("Origin", own.as_str()), session]).await;
        let (mut admin, _) =
            connect_with::<Tokio>(addr, &[("Authorization", "Bearer admin-token")]).await;
        // Subscribed before the handshake response, per event and client.
        assert_eq!(channel.subscriber_count("e"), 2);
        assert_eq!(channel.subscriber_count("admin_audit"), 1);
        wait::<Tokio, _>("publish", channel.publish("admin_audit", &json!(1)))
            .await
            .expect("publish");
        wait::<Tokio, _>("publish", channel.publish("e", &json!(2)))
            .await
            .expect("publish");
        assert_eq!(
            next_text::<Tokio>(&mut user, "e").await,
            tbone_frame("e", "2")
        );
        assert_eq!(
            next_text::<Tokio>(&mut admin, "admin_audit").await,
            tbone_frame("admin_audit", "1")
        );
        assert_eq!(
            next_text::<Tokio>(&mut admin, "e").await,
            tbone_frame("e", "2")
        );
    });
}

/// The application's REST API, as the socket's requests reach it through
/// `router_multiplexer`: entries (GET, POST with a JSON body), the cookie
/// the route sees, a route that fails with 500.
fn api() -> Router {
    #[derive(Deserialize)]
    struct NewEntry {
        text: String,
    }
    type Entries = Arc<Mutex<Vec<Value>>>;
    async fn list(State(entries): State<Entries>) -> Json<Vec<Value>> {
        Json(
            entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
    async fn create(
        State(entries): State<Entries>,
        Json(new): Json<NewEntry>,
    ) -> (StatusCode, Json<Value>) {
        let mut entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = json!({"id": entries.len() + 1, "text": new.text});
        entries.push(entry.clone());
        (StatusCode::CREATED, Json(entry))
    }
    async fn whoami(headers: HeaderMap) -> Json<Value> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Json(json!({"cookie": header("cookie"), "forwarded_for": header("x-forwarded-for")}))
    }
    async fn broken() -> (StatusCode, Json<Value>) {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "the database is down"})),
        )
    }
    Router::new()
        .route("/api/entries/", get(list).post(create))
        .route("/api/whoami/", get(whoami))
        .route("/api/broken/", get(broken))
        .with_state(Entries::default())
}

/// `router_multiplexer` answers TBone's requests over the socket through
/// the application's own axum `Router`: GET, POST with a JSON body (and the
/// router's own 422 for a body it rejects), the router's 404 for an
/// unknown route, a handler's 500; the upgrade request's cookie reaches
/// the route; the socket stays open after each.
#[test]
fn axum_router_multiplexer_routes_requests_through_the_router() {
    init_logging();
    Tokio::block_on(async {
        let options = SocketOptions::new(["e"]).on_message(router_multiplexer(api()));
        let (channel, addr) = serve_app("axum-router", options).await;
        let headers = [("Cookie", "session=abc"), ("X-Forwarded-For", "10.0.0.7")];
        let (mut client, _) = connect_with::<Tokio>(addr, &headers).await;
        let c = &mut client;
        let entries = "/api/entries/";

        assert_eq!(
            request::<Tokio>(c, json!(1), "GET", entries, None).await,
            (200, json!([]))
        );
        let body = Some(json!({"text": "over the socket"}));
        assert_eq!(
            request::<Tokio>(c, json!("two"), "POST", entries, body).await,
            (201, json!({"id": 1, "text": "over the socket"}))
        );
        let (status, _) =
            request::<Tokio>(c, json!(3), "POST", entries, Some(json!({"txt": 1}))).await;
        assert_eq!(status, 422, "axum's Json rejection");
        assert_eq!(
            request::<Tokio>(c, json!(4), "GET", entries, None).await,
            (200, json!([{"id": 1, "text": "over the socket"}]))
        );
        let (status, _) = request::<Tokio>(c, json!(5), "GET", "/api/nothing/", None).await;
        assert_eq!(status, 404, "the router's own 404");
        assert_eq!(
            request::<Tokio>(c, json!(6), "GET", "/api/broken/", None).await,
            (500, json!({"error": "the database is down"}))
        );
        assert_eq!(
            request::<Tokio>(c, json!(7), "GET", "/api/whoami/", None).await,
            (
                200,
                json!({"cookie": "session=abc", "forwarded_for": "10.0.0.7"})
            )
        );
        // A client cannot claim another address through its message's
        // headers: the connection's own forwarding headers win (found in
        // review: a message's X-Forwarded-For reached the route).
        send_json::<Tokio>(
            c,
            &json!({"type": "request", "key": 10, "method": "GET", "href": "/api/whoami/",
                    "headers": {"X-Forwarded-For": "6.6.6.6", "Cookie": "session=other"}}),
        )
        .await;
        assert_eq!(
            response::<Tokio>(c, &json!(10), "whoami with headers").await,
            (
                200,
                json!({"cookie": "session=other", "forwarded_for": "10.0.0.7"})
            )
        );
        // Still open: events and requests.
        wait::<Tokio, _>("publish", channel.publish("e", &json!(8)))
            .await
            .expect("publish");
        assert_eq!(next_text::<Tokio>(c, "e").await, tbone_frame("e", "8"));
        assert_eq!(
            request::<Tokio>(c, json!(9), "GET", entries, None).await,
            (200, json!([{"id": 1, "text": "over the socket"}]))
        );
    });
}
