//! The axum `WebSocket` carrier: TBone's Sanic/aiohttp carriers, for axum
//! (feature `axum`).
//!
//! ```no_run
//! use axum::extract::{State, WebSocketUpgrade};
//! use axum::routing::get;
//! use tbone_dispatch_tokio::{axum_socket, MemoryChannel, SocketOptions};
//!
//! async fn events(ws: WebSocketUpgrade, State(pubsub): State<MemoryChannel>) -> axum::response::Response {
//!     let options = SocketOptions::new(["resource_create", "resource_update", "resource_delete"]);
//!     axum_socket::upgrade(ws, pubsub, options)
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pubsub = MemoryChannel::named("pubsub")?;
//!     pubsub.kickoff()?;
//!     let app = axum::Router::new().route("/ws/", get(events)).with_state(pubsub);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tbone_dispatch::{
    serve_socket, Backend, Channel, CloseReason, Incoming, Outgoing, SocketOptions,
};

use crate::Tokio;

/// What the serving loop needs to know of a message from the client.
pub fn incoming(message: Message) -> Incoming {
    match message {
        Message::Text(text) => Incoming::Text(text.as_str().to_owned()),
        Message::Binary(bytes) => Incoming::Binary(bytes.len()),
        Message::Close(_) => Incoming::Close,
        Message::Ping(_) | Message::Pong(_) => Incoming::Alive,
    }
}

/// The message that carries `item` to the client; frames share their bytes.
pub fn outgoing(item: Outgoing) -> Message {
    match item {
        Outgoing::Frame(frame) => match Utf8Bytes::try_from(frame.into_bytes()) {
            Ok(text) => Message::Text(text),
            // A Frame is UTF-8 by construction; kept total anyway.
            Err(_) => Message::Text(Utf8Bytes::from_static("")),
        },
        Outgoing::Ping => Message::Ping(Default::default()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

/// Serves an upgraded axum socket on `channel` until it closes. Set the
/// size limits on the upgrade ([`upgrade`] does).
pub async fn serve<B: Backend>(
    socket: WebSocket,
    channel: &Channel<B, Tokio>,
    options: SocketOptions,
) -> CloseReason {
    let (sink, stream) = socket.split();
    let sink = sink.with(|item| futures::future::ready(Ok::<_, axum::Error>(outgoing(item))));
    let stream = stream.map(|message| message.map(incoming));
    serve_socket(&Tokio::default(), channel, sink, stream, options).await
}

/// Answers a websocket upgrade request: applies the options' size limits
/// (and a [`READ_BUFFER_SIZE`](tbone_dispatch::READ_BUFFER_SIZE) read
/// buffer instead of 128 KiB) and serves the
/// socket on `channel` until it closes. The whole handler is
/// this one call.
pub fn upgrade<B: Backend>(
    upgrade: WebSocketUpgrade,
    channel: Channel<B, Tokio>,
    options: SocketOptions,
) -> Response {
    let max = options.get_max_message_size();
    upgrade
        .read_buffer_size(tbone_dispatch::READ_BUFFER_SIZE)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let reason = serve(socket, &channel, options).await;
            tracing::debug!(%reason, "websocket closed");
        })
}
