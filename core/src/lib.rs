//! Signals, channels and carriers for real-time Rust backends: TBone's
//! `dispatch` module as a sans-IO core.
//!
//! This crate holds every rule of dispatch and performs no IO of its own:
//! it needs no executor, reactor or socket. Applications use it through a
//! runtime crate (`tbone-dispatch-tokio`, `tbone-dispatch-async-std`,
//! `tbone-dispatch-smol`), each of which re-exports this whole API; tests
//! can drive it by hand with [`testing::ManualRuntime`].
//!
//! - **Signals** ([`Signal`]): in-process publish/subscribe with typed
//!   arguments and responses, as in Django and TBone.
//! - **Channels** ([`Channel`]): named, process-wide hubs that deliver events
//!   to subscribed carriers through a [`Backend`] (in memory, MongoDB, or
//!   your own), encoding each event once.
//! - **Carriers** ([`Carrier`]): a bounded queue in front of any
//!   [`futures::Sink`] of [`Frame`]s (a websocket, an SSE stream), which
//!   never slows the publisher and cleans itself up when its client goes.
//! - **Sockets** ([`socket`]): full-duplex websockets — events out; control
//!   messages, the application's messages ([`MessageHandler`]) and TBone's
//!   requests ([`multiplexer`]) in; authorization before the upgrade
//!   ([`Authorizer`], [`OriginPolicy`]); per-connection [`Limits`].
//! - **Server-sent events** ([`sse`]): a carrier whose client is a
//!   `text/event-stream` body any HTTP server can send, with event ids,
//!   `Last-Event-ID` resume and keep-alive.
//!
//! **What is a pure state machine and what drives it.** Pure (no tasks,
//! locks, timers or IO; time is an argument, output is polled):
//! [`socket::Session`] (one socket's rules), [`Subscriptions`] (the event
//! table), [`tailing::TailPosition`] (where a database consumer resumes),
//! and the parsers ([`multiplexer::parse`], [`ConnectRequest`],
//! [`OriginPolicy::check`]). Driven, on any [`Runtime`]: [`Channel`] (its
//! consumer task), [`Carrier`] (its writer task), [`socket::Connection`]
//! and [`serve_socket`] (the session's driver), [`Signal`]. The feature
//! `websocket` adds the `websocket` module: the async-tungstenite
//! glue, generic over any `futures` byte stream.
//!
//! # Features
//!
//! - `websocket` (off; the runtime crates turn it on): the `websocket`
//!   module, over async-tungstenite.
//! - `metrics` (off): channels and sockets record counters, gauges and a
//!   delivery latency histogram through the `metrics` facade; the
//!   [`observe`] module lists them. Publish and delivery also open
//!   `tracing` spans (`publish`, `deliver`, at trace level) either way.
//!
//! ```
//! use futures::StreamExt;
//! use tbone_dispatch::testing::ManualRuntime;
//! use tbone_dispatch::{Carrier, CarrierConfig, ChannelBuilder, Frame, MemoryBackend, Sender, Senders, Signal};
//!
//! struct Entry;
//! struct Saved {
//!     id: u32,
//! }
//! static POST_SAVE: Signal<Saved> = Signal::new();
//!
//! let runtime = ManualRuntime::new();
//! let channel = ChannelBuilder::new("lib-doc").open(runtime.clone(), MemoryBackend::new).unwrap();
//! channel.kickoff().unwrap();
//!
//! // A receiver turns the signal into a channel event.
//! let pubsub = channel.clone();
//! POST_SAVE.connect_async(
//!     move |_sender, saved| {
//!         let pubsub = pubsub.clone();
//!         async move {
//!             pubsub.publish("resource_create", &serde_json::json!({"id": saved.id})).await.unwrap();
//!         }
//!     },
//!     Sender::of::<Entry>(),
//! );
//!
//! // A "browser": any Sink<Frame> wrapped in a carrier.
//! let (socket, mut browser) = futures::channel::mpsc::unbounded::<Frame>();
//! let carrier = Carrier::new(&runtime, socket, CarrierConfig::default()).unwrap();
//! channel.subscribe("resource_create", &carrier).unwrap();
//!
//! runtime.run(POST_SAVE.send(Sender::of::<Entry>(), Saved { id: 7 })).unwrap();
//! let frame = runtime.run(browser.next()).unwrap().unwrap();
//! assert_eq!(frame.as_str(), r#"{"type":"event","payload":{"name":"resource_create","data":{"id":7}}}"#);
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod carrier;
mod channel;
mod envelope;
mod error;
mod export;
mod frame;
mod history;
mod memory;
pub mod model;
pub mod multiplexer;
pub mod observe;
mod payload;
mod position;
pub mod queue;
mod registry;
mod runtime;
mod signal;
pub mod socket;
pub mod sse;
mod stored;
mod subscriptions;
pub mod tailing;
pub mod testing;
#[cfg(feature = "websocket")]
pub mod websocket;

pub use backend::{Backend, BackendError, Event, EventStream, Receipt};
pub use carrier::{
    close_code, Carrier, CarrierConfig, CarrierId, CloseReason, Outgoing, OverflowPolicy,
    PresenceGuard,
};
pub use channel::{
    Channel, ChannelBuilder, ChannelStats, Delivered, HistoryStats, Resumed, DEFAULT_MAX_EVENT_NAME,
};
pub use envelope::{push_json_string, Envelope, PositionedEnvelope, TBoneEnvelope};
pub use error::{ChannelError, PublishError, SubscribeError};
pub use frame::Frame;
pub use history::{History, HistoryLimits, Recorded};
pub use memory::{MemoryBackend, DEFAULT_MEMORY_CAPACITY};
pub use payload::{Payload, PayloadError, DEFAULT_MAX_PAYLOAD, MAX_DEPTH};
pub use position::{Position, PositionError, MAX_POSITION_LEN};
pub use queue::TrySendError;
pub use runtime::{Runtime, SpawnError, Task};
pub use signal::{
    Connection, ConnectionGuard, Receiver, ReceiverError, ReceiverKey, Sender, Senders, Signal,
};
pub use socket::{
    serve_socket, Authorizer, Channels, ClientMessage, ConnectRequest, HandlerError,
    HandshakeLimits, Incoming, Limits, MessageHandler, OriginPolicy, ReadError, Refusal, SendError,
    SocketHandle, SocketOptions, READ_BUFFER_SIZE,
};
pub use stored::{Stored, MAX_STORED_REPLAY};
pub use subscriptions::Subscriptions;

/// Re-exported so users of the runtime crates need no direct dependency.
pub use futures;
pub use serde_json;
