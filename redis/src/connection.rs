//! One connection to the server, made with the runtime crate's TCP stream
//! and driven by a task on the application's runtime: no runtime of the
//! `redis` crate's own.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::future::{select, Either};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Pipeline, Value};
use tbone_dispatch::{Runtime, Task};

use crate::{Connect, RedisError, RedisServer};

/// A connection and the task that drives its socket (aborted when the
/// connection is dropped, so a connection given up on is closed at once).
pub(crate) struct Connection {
    inner: MultiplexedConnection,
    server: String,
    driver: Task,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// `future`'s output, or `None` once `limit` has passed on `runtime`'s
/// clock.
pub(crate) async fn within<R: Runtime, F: Future>(
    runtime: &R,
    limit: Duration,
    future: F,
) -> Option<F::Output> {
    let future = pin!(future);
    let timer = pin!(runtime.sleep(limit));
    match select(future, timer).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

impl Connection {
    /// Connects to `server` and says hello (authentication, database),
    /// within `limit` for each step.
    pub(crate) async fn open<R: Connect>(
        runtime: &R,
        server: &RedisServer,
        limit: Duration,
    ) -> Result<Self, RedisError> {
        let shown = server.to_string();
        let timeout = |context: &str| RedisError::Timeout {
            context: context.to_string(),
            server: shown.clone(),
            after: limit,
        };
        let stream = within(
            runtime,
            limit,
            runtime.open_tcp(server.host(), server.port()),
        )
        .await
        .ok_or_else(|| timeout("connecting"))?
        .map_err(|source| RedisError::Connect {
            server: shown.clone(),
            source,
        })?;
        // Timeouts are this crate's (on the application's runtime): the
        // client's own would look for a runtime of its choosing.
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(None);
        let (inner, driver) = within(
            runtime,
            limit,
            MultiplexedConnection::new_with_config(server.settings(), stream, config),
        )
        .await
        .ok_or_else(|| timeout("setting up the connection"))?
        .map_err(|source| RedisError::Command {
            context: "setting up the connection".into(),
            server: shown.clone(),
            source,
        })?;
        let driver = runtime.spawn(driver)?;
        Ok(Connection {
            inner,
            server: shown,
            driver,
        })
    }

    /// Sends `pipeline` and returns one reply per command (a command the
    /// server refused is a `Value::ServerError` among them), within
    /// `limit`.
    pub(crate) async fn send<R: Runtime>(
        &mut self,
        runtime: &R,
        pipeline: &Pipeline,
        limit: Duration,
        context: &str,
    ) -> Result<Vec<Value>, RedisError> {
        let sent = self.inner.send_packed_commands(pipeline, 0, pipeline.len());
        match within(runtime, limit, sent).await {
            Some(Ok(replies)) if replies.len() == pipeline.len() => Ok(replies),
            Some(Ok(replies)) => Err(RedisError::ReplyCount {
                context: context.to_string(),
                server: self.server.clone(),
                commands: pipeline.len(),
                replies: replies.len(),
            }),
            Some(Err(source)) => Err(RedisError::Command {
                context: context.to_string(),
                server: self.server.clone(),
                source,
            }),
            None => Err(RedisError::Timeout {
                context: context.to_string(),
                server: self.server.clone(),
                after: limit,
            }),
        }
    }

    /// An error for a reply this crate cannot read.
    pub(crate) fn unexpected(&self, context: &str, reply: &impl std::fmt::Debug) -> RedisError {
        let reply = crate::entry::cut(format!("{reply:?}"), 200);
        RedisError::Reply {
            context: context.to_string(),
            server: self.server.clone(),
            reply,
        }
    }

    /// The server's error in `reply`, if it is one.
    pub(crate) fn refused(&self, context: &str, reply: &Value) -> Option<RedisError> {
        match reply {
            Value::ServerError(error) => Some(RedisError::Command {
                context: context.to_string(),
                server: self.server.clone(),
                source: error.clone().into(),
            }),
            _ => None,
        }
    }
}
