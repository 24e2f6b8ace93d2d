//! What an update or deletion that happened reports: the write is done
//! whatever became of its model signal.

use mongodb::bson::{oid::ObjectId, Document};

use super::Record;
use crate::mongo::MongoError;

/// An update or deletion through
/// [`ModelCollection`](super::ModelCollection) that happened, and whether
/// its model signal was sent.
///
/// The document an update or deletion leaves is known only once it is
/// written, so it may turn out to be something the signal cannot carry:
/// no longer a `T` (another writer changed it, or the update made it so),
/// or data the event cannot hold (NaN, too large...). The write is done all
/// the same; the missing signal is logged as a warning and reported here,
/// so that the caller can tell without treating the write as failed.
///
/// ```
/// use mongodb::bson::oid::ObjectId;
/// use tbone_dispatch_tokio::mongo::{Record, WriteOutcome};
///
/// let id = ObjectId::new();
/// let outcome = WriteOutcome::Signalled(Record { id, value: 5 });
/// assert!(outcome.is_signalled());
/// assert_eq!(outcome.id(), id);
/// assert_eq!(outcome.into_record().unwrap().value, 5);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum WriteOutcome<T> {
    /// The model signal was sent, with this instance: as updated, or as it
    /// was before its deletion.
    Signalled(Record<T>),
    /// The instance, whose signal was not sent: the event cannot carry it
    /// (`reason`, a [`MongoError::Payload`]).
    Unsignalled {
        /// The instance, as updated or as it was before its deletion.
        record: Record<T>,
        /// Why the event cannot carry it.
        reason: MongoError,
    },
    /// The document is not a `T` (a [`MongoError::Data`] says why), so no
    /// signal was sent; it is as written (updated) or as it was (deleted).
    Unreadable {
        /// The document's `_id`.
        id: ObjectId,
        /// The document, as the database returned it.
        document: Document,
        /// Why it cannot be read as a `T`.
        reason: MongoError,
    },
}

impl<T> WriteOutcome<T> {
    /// The id of the document written.
    pub fn id(&self) -> ObjectId {
        match self {
            WriteOutcome::Signalled(record) | WriteOutcome::Unsignalled { record, .. } => record.id,
            WriteOutcome::Unreadable { id, .. } => *id,
        }
    }

    /// Whether the model signal was sent.
    pub fn is_signalled(&self) -> bool {
        matches!(self, WriteOutcome::Signalled(_))
    }

    /// Why the model signal was not sent, if it was not.
    pub fn unsignalled_reason(&self) -> Option<&MongoError> {
        match self {
            WriteOutcome::Signalled(_) => None,
            WriteOutcome::Unsignalled { reason, .. } | WriteOutcome::Unreadable { reason, .. } => {
                Some(reason)
            }
        }
    }

    /// The instance, if the document is a `T`.
    pub fn record(&self) -> Option<&Record<T>> {
        match self {
            WriteOutcome::Signalled(record) | WriteOutcome::Unsignalled { record, .. } => {
                Some(record)
            }
            WriteOutcome::Unreadable { .. } => None,
        }
    }

    /// The instance, or why the document is not a `T` (written all the
    /// same): for a caller that wants the instance and treats a document
    /// it cannot read as its own error.
    pub fn into_record(self) -> Result<Record<T>, MongoError> {
        match self {
            WriteOutcome::Signalled(record) | WriteOutcome::Unsignalled { record, .. } => {
                Ok(record)
            }
            WriteOutcome::Unreadable { reason, .. } => Err(reason),
        }
    }
}
