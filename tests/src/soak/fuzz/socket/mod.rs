//! Part 1: scripts of client messages fed to the core's `serve_socket`
//! over in-memory halves (read errors made from tungstenite's own error
//! values, mapped by the websocket glue's `read_error` as a served socket's
//! are), on a `ManualRuntime`, so that every step ends
//! in a quiescent state and the outcome can be compared with a model of
//! the protocol: how each connection ends (close reason and code), every
//! item its client receives (event frames, error frames, pings, the close
//! frame), and the channel's subscription table after every step. A
//! well-behaved carrier subscribed throughout must get every event, and
//! no task may outlive the case.
//!
//! The model is also the oracle of the TCP part ([`super::wire`]).
//!
//! Files: `model` (the protocol's model, the oracle), `control` (the
//! control messages it recognizes), `strategies` (the generated scripts),
//! `sink` (the client's half of a socket), `cases` (running a script
//! against the model). Here: the rules every fuzzed server follows.

use tbone_dispatch::{Authorizer, ConnectRequest, Refusal, DEFAULT_MAX_EVENT_NAME};

mod cases;
mod control;
mod model;
mod sink;
mod strategies;

pub use cases::run;
pub(crate) use model::{simplify_frame, ConnModel, End, Msg, Out, ReadFailure, SinkKind};
pub(crate) use strategies::text;

/// The authorization rule of every fuzzed server: `admin_*` is refused.
pub(crate) fn authorized(event: &str) -> bool {
    !event.starts_with("admin_")
}

/// The authorization hook of every fuzzed server: anyone may connect,
/// [`authorized`] events only.
pub(crate) struct FuzzAuthorizer;

impl Authorizer for FuzzAuthorizer {
    type Client = ();

    async fn connect(&self, _request: &ConnectRequest) -> Result<(), Refusal> {
        Ok(())
    }

    async fn allow(&self, _client: &(), _channel: &str, event: &str) -> bool {
        authorized(event)
    }
}

/// Event names the channel publishes during a case (the well-behaved
/// carrier is subscribed to every one): short, unicode, empty, refused by
/// the hook, and exactly at the length limit.
pub(crate) fn published_names() -> Vec<String> {
    let mut names: Vec<String> = ["e0", "e1", "e2", "admin_e", "ünï ✓", ""]
        .into_iter()
        .map(String::from)
        .collect();
    names.push("x".repeat(DEFAULT_MAX_EVENT_NAME));
    names
}
