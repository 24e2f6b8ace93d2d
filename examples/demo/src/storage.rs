//! Where entries live: in memory, or in MongoDB. Both send the model
//! signals `post_save` / `post_delete` after every write, with [`Entry`] as
//! sender, which is what turns writes into channel events.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use futures::FutureExt;
use tbone_dispatch_tokio::model::{
    send_model_signal, PostDelete, PostSave, POST_DELETE, POST_SAVE,
};
use tbone_dispatch_tokio::mongo::mongodb::bson::{self, doc, oid::ObjectId, Document};
use tbone_dispatch_tokio::mongo::{ModelCollection, MongoError, Record, WriteOutcome};
use tbone_dispatch_tokio::{PayloadError, Sender};

use crate::entry::{Entry, EntryPatch};

/// A stored entry with its id.
pub type EntryRecord = Record<Entry>;

/// A storage operation that failed (the write did not happen, or the
/// database could not be read).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// MongoDB failed.
    #[error(transparent)]
    Mongo(#[from] MongoError),
    /// The entry could not be encoded for the model signal.
    #[error("cannot encode the entry for its model signal: {0}")]
    Payload(#[from] PayloadError),
}

/// The operations the REST resource needs. Implementations send
/// [`POST_SAVE`] after an insert (`created`), replace or update, and
/// [`POST_DELETE`] after a delete, with `Sender::of::<Entry>()`.
pub trait Storage: Send + Sync + 'static {
    /// Every entry, oldest first.
    fn list(&self) -> BoxFuture<'_, Result<Vec<EntryRecord>, StorageError>>;
    /// The entry `id`, if any.
    fn get(&self, id: ObjectId) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>>;
    /// Stores `entry` under a new id.
    fn insert(&self, entry: Entry) -> BoxFuture<'_, Result<EntryRecord, StorageError>>;
    /// Replaces entry `id`; `None` if there is none.
    fn replace(
        &self,
        id: ObjectId,
        entry: Entry,
    ) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>>;
    /// Changes the given fields of entry `id`; `None` if there is none.
    fn update(
        &self,
        id: ObjectId,
        patch: EntryPatch,
    ) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>>;
    /// Deletes entry `id` and returns it; `None` if there was none.
    fn delete(&self, id: ObjectId) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>>;
}

/// Entries in a `Mutex<BTreeMap<ObjectId, Entry>>`: nothing to install,
/// one process only. Ids are fresh ObjectIds, so the map's order is the
/// order of creation.
///
/// Writes are serialized with their signals, so clients receive the events
/// of one entry in the order its writes happened.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    entries: Arc<Mutex<BTreeMap<ObjectId, Entry>>>,
    writes: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("entries", &self.lock().len())
            .finish()
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ObjectId, Entry>> {
        // Only map operations run under the lock; none can leave it torn.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The signal arguments are built (and the entry encoded) before the
    /// map changes, so a write never happens without its signal.
    fn save_args(&self, record: &EntryRecord, created: bool) -> Result<PostSave, StorageError> {
        Ok(PostSave::new(
            Arc::new(record.clone()),
            created,
            Arc::new(self.clone()),
        )?)
    }

    async fn saved(&self, args: PostSave) {
        send_model_signal(&POST_SAVE, Sender::of::<Entry>(), args).await;
    }
}

impl Storage for MemoryStorage {
    fn list(&self) -> BoxFuture<'_, Result<Vec<EntryRecord>, StorageError>> {
        let records = self
            .lock()
            .iter()
            .map(|(id, value)| Record {
                id: *id,
                value: value.clone(),
            })
            .collect();
        futures::future::ready(Ok(records)).boxed()
    }

    fn get(&self, id: ObjectId) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>> {
        let record = self.lock().get(&id).map(|value| Record {
            id,
            value: value.clone(),
        });
        futures::future::ready(Ok(record)).boxed()
    }

    fn insert(&self, entry: Entry) -> BoxFuture<'_, Result<EntryRecord, StorageError>> {
        async move {
            let _write = self.writes.lock().await;
            let record = Record {
                id: ObjectId::new(),
                value: entry,
            };
            let args = self.save_args(&record, true)?;
            self.lock().insert(record.id, record.value.clone());
            self.saved(args).await;
            Ok(record)
        }
        .boxed()
    }

    fn replace(
        &self,
        id: ObjectId,
        entry: Entry,
    ) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>> {
        async move {
            let _write = self.writes.lock().await;
            let record = Record { id, value: entry };
            let args = {
                let mut entries = self.lock();
                let Some(stored) = entries.get_mut(&id) else {
                    return Ok(None);
                };
                let args = self.save_args(&record, false)?;
                stored.clone_from(&record.value);
                args
            };
            self.saved(args).await;
            Ok(Some(record))
        }
        .boxed()
    }

    fn update(
        &self,
        id: ObjectId,
        patch: EntryPatch,
    ) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>> {
        async move {
            let _write = self.writes.lock().await;
            let (record, args) = {
                let mut entries = self.lock();
                let Some(stored) = entries.get_mut(&id) else {
                    return Ok(None);
                };
                let mut value = stored.clone();
                patch.apply(&mut value);
                let record = Record { id, value };
                let args = self.save_args(&record, false)?;
                stored.clone_from(&record.value);
                (record, args)
            };
            self.saved(args).await;
            Ok(Some(record))
        }
        .boxed()
    }

    fn delete(&self, id: ObjectId) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>> {
        async move {
            let _write = self.writes.lock().await;
            let (record, args) = {
                let mut entries = self.lock();
                let Some(value) = entries.get(&id).cloned() else {
                    return Ok(None);
                };
                let record = Record { id, value };
                let args = PostDelete::new(Arc::new(record.clone()), Arc::new(self.clone()))?;
                entries.remove(&id);
                (record, args)
            };
            send_model_signal(&POST_DELETE, Sender::of::<Entry>(), args).await;
            Ok(Some(record))
        }
        .boxed()
    }
}

/// Entries in a MongoDB collection, through
/// [`ModelCollection`], which sends the model signals itself.
#[derive(Clone, Debug)]
pub struct MongoStorage {
    entries: ModelCollection<Entry>,
}

impl MongoStorage {
    /// The entries of `collection`.
    pub fn new(collection: ModelCollection<Entry>) -> Self {
        MongoStorage {
            entries: collection,
        }
    }
}

fn set(patch: &EntryPatch) -> Document {
    let mut changes = Document::new();
    if let Some(author) = &patch.author {
        changes.insert("author", bson::Bson::String(author.clone()));
    }
    if let Some(text) = &patch.text {
        changes.insert("text", bson::Bson::String(text.clone()));
    }
    doc! {"$set": changes}
}

impl Storage for MongoStorage {
    fn list(&self) -> BoxFuture<'_, Result<Vec<EntryRecord>, StorageError>> {
        async move { Ok(self.entries.list().await?) }.boxed()
    }

    fn get(&self, id: ObjectId) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>> {
        async move { Ok(self.entries.get(id).await?) }.boxed()
    }

    fn insert(&self, entry: Entry) -> BoxFuture<'_, Result<EntryRecord, StorageError>> {
        async move { Ok(self.entries.insert(entry).await?) }.boxed()
    }

    fn replace(
        &self,
        id: ObjectId,
        entry: Entry,
    ) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>> {
        async move { Ok(self.entries.replace(id, entry).await?) }.boxed()
    }

    fn update(
        &self,
        id: ObjectId,
        patch: EntryPatch,
    ) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>> {
        async move {
            // Written, but not an Entry: the demo's error (its entries always are).
            let updated = self.entries.update(id, set(&patch)).await?;
            Ok(updated.map(WriteOutcome::into_record).transpose()?)
        }
        .boxed()
    }

    fn delete(&self, id: ObjectId) -> BoxFuture<'_, Result<Option<EntryRecord>, StorageError>> {
        async move {
            let deleted = self.entries.delete(id).await?;
            Ok(deleted.map(WriteOutcome::into_record).transpose()?)
        }
        .boxed()
    }
}
