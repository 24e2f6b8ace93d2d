//! Settings of a Redis channel's backend.

use std::time::Duration;

use tbone_dispatch::DEFAULT_MAX_PAYLOAD;

/// Settings of a [`RedisBackend`](crate::RedisBackend). The capacity's
/// default is MongoChannel's.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch_redis::RedisOptions;
///
/// let options = RedisOptions::default()
///     .capacity(100_000)                     // entries kept, about
///     .stream("events")                      // instead of tbone_channel_<name>
///     .command_timeout(Duration::from_secs(2));
/// assert_eq!(options.stream_name("pubsub"), "events");
/// assert_eq!(RedisOptions::default().stream_name("pubsub"), "tbone_channel_pubsub");
/// ```
#[derive(Clone, Debug)]
pub struct RedisOptions {
    pub(crate) capacity: u64,
    pub(crate) stream: Option<String>,
    pub(crate) max_batch: usize,
    pub(crate) publish_queue: usize,
    pub(crate) buffer: usize,
    pub(crate) read_count: usize,
    pub(crate) block: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) error_backoff: (Duration, Duration),
    pub(crate) max_payload: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            capacity: 1 << 15,
            stream: None,
            max_batch: 256,
            publish_queue: 4096,
            buffer: 1024,
            read_count: 256,
            block: Duration::from_secs(1),
            command_timeout: Duration::from_secs(5),
            error_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

impl RedisOptions {
    /// About how many entries the stream keeps (default 32768, as a
    /// MongoChannel's capped collection): every `XADD` trims with
    /// `MAXLEN ~ capacity`, which Redis carries out in whole nodes of the
    /// stream (100 entries by default), so somewhat more may be kept. A
    /// consumer that falls further behind than this loses entries, and
    /// says so (a warning and [`RedisStats::gaps`](crate::RedisStats::gaps)).
    pub fn capacity(mut self, entries: u64) -> Self {
        self.capacity = entries.max(1);
        self
    }

    /// Use this stream (key) instead of `tbone_channel_<channel name>`.
    pub fn stream(mut self, key: impl Into<String>) -> Self {
        self.stream = Some(key.into());
        self
    }

    /// The stream the channel `channel` uses.
    pub fn stream_name(&self, channel: &str) -> String {
        self.stream
            .clone()
            .unwrap_or_else(|| format!("tbone_channel_{channel}"))
    }

    /// Most events written in one pipeline of `XADD`s (default 256).
    pub fn max_batch(mut self, events: usize) -> Self {
        self.max_batch = events.max(1);
        self
    }

    /// Events read ahead of the channel's consumer (default 1024). While it
    /// is full, the stream is not read.
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// Most entries one `XREAD` returns (default 256).
    pub fn read_count(mut self, entries: usize) -> Self {
        self.read_count = entries.max(1);
        self
    }

    /// How long one `XREAD` waits on the server for new entries (default
    /// 1 s; at least 1 ms).
    pub fn block(mut self, wait: Duration) -> Self {
        self.block = wait.max(Duration::from_millis(1));
        self
    }

    /// How long connecting, and each command, may take before the
    /// connection is given up and made again (default 5 s): publishing
    /// fails with an error after at most this, rather than hang. A blocking
    /// `XREAD` gets its block time on top.
    pub fn command_timeout(mut self, limit: Duration) -> Self {
        self.command_timeout = limit;
        self
    }

    /// Delays before the tailing connection is made again after an error
    /// (default 100 ms to 5 s, with jitter).
    pub fn error_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.error_backoff = (min, max.max(min));
        self
    }

    /// Largest event data accepted from the stream (default 1 MiB); larger
    /// entries are skipped.
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }
}
