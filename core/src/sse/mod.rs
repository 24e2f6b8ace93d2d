//! Server-sent events: a carrier whose client is a `text/event-stream`
//! response body, beside the websocket carriers.
//!
//! [`SseStream`] is the body, a `Stream` of [`Bytes`](bytes::Bytes) chunks
//! that any HTTP server on any runtime can send; [`stream`] builds one for
//! the events of a channel. Each event goes out with its position as the
//! `id:` line, so a browser's `EventSource` that reconnects sends it back
//! as the `Last-Event-ID` header without any code, and receives exactly
//! the events it missed (from the channel's history, or what its backend
//! stores: a MongoChannel's capped collection) before the live ones.
//! When that is not possible (the id is older than the history, or from
//! another process), the client receives an `event: recovery_failed`
//! instead, and should reload. Keep-alive comments keep proxies from
//! closing an idle stream, and the carrier leaves its channels as soon as
//! the server drops the body (its client went away).
//!
//! The axum integration is `tbone_dispatch_tokio::axum_sse` (feature
//! `axum`). Any other server: read the header with [`last_event_id`],
//! answer with [`RESPONSE_HEADERS`] and the stream as the body.
//!
//! ```
//! use futures::StreamExt;
//! use tbone_dispatch::sse::{self, SseOptions};
//! use tbone_dispatch::testing::ManualRuntime;
//! use tbone_dispatch::{ChannelBuilder, MemoryBackend};
//!
//! let runtime = ManualRuntime::new();
//! let channel = ChannelBuilder::new("doc-sse").open(runtime.clone(), MemoryBackend::new).unwrap();
//! channel.kickoff().unwrap();
//!
//! // A first request: no Last-Event-ID.
//! let mut first = runtime.run(sse::stream(&channel, &["tick"], None, SseOptions::default())).unwrap().unwrap();
//! runtime.run(channel.publish("tick", &1)).unwrap().unwrap();
//! let chunk = runtime.run(first.next()).unwrap().unwrap().unwrap();
//! let seen = std::str::from_utf8(&chunk).unwrap().lines().next().unwrap();
//! let id = seen.strip_prefix("id: ").unwrap().to_string();
//! drop(first); // the client went away...
//! runtime.run(channel.publish("tick", &2)).unwrap().unwrap();
//! runtime.run_until_stalled();
//!
//! // ... and reconnects: the browser sends the last id it saw.
//! let header = id.clone().into_bytes();
//! let resumed = sse::stream(&channel, &["tick"], sse::last_event_id(&header), SseOptions::default());
//! let mut again = runtime.run(resumed).unwrap().unwrap();
//! let chunk = runtime.run(again.next()).unwrap().unwrap().unwrap();
//! assert!(std::str::from_utf8(&chunk).unwrap().contains(r#""data":2"#));
//! ```

mod encode;
mod error;
mod options;
mod stream;

pub use encode::{encode_frame, encode_retry, KEEP_ALIVE, RECOVERY_FAILED_EVENT};
pub use error::SseError;
pub use options::SseOptions;
pub use stream::{stream, SseStream};

/// The media type of an event stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// The request header in which a reconnecting `EventSource` sends the id
/// of the last event it received (lowercase, as HTTP/2 writes it; header
/// names are case-insensitive).
pub const LAST_EVENT_ID: &str = "last-event-id";

/// The response headers of an event stream: its media type, and no caching
/// (a cached stream would replay old events). Servers that sit behind a
/// buffering proxy may add `X-Accel-Buffering: no` (nginx).
pub const RESPONSE_HEADERS: [(&str, &str); 2] = [
    ("content-type", CONTENT_TYPE),
    ("cache-control", "no-cache"),
];

/// The `Last-Event-ID` header's value as [`SseStream::join`] takes it:
/// `None` when it is not UTF-8 or is blank. (Any other text is passed on:
/// one that is no position of the channel gets `recovery_failed`.)
///
/// ```
/// use tbone_dispatch::sse::last_event_id;
///
/// assert_eq!(last_event_id(b" 65a1-7 "), Some("65a1-7"));
/// assert_eq!(last_event_id(b""), None);
/// assert_eq!(last_event_id(b"\xff"), None);
/// ```
pub fn last_event_id(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value)
        .ok()
        .map(str::trim)
        .filter(|id| !id.is_empty())
}
