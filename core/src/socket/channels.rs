//! The channels one socket is served on.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::{Backend, Carrier, Channel, Resumed, Runtime, SubscribeError};

/// A channel as a socket needs it, whatever its backend.
trait Served<R: Runtime>: Send + Sync + 'static {
    fn subscribe(&self, event: &str, carrier: &Carrier<R>) -> Result<bool, SubscribeError>;
    fn resume<'a>(
        &'a self,
        events: &'a [&'a str],
        carrier: &'a Carrier<R>,
        after: &'a str,
    ) -> BoxFuture<'a, Result<Resumed, SubscribeError>>;
    fn unsubscribe(&self, event: &str, carrier: &Carrier<R>) -> bool;
    fn stopped(&self) -> BoxFuture<'static, ()>;
}

impl<B: Backend, R: Runtime> Served<R> for Channel<B, R> {
    fn subscribe(&self, event: &str, carrier: &Carrier<R>) -> Result<bool, SubscribeError> {
        Channel::subscribe(self, event, carrier)
    }

    fn resume<'a>(
        &'a self,
        events: &'a [&'a str],
        carrier: &'a Carrier<R>,
        after: &'a str,
    ) -> BoxFuture<'a, Result<Resumed, SubscribeError>> {
        Channel::resume(self, events, carrier, after).boxed()
    }

    fn unsubscribe(&self, event: &str, carrier: &Carrier<R>) -> bool {
        Channel::unsubscribe(self, event, carrier)
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        Channel::stopped(self).boxed()
    }
}

/// The channels a socket is served on, possibly of different backends (a
/// memory channel for chat and a MongoDB channel for resource events, say):
/// the specification's "multiple channels directing messages on the same
/// websocket". The first is the default one, whose events
/// [`SocketOptions::new`](crate::SocketOptions::new) lists and which
/// control messages address when they name no channel. A single
/// `&Channel` converts into this.
///
/// ```
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{ChannelBuilder, Channels, MemoryBackend};
///
/// let runtime = ManualRuntime::new();
/// let pubsub = ChannelBuilder::new("doc-channels-pubsub").open(runtime.clone(), MemoryBackend::new).unwrap();
/// let chat = ChannelBuilder::new("doc-channels-chat").open(runtime.clone(), MemoryBackend::new).unwrap();
/// let channels = Channels::from(&pubsub).and(&chat);
/// assert_eq!(channels.names().collect::<Vec<_>>(), ["doc-channels-pubsub", "doc-channels-chat"]);
/// ```
pub struct Channels<R: Runtime> {
    runtime: R,
    names: Arc<[Arc<str>]>,
    list: Arc<[Arc<dyn Served<R>>]>,
}

impl<R: Runtime> Clone for Channels<R> {
    fn clone(&self) -> Self {
        Channels {
            runtime: self.runtime.clone(),
            names: self.names.clone(),
            list: self.list.clone(),
        }
    }
}

impl<R: Runtime> fmt::Debug for Channels<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names.iter()).finish()
    }
}

impl<B: Backend, R: Runtime> From<&Channel<B, R>> for Channels<R> {
    fn from(channel: &Channel<B, R>) -> Self {
        Channels {
            runtime: channel.runtime().clone(),
            names: Arc::from([Arc::from(channel.name())]),
            list: Arc::from([Arc::new(channel.clone()) as Arc<dyn Served<R>>]),
        }
    }
}

impl<B: Backend, R: Runtime> From<Channel<B, R>> for Channels<R> {
    fn from(channel: Channel<B, R>) -> Self {
        Channels::from(&channel)
    }
}

impl<R: Runtime> Channels<R> {
    /// These channels and `channel` (which replaces a channel of the same
    /// name).
    pub fn and<B: Backend>(self, channel: &Channel<B, R>) -> Self {
        let mut names: Vec<Arc<str>> = self.names.to_vec();
        let mut list: Vec<Arc<dyn Served<R>>> = self.list.to_vec();
        let served: Arc<dyn Served<R>> = Arc::new(channel.clone());
        match names.iter().position(|n| &**n == channel.name()) {
            Some(index) => list[index] = served,
            None => {
                names.push(Arc::from(channel.name()));
                list.push(served);
            }
        }
        Channels {
            runtime: self.runtime,
            names: names.into(),
            list: list.into(),
        }
    }

    /// The channels' names, the default one first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    /// How many channels.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Always false: there is at least one channel.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The runtime of the first channel, where the socket's carrier runs.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    pub(crate) fn shared_names(&self) -> Arc<[Arc<str>]> {
        self.names.clone()
    }

    /// The index of the channel called `name`, or of the default channel.
    pub(crate) fn index(&self, name: Option<&str>) -> Result<usize, SubscribeError> {
        match name {
            None => Ok(0),
            Some(name) => self.names.iter().position(|n| &**n == name).ok_or_else(|| {
                SubscribeError::UnknownChannel {
                    channel: name.to_string(),
                }
            }),
        }
    }

    pub(crate) fn subscribe(
        &self,
        index: usize,
        event: &str,
        carrier: &Carrier<R>,
    ) -> Result<bool, SubscribeError> {
        match self.list.get(index) {
            Some(channel) => channel.subscribe(event, carrier),
            None => Err(SubscribeError::UnknownChannel {
                channel: format!("#{index}"),
            }),
        }
    }

    pub(crate) async fn resume(
        &self,
        index: usize,
        events: &[&str],
        carrier: &Carrier<R>,
        after: &str,
    ) -> Result<Resumed, SubscribeError> {
        match self.list.get(index) {
            Some(channel) => channel.resume(events, carrier, after).await,
            None => Err(SubscribeError::UnknownChannel {
                channel: format!("#{index}"),
            }),
        }
    }

    pub(crate) fn unsubscribe(&self, index: usize, event: &str, carrier: &Carrier<R>) -> bool {
        self.list
            .get(index)
            .is_some_and(|channel| channel.unsubscribe(event, carrier))
    }

    /// Resolves when any of the channels stops, with its index.
    pub(crate) fn stopped(&self) -> Stopped {
        match &*self.list {
            [only] => Stopped::One(only.stopped()),
            all => Stopped::Any(futures::future::select_all(all.iter().map(|c| c.stopped()))),
        }
    }

    /// The name of channel number `index`.
    pub(crate) fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("", |name| &**name)
    }
}

/// Resolves with the index of the first of a socket's channels to stop.
// One box per channel and no more: it lives as long as the connection.
pub(crate) enum Stopped {
    One(BoxFuture<'static, ()>),
    Any(futures::future::SelectAll<BoxFuture<'static, ()>>),
}

impl Future for Stopped {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        match self.get_mut() {
            Stopped::One(only) => only.poll_unpin(cx).map(|()| 0),
            Stopped::Any(any) => any.poll_unpin(cx).map(|((), index, _)| index),
        }
    }
}
