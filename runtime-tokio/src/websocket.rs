//! Websockets on tokio, over async-tungstenite (feature `websocket`): the
//! core's [`websocket`](tbone_dispatch::websocket) functions for tokio byte
//! streams (a `TcpStream`). The same functions exist, with the same names,
//! in `tbone-dispatch-async-std` and `tbone-dispatch-smol`. For axum, see
//! `axum_socket`.
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

use std::future::Future;

use async_tungstenite::tokio::TokioAdapter;
use tbone_dispatch::websocket as generic;
use tbone_dispatch::{Channels, CloseReason, HandshakeLimits, SocketOptions};

pub use tbone_dispatch::websocket::{
    async_tungstenite, config, incoming, outgoing, read_error, tungstenite, AcceptError, Error,
    Rewind, WebSocketStream,
};

use crate::Tokio;

/// A connection accepted on a tokio byte stream `S`.
pub type Accepted<S> = generic::Accepted<Tokio, TokioAdapter<S>>;

/// Accepts a websocket on a tokio byte stream: the upgrade request checked
/// (origin, authorization: refused with an HTTP status), the socket
/// subscribed, the handshake completed within the options' limits. See
/// [`tbone_dispatch::websocket::accept`].
pub async fn accept<S>(
    stream: S,
    channels: impl Into<Channels<Tokio>>,
    options: SocketOptions,
) -> Result<Accepted<S>, AcceptError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    generic::accept(TokioAdapter::new(stream), channels, options).await
}

/// The whole task of one connection on a tokio byte stream: [`accept`],
/// then serve until the socket closes.
pub fn accept_and_serve<S>(
    stream: S,
    channels: impl Into<Channels<Tokio>>,
    options: SocketOptions,
) -> impl Future<Output = Result<CloseReason, AcceptError>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    generic::accept_and_serve(TokioAdapter::new(stream), channels, options)
}

/// A bare handshake with `limits`, for a hand-written serving loop.
pub async fn handshake<S>(
    stream: S,
    limits: HandshakeLimits,
) -> Result<WebSocketStream<TokioAdapter<S>>, AcceptError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    generic::handshake(&Tokio::default(), TokioAdapter::new(stream), limits).await
}

/// Serves an already upgraded websocket until it closes (no upgrade
/// request: no origin check).
pub fn serve<S>(
    socket: WebSocketStream<TokioAdapter<S>>,
    channels: impl Into<Channels<Tokio>>,
    options: SocketOptions,
) -> impl Future<Output = CloseReason>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    generic::serve(socket, channels, options)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tbone_dispatch::{ChannelBuilder, MemoryBackend, SocketOptions};

    use super::{accept, handshake, AcceptError};
    use crate::Tokio;

    /// A socket's carrier (its writer task) runs on its channel's runtime,
    /// wherever the connection is accepted: the glue used to spawn it on
    /// `Tokio::default()`, the runtime of whichever task accepted.
    #[test]
    fn socket_carriers_run_on_the_channels_runtime() {
        let channel_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let channel = ChannelBuilder::new("tokio-websocket-carrier-runtime")
            .open(
                Tokio::with_handle(channel_runtime.handle().clone()),
                MemoryBackend::new,
            )
            .unwrap();
        let serving_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let alive = || channel_runtime.metrics().num_alive_tasks();
        let before = alive();
        serving_runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/ws/", listener.local_addr().unwrap());
            let client = tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(
                    url.trim_start_matches("ws://").trim_end_matches("/ws/"),
                )
                .await
                .unwrap();
                async_tungstenite::tokio::client_async(url, tcp)
                    .await
                    .map(|(socket, _)| socket)
            });
            let (tcp, _) = listener.accept().await.unwrap();
            let accepted = accept(tcp, &channel, SocketOptions::new(["e"]))
                .await
                .unwrap();
            let _client = client.await.unwrap().unwrap();
            assert_eq!(
                alive(),
                before + 1,
                "the carrier's writer was spawned on the channel's runtime"
            );
            drop(accepted);
        });
    }

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
        let accepted = tokio::time::timeout(
            Duration::from_secs(5),
            handshake(tcp, options.handshake_limits()),
        )
        .await
        .expect("the handshake ends within its timeout");
        let error = accepted.expect_err("no handshake can have completed");
        assert!(
            matches!(error, AcceptError::TimedOut(t) if t == limit),
            "{error}"
        );
        assert!(started.elapsed() >= limit);
    }
}
