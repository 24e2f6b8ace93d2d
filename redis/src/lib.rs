//! RedisChannel: tbone-dispatch channels shared by every instance through
//! a Redis stream, written once and run natively on tokio, async-std and
//! smol.
//!
//! Applications use it through a runtime crate's feature `redis`
//! (`tbone_dispatch_tokio::redis`, `tbone_dispatch_async_std::redis`,
//! `tbone_dispatch_smol::redis`, each with a `RedisChannel` alias). This
//! crate holds the backend, generic over the runtime: each runtime crate
//! implements [`Connect`] (its TCP stream) and the connections' tasks and
//! timers run on the application's runtime, so async-std and smol need no
//! tokio runtime.
//!
//! A channel named `pubsub` is the stream `tbone_channel_pubsub`; each
//! event is one entry `{key, data}`, `data` being the JSON text the frames
//! carry. See [`RedisBackend`] for what is guaranteed.
//!
//! Through a runtime crate (this example is compiled as the doc test of
//! `tbone_dispatch_tokio::redis`, which this crate cannot depend on):
//!
//! ```text
//! // With the runtime crate (here tokio's, feature `redis`):
//! use tbone_dispatch_tokio::{redis, Carrier, Frame, RedisChannel};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = redis::connect("redis://127.0.0.1:6379/").await?;
//! let pubsub: RedisChannel = redis::open("pubsub", &server)?;
//! pubsub.kickoff()?;
//!
//! let (socket, _browser) = futures::channel::mpsc::unbounded::<Frame>();
//! pubsub.subscribe("resource_create", &Carrier::from_sink(socket)?)?;
//! // Every instance on this server delivers it to its own subscribers.
//! pubsub.publish("resource_create", &serde_json::json!({"id": 1})).await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! One of them is needed (the `redis` crate insists on a runtime feature,
//! although nothing here uses its runtime):
//!
//! - `tokio` (default): what `tbone-dispatch-tokio` turns on;
//! - `smol`: what `tbone-dispatch-async-std` and `tbone-dispatch-smol` turn
//!   on (async-io based, no tokio runtime).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(any(feature = "tokio", feature = "smol")))]
compile_error!(
    "tbone-dispatch-redis needs its feature `tokio` or `smol`; the runtime crates' feature `redis` turns the right one on"
);

mod backend;
mod builder;
mod connection;
mod entry;
mod error;
mod gap;
mod history;
mod in_flight;
mod options;
mod server;
mod stream_id;
mod tail;
mod tail_reply;
mod writer;

pub use backend::{RedisBackend, RedisStats};
pub use builder::{builder, connect, open, RedisChannelBuilder};
pub use error::RedisError;
pub use options::RedisOptions;
pub use server::{futures_io, Connect, FuturesIo, RedisServer};
pub use stream_id::{NotAStreamId, StreamId};

/// The `redis` client this crate was built with.
pub use redis;
