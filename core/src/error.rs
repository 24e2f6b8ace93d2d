//! Errors of channels.

use crate::{BackendError, CarrierId, CloseReason, PayloadError, SpawnError};

/// A channel could not be opened, started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A channel with this name exists with another backend or runtime.
    #[error("channel `{channel}` already exists as `{existing}`, so it cannot be opened as `{requested}`: channels are singletons by name; pick another name or open it with the same backend")]
    BackendMismatch {
        /// The channel's name.
        channel: String,
        /// The type of the existing channel.
        existing: &'static str,
        /// The type that was asked for.
        requested: &'static str,
    },
    /// A channel with this name exists with other settings (another
    /// envelope, limits, database or backend options).
    #[error("channel `{channel}` already exists with other settings ({existing}), so it cannot be opened with {requested}: channels are singletons by name; open it with the same settings, or pick another name")]
    SettingsMismatch {
        /// The channel's name.
        channel: String,
        /// The settings of the existing channel.
        existing: String,
        /// The settings asked for.
        requested: String,
    },
    /// The channel's consumer task ended without [`Channel::stop`](crate::Channel::stop):
    /// its runtime shut down (one runtime per test, say).
    #[error("the consumer of channel `{channel}` ended with its runtime; open the channel again by name (on a running runtime) to get a new instance")]
    ConsumerGone {
        /// The channel's name.
        channel: String,
    },
    /// The channel was stopped; open it again by name to get a new one.
    #[error("channel `{channel}` is stopped; open it again by name to get a new instance")]
    Stopped {
        /// The channel's name.
        channel: String,
    },
    /// The backend failed to start consuming.
    #[error("channel `{channel}`: the backend could not start consuming: {source}")]
    Backend {
        /// The channel's name.
        channel: String,
        /// What the backend said.
        #[source]
        source: BackendError,
    },
    /// The runtime could not spawn the consumer task.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// An event was not published. Nothing was sent to anyone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event name is longer than the channel allows.
    #[error("event name is {len} bytes long, over the limit of {max}; use a shorter name")]
    EventNameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The channel's limit.
        max: usize,
    },
    /// The data cannot be represented as JSON.
    #[error("cannot publish event `{event}`: {source}")]
    Payload {
        /// The event's name.
        event: String,
        /// Why the data was refused.
        #[source]
        source: PayloadError,
    },
    /// The channel was stopped.
    #[error("cannot publish event `{event}`: channel `{channel}` is stopped")]
    Stopped {
        /// The channel's name.
        channel: String,
        /// The event's name.
        event: String,
    },
    /// The event was published, but this instance will not report its
    /// delivery: the channel stopped first, or its backend does not carry
    /// receipts (see [`Event::take_receipt`](crate::Event::take_receipt)).
    #[error("event `{event}` was published on channel `{channel}`, but its delivery was not reported (the channel stopped, or its backend does not carry receipts)")]
    NotDelivered {
        /// The channel's name.
        channel: String,
        /// The event's name.
        event: String,
    },
    /// The backend did not accept the event (for Mongo: the write was not
    /// acknowledged).
    #[error("channel `{channel}` could not publish event `{event}`: {source}")]
    Backend {
        /// The channel's name.
        channel: String,
        /// The event's name.
        event: String,
        /// What the backend said.
        #[source]
        source: BackendError,
    },
}

/// A carrier could not be subscribed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The event name is longer than the channel allows.
    #[error("event name is {len} bytes long, over the limit of {max}; use a shorter name")]
    EventNameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The channel's limit.
        max: usize,
    },
    /// The channel was stopped.
    #[error("channel `{channel}` is stopped; open it again by name to get a new instance")]
    Stopped {
        /// The channel's name.
        channel: String,
    },
    /// The socket is not served on a channel of that name.
    #[error("no channel `{channel}` is served on this socket")]
    UnknownChannel {
        /// The name asked for.
        channel: String,
    },
    /// The carrier is closed (its socket died or it was dropped for
    /// overflow); make a new carrier for a new connection.
    #[error("{carrier} is closed ({reason}); create a new carrier")]
    CarrierClosed {
        /// The carrier.
        carrier: CarrierId,
        /// Why it closed.
        reason: CloseReason,
    },
}
