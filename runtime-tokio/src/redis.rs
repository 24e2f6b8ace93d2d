//! RedisChannel on tokio (feature `redis`): channels shared by every
//! instance through a Redis stream. The backend is `tbone-dispatch-redis`,
//! written once for every runtime; this module gives it tokio's TCP stream
//! and fills in the runtime.
//!
//! ```no_run
//! use tbone_dispatch_tokio::{redis, Carrier, Frame, RedisChannel};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = redis::connect("redis://127.0.0.1:6379/").await?;
//! let pubsub: RedisChannel = redis::open("pubsub", &server)?; // stream tbone_channel_pubsub
//! pubsub.kickoff()?;
//!
//! let (socket, _browser) = futures::channel::mpsc::unbounded::<Frame>();
//! pubsub.subscribe("resource_create", &Carrier::from_sink(socket)?)?;
//! // Every instance on this server delivers it to its own subscribers.
//! pubsub.publish("resource_create", &serde_json::json!({"id": 1})).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;

pub use tbone_dispatch_redis::{
    builder, open, redis, RedisBackend, RedisChannelBuilder, RedisError, RedisOptions, RedisServer,
    RedisStats, StreamId,
};

use crate::Tokio;

impl tbone_dispatch_redis::Connect for Tokio {
    type Stream = tokio::net::TcpStream;

    fn open_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let host = host.to_string();
        async move {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        }
    }
}

/// Parses `url` (`redis://[USER:PASSWORD@]HOST[:PORT][/DB]`) and checks
/// that the server answers; call from within a tokio runtime.
pub async fn connect(url: &str) -> Result<RedisServer, RedisError> {
    tbone_dispatch_redis::connect::<Tokio>(url).await
}
