//! Websocket carriers on tokio, over async-tungstenite (feature
//! `websocket`). For axum, see `axum_socket`.
//!
//! ```no_run
//! use tbone_dispatch_tokio::{websocket, MemoryChannel, SocketOptions};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let pubsub = MemoryChannel::named("pubsub")?;
//!     pubsub.kickoff()?;
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//!     loop {
//!         let (tcp, _) = listener.accept().await?;
//!         let pubsub = pubsub.clone();
//!         tokio::spawn(async move {
//!             let options = SocketOptions::new(["resource_create"]);
//!             if let Ok(socket) = websocket::accept(tcp, &options).await {
//!                 websocket::serve(socket, &pubsub, options).await;
//!             }
//!         });
//!     }
//! }
//! ```

use async_tungstenite::tokio::TokioAdapter;

use crate::Tokio;

tbone_dispatch::websocket_glue!(Tokio);

/// Completes the server handshake on a tokio byte stream (a `TcpStream`),
/// with the options' size limits.
pub async fn accept<S>(
    stream: S,
    options: &tbone_dispatch::SocketOptions,
) -> Result<WebSocketStream<TokioAdapter<S>>, WsError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    accept_stream(TokioAdapter::new(stream), options).await
}
