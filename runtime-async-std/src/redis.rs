//! RedisChannel on async-std (feature `redis`): channels shared by every
//! instance through a Redis stream. The backend is `tbone-dispatch-redis`,
//! written once for every runtime; this module gives it async-std's TCP stream
//! (async-io, no tokio runtime) and fills in the runtime.
//!
//! ```no_run
//! use tbone_dispatch_async_std::{redis, RedisChannel};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = redis::connect("redis://127.0.0.1:6379/").await?;
//! let pubsub: RedisChannel = redis::open("pubsub", &server)?; // stream tbone_channel_pubsub
//! pubsub.kickoff()?;
//! pubsub.publish("resource_create", &serde_json::json!({"id": 1})).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;

pub use tbone_dispatch_redis::{
    builder, open, redis, RedisBackend, RedisChannelBuilder, RedisError, RedisOptions, RedisServer,
    RedisStats, StreamId,
};
use tbone_dispatch_redis::{futures_io, FuturesIo};

use crate::AsyncStd;

impl tbone_dispatch_redis::Connect for AsyncStd {
    type Stream = FuturesIo<async_std::net::TcpStream>;

    fn open_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let host = host.to_string();
        async move {
            let stream = async_std::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(futures_io(stream))
        }
    }
}

/// Parses `url` (`redis://[USER:PASSWORD@]HOST[:PORT][/DB]`) and checks
/// that the server answers.
pub async fn connect(url: &str) -> Result<RedisServer, RedisError> {
    tbone_dispatch_redis::connect::<AsyncStd>(url).await
}
