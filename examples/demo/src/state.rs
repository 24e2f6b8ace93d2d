//! The application state: the storage, the channel, and the connection
//! between them.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tbone_dispatch_tokio::dispatch::Channel;
use tbone_dispatch_tokio::model::publish_resource_events;
use tbone_dispatch_tokio::mongo::mongodb::bson::doc;
use tbone_dispatch_tokio::mongo::{self, ModelCollection, MongoBackend, MongoError, MongoOptions};
use tbone_dispatch_tokio::redis::{self, RedisBackend, RedisError};
use tbone_dispatch_tokio::{
    Backend, ChannelBuilder, ChannelError, ConnectionGuard, MemoryBackend, PositionedEnvelope,
    Sender, Tokio,
};
use tokio::sync::watch;

use crate::config::{redact_uri, MongoConfig};
use crate::entry::Entry;
use crate::storage::{MemoryStorage, MongoStorage, Storage};

/// How long starting in MongoDB mode waits for the server to answer.
pub const MONGO_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The channel could not be opened or started.
    #[error("cannot start channel `{name}`: {source}")]
    Channel {
        /// The channel's name.
        name: String,
        /// What failed.
        source: ChannelError,
    },
    /// MongoDB could not be reached. (URIs in errors have their password
    /// hidden.)
    #[error("cannot use MongoDB at {uri}: {source}")]
    Mongo {
        /// The connection string.
        uri: String,
        /// What failed.
        source: Box<MongoError>,
    },
    /// MongoDB did not answer a ping.
    #[error("MongoDB at {uri} did not answer a ping: {source}")]
    MongoPing {
        /// The connection string.
        uri: String,
        /// The driver's error.
        source: Box<mongo::mongodb::error::Error>,
    },
    /// MongoDB did not answer in time.
    #[error(
        "MongoDB at {uri} did not answer within {timeout:?}; is the server running? \
         (scripts/mongo-test-server start runs one)"
    )]
    MongoTimeout {
        /// The connection string.
        uri: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Redis could not be used. (URLs in errors have their password
    /// hidden.)
    #[error("cannot use Redis: {0}")]
    Redis(#[from] RedisError),
    /// The listener failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The storage as the REST handlers see it; cloning shares the store.
#[derive(Clone)]
pub struct Entries(pub Arc<dyn Storage>);

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Entries")
    }
}

impl std::ops::Deref for Entries {
    type Target = dyn Storage;

    fn deref(&self) -> &(dyn Storage + 'static) {
        &*self.0
    }
}

struct Inner<B: Backend> {
    entries: Entries,
    channel: Channel<B, Tokio>,
    /// The receivers publishing resource events, while connected.
    events: Mutex<Option<[ConnectionGuard; 2]>>,
    /// Set when the server shuts down: open websockets close.
    closing: watch::Sender<bool>,
}

/// Everything the handlers share: the entries and the channel that carries
/// their `resource_*` events to websockets. Generic over the channel's
/// backend ([`MemoryBackend`] or [`MongoBackend`]); cheap to clone.
///
/// Creating a state connects
/// [`publish_resource_events`] for its channel and kicks the channel off:
/// from then on every write of an [`Entry`] in this process is published
/// on it. Use one state per channel name.
pub struct AppState<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend> fmt::Debug for AppState<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

/// The embedded mode's state.
pub type MemoryState = AppState<MemoryBackend>;
/// The MongoDB mode's state.
pub type MongoState = AppState<MongoBackend>;
/// The state with events on a RedisChannel (entries in memory or MongoDB).
pub type RedisState = AppState<RedisBackend<Tokio>>;

impl MemoryState {
    /// Entries in memory, events on the in-memory channel `channel`.
    /// Must be called inside a tokio runtime.
    pub fn memory(channel: &str) -> Result<Self, StartError> {
        // Positions in the frames: a page that reconnects resumes.
        let opened = ChannelBuilder::new(channel)
            .envelope(PositionedEnvelope)
            .open(Tokio::default(), MemoryBackend::new)
            .map_err(|source| StartError::Channel {
                name: channel.to_string(),
                source,
            })?;
        AppState::new(Entries(Arc::new(MemoryStorage::new())), opened)
    }
}

impl MongoState {
    /// Entries in MongoDB, events on the MongoChannel `channel` of the same
    /// database. Fails if the server does not answer a ping within
    /// [`MONGO_CONNECT_TIMEOUT`].
    pub async fn mongo(channel: &str, config: &MongoConfig) -> Result<Self, StartError> {
        let db = mongo_database(config).await?;
        let mut options = MongoOptions::default();
        if let Some(events) = &config.events {
            options = options.collection(events.clone());
        }
        let opened = mongo::builder(channel, &db)
            .options(options)
            .envelope(PositionedEnvelope)
            .open::<Tokio>()
            .map_err(|source| StartError::Channel {
                name: channel.to_string(),
                source,
            })?;
        AppState::new(mongo_entries(&db, config)?, opened)
    }
}

impl RedisState {
    /// Events on the RedisChannel `channel` of the server at `url` (its
    /// stream shared by every instance); entries in MongoDB with `mongo`,
    /// else in memory. Fails if a server does not answer.
    pub async fn redis(
        channel: &str,
        url: &str,
        mongo: Option<&MongoConfig>,
    ) -> Result<Self, StartError> {
        let entries = match mongo {
            Some(config) => mongo_entries(&mongo_database(config).await?, config)?,
            None => Entries(Arc::new(MemoryStorage::new())),
        };
        let server = redis::connect(url).await?;
        let opened = redis::open(channel, &server).map_err(|source| StartError::Channel {
            name: channel.to_string(),
            source,
        })?;
        AppState::new(entries, opened)
    }
}

/// The database of `config`, once it answered a ping within
/// [`MONGO_CONNECT_TIMEOUT`].
async fn mongo_database(config: &MongoConfig) -> Result<mongo::mongodb::Database, StartError> {
    let db = mongo::connect(&config.uri, &config.database)
        .await
        .map_err(|source| StartError::Mongo {
            uri: redact_uri(&config.uri),
            source: Box::new(source),
        })?;
    let ping = db.run_command(doc! {"ping": 1});
    match tokio::time::timeout(MONGO_CONNECT_TIMEOUT, ping).await {
        Ok(Ok(_)) => Ok(db),
        Ok(Err(source)) => Err(StartError::MongoPing {
            uri: redact_uri(&config.uri),
            source: Box::new(source),
        }),
        Err(_) => Err(StartError::MongoTimeout {
            uri: redact_uri(&config.uri),
            timeout: MONGO_CONNECT_TIMEOUT,
        }),
    }
}

/// The entries collection of `config` on `db`.
fn mongo_entries(
    db: &mongo::mongodb::Database,
    config: &MongoConfig,
) -> Result<Entries, StartError> {
    let collection =
        ModelCollection::<Entry>::new(db, &config.entries).map_err(|source| StartError::Mongo {
            uri: redact_uri(&config.uri),
            source: Box::new(source),
        })?;
    Ok(Entries(Arc::new(MongoStorage::new(collection))))
}

impl<B: Backend> AppState<B> {
    /// A state over `entries` and `channel`: connects the resource events
    /// of [`Entry`] to the channel and kicks it off.
    pub fn new(entries: Entries, channel: Channel<B, Tokio>) -> Result<Self, StartError> {
        channel.kickoff().map_err(|source| StartError::Channel {
            name: channel.name().to_string(),
            source,
        })?;
        let (save, delete) = publish_resource_events(&channel, Sender::of::<Entry>());
        // A connection that already existed belongs to whoever made it.
        let events = if save.is_new() && delete.is_new() {
            Some([save.guard(), delete.guard()])
        } else {
            None
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                entries,
                channel,
                events: Mutex::new(events),
                closing: watch::Sender::new(false),
            }),
        })
    }

    /// The entries.
    pub fn entries(&self) -> &Entries {
        &self.inner.entries
    }

    /// The channel resource events are published on.
    pub fn channel(&self) -> &Channel<B, Tokio> {
        &self.inner.channel
    }

    /// Stops publishing this process's writes on the channel; returns
    /// whether they were being published. The channel still delivers what
    /// its backend receives, so with MongoDB this instance keeps showing
    /// the writes of other instances.
    ///
    /// Model signals are process-wide: when tests run two instances in one
    /// process, both would publish every write. Disconnecting one makes it
    /// behave like a separate process.
    pub fn disconnect_resource_events(&self) -> bool {
        self.inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some()
    }

    /// Resolves once the application started shutting down.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.inner.closing.subscribe();
        async move {
            // An error means the state is gone: close as well.
            let _ = closing.wait_for(|closing| *closing).await;
        }
    }

    /// Whether the application started shutting down.
    pub fn is_closing(&self) -> bool {
        *self.inner.closing.borrow()
    }

    /// First step of shutting down: open websockets close (requests in
    /// flight still complete and publish their events).
    pub(crate) fn start_closing(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Shuts the application down: open websockets close, writes stop
    /// being published and the channel stops (after delivering what it
    /// already accepted). [`serve`](crate::serve) calls it once the server
    /// has stopped.
    pub async fn shut_down(&self) {
        self.start_closing();
        self.disconnect_resource_events();
        self.inner.channel.stop().await;
    }
}
