//! Serving client sockets, full-duplex: events out, the client's control
//! messages and requests in.
//!
//! The parts, from pure to driven:
//! - [`Session`] (pure state machine, no tasks, locks, timers or IO): every
//!   rule of one socket — keep-alive, control messages, limits, close
//!   codes, what goes to the application;
//! - [`ConnectRequest`], [`OriginPolicy`], [`Limits`] (plain data and
//!   checks);
//! - [`Connection`] and [`serve_socket`]: the driver of a session on a
//!   [`Runtime`](crate::Runtime) — the carrier, the timer, the
//!   application's [`MessageHandler`] and [`Authorizer`] futures;
//! - the runtime crates' `websocket` modules and the axum integration map
//!   their websocket types onto [`Incoming`], [`Outgoing`](crate::Outgoing)
//!   and [`ReadError`], and run the upgrade.

mod authorize;
mod channels;
mod connection;
mod control;
mod handler;
mod late_sink;
mod limits;
mod options;
mod resume;
mod session;

pub use authorize::{Authorizer, ConnectRequest, OriginPolicy, Refusal};
pub use channels::Channels;
pub use connection::{closing_handshake, serve_socket, Connection};
pub use handler::{HandlerError, MessageHandler, SendError, SocketHandle};
pub use late_sink::SinkFailure;
pub use limits::Limits;
pub use options::{HandshakeLimits, SocketOptions, READ_BUFFER_SIZE};
pub use resume::LAST_POSITION;
pub use session::{
    Action, ClientMessage, HandlerOutcome, Incoming, ReadError, Session, SubscribeOutcome,
};
