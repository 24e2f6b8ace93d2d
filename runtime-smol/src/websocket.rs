//! Websockets on smol, over async-tungstenite (feature `websocket`): the
//! core's [`websocket`](tbone_dispatch::websocket) functions with this
//! runtime filled in. The same functions exist, with the same names, in the
//! other runtime crates.
//!
//! ```no_run
//! use tbone_dispatch_smol::{websocket, MemoryChannel, SocketOptions};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     smol::block_on(async {
//!         let pubsub = MemoryChannel::named("pubsub")?;
//!         pubsub.kickoff()?;
//!         let listener = smol::net::TcpListener::bind("127.0.0.1:8000").await?;
//!         loop {
//!             let (tcp, _) = listener.accept().await?;
//!             let pubsub = pubsub.clone();
//!             smol::spawn(async move {
//!                 let options = SocketOptions::new(["resource_create"]);
//!                 let _ = websocket::accept_and_serve(tcp, &pubsub, options).await;
//!             })
//!             .detach();
//!         }
//!     })
//! }
//! ```

use std::future::Future;

use futures::{AsyncRead, AsyncWrite};
use tbone_dispatch::websocket as generic;
use tbone_dispatch::{Channels, CloseReason, HandshakeLimits, SocketOptions};

pub use tbone_dispatch::websocket::{
    async_tungstenite, config, incoming, outgoing, read_error, tungstenite, AcceptError, Error,
    Rewind, WebSocketStream,
};

use crate::Smol;

/// A connection accepted on byte stream `S`.
pub type Accepted<S> = generic::Accepted<Smol, S>;

/// Accepts a websocket: the upgrade request checked (origin,
/// authorization: refused with an HTTP status), the socket subscribed, the
/// handshake completed within the options' limits. See
/// [`tbone_dispatch::websocket::accept`].
pub async fn accept<S>(
    stream: S,
    channels: impl Into<Channels<Smol>>,
    options: SocketOptions,
) -> Result<Accepted<S>, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    generic::accept(stream, channels, options).await
}

/// The whole task of one connection: [`accept`], then serve until the
/// socket closes.
pub fn accept_and_serve<S>(
    stream: S,
    channels: impl Into<Channels<Smol>>,
    options: SocketOptions,
) -> impl Future<Output = Result<CloseReason, AcceptError>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    generic::accept_and_serve(stream, channels, options)
}

/// A bare handshake with `limits`, for a hand-written serving loop.
pub async fn handshake<S>(
    stream: S,
    limits: HandshakeLimits,
) -> Result<WebSocketStream<S>, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    generic::handshake(&Smol, stream, limits).await
}

/// Serves an already upgraded websocket until it closes (no upgrade
/// request: no origin check).
pub fn serve<S>(
    socket: WebSocketStream<S>,
    channels: impl Into<Channels<Smol>>,
    options: SocketOptions,
) -> impl Future<Output = CloseReason>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    generic::serve(socket, channels, options)
}
