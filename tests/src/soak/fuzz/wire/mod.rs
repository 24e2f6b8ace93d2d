//! Part 2: the tokio runtime crate's websocket server (`websocket::accept`
//! and `Accepted::serve`, as an application runs them) over real TCP,
//! against clients that write arbitrary bytes before or after the
//! handshake, or well-framed sequences of messages (control messages,
//! binary, pings, fragments, close frames, frames that break RFC 6455,
//! oversized ones), then close, shut their side down, or fall silent.
//!
//! Checks: no connection task panics; every connection ends within a
//! bound; a well-framed sequence ends the way the model of the protocol
//! (`socket::ConnModel`) says, and a rejection reaches the client
//! as a close frame with its code; frames sent to clients are TBone JSON;
//! afterwards the channel's table holds only the well-behaved client, which
//! received every event published meanwhile.
//!
//! Files: `frames` (what a fuzzed client writes: framed sequences and
//! raw bytes), `strategies` (generating them), `server` (the server
//! under test), `client` (driving one connection and reading what came
//! back), `cases` (running a case and the part as a whole).

use std::time::Duration;

mod cases;
mod client;
mod frames;
mod server;
mod strategies;

pub use cases::run;

/// Largest message the fuzzed servers accept.
const MAX_MESSAGE: usize = 1024;
/// Their keep-alive interval: a silent client is dropped within two.
const PING: Duration = Duration::from_millis(250);
/// Longest a fuzzed connection may take to end, from its first byte.
const BOUND: Duration = Duration::from_secs(5);
/// Events the well-behaved client is subscribed to.
const EVENTS: [&str; 2] = ["e0", "e1"];
