//! [tbone-dispatch] on tokio: signals, channels and carriers for real-time
//! web backends.
//!
//! This crate re-exports the whole core API and fixes its runtime to
//! [`Tokio`], so `use tbone_dispatch_tokio::*` is all an application needs.
//!
//! ```
//! use futures::StreamExt;
//! use tbone_dispatch_tokio::{Carrier, Frame, MemoryChannel};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pubsub = MemoryChannel::named("tokio-quickstart")?;
//! pubsub.kickoff()?;
//!
//! // A carrier over any Sink<Frame>: here a channel standing in for a socket.
//! let (socket, mut client) = futures::channel::mpsc::unbounded::<Frame>();
//! let carrier = Carrier::from_sink(socket)?;
//! pubsub.subscribe("resource_create", &carrier)?;
//!
//! pubsub.publish("resource_create", &serde_json::json!({"id": 1})).await?;
//! let frame = client.next().await.unwrap();
//! assert_eq!(frame.as_str(), r#"{"type":"event","payload":{"name":"resource_create","data":{"id":1}}}"#);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `websocket` (default): websockets over async-tungstenite, in
//!   [`websocket`] (`accept`, `accept_and_serve`, `handshake`, `serve`).
//! - `axum`: the axum integration, `axum_socket` (the `SocketUpgrade`
//!   extractor, `router_multiplexer`) and `axum_sse` (server-sent events:
//!   the `SseRequest` extractor, `SseResponse`).
//! - `mongo`: `MongoChannel` (a MongoDB capped collection shared by every
//!   instance) and the model helper, in `mongo`.
//! - `redis`: `RedisChannel` (a Redis stream shared by every instance), in
//!   `redis`.
//! - `metrics`: counters, gauges and a latency histogram through the
//!   `metrics` facade (the core's `observe` module lists them).
//!
//! Server-sent events for any HTTP server: [`sse::stream`] (the core's,
//! re-exported), a `text/event-stream` body of `Bytes` chunks.
//!
//! [tbone-dispatch]: tbone_dispatch
#![cfg_attr(docsrs, feature(doc_cfg))]

mod runtime;

#[cfg(feature = "websocket")]
pub mod websocket;

#[cfg(feature = "axum")]
pub mod axum_socket;

#[cfg(feature = "axum")]
pub mod axum_sse;

pub use runtime::Tokio;
pub use tbone_dispatch::*;

/// The core crate, for its generic types (`dispatch::Channel<B, R>`).
pub use tbone_dispatch as dispatch;

tbone_dispatch::export_runtime!(Tokio, tbone_dispatch_tokio);

#[cfg(feature = "mongo")]
pub mod mongo;

/// A MongoDB-backed channel on tokio (feature `mongo`); open one with
/// [`mongo::open`].
#[cfg(feature = "mongo")]
pub type MongoChannel = tbone_dispatch::Channel<mongo::MongoBackend, Tokio>;

#[cfg(feature = "redis")]
pub mod redis;

/// A Redis-backed channel on tokio (feature `redis`); open one with
/// [`redis::open`].
#[cfg(feature = "redis")]
pub type RedisChannel = tbone_dispatch::Channel<redis::RedisBackend<Tokio>, Tokio>;
