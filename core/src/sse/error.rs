//! Why an SSE stream could not be started.

use crate::{SpawnError, SubscribeError};

/// An SSE stream could not be started or subscribed: answer the request
/// with an error status (503 suits every case but
/// [`SseError::ZeroKeepAlive`], a mistake in the server's settings).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// The runtime could not start the stream's carrier (for tokio: called
    /// outside a runtime).
    #[error("cannot start the event stream's carrier: {0}")]
    Spawn(#[source] SpawnError),
    /// A channel refused the subscription (stopped, or an event name over
    /// its limit).
    #[error("cannot subscribe the event stream: {0}")]
    Subscribe(#[source] SubscribeError),
    /// [`SseOptions::keep_alive`](super::SseOptions::keep_alive) is zero.
    #[error("a keep-alive interval of zero would send comments without pause; set a positive interval, or None to send none")]
    ZeroKeepAlive,
}

impl From<SpawnError> for SseError {
    fn from(error: SpawnError) -> Self {
        SseError::Spawn(error)
    }
}

impl From<SubscribeError> for SseError {
    fn from(error: SubscribeError) -> Self {
        SseError::Subscribe(error)
    }
}
