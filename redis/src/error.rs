//! Errors of the Redis backend.

use std::time::Duration;

use tbone_dispatch::{BackendError, SpawnError};

/// What went wrong talking to Redis.
///
/// ```
/// use tbone_dispatch_redis::{RedisError, RedisServer};
///
/// let refused = RedisServer::parse("http://127.0.0.1:6379").unwrap_err();
/// assert!(matches!(refused, RedisError::Url { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not a Redis URL this crate can use.
    #[error("`{url}` is not a usable Redis URL ({reason}); expected redis://[USER:PASSWORD@]HOST[:PORT][/DB]")]
    Url {
        /// The URL, password hidden.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// No TCP connection could be made.
    #[error("cannot connect to Redis at {server}: {source}; check the URL and that the server is running")]
    Connect {
        /// The server, password hidden.
        server: String,
        /// The socket's error.
        #[source]
        source: std::io::Error,
    },
    /// The server or the `redis` client reported an error.
    #[error("{context} (Redis at {server}): {source}")]
    Command {
        /// What we were doing.
        context: String,
        /// The server, password hidden.
        server: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// The server did not answer in time.
    #[error("{context} (Redis at {server}): no answer within {after:?}; is the server reachable?")]
    Timeout {
        /// What we were doing.
        context: String,
        /// The server, password hidden.
        server: String,
        /// How long we waited.
        after: Duration,
    },
    /// The server answered something this crate cannot read.
    #[error("{context} (Redis at {server}): unexpected reply {reply}")]
    Reply {
        /// What we were doing.
        context: String,
        /// The server, password hidden.
        server: String,
        /// The reply, shortened.
        reply: String,
    },
    /// The server's replies to a pipeline did not match its commands one
    /// for one. Replies answer commands by their place alone, so none of
    /// them can be told to be a given command's: whether each command was
    /// carried out is unknown (it may have been), and the connection, out of
    /// step, is made again.
    #[error("{context} (Redis at {server}): {replies} replies to {commands} commands, so no reply can be matched to its command; each may or may not have been carried out (the connection is made again)")]
    ReplyCount {
        /// What we were doing.
        context: String,
        /// The server, password hidden.
        server: String,
        /// Commands sent in the pipeline.
        commands: usize,
        /// Replies received.
        replies: usize,
    },
    /// The runtime would not run the connection's task.
    #[error("cannot start the Redis connection's task: {0}")]
    Spawn(#[from] SpawnError),
    /// The stream was asked for what it stores before the channel's
    /// tailing task placed its start in it.
    #[error("the channel's tail has not placed its start in the stream yet; is the channel kicked off, and the server reachable?")]
    NotTailing,
}

impl RedisError {
    /// Whether the connection that produced this error must be dropped
    /// and made again (as opposed to one command being refused).
    pub(crate) fn breaks_connection(&self) -> bool {
        match self {
            RedisError::Command { source, .. } => {
                source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_unrecoverable_error()
            }
            RedisError::Reply { .. } => false,
            // Replies no longer line up with commands on this connection.
            RedisError::ReplyCount { .. } => true,
            _ => true,
        }
    }
}

impl From<RedisError> for BackendError {
    fn from(error: RedisError) -> Self {
        // The message says what failed (a publisher printing the error sees
        // it); the typed error stays reachable as the source.
        BackendError::with_source(format!("Redis: {error}"), error)
    }
}
