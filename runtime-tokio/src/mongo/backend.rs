//! `MongoBackend`: events shared by every instance through a capped
//! collection, in TBone's layout.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;
use futures::future::{AbortHandle, Abortable};
use futures::StreamExt;
use mongodb::bson::{doc, oid::ObjectId, Document, RawDocumentBuf};
use mongodb::error::ErrorKind;
use mongodb::options::{CollectionOptions, WriteConcern};
use mongodb::{Collection, Database};
use tbone_dispatch::tailing::{Alive, DocumentId, HeldReceipts, TailPosition};
use tbone_dispatch::{
    queue, Backend, BackendError, Channel, ChannelBuilder, ChannelError, Envelope, Event,
    EventStream, Position, Runtime, Stored, DEFAULT_MAX_PAYLOAD,
};
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::document::to_document;
use super::history::{stored_after, LiveDocuments};
use super::tail::{tail, TailContext};
use super::{Driver, MongoError};

/// Settings of a [`MongoBackend`]. The defaults are TBone's.
///
/// ```
/// use std::time::Duration;
/// use tbone_dispatch_tokio::mongo::MongoOptions;
///
/// let options = MongoOptions::default()
///     .capacity(4096)           // documents kept (TBone: 2^15)
///     .message_size(512)        // bytes per document, for the size cap
///     .skew_window(Duration::from_secs(10));
/// assert_eq!(options.collection_size(), 4096 * 512);
/// ```
#[derive(Clone, Debug)]
pub struct MongoOptions {
    pub(crate) capacity: u64,
    pub(crate) message_size: u64,
    pub(crate) collection: Option<String>,
    pub(crate) skew_window: Duration,
    pub(crate) max_batch: usize,
    pub(crate) publish_queue: usize,
    pub(crate) buffer: usize,
    pub(crate) await_time: Duration,
    pub(crate) empty_backoff: (Duration, Duration),
    pub(crate) error_backoff: (Duration, Duration),
    pub(crate) max_payload: usize,
    pub(crate) journal: bool,
    pub(crate) driver: Option<Driver>,
}

impl Default for MongoOptions {
    fn default() -> Self {
        MongoOptions {
            capacity: 1 << 15,
            message_size: 1024,
            collection: None,
            skew_window: Duration::from_secs(30),
            max_batch: 256,
            publish_queue: 4096,
            buffer: 1024,
            await_time: Duration::from_secs(1),
            empty_backoff: (Duration::from_millis(50), Duration::from_secs(1)),
            error_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            max_payload: DEFAULT_MAX_PAYLOAD,
            journal: true,
            driver: None,
        }
    }
}

impl MongoOptions {
    /// Most documents the capped collection keeps (`max`; default 32768).
    /// Also how many delivered ids the tailing consumer remembers, to drop
    /// the documents a reopened cursor reads again: on a collection created
    /// by others, give its `max`.
    pub fn capacity(mut self, documents: u64) -> Self {
        self.capacity = documents.max(1);
        self
    }

    /// Expected bytes per document; the collection's `size` is
    /// `capacity * message_size` (default 1024).
    pub fn message_size(mut self, bytes: u64) -> Self {
        self.message_size = bytes.max(1);
        self
    }

    /// The collection's size cap in bytes.
    pub fn collection_size(&self) -> u64 {
        self.capacity.saturating_mul(self.message_size)
    }

    /// Use this collection instead of `tbone_channel_<channel name>`.
    pub fn collection(mut self, name: impl Into<String>) -> Self {
        self.collection = Some(name.into());
        self
    }

    /// How far behind another writer's clock may be without its documents
    /// being missed (default 30 s). ObjectIds carry their writer's time: the
    /// first cursor starts this far before kickoff (dropping the documents
    /// present at kickoff), a resumed one this far before the newest id
    /// delivered (dropping what it delivered already).
    pub fn skew_window(mut self, window: Duration) -> Self {
        self.skew_window = window;
        self
    }

    /// Most events written in one `insert_many` (default 256).
    pub fn max_batch(mut self, events: usize) -> Self {
        self.max_batch = events.max(1);
        self
    }

    /// Events read ahead of the channel's consumer (default 1024). While it
    /// is full, the tailing cursor is not advanced.
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// How long the server holds a `getMore` waiting for new documents
    /// (default 1 s).
    pub fn await_time(mut self, wait: Duration) -> Self {
        self.await_time = wait;
        self
    }

    /// Delays before reopening a cursor that ended without error (an empty
    /// collection): from `min`, doubling up to `max` (default 50 ms to 1 s).
    /// MongoDB may end a tailable cursor on an empty collection at once: a
    /// channel's cursor is then reopened at this pace (a `find` on an empty
    /// collection each time) until its first document. On a collection
    /// holding documents, an idle instance keeps one cursor: its first
    /// query starts no later than the newest document present, so that it
    /// matches one (a tailable cursor whose query matches nothing is ended
    /// at once by MongoDB).
    pub fn empty_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.empty_backoff = (min, max.max(min));
        self
    }

    /// Delays before retrying after an error (default 100 ms to 5 s, with
    /// jitter).
    pub fn error_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.error_backoff = (min, max.max(min));
        self
    }

    /// Largest event data accepted from the collection (default 1 MiB);
    /// larger documents are skipped.
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Whether a publish is acknowledged only once the server has written
    /// the event to its journal (default true): with `w: 1` alone the
    /// server acknowledges writes it still holds in memory, so a crash
    /// (kill -9, power loss) can drop events whose publish returned `Ok`,
    /// and the instances that had not read them yet never deliver them.
    /// The database's other write concern settings are kept.
    pub fn journal(mut self, journal: bool) -> Self {
        self.journal = journal;
        self
    }

    /// Run driver operations on this tokio runtime (default: the current
    /// one, else a background runtime owned by this crate).
    pub fn driver(mut self, driver: Driver) -> Self {
        self.driver = Some(driver);
        self
    }
}

/// Counters of a [`MongoBackend`], read with [`MongoBackend::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MongoStats {
    /// Events written and acknowledged.
    pub inserted: u64,
    /// `insert_many` calls that wrote them.
    pub batches: u64,
    /// Events whose write was not acknowledged (the publisher got an error).
    pub failed: u64,
    /// Events read from the collection and handed to the channel.
    pub received: u64,
    /// Malformed documents skipped (no ObjectId `_id`, no string `key`,
    /// data with no JSON form, oversized).
    pub skipped: u64,
    /// Documents read again after a reconnect and dropped because they
    /// were delivered already (documents present at kickoff are not
    /// counted).
    pub duplicates: u64,
    /// Documents read and dropped as being from before the tail started:
    /// present in the collection at kickoff, or carrying a time more than
    /// the [skew window](MongoOptions::skew_window) before it (a writer's
    /// clock that far behind). Counted each time a cursor reads one: a
    /// reopened cursor reads the ones within its window again.
    pub before_start: u64,
    /// Times the consumer found its position overwritten by the capped
    /// collection (documents were lost to it before they could be read).
    pub gaps: u64,
    /// Times the tailing cursor was reopened.
    pub reopened: u64,
    /// Whether the tailing task is alive (from `kickoff` until the channel
    /// stops: [`Channel::stop`](tbone_dispatch::Channel::stop) waits for it
    /// to end).
    pub tailing: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) inserted: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) before_start: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) reopened: AtomicU64,
    pub(crate) tailing: Arc<AtomicBool>,
    pub(crate) start: watch::Sender<TailStart>,
}

/// How far the tailing task got with its start, for
/// [`MongoBackend::started`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TailStart {
    /// The documents present at kickoff were listed.
    pub(crate) listed: bool,
    /// The tailing task has ended (or was dropped before it ran).
    pub(crate) ended: bool,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct PublishRequest {
    document: Document,
    ack: oneshot::Sender<Result<(), BackendError>>,
}

/// Creates the capped collection on first use; shared by the writer and the
/// tailing task, retried after a failure.
#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) db: Database,
    pub(crate) name: String,
    pub(crate) capacity: u64,
    pub(crate) size: u64,
    pub(crate) done: Arc<OnceCell<()>>,
}

impl Setup {
    pub(crate) async fn ensure(&self) -> Result<(), MongoError> {
        self.done
            .get_or_try_init(|| async {
                let created = self
                    .db
                    .create_collection(&self.name)
                    .capped(true)
                    .size(self.size)
                    .max(self.capacity)
                    .await;
                match created {
                    Ok(()) => Ok(()),
                    // Another instance created it first (or it exists with
                    // other options): acceptable if it is capped.
                    Err(error) if is_code(&error, 48) => self.check_capped().await,
                    Err(source) => Err(MongoError::Driver {
                        context: format!("cannot create capped collection `{}`", self.name),
                        source,
                    }),
                }
            })
            .await
            .map(|_| ())
    }

    async fn check_capped(&self) -> Result<(), MongoError> {
        let driver_error = |source| MongoError::Driver {
            context: format!("cannot inspect collection `{}`", self.name),
            source,
        };
        let mut listed = self
            .db
            .list_collections()
            .filter(doc! {"name": &self.name})
            .await
            .map_err(driver_error)?;
        while let Some(spec) = listed.next().await {
            let spec = spec.map_err(driver_error)?;
            if spec.options.capped == Some(true) {
                return Ok(());
            }
        }
        Err(MongoError::NotCapped {
            collection: self.name.clone(),
        })
    }
}

/// The database's write concern, journaled if `journal`: see
/// [`MongoOptions::journal`].
fn publish_concern(db: &Database, journal: bool) -> Option<WriteConcern> {
    let inherited = db.write_concern().cloned();
    if !journal {
        return inherited;
    }
    let mut concern = inherited.unwrap_or_default();
    concern.journal = Some(true);
    Some(concern)
}

/// How many delivered ids the tailing consumer remembers: as many as the
/// collection holds, all that a reopened cursor can read again.
fn remembered_ids(capacity: u64) -> usize {
    usize::try_from(capacity).unwrap_or(usize::MAX)
}

pub(crate) fn is_code(error: &mongodb::error::Error, code: i32) -> bool {
    match &*error.kind {
        ErrorKind::Command(command) => command.code == code,
        _ => false,
    }
}

/// The spec's MongoChannel transport: every published event is one document
/// `{_id, key, data}` in the capped collection `tbone_channel_<name>`, and
/// every instance tails that collection to deliver each event to its own
/// subscribers. Python TBone instances sharing the database interoperate.
///
/// - Publishing resolves once the server acknowledged the write as
///   journaled (see [`MongoOptions::journal`]), and fails with an error
///   otherwise. Concurrent publishes are written together with
///   `insert_many`, in order.
/// - Delivered: the documents written after kickoff, whatever the clocks
///   of their writers within the [skew window](MongoOptions::skew_window);
///   not the ones already in the collection at kickoff (a document whose
///   id carries the kickoff's second or later is delivered, as TBone does,
///   since it may have been written after kickoff). The tail lists what is
///   present within a round trip of kickoff; [`MongoBackend::started`]
///   resolves once it has, and everything written after that is delivered.
///   The ones not delivered are counted ([`MongoStats::before_start`]).
/// - The tailing cursor awaits data on the server. When it dies (network
///   error, server restart, `CappedPositionLost`, killed cursor) it is
///   reopened with backoff and jitter, a skew window before the newest
///   document delivered, and documents already delivered are dropped:
///   nothing is lost or repeated. Documents overwritten before they
///   could be read are reported once per gap (a warning and
///   [`MongoStats::gaps`]).
/// - Malformed documents written by others are skipped with a warning and
///   counted; they never reach a carrier.
///
/// It runs on any runtime: driver work happens on a tokio runtime (see
/// [`Driver`]). Open a channel with [`open`](super::open) or
/// [`builder`](super::builder).
pub struct MongoBackend {
    collection: Collection<Document>,
    setup: Setup,
    options: MongoOptions,
    driver: Driver,
    publish: queue::Sender<PublishRequest>,
    counters: Arc<Counters>,
    closed: AtomicBool,
    tail: Mutex<Option<JoinHandle<()>>>,
    writer: AbortHandle,
    receipts: Arc<HeldReceipts<DocumentId>>,
    /// Which documents the tailing delivers (for resuming clients).
    live: Arc<LiveDocuments>,
}

impl fmt::Debug for MongoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoBackend")
            .field("collection", &self.setup.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl MongoBackend {
    /// A backend for channel `channel` on database `db`, running driver work
    /// on `driver`.
    pub fn new(db: &Database, channel: &str, options: MongoOptions, driver: Driver) -> Self {
        let name = options
            .collection
            .clone()
            .unwrap_or_else(|| format!("tbone_channel_{channel}"));
        let setup = Setup {
            db: db.clone(),
            name: name.clone(),
            capacity: options.capacity,
            size: options.collection_size(),
            done: Arc::new(OnceCell::new()),
        };
        let collection = db.collection_with_options::<Document>(
            &name,
            CollectionOptions::builder()
                .write_concern(publish_concern(db, options.journal))
                .build(),
        );
        let counters = Arc::new(Counters::default());
        let (publish, requests) = queue::bounded(options.publish_queue);
        let (writer, registration) = AbortHandle::new_pair();
        driver.handle().spawn(Abortable::new(
            write_batches(
                collection.clone(),
                setup.clone(),
                requests,
                options.max_batch,
                counters.clone(),
            ),
            registration,
        ));
        MongoBackend {
            collection,
            setup,
            options,
            driver,
            publish,
            counters,
            closed: AtomicBool::new(false),
            tail: Mutex::new(None),
            writer,
            receipts: Arc::default(),
            live: Arc::default(),
        }
    }

    /// The capped collection's name.
    pub fn collection_name(&self) -> &str {
        &self.setup.name
    }

    /// The driver runtime this backend uses.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// The backend's counters.
    pub fn stats(&self) -> MongoStats {
        let c = &self.counters;
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        MongoStats {
            inserted: read(&c.inserted),
            batches: read(&c.batches),
            failed: read(&c.failed),
            received: read(&c.received),
            skipped: read(&c.skipped),
            duplicates: read(&c.duplicates),
            before_start: read(&c.before_start),
            gaps: read(&c.gaps),
            reopened: read(&c.reopened),
            tailing: c.tailing.load(Ordering::Acquire),
        }
    }

    /// Resolves once the tailing task started by
    /// [`kickoff`](tbone_dispatch::Channel::kickoff) has listed the
    /// documents present in the collection: every document inserted after
    /// this resolves is delivered, whatever its writer's clock (within the
    /// [skew window](MongoOptions::skew_window)).
    ///
    /// `kickoff` cannot wait for the server, so the listing runs just
    /// after it returns (one round trip, or more while the server is
    /// unreachable): a document written in between by a writer whose clock
    /// is behind is taken as present, and not delivered. Await this where
    /// that matters (before answering "ready", or in tests).
    ///
    /// Fails with [`MongoError::NotTailing`] if the channel was not kicked
    /// off, or stopped before its tail started.
    ///
    /// ```no_run
    /// use tbone_dispatch_tokio::{mongo, MongoChannel};
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let db = mongo::connect("mongodb://127.0.0.1:27017", "app").await?;
    /// let pubsub: MongoChannel = mongo::open("pubsub", &db)?;
    /// pubsub.kickoff()?;
    /// pubsub.backend().started().await?; // what is written from here on is delivered
    /// # Ok(()) }
    /// ```
    pub async fn started(&self) -> Result<(), MongoError> {
        let mut start = self.counters.start.subscribe();
        let kicked_off = self
            .tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let not_tailing = || MongoError::NotTailing {
            collection: self.setup.name.clone(),
        };
        if !kicked_off && !start.borrow().listed {
            return Err(not_tailing());
        }
        let listed = start
            .wait_for(|start| start.listed || start.ended)
            .await
            .is_ok_and(|start| start.listed);
        if listed {
            Ok(())
        } else {
            Err(not_tailing())
        }
    }
}

impl Drop for MongoBackend {
    fn drop(&mut self) {
        self.writer.abort();
        if let Some(tail) = self
            .tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            tail.abort();
        }
    }
}

impl Backend for MongoBackend {
    async fn publish(&self, mut event: Event) -> Result<(), BackendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BackendError::Closed);
        }
        let id = ObjectId::new();
        let document = to_document(id, &event)?;
        if let Some(receipt) = event.take_receipt() {
            // Given back to the event when the tailing task reads it.
            self.receipts
                .hold(DocumentId(id.bytes()), receipt, Instant::now());
        }
        let (ack, acked) = oneshot::channel();
        self.publish
            .send(PublishRequest { document, ack })
            .await
            .map_err(|_| BackendError::Closed)?;
        let written = acked.await.map_err(|_| BackendError::Closed)?;
        if written.is_err() {
            self.receipts.release(&DocumentId(id.bytes()));
        }
        written
    }

    fn consume(&self) -> Result<EventStream, BackendError> {
        let mut tailing = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tailing.is_some() {
            return Err(BackendError::AlreadyConsumed);
        }
        let kickoff = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let window = u32::try_from(self.options.skew_window.as_secs()).unwrap_or(u32::MAX);
        let (events, stream) = queue::bounded(self.options.buffer);
        let context = TailContext {
            collection: self.collection.clone(),
            setup: self.setup.clone(),
            options: self.options.clone(),
            counters: self.counters.clone(),
            receipts: self.receipts.clone(),
            events,
            live: self.live.clone(),
        };
        let position = TailPosition::new(kickoff, window, remembered_ids(self.options.capacity));
        let alive = Alive::raise(&self.counters.tailing);
        let span = tracing::debug_span!("tail", collection = %self.setup.name);
        *tailing = Some(
            self.driver.handle().spawn(
                async move {
                    let _alive = alive;
                    tail(context, position).await;
                }
                .instrument(span),
            ),
        );
        Ok(stream.boxed())
    }

    /// The documents after `after` in the capped collection, for a client
    /// resuming from a position this instance's history does not hold
    /// (see [`Channel::resume`](tbone_dispatch::Channel::resume)); read on
    /// the driver's runtime.
    async fn stored_after(&self, after: &Position) -> Result<Option<Stored>, BackendError> {
        let collection = self.collection.clone_with_type::<RawDocumentBuf>();
        let live = self.live.clone();
        let after = after.clone();
        let max_payload = self.options.max_payload;
        let read = self
            .driver
            .handle()
            .spawn(async move { stored_after(&collection, &live, &after, max_payload).await });
        // A client that leaves while the collection is read stops the read.
        let mut read = AbortOnDrop(read);
        match (&mut read.0).await {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(error)) => Err(BackendError::with_source(
                format!(
                    "cannot read what collection {} stores for a resuming client",
                    self.setup.name
                ),
                error,
            )),
            Err(error) => Err(BackendError::with_source(
                "the read of the stored events did not finish: the driver's runtime is shutting down",
                error,
            )),
        }
    }

    /// Stops the tailing task and waits until it is gone, so that a
    /// runtime dropped right after the channel's stop finds no driver work
    /// of this channel still running.
    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tail) = tail {
            tail.abort();
            // Cancelled is the expected outcome; a panic in it was logged
            // by the runtime already.
            let _ = tail.await;
        }
    }
}

async fn write_batches(
    collection: Collection<Document>,
    setup: Setup,
    mut requests: queue::Receiver<PublishRequest>,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    use futures::FutureExt;
    while let Some(first) = requests.next().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match requests.next().now_or_never() {
                Some(Some(request)) => batch.push(request),
                _ => break,
            }
        }
        if let Err(error) = setup.ensure().await {
            let error = Arc::new(error);
            for request in batch {
                bump(&counters.failed);
                let _ = request.ack.send(Err(BackendError::msg(format!(
                    "event not published: {error}"
                ))));
            }
            continue;
        }
        // A lone event takes the server's cheaper single-insert path.
        let result = match batch.as_slice() {
            [single] => collection.insert_one(&single.document).await.map(|_| ()),
            _ => {
                let documents = batch.iter().map(|r| &r.document);
                collection
                    .insert_many(documents)
                    .ordered(true)
                    .await
                    .map(|_| ())
            }
        };
        // With an ordered insert, everything before the first failed index
        // was written; nothing after it was.
        let written = match &result {
            Ok(()) => batch.len(),
            Err(error) => match &*error.kind {
                ErrorKind::InsertMany(failure) => failure
                    .write_errors
                    .as_ref()
                    .and_then(|errors| errors.iter().map(|e| e.index).min())
                    .unwrap_or(0),
                _ => 0,
            },
        };
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .inserted
            .fetch_add(written as u64, Ordering::Relaxed);
        let failure = result.err().map(|e| e.to_string());
        if let Some(failure) = &failure {
            tracing::warn!(collection = %setup.name, error = %failure, written, total = batch.len(), "insert_many failed");
        }
        for (index, request) in batch.into_iter().enumerate() {
            let outcome = match &failure {
                Some(failure) if index >= written => {
                    bump(&counters.failed);
                    Err(BackendError::msg(format!(
                        "the write of this event was not acknowledged: {failure}"
                    )))
                }
                _ => Ok(()),
            };
            let _ = request.ack.send(outcome);
        }
    }
}

/// Opens (or returns) the MongoDB channel `name` on database `db`, with
/// default options, for runtime `R` (inferred, e.g. from `MongoChannel`).
///
/// ```no_run
/// use tbone_dispatch_tokio::{mongo, MongoChannel};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let db = mongo::connect("mongodb://127.0.0.1:27017", "app").await?;
/// let pubsub: MongoChannel = mongo::open("pubsub", &db)?;
/// pubsub.kickoff()?;
/// pubsub.publish("resource_create", &serde_json::json!({"id": 1})).await?;
/// # Ok(()) }
/// ```
pub fn open<R: Runtime + Default>(
    name: &str,
    db: &Database,
) -> Result<Channel<MongoBackend, R>, ChannelError> {
    builder(name, db).open()
}

/// Options for opening a MongoDB channel; see [`open`].
pub fn builder(name: &str, db: &Database) -> MongoChannelBuilder {
    MongoChannelBuilder {
        channel: ChannelBuilder::new(name),
        name: name.to_string(),
        db: db.clone(),
        options: MongoOptions::default(),
    }
}

/// Builds a MongoDB channel: channel options plus [`MongoOptions`].
pub struct MongoChannelBuilder {
    channel: ChannelBuilder,
    name: String,
    db: Database,
    options: MongoOptions,
}

impl fmt::Debug for MongoChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoChannelBuilder")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MongoChannelBuilder {
    /// The backend's options.
    pub fn options(mut self, options: MongoOptions) -> Self {
        self.options = options;
        self
    }

    /// The channel's envelope (default TBone's frame).
    pub fn envelope(mut self, envelope: impl Envelope) -> Self {
        self.channel = self.channel.envelope(envelope);
        self
    }

    /// How many recent events the channel keeps for clients that resume
    /// (see [`ChannelBuilder::history`]; the positions are the documents'
    /// ObjectIds, the same on every instance).
    pub fn history(mut self, limits: tbone_dispatch::HistoryLimits) -> Self {
        self.channel = self.channel.history(limits);
        self
    }

    /// Opens (or returns) the channel on `R`'s default runtime.
    pub fn open<R: Runtime + Default>(self) -> Result<Channel<MongoBackend, R>, ChannelError> {
        self.open_on(R::default())
    }

    /// Opens (or returns) the channel on `runtime`.
    pub fn open_on<R: Runtime>(self, runtime: R) -> Result<Channel<MongoBackend, R>, ChannelError> {
        let driver = match self.options.driver.clone() {
            Some(driver) => driver,
            None => Driver::current_or_background().map_err(|e| ChannelError::Backend {
                channel: self.name.clone(),
                source: e.into(),
            })?,
        };
        let MongoChannelBuilder {
            channel,
            name,
            db,
            options,
        } = self;
        let collection = options
            .collection
            .clone()
            .unwrap_or_else(|| format!("tbone_channel_{name}"));
        // What makes two opens of the name the same channel; the driver's
        // runtime is not part of it.
        let settings = format!(
            "MongoDB collection `{}.{collection}` (capacity {}, {} bytes per document, journal {}, skew window {:?}, batches of {}, buffer {}, await {:?})",
            db.name(),
            options.capacity,
            options.message_size,
            options.journal,
            options.skew_window,
            options.max_batch,
            options.buffer,
            options.await_time,
        );
        channel
            .backend_settings(settings)
            .max_payload_bytes(options.max_payload)
            .open(runtime, |_| MongoBackend::new(&db, &name, options, driver))
    }
}

/// Aborts a driver task when the future awaiting it is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use mongodb::options::{Acknowledgment, ClientOptions};

    use super::publish_concern;

    #[tokio::test]
    async fn publishes_are_journaled_keeping_the_rest_of_the_write_concern() {
        // No server needed: the client connects lazily.
        let options = ClientOptions::parse("mongodb://127.0.0.1:9/?w=majority&wtimeoutMS=500")
            .await
            .unwrap();
        let db = mongodb::Client::with_options(options)
            .unwrap()
            .database("d");
        let concern = publish_concern(&db, true).unwrap();
        assert_eq!(concern.journal, Some(true));
        assert_eq!(concern.w, Some(Acknowledgment::Majority));
        assert_eq!(
            concern.w_timeout,
            Some(std::time::Duration::from_millis(500))
        );
        let plain = publish_concern(&db, false).unwrap();
        assert_eq!(plain.journal, None, "opted out: the database's own");
    }
}
