//! Backends: how a channel's events travel between publishers and consumers.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::channel::oneshot;
use futures::stream::BoxStream;

use crate::{Payload, Position, Stored};

/// One published event: its name (the spec's `key`) and its JSON data.
///
/// ```
/// use tbone_dispatch::{Event, Payload};
///
/// let event = Event::new("resource_create", Payload::encode(&[1, 2]).unwrap());
/// assert_eq!(event.key(), "resource_create");
/// assert_eq!(event.data().as_str(), "[1,2]");
/// ```
#[derive(Clone, Debug)]
pub struct Event {
    key: Arc<str>,
    data: Payload,
    receipt: Option<Receipt>,
    position: Option<Position>,
    // When this instance published it, for the delivery latency metric; a
    // backend that carries events elsewhere makes new ones, without it.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    published_at: Option<Instant>,
}

/// Two events are equal when their names and data are (receipts aside).
impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.data == other.data
    }
}

impl Eq for Event {}

impl Event {
    /// An event named `key` carrying `data`.
    pub fn new(key: impl Into<Arc<str>>, data: Payload) -> Self {
        Event {
            key: key.into(),
            data,
            receipt: None,
            position: None,
            published_at: None,
        }
    }

    /// The event, stamped with the time it is published.
    #[cfg(feature = "metrics")]
    pub(crate) fn published_now(mut self, now: Instant) -> Self {
        self.published_at = Some(now);
        self
    }

    /// When this instance published the event, if it still knows.
    #[cfg(feature = "metrics")]
    pub(crate) fn published_at(&self) -> Option<Instant> {
        self.published_at
    }

    /// Takes the event's [`Receipt`], if its publisher asked for one. A
    /// backend that carries events elsewhere (a database) keeps it and
    /// gives it back, with [`Event::with_receipt`], to the event its
    /// consumer reads back; a backend that drops it makes the publisher's
    /// [`Channel::publish_delivered`](crate::Channel::publish_delivered)
    /// fail with `NotDelivered`.
    pub fn take_receipt(&mut self) -> Option<Receipt> {
        self.receipt.take()
    }

    pub(crate) fn shared_key(&self) -> Arc<str> {
        self.key.clone()
    }

    /// Where the backend placed the event (MongoDB: the document's
    /// ObjectId), if it says; the channel numbers events that come without.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// The event with its backend's `position` (a backend that shares
    /// events between instances gives each the same position everywhere,
    /// so that a client can resume on any of them). A backend gives
    /// positions to all its events or to none.
    pub fn with_position(mut self, position: Position) -> Self {
        self.position = Some(position);
        self
    }

    /// The event with `receipt` attached.
    pub fn with_receipt(mut self, receipt: Receipt) -> Self {
        self.receipt = Some(receipt);
        self
    }

    pub(crate) fn receipt(&self) -> Option<&Receipt> {
        self.receipt.as_ref()
    }

    /// The event's name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The event's data.
    pub fn data(&self) -> &Payload {
        &self.data
    }
}

/// A publisher waiting to learn that its event was delivered, and to how
/// many carriers: the channel's consumer fulfils it when it has put the
/// event into its subscribers' queues (see
/// [`Channel::publish_delivered`](crate::Channel::publish_delivered)).
/// Clones share one promise; the first delivery fulfils it.
#[derive(Clone)]
pub struct Receipt(Arc<Mutex<Option<oneshot::Sender<usize>>>>);

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receipt")
    }
}

impl Receipt {
    /// A receipt, and the publisher's side that resolves with the number
    /// of carriers (or fails if the receipt is dropped unfulfilled): what
    /// [`Channel::publish_delivered`](crate::Channel::publish_delivered)
    /// makes, and what a backend's own tests can make.
    pub fn pair() -> (Receipt, oneshot::Receiver<usize>) {
        let (sender, receiver) = oneshot::channel();
        (Receipt(Arc::new(Mutex::new(Some(sender)))), receiver)
    }

    /// Reports that the event reached `carriers` carriers.
    pub(crate) fn fulfil(&self, carriers: usize) {
        let sender = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(sender) = sender {
            let _ = sender.send(carriers);
        }
    }
}

/// The stream of events a backend hands to its channel's consumer.
pub type EventStream = BoxStream<'static, Event>;

/// A channel's transport: where published events go and where the channel's
/// consumer reads them back from. The spec's "custom-backend channels ...
/// by subclassing the Channel class" is, here, implementing this trait.
///
/// The channel does everything else: validating and encoding data,
/// subscriptions, encoding frames once, delivery to carriers, overflow.
/// A backend sees only [`Event`]s.
///
/// ```
/// use std::sync::Mutex;
/// use futures::StreamExt;
/// use tbone_dispatch::{Backend, BackendError, Event, EventStream};
///
/// /// Remembers every event and replays them to the consumer at kickoff.
/// #[derive(Default)]
/// struct Replay {
///     log: Mutex<Vec<Event>>,
/// }
///
/// impl Backend for Replay {
///     async fn publish(&self, event: Event) -> Result<(), BackendError> {
///         self.log.lock().unwrap().push(event);
///         Ok(())
///     }
///
///     fn consume(&self) -> Result<EventStream, BackendError> {
///         let events = self.log.lock().unwrap().clone();
///         Ok(futures::stream::iter(events).boxed())
///     }
/// }
/// ```
pub trait Backend: Send + Sync + 'static {
    /// Accepts one event for delivery. Resolve only once the event is
    /// durably accepted (for a database: acknowledged), and return an error
    /// otherwise: the channel reports it to the publisher.
    fn publish(&self, event: Event) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The events this channel instance must deliver, from now on. Called
    /// once, at [`Channel::kickoff`](crate::Channel::kickoff). The stream
    /// should handle transient failures itself (reconnect, resume) and end
    /// only when the backend is finished.
    fn consume(&self) -> Result<EventStream, BackendError>;

    /// Called once when the channel stops: refuse later publishes and
    /// release resources. On [`Channel::stop`](crate::Channel::stop) it is
    /// called before the consumer's last drain of what the stream already
    /// holds locally, so a publish racing with the stop must either be in
    /// that stream by the time `close` returns, or fail. The default does
    /// nothing.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The events the backend still stores after position `after`, for a
    /// client resuming from a position that the channel's own history no
    /// longer holds (or never held: it started later, on another
    /// instance). `Ok(None)` when the backend keeps no such store (the
    /// default) or `after` is not in it any more (overwritten) or never
    /// was, or more than [`MAX_STORED_REPLAY`](crate::MAX_STORED_REPLAY)
    /// events follow it: the client is then told that recovery failed.
    ///
    /// Called by [`Channel::resume`](crate::Channel::resume), possibly
    /// several times for one client (when this instance has not yet caught
    /// up with the client's position). MongoChannel answers from its capped
    /// collection.
    fn stored_after(
        &self,
        after: &Position,
    ) -> impl Future<Output = Result<Option<Stored>, BackendError>> + Send {
        let _ = after;
        async { Ok(None) }
    }
}

/// A backend could not accept or provide events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend is closed (its channel was stopped).
    #[error("the backend is closed: its channel was stopped")]
    Closed,
    /// The backend can be consumed only once.
    #[error("the backend is already being consumed; a backend feeds one channel consumer")]
    AlreadyConsumed,
    /// Any other failure, with what went wrong.
    #[error("{message}")]
    Other {
        /// What went wrong and, where possible, what to do.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
}

impl BackendError {
    /// A failure described by `message`.
    pub fn msg(message: impl Into<String>) -> Self {
        BackendError::Other {
            message: message.into(),
            source: None,
        }
    }

    /// A failure described by `message`, caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        BackendError::Other {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}
