//! Where the Redis server is, and how a runtime crate reaches it.

use std::fmt;
use std::future::Future;
use std::io;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use tbone_dispatch::Runtime;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::RedisError;

/// A runtime that can open a TCP connection to the server: what each
/// runtime crate adds to its [`Runtime`] (tokio's `TcpStream` on tokio,
/// async-io's on async-std and smol), so that one generic backend runs
/// natively everywhere.
///
/// The stream is read and written through tokio's IO traits, which the
/// `redis` crate uses (no tokio runtime needed); a `futures` stream goes
/// through [`futures_io`].
///
/// ```
/// use std::future::Future;
/// use std::io;
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch_redis::{futures_io, Connect, FuturesIo};
///
/// /// A runtime whose "network" is an in-memory pipe (tests do this).
/// #[derive(Clone, Default)]
/// struct Piped(ManualRuntime);
/// # impl tbone_dispatch::Runtime for Piped {
/// #     fn spawn<F>(&self, task: F) -> Result<tbone_dispatch::Task, tbone_dispatch::SpawnError>
/// #     where F: Future<Output = ()> + Send + 'static { self.0.spawn(task) }
/// #     fn sleep(&self, d: std::time::Duration) -> impl Future<Output = ()> + Send + 'static { self.0.sleep(d) }
/// # }
///
/// impl Connect for Piped {
///     type Stream = FuturesIo<futures::io::Cursor<Vec<u8>>>;
///
///     fn open_tcp(&self, _host: &str, _port: u16) -> impl Future<Output = io::Result<Self::Stream>> + Send {
///         async { Ok(futures_io(futures::io::Cursor::new(Vec::new()))) }
///     }
/// }
/// ```
pub trait Connect: Runtime + Default {
    /// The runtime's TCP stream.
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;

    /// Connects to `host:port` (with `TCP_NODELAY`: the backend sends
    /// small requests and waits for each answer).
    fn open_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// A `futures` byte stream (async-std's or smol's `TcpStream`) seen
/// through tokio's IO traits; see [`futures_io`].
pub type FuturesIo<S> = Compat<S>;

/// Adapts a `futures` byte stream for [`Connect::Stream`].
pub fn futures_io<S>(stream: S) -> FuturesIo<S>
where
    S: futures::AsyncRead + futures::AsyncWrite,
{
    stream.compat()
}

/// A Redis server, parsed from its URL: where a [`RedisBackend`] connects
/// (each backend opens its own connections: one to publish, one to tail).
///
/// ```
/// use tbone_dispatch_redis::RedisServer;
///
/// let server = RedisServer::parse("redis://ann:secret@127.0.0.1:6380/2").unwrap();
/// assert_eq!(server.to_string(), "redis://ann:***@127.0.0.1:6380/2");
/// assert_eq!(server.db(), 2);
/// ```
///
/// [`RedisBackend`]: crate::RedisBackend
#[derive(Clone)]
pub struct RedisServer {
    host: String,
    port: u16,
    redis: RedisConnectionInfo,
    shown: String,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisServer").field(&self.shown).finish()
    }
}

/// The URL, password hidden.
impl fmt::Display for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl RedisServer {
    /// Parses `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` (port 6379 and
    /// database 0 by default). TLS (`rediss://`) and Unix sockets are not
    /// supported yet, and are refused here rather than at first use.
    pub fn parse(url: &str) -> Result<Self, RedisError> {
        let refused = |reason: String| RedisError::Url {
            url: redact(url),
            reason,
        };
        if !url.starts_with("redis://") {
            return Err(refused(
                "only redis:// URLs are supported (no TLS, no Unix socket)".into(),
            ));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| refused(e.to_string()))?;
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => return Err(refused(format!("unsupported address {other:?}"))),
        };
        let redis = info.redis_settings().clone();
        let user = match (redis.username(), redis.password()) {
            (Some(user), _) => format!("{user}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (None, None) => String::new(),
        };
        let shown = format!("redis://{user}{host}:{port}/{}", redis.db());
        Ok(RedisServer {
            host,
            port,
            redis,
            shown,
        })
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database number.
    pub fn db(&self) -> i64 {
        self.redis.db()
    }

    pub(crate) fn settings(&self) -> &RedisConnectionInfo {
        &self.redis
    }
}

/// `url` with any password hidden, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_passwords_never_shown() {
        let server = RedisServer::parse("redis://127.0.0.1/").unwrap();
        assert_eq!(
            (server.host(), server.port(), server.db()),
            ("127.0.0.1", 6379, 0)
        );
        assert_eq!(server.to_string(), "redis://127.0.0.1:6379/0");
        let server = RedisServer::parse("redis://:pw@h:1/3").unwrap();
        assert_eq!(server.to_string(), "redis://:***@h:1/3");
        assert!(!format!("{server:?}").contains("pw"));
        for bad in [
            "rediss://h:1",
            "unix:///tmp/r.sock",
            "mongodb://h:1",
            "redis://h:99999",
        ] {
            let error = RedisServer::parse(bad).unwrap_err();
            assert!(matches!(error, RedisError::Url { .. }), "{bad}: {error}");
        }
        let error = RedisServer::parse("rediss://ann:pw@h:1").unwrap_err();
        assert!(!error.to_string().contains("pw"), "{error}");
    }
}
