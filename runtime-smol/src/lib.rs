//! [tbone-dispatch] on smol: signals, channels and carriers for real-time
//! web backends.
//!
//! This crate re-exports the whole core API with its runtime fixed to
//! [`Smol`] (smol's global executor), so `use tbone_dispatch_smol::*` is all
//! you need.
//!
//! ```
//! use futures::StreamExt;
//! use tbone_dispatch_smol::{Carrier, Frame, MemoryChannel};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let pubsub = MemoryChannel::named("smol-quickstart")?;
//!     pubsub.kickoff()?;
//!
//!     let (socket, mut client) = futures::channel::mpsc::unbounded::<Frame>();
//!     let carrier = Carrier::from_sink(socket)?;
//!     pubsub.subscribe("resource_create", &carrier)?;
//!
//!     pubsub.publish("resource_create", &serde_json::json!({"id": 1})).await?;
//!     let frame = client.next().await.unwrap();
//!     assert_eq!(frame.as_str(), r#"{"type":"event","payload":{"name":"resource_create","data":{"id":1}}}"#);
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Features
//!
//! - `websocket` (default): websockets over async-tungstenite, in
//!   [`websocket`] (`accept`, `accept_and_serve`, `handshake`, `serve`).
//! - `mongo`: `MongoChannel` and the model helper (the MongoDB driver runs
//!   on a small tokio runtime owned by `tbone-dispatch-tokio`).
//! - `redis`: `RedisChannel` (a Redis stream shared by every instance), in
//!   `redis`: native on async-io, no tokio runtime.
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

pub use runtime::Smol;
pub use tbone_dispatch::*;

/// The core crate, for its generic types (`dispatch::Channel<B, R>`).
pub use tbone_dispatch as dispatch;

tbone_dispatch::export_runtime!(Smol, tbone_dispatch_smol);

/// MongoChannel and the model helper (feature `mongo`): the implementation
/// in `tbone-dispatch-tokio`, whose driver work runs on a background tokio
/// runtime, so it works unchanged on this runtime.
#[cfg(feature = "mongo")]
pub use tbone_dispatch_tokio::mongo;

/// A MongoDB-backed channel on this runtime (feature `mongo`); open one
/// with [`mongo::open`].
#[cfg(feature = "mongo")]
pub type MongoChannel = tbone_dispatch::Channel<mongo::MongoBackend, Smol>;

#[cfg(feature = "redis")]
pub mod redis;

/// A Redis-backed channel on this runtime (feature `redis`); open one with
/// [`redis::open`].
#[cfg(feature = "redis")]
pub type RedisChannel = tbone_dispatch::Channel<redis::RedisBackend<Smol>, Smol>;
