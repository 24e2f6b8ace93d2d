//! The typed collection helper: TBone's `MongoCollectionMixin`, which sends
//! `post_save` and `post_delete` after each write.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use mongodb::bson::{self, doc, oid::ObjectId, Document};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use tbone_dispatch::model::{
    send_model_signal, PostDelete, PostSave, Store, WriteOrder, WriteTurn, POST_DELETE, POST_SAVE,
};
use tbone_dispatch::Sender;

use super::{Driver, MongoError};

mod outcome;

pub use outcome::WriteOutcome;

/// A stored instance with its id. Serializes (for events and APIs) as the
/// instance's own fields plus `"_id": "<hex>"`, as TBone's resources do; `T`
/// must therefore serialize as a map or struct.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<T> {
    /// The document's `_id`.
    pub id: ObjectId,
    /// The instance.
    pub value: T,
}

impl<T: Serialize> Serialize for Record<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a, T> {
            #[serde(rename = "_id")]
            id: String,
            #[serde(flatten)]
            value: &'a T,
        }
        Flat {
            id: self.id.to_hex(),
            value: &self.value,
        }
        .serialize(serializer)
    }
}

/// A MongoDB collection of `T` whose writes send the model signals
/// [`POST_SAVE`] (with `created`) and [`POST_DELETE`], with `T` as sender,
/// the [`Record`] as instance and the `mongodb::Database` as store.
/// Connect [`publish_resource_events`](tbone_dispatch::model::publish_resource_events)
/// to turn them into `resource_create`, `resource_update` and
/// `resource_delete` on a channel: write -> signal -> channel -> carrier.
///
/// Signals are sent robustly after the write succeeded and awaited before
/// the method returns; a receiver that fails is logged, never reported as a
/// failed write. An insert or replace whose instance the event could not
/// carry is refused before anything is written; an update or delete
/// learns the document only once written, and reports the write as done
/// with a [`WriteOutcome`] that says whether its signal was sent. Writes
/// need `T: Clone`: the signal shares the instance while the method also
/// returns it.
///
/// # Order of events
///
/// The events of one document leave in the order of its writes: each write
/// holds the document's turn ([`WriteOrder`], one table per process, by
/// database, collection and id) from before the write until its signal was
/// sent, so concurrent writes of one document through any `ModelCollection`
/// of this process take turns, and the last event a client receives is the
/// stored state. Writes of other documents do not wait. The cost: writes of
/// one document go one at a time, each waiting for its event as its
/// receiver does (with [`publish_resource_events`] on a MongoDB channel,
/// about one round trip). Serializing was chosen over a version number in
/// the event, which TBone's clients would not know how to read. Writes made
/// elsewhere (another process, the driver directly) are not ordered with
/// these; a signal receiver must not write the same document through a
/// `ModelCollection`, as it would wait for the turn its own write holds.
///
/// [`publish_resource_events`]: tbone_dispatch::model::publish_resource_events
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use tbone_dispatch_tokio::model::publish_resource_events;
/// use tbone_dispatch_tokio::mongo::{self, ModelCollection};
/// use tbone_dispatch_tokio::{MongoChannel, Sender};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Entry {
///     text: String,
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let db = mongo::connect("mongodb://127.0.0.1:27017", "app").await?;
/// let pubsub: MongoChannel = mongo::open("pubsub", &db)?;
/// let _ = publish_resource_events(&pubsub, Sender::of::<Entry>());
///
/// let entries = ModelCollection::<Entry>::new(&db, "entries")?;
/// let saved = entries.insert(Entry { text: "hello".into() }).await?; // resource_create
/// entries.replace(saved.id, Entry { text: "hello!".into() }).await?; // resource_update
/// entries.delete(saved.id).await?;                                   // resource_delete
/// # Ok(()) }
/// ```
pub struct ModelCollection<T> {
    db: Database,
    collection: Collection<Document>,
    namespace: Arc<str>,
    driver: Driver,
    model: PhantomData<fn() -> T>,
}

impl<T> Clone for ModelCollection<T> {
    fn clone(&self) -> Self {
        ModelCollection {
            db: self.db.clone(),
            collection: self.collection.clone(),
            namespace: self.namespace.clone(),
            driver: self.driver.clone(),
            model: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ModelCollection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelCollection")
            .field("collection", &self.collection.name())
            .finish_non_exhaustive()
    }
}

/// The turns of every document written through a [`ModelCollection`] in
/// this process, by namespace and id: one table, so that two collection
/// helpers of the same collection still take turns.
fn write_order() -> &'static WriteOrder<(Arc<str>, ObjectId)> {
    static WRITES: OnceLock<WriteOrder<(Arc<str>, ObjectId)>> = OnceLock::new();
    WRITES.get_or_init(WriteOrder::new)
}

fn driver_error(context: &str) -> impl FnOnce(mongodb::error::Error) -> MongoError + '_ {
    move |source| MongoError::Driver {
        context: context.to_string(),
        source,
    }
}

impl<T> ModelCollection<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The collection `name` of `db`, with driver work on the current tokio
    /// runtime or the background one.
    pub fn new(db: &Database, name: &str) -> Result<Self, MongoError> {
        Ok(Self::with_driver(
            db,
            name,
            Driver::current_or_background()?,
        ))
    }

    /// The collection `name` of `db`, with driver work on `driver`.
    pub fn with_driver(db: &Database, name: &str, driver: Driver) -> Self {
        ModelCollection {
            db: db.clone(),
            collection: db.collection(name),
            namespace: format!("{}.{name}", db.name()).into(),
            driver,
            model: PhantomData,
        }
    }

    /// The turn of document `id`, held from before its write until its
    /// signal was sent (see "Order of events").
    async fn turn(&self, id: ObjectId) -> WriteTurn<(Arc<str>, ObjectId)> {
        write_order().turn((self.namespace.clone(), id)).await
    }

    fn store(&self) -> Store {
        Arc::new(self.db.clone())
    }

    fn to_document(value: &T) -> Result<Document, MongoError> {
        let mut document = bson::to_document(value)
            .map_err(|e| MongoError::data("cannot store the instance", e))?;
        document.remove("_id");
        Ok(document)
    }

    fn from_document(mut document: Document) -> Result<Record<T>, MongoError> {
        let id = document
            .get_object_id("_id")
            .map_err(|e| MongoError::data("stored document has no ObjectId _id", e))?;
        document.remove("_id");
        let value = bson::from_document(document)
            .map_err(|e| MongoError::data("cannot read the stored instance", e))?;
        Ok(Record { id, value })
    }

    /// The `post_save` arguments for `record`: encoded before the write
    /// where the instance is known beforehand, so that data the event
    /// cannot carry (NaN, too large...) refuses the write instead of
    /// failing after it.
    fn save_args(&self, record: &Record<T>, created: bool) -> Result<PostSave, MongoError>
    where
        T: Clone,
    {
        PostSave::new(Arc::new(record.clone()), created, self.store()).map_err(MongoError::from)
    }

    /// Sends `post_save` (`created: false`) or `post_delete` for an update
    /// or deletion that happened, whose document is known only now (read
    /// back from the database): if it is not a `T`, or the event cannot
    /// carry it, the write is still reported as done, without a signal,
    /// and the missing signal is logged.
    async fn signal_after(&self, id: ObjectId, document: Document, deleted: bool) -> WriteOutcome<T>
    where
        T: Clone,
    {
        let action = if deleted { "deleted" } else { "updated" };
        let record = match Self::from_document(document.clone()) {
            Ok(record) => record,
            Err(reason) => {
                tracing::warn!(%id, %reason, "{action}, but no model signal was sent: the stored document is not an instance of the model");
                return WriteOutcome::Unreadable {
                    id,
                    document,
                    reason,
                };
            }
        };
        let instance = Arc::new(record.clone());
        let sent = if deleted {
            match PostDelete::new(instance, self.store()) {
                Ok(args) => Ok(send_model_signal(&POST_DELETE, Sender::of::<T>(), args).await),
                Err(error) => Err(error),
            }
        } else {
            match PostSave::new(instance, false, self.store()) {
                Ok(args) => Ok(send_model_signal(&POST_SAVE, Sender::of::<T>(), args).await),
                Err(error) => Err(error),
            }
        };
        match sent {
            Ok(_) => WriteOutcome::Signalled(record),
            Err(error) => {
                let reason = MongoError::from(error);
                tracing::warn!(%id, %reason, "{action}, but no model signal was sent: the instance cannot be event data");
                WriteOutcome::Unsignalled { record, reason }
            }
        }
    }

    /// Inserts `value` under a new id, then sends `post_save` with
    /// `created: true`. Data the event could not carry is refused before
    /// anything is written.
    pub async fn insert(&self, value: T) -> Result<Record<T>, MongoError>
    where
        T: Clone,
    {
        let id = ObjectId::new();
        let mut document = Self::to_document(&value)?;
        document.insert("_id", id);
        let record = Record { id, value };
        let args = self.save_args(&record, true)?;
        let collection = self.collection.clone();
        let _turn = self.turn(id).await;
        self.driver
            .run(async move { collection.insert_one(document).await })
            .await?
            .map_err(driver_error("cannot insert the instance"))?;
        send_model_signal(&POST_SAVE, Sender::of::<T>(), args).await;
        Ok(record)
    }

    /// Replaces the instance with id `id`, then sends `post_save` with
    /// `created: false`. Returns `None` (and sends nothing) if there is no
    /// such instance. Data the event could not carry is refused before
    /// anything is written.
    pub async fn replace(&self, id: ObjectId, value: T) -> Result<Option<Record<T>>, MongoError>
    where
        T: Clone,
    {
        let document = Self::to_document(&value)?;
        let record = Record { id, value };
        let args = self.save_args(&record, false)?;
        let collection = self.collection.clone();
        let _turn = self.turn(id).await;
        let result = self
            .driver
            .run(async move { collection.replace_one(doc! {"_id": id}, document).await })
            .await?
            .map_err(driver_error("cannot replace the instance"))?;
        if result.matched_count == 0 {
            return Ok(None);
        }
        send_model_signal(&POST_SAVE, Sender::of::<T>(), args).await;
        Ok(Some(record))
    }

    /// Applies the update operators in `changes` (e.g. `{"$set": {...}}`)
    /// to the instance with id `id`, then sends `post_save` with
    /// `created: false` and the updated instance. `None` if not found.
    ///
    /// The updated instance is known only once written, so an update that
    /// happened is always `Ok`: its [`WriteOutcome`] says whether the
    /// signal was sent, and why not (the stored document is no longer a
    /// `T`, or the event cannot carry it: NaN, too large...).
    pub async fn update(
        &self,
        id: ObjectId,
        changes: Document,
    ) -> Result<Option<WriteOutcome<T>>, MongoError>
    where
        T: Clone,
    {
        let collection = self.collection.clone();
        let _turn = self.turn(id).await;
        let updated = self
            .driver
            .run(async move {
                collection
                    .find_one_and_update(doc! {"_id": id}, changes)
                    .return_document(ReturnDocument::After)
                    .await
            })
            .await?
            .map_err(driver_error("cannot update the instance"))?;
        let Some(document) = updated else {
            return Ok(None);
        };
        Ok(Some(self.signal_after(id, document, false).await))
    }

    /// Deletes the instance with id `id`, then sends `post_delete` with it
    /// as it was. `None` if there was none.
    ///
    /// A deletion that happened is always `Ok`: its [`WriteOutcome`] says
    /// whether the signal was sent, and why not (the deleted document was
    /// not a `T`, or the event cannot carry it).
    pub async fn delete(&self, id: ObjectId) -> Result<Option<WriteOutcome<T>>, MongoError>
    where
        T: Clone,
    {
        let collection = self.collection.clone();
        let _turn = self.turn(id).await;
        let deleted = self
            .driver
            .run(async move { collection.find_one_and_delete(doc! {"_id": id}).await })
            .await?
            .map_err(driver_error("cannot delete the instance"))?;
        let Some(document) = deleted else {
            return Ok(None);
        };
        Ok(Some(self.signal_after(id, document, true).await))
    }

    /// The instance with id `id`.
    pub async fn get(&self, id: ObjectId) -> Result<Option<Record<T>>, MongoError> {
        let collection = self.collection.clone();
        let found = self
            .driver
            .run(async move { collection.find_one(doc! {"_id": id}).await })
            .await?
            .map_err(driver_error("cannot read the instance"))?;
        found.map(Self::from_document).transpose()
    }

    /// Every instance, oldest first.
    pub async fn list(&self) -> Result<Vec<Record<T>>, MongoError> {
        let collection = self.collection.clone();
        let documents: Vec<Document> = self
            .driver
            .run(async move {
                let cursor = collection.find(doc! {}).sort(doc! {"_id": 1}).await?;
                cursor.try_collect().await
            })
            .await?
            .map_err(driver_error("cannot list the instances"))?;
        documents.into_iter().map(Self::from_document).collect()
    }
}
