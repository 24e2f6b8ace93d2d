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
//!             let _ = websocket::accept_and_serve(tcp, &pubsub, options).await;
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

/// The whole task of one connection on a tokio byte stream: the handshake
/// ([`accept`]), then [`serve`] until the socket closes (see
/// [`accept_and_serve_stream`]).
pub fn accept_and_serve<'a, S, B>(
    stream: S,
    channel: &'a tbone_dispatch::Channel<B, Tokio>,
    options: tbone_dispatch::SocketOptions,
) -> impl std::future::Future<Output = Result<tbone_dispatch::CloseReason, WsError>> + 'a
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: tbone_dispatch::Backend,
{
    accept_and_serve_stream(TokioAdapter::new(stream), channel, options)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tbone_dispatch::SocketOptions;

    use super::{accept, WsError};

    /// Found by the soak suite's fuzzing: a client that connected and sent
    /// nothing kept its connection task waiting for the upgrade request
    /// forever.
    #[tokio::test]
    async fn a_silent_client_cannot_hold_the_handshake_open() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let limit = Duration::from_millis(100);
        let options = SocketOptions::new(["e"]).handshake_timeout(limit);
        let started = Instant::now();
        let accepted = tokio::time::timeout(Duration::from_secs(5), accept(tcp, &options))
            .await
            .expect("the handshake ends within its timeout");
        let error = accepted.expect_err("no handshake can have completed");
        assert!(
            matches!(&error, WsError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "{error}"
        );
        assert!(started.elapsed() >= limit);
    }
}
