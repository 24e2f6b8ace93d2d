//! How an SSE stream is served: keep-alive, reconnection hint, queue.

use std::time::Duration;

use crate::CarrierConfig;

/// Settings of one server-sent events stream ([`SseStream`](super::SseStream)):
/// plain data, set through the fields or the builder methods of the same
/// names.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch::sse::SseOptions;
/// use tbone_dispatch::{CarrierConfig, OverflowPolicy};
///
/// let options = SseOptions::default()
///     .keep_alive(Some(Duration::from_secs(30)))
///     .retry(Some(Duration::from_secs(2)))
///     .carrier(CarrierConfig::default().overflow(OverflowPolicy::DropCarrier));
/// assert_eq!(options.keep_alive, Some(Duration::from_secs(30)));
/// assert_eq!(SseOptions::default().keep_alive, Some(Duration::from_secs(15)));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SseOptions {
    /// After how long without a write the stream sends a keep-alive comment
    /// (default 15 s; `None` sends none). Proxies close idle responses,
    /// and a server notices a client that is gone when a write fails, so
    /// this also bounds how long a departed client that the server could
    /// not see leave stays subscribed. Zero is refused
    /// ([`SseError::ZeroKeepAlive`](super::SseError::ZeroKeepAlive)).
    pub keep_alive: Option<Duration>,
    /// The reconnection delay sent to the client first, as a `retry:`
    /// field (default `None`: the browser's own, about 3 s).
    pub retry: Option<Duration>,
    /// The stream's carrier: its queue capacity and overflow policy. Under
    /// the default [`OverflowPolicy::DropCarrier`](crate::OverflowPolicy),
    /// a client that falls behind sees its stream end; an `EventSource`
    /// then reconnects with `Last-Event-ID` and is given what it missed.
    pub carrier: CarrierConfig,
}

impl Default for SseOptions {
    fn default() -> Self {
        SseOptions {
            keep_alive: Some(Duration::from_secs(15)),
            retry: None,
            carrier: CarrierConfig::default(),
        }
    }
}

impl SseOptions {
    /// Sets [`SseOptions::keep_alive`].
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Sets [`SseOptions::retry`].
    pub fn retry(mut self, delay: Option<Duration>) -> Self {
        self.retry = delay;
        self
    }

    /// Sets [`SseOptions::carrier`].
    pub fn carrier(mut self, config: CarrierConfig) -> Self {
        self.carrier = config;
        self
    }
}
