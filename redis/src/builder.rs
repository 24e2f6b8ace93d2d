//! Opening a Redis channel: channel options plus [`RedisOptions`].

use std::fmt;
use std::marker::PhantomData;

use tbone_dispatch::{Channel, ChannelBuilder, ChannelError, Envelope, HistoryLimits};

use crate::connection::Connection;
use crate::{Connect, RedisBackend, RedisError, RedisOptions, RedisServer};

/// Parses `url` and checks that the server answers (a connection is made
/// and `PING` sent), on runtime `R`. The runtime crates' `redis::connect`
/// fill in their runtime.
///
/// ```no_run
/// use tbone_dispatch_redis::{Connect, RedisError, RedisServer};
///
/// async fn reach<R: Connect>() -> Result<RedisServer, RedisError> {
///     tbone_dispatch_redis::connect::<R>("redis://127.0.0.1:6379/").await
/// }
/// ```
pub async fn connect<R: Connect>(url: &str) -> Result<RedisServer, RedisError> {
    let server = RedisServer::parse(url)?;
    let runtime = R::default();
    let limit = RedisOptions::default().command_timeout;
    let mut connection = Connection::open(&runtime, &server, limit).await?;
    let mut pipeline = redis::pipe();
    pipeline.cmd("PING");
    let reply = connection
        .send(&runtime, &pipeline, limit, "sending PING")
        .await?;
    if let Some(refused) = reply
        .first()
        .and_then(|reply| connection.refused("sending PING", reply))
    {
        return Err(refused);
    }
    Ok(server)
}

/// Opens (or returns) the Redis channel `name` on `server`, with default
/// options, for runtime `R` (inferred, e.g. from the runtime crate's
/// `RedisChannel`).
///
/// ```no_run
/// use tbone_dispatch_redis::{Connect, RedisServer};
///
/// async fn demo<R: Connect>(server: &RedisServer) -> Result<(), Box<dyn std::error::Error>> {
///     let pubsub = tbone_dispatch_redis::open::<R>("pubsub", server)?; // stream tbone_channel_pubsub
///     pubsub.kickoff()?;
///     pubsub.publish("resource_create", &serde_json::json!({"id": 1})).await?;
///     Ok(())
/// }
/// ```
pub fn open<R: Connect>(
    name: &str,
    server: &RedisServer,
) -> Result<Channel<RedisBackend<R>, R>, ChannelError> {
    builder(name, server).open()
}

/// Options for opening a Redis channel; see [`open`].
pub fn builder<R: Connect>(name: &str, server: &RedisServer) -> RedisChannelBuilder<R> {
    RedisChannelBuilder {
        channel: ChannelBuilder::new(name),
        name: name.to_string(),
        server: server.clone(),
        options: RedisOptions::default(),
        runtime: PhantomData,
    }
}

/// Builds a Redis channel: channel options plus [`RedisOptions`].
///
/// ```no_run
/// use tbone_dispatch_redis::{Connect, RedisOptions, RedisServer};
///
/// fn open<R: Connect>(server: &RedisServer) -> Result<(), tbone_dispatch::ChannelError> {
///     let pubsub = tbone_dispatch_redis::builder::<R>("pubsub", server)
///         .options(RedisOptions::default().capacity(100_000))
///         .open()?;
///     pubsub.kickoff()
/// }
/// ```
pub struct RedisChannelBuilder<R> {
    channel: ChannelBuilder,
    name: String,
    server: RedisServer,
    options: RedisOptions,
    runtime: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for RedisChannelBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisChannelBuilder")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<R: Connect> RedisChannelBuilder<R> {
    /// The backend's options.
    pub fn options(mut self, options: RedisOptions) -> Self {
        self.options = options;
        self
    }

    /// The channel's envelope (default TBone's frame).
    pub fn envelope(mut self, envelope: impl Envelope) -> Self {
        self.channel = self.channel.envelope(envelope);
        self
    }

    /// How many recent events the channel keeps in memory for clients
    /// that resume (see [`ChannelBuilder::history`]; the positions are the
    /// entries' ids, the same on every instance). A position it no longer
    /// holds is read from the stream itself while the stream has it.
    pub fn history(mut self, limits: HistoryLimits) -> Self {
        self.channel = self.channel.history(limits);
        self
    }

    /// Opens (or returns) the channel on `R`'s default runtime.
    pub fn open(self) -> Result<Channel<RedisBackend<R>, R>, ChannelError> {
        self.open_on(R::default())
    }

    /// Opens (or returns) the channel on `runtime`.
    pub fn open_on(self, runtime: R) -> Result<Channel<RedisBackend<R>, R>, ChannelError> {
        let RedisChannelBuilder {
            channel,
            name,
            server,
            options,
            ..
        } = self;
        // What makes two opens of the name the same channel.
        let settings = format!(
            "Redis stream `{}` at {server} (capacity ~{}, batches of {}, buffer {}, reads of {}, block {:?}, timeout {:?})",
            options.stream_name(&name),
            options.capacity,
            options.max_batch,
            options.buffer,
            options.read_count,
            options.block,
            options.command_timeout,
        );
        channel
            .backend_settings(settings)
            .max_payload_bytes(options.max_payload)
            .open(runtime, |runtime| {
                RedisBackend::new(runtime.clone(), &server, &name, options)
            })
    }
}
