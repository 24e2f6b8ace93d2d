//! Model signals: TBone's `post_save` and `post_delete`, and the receiver
//! that turns them into REST-like channel events.
//!
//! Resource events leave in the order their signals are sent. A store whose
//! writes of one document can run concurrently keeps that order equal to
//! the order of the writes by holding the document's [`WriteOrder`] turn
//! from before each write until its signal was sent (the Mongo
//! `ModelCollection` does).

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

mod write_order;

pub use write_order::{WriteOrder, WriteTurn};

use crate::{
    Backend, Channel, Connection, Payload, PayloadError, Receiver, Runtime, Sender, Signal,
};

/// What a model-signal receiver may return: `Ok(())` or any error, which the
/// code that sent the signal logs (it never undoes the write).
pub type ReceiverResult = Result<(), Box<dyn StdError + Send + Sync>>;

/// Sent after a model instance was inserted (`created`) or updated, with the
/// model type as [`Sender`]: TBone's `post_save(sender, db, instance,
/// created)`.
pub static POST_SAVE: Signal<PostSave, ReceiverResult> = Signal::new();

/// Sent after a model instance was deleted, with the model type as
/// [`Sender`]: TBone's `post_delete(sender, db, instance)`.
pub static POST_DELETE: Signal<PostDelete, ReceiverResult> = Signal::new();

/// A type-erased handle to the store that performed a write: a
/// `mongodb::Database` for the Mongo collection helper, or whatever an
/// application's own store passes.
pub type Store = Arc<dyn Any + Send + Sync>;

/// The arguments of [`POST_SAVE`].
///
/// ```
/// use std::sync::Arc;
/// use tbone_dispatch::model::{PostSave, POST_SAVE};
/// use tbone_dispatch::Sender;
///
/// #[derive(serde::Serialize)]
/// struct Entry {
///     text: String,
/// }
///
/// POST_SAVE.connect(
///     |_sender, saved: &PostSave| {
///         if let Some(entry) = saved.instance::<Entry>() {
///             assert_eq!(entry.text, "hi");
///         }
///         Ok(())
///     },
///     Sender::of::<Entry>(),
/// );
/// let saved = PostSave::new(Arc::new(Entry { text: "hi".into() }), true, Arc::new(())).unwrap();
/// assert_eq!(saved.data().as_str(), r#"{"text":"hi"}"#);
/// ```
#[derive(Clone)]
pub struct PostSave {
    created: bool,
    written: Written,
}

/// What both model signals carry: the instance written (type-erased, with
/// its JSON encoded once) and the store that wrote it. [`PostSave`] and
/// [`PostDelete`] dereference to it.
#[derive(Clone)]
pub struct Written {
    instance: Arc<dyn Any + Send + Sync>,
    data: Payload,
    store: Store,
}

impl Written {
    fn new<T: Serialize + Send + Sync + 'static>(
        instance: Arc<T>,
        store: Store,
    ) -> Result<Self, PayloadError> {
        let data = Payload::encode(&*instance)?;
        Ok(Written {
            instance,
            data,
            store,
        })
    }

    /// The instance, if it is a `T`.
    pub fn instance<T: 'static>(&self) -> Option<&T> {
        self.instance.downcast_ref()
    }

    /// The instance as JSON (what the resource receiver publishes).
    pub fn data(&self) -> &Payload {
        &self.data
    }

    /// The store that performed the write, if it is an `S` (for the Mongo
    /// helper: `mongodb::Database`).
    pub fn store<S: 'static>(&self) -> Option<&S> {
        self.store.downcast_ref()
    }
}

impl PostSave {
    /// Arguments for a save of `instance`, encoding it as JSON once.
    pub fn new<T: Serialize + Send + Sync + 'static>(
        instance: Arc<T>,
        created: bool,
        store: Store,
    ) -> Result<Self, PayloadError> {
        Ok(PostSave {
            created,
            written: Written::new(instance, store)?,
        })
    }

    /// True after an insert, false after an update.
    pub fn created(&self) -> bool {
        self.created
    }
}

impl std::ops::Deref for PostSave {
    type Target = Written;

    fn deref(&self) -> &Written {
        &self.written
    }
}

impl fmt::Debug for PostSave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostSave")
            .field("created", &self.created)
            .field("data", &self.written.data)
            .finish_non_exhaustive()
    }
}

/// The arguments of [`POST_DELETE`]; the instance is as it was before the
/// deletion.
#[derive(Clone)]
pub struct PostDelete {
    written: Written,
}

impl PostDelete {
    /// Arguments for the deletion of `instance`.
    pub fn new<T: Serialize + Send + Sync + 'static>(
        instance: Arc<T>,
        store: Store,
    ) -> Result<Self, PayloadError> {
        Ok(PostDelete {
            written: Written::new(instance, store)?,
        })
    }
}

impl std::ops::Deref for PostDelete {
    type Target = Written;

    fn deref(&self) -> &Written {
        &self.written
    }
}

impl fmt::Debug for PostDelete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostDelete")
            .field("data", &self.written.data)
            .finish_non_exhaustive()
    }
}

/// Names of the events [`publish_resource_events`] publishes.
pub const RESOURCE_CREATE: &str = "resource_create";
/// See [`RESOURCE_CREATE`].
pub const RESOURCE_UPDATE: &str = "resource_update";
/// See [`RESOURCE_CREATE`].
pub const RESOURCE_DELETE: &str = "resource_delete";

/// How long a resource event's receiver waits for this instance to deliver
/// the event before letting the write that sent it go on.
pub const DELIVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects the receivers that turn model signals of `sender` into channel
/// events, as TBone's resources do: [`POST_SAVE`] becomes `resource_create`
/// (created) or `resource_update`, and [`POST_DELETE`] becomes
/// `resource_delete`, each carrying the instance's JSON.
///
/// Each receiver returns once this instance has put the event into its
/// subscribers' queues (or after [`DELIVERY_WAIT`]): a write that awaits
/// its model signal, then answers its client through the same socket,
/// answers after the client's own copy of the event.
///
/// Connecting twice for the same channel and sender is a no-op. Returns the
/// two connections (save, delete), to disconnect or guard.
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt;
/// use tbone_dispatch::model::{publish_resource_events, PostSave, POST_SAVE};
/// use tbone_dispatch::testing::ManualRuntime;
/// use tbone_dispatch::{Carrier, CarrierConfig, ChannelBuilder, Frame, MemoryBackend, Sender};
///
/// #[derive(serde::Serialize)]
/// struct Entry {
///     id: u32,
/// }
///
/// let runtime = ManualRuntime::new();
/// let pubsub = ChannelBuilder::new("doc-model").open(runtime.clone(), MemoryBackend::new).unwrap();
/// pubsub.kickoff().unwrap();
/// let (socket, mut browser) = futures::channel::mpsc::unbounded::<Frame>();
/// let carrier = Carrier::new(&runtime, socket, CarrierConfig::default()).unwrap();
/// pubsub.subscribe("resource_create", &carrier).unwrap();
///
/// let _ = publish_resource_events(&pubsub, Sender::of::<Entry>());
/// let saved = PostSave::new(Arc::new(Entry { id: 3 }), true, Arc::new(())).unwrap();
/// runtime.run(POST_SAVE.send(Sender::of::<Entry>(), saved)).unwrap();
/// let frame = runtime.run(browser.next()).unwrap().unwrap();
/// assert_eq!(frame.as_str(), r#"{"type":"event","payload":{"name":"resource_create","data":{"id":3}}}"#);
/// ```
pub fn publish_resource_events<B: Backend, R: Runtime>(
    channel: &Channel<B, R>,
    sender: Sender,
) -> (Connection, Connection) {
    publish_resource_events_waiting(channel, sender, DELIVERY_WAIT)
}

/// [`publish_resource_events`], with the longest wait for delivery chosen:
/// `Duration::ZERO` publishes without waiting (a write then returns as soon
/// as the backend has its event, and its response may reach the writing
/// client before the event does). A MongoDB channel delivers what it reads
/// back, so every model write waits about one round trip to the server,
/// and up to `wait` while its tailing cursor is down.
pub fn publish_resource_events_waiting<B: Backend, R: Runtime>(
    channel: &Channel<B, R>,
    sender: Sender,
    wait: std::time::Duration,
) -> (Connection, Connection) {
    let key = format!("tbone-resource-events:{}:{}", channel.name(), sender.name());
    let on_save = {
        let channel = channel.clone();
        Receiver::future(move |_, saved: Arc<PostSave>| {
            let channel = channel.clone();
            async move {
                let event = if saved.created() {
                    RESOURCE_CREATE
                } else {
                    RESOURCE_UPDATE
                };
                let published = channel
                    .publish_event_then_wait(crate::Event::new(event, saved.data().clone()), wait)
                    .await;
                published.map_err(|e| Box::new(e) as Box<dyn StdError + Send + Sync>)
            }
        })
        .key(key.clone())
    };
    let on_delete = {
        let channel = channel.clone();
        Receiver::future(move |_, deleted: Arc<PostDelete>| {
            let channel = channel.clone();
            async move {
                let published = channel
                    .publish_event_then_wait(
                        crate::Event::new(RESOURCE_DELETE, deleted.data().clone()),
                        wait,
                    )
                    .await;
                published.map_err(|e| Box::new(e) as Box<dyn StdError + Send + Sync>)
            }
        })
        .key(key)
    };
    (
        POST_SAVE.connect_receiver(on_save, sender),
        POST_DELETE.connect_receiver(on_delete, sender),
    )
}

/// Sends a model signal robustly and logs every receiver that failed or
/// panicked: a write that happened is never reported as failed because of a
/// receiver, and no failure is silent.
pub async fn send_model_signal<A: Send + Sync + 'static>(
    signal: &Signal<A, ReceiverResult>,
    sender: Sender,
    args: A,
) -> usize {
    let mut failures = 0;
    for result in signal.send_robust(sender, args).await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                failures += 1;
                tracing::warn!(sender = sender.name(), %error, "model signal receiver failed");
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(sender = sender.name(), %error, "model signal receiver panicked");
            }
        }
    }
    failures
}
