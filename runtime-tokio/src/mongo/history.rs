//! The capped collection as a history: what a client resuming from a
//! position this instance no longer holds in memory missed
//! ([`Backend::stored_after`](tbone_dispatch::Backend::stored_after)).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{doc, oid::ObjectId, RawDocumentBuf};
use mongodb::Collection;
use tbone_dispatch::tailing::{DocumentId, LiveFilter, Start};
use tbone_dispatch::{Position, Stored, MAX_STORED_REPLAY};

use super::document::{document_id, to_event};

/// Which documents this instance's live stream delivers: set by the
/// tailing task once it has listed the documents present at kickoff, read
/// by [`stored_after`].
pub(crate) type LiveDocuments = Start<Arc<LiveFilter>>;

/// Why the stored events could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoredError {
    #[error("the tailing task has not started (it lists the documents present at kickoff first); is the channel kicked off?")]
    NotStarted,
    #[error("cannot read the capped collection")]
    Driver(#[from] mongodb::error::Error),
}

/// The documents after `after` in the collection's insertion order (the
/// order the tail delivers them in), each as an event with its position
/// and whether this instance's live stream delivers it; `None` when
/// `after` is not in the collection (overwritten since, or never a
/// document of it) or more than [`MAX_STORED_REPLAY`] documents follow it.
/// The position is looked up by `_id` first, so a client with an unknown
/// one costs one indexed read; only then is the collection scanned in
/// insertion order (a resume from the collection is the exception: the
/// channel's history answers first).
pub(crate) async fn stored_after(
    collection: &Collection<RawDocumentBuf>,
    live_documents: &LiveDocuments,
    after: &Position,
    max_payload: usize,
) -> Result<Option<Stored>, StoredError> {
    let Ok(after) = ObjectId::parse_str(after.as_str()) else {
        return Ok(None);
    };
    if collection
        .find_one(doc! {"_id": after})
        .projection(doc! {"_id": 1})
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let Some(canonical) = position_of(DocumentId(after.bytes())) else {
        return Ok(None);
    };
    let after = DocumentId(after.bytes());
    let live = tokio::time::timeout(Duration::from_secs(5), live_documents.wait())
        .await
        .map_err(|_| StoredError::NotStarted)?;
    let mut cursor = collection.find(doc! {}).sort(doc! {"$natural": 1}).await?;
    let mut stored: Option<Stored> = None;
    while let Some(document) = cursor.next().await {
        let document = document?;
        // The tail skips what is not an ObjectId or not an event, and so
        // does this.
        let Some(id) = document_id(&document) else {
            continue;
        };
        let Some(stored) = stored.as_mut() else {
            if id == after {
                stored = Some(Stored::after(canonical.clone(), live.delivers(id)));
            }
            continue;
        };
        if stored.len() == MAX_STORED_REPLAY {
            return Ok(None);
        }
        let (Ok(event), Some(position)) = (to_event(&document, max_payload), position_of(id))
        else {
            continue;
        };
        stored.push(event.with_position(position), live.delivers(id));
    }
    Ok(stored)
}

/// A document's position: its ObjectId in lower-case hex, as the tail
/// gives it.
pub(crate) fn position_of(id: DocumentId) -> Option<Position> {
    Position::new(&ObjectId::from_bytes(id.0).to_hex()).ok()
}
