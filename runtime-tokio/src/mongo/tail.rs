//! The tailing task: follows the capped collection and hands every new
//! document to the channel, surviving any cursor death without loss or
//! duplicates.

use std::sync::Arc;

use futures::StreamExt;
use mongodb::bson::{doc, oid::ObjectId, Document, RawDocumentBuf};
use mongodb::options::CursorType;
use mongodb::Collection;
use tbone_dispatch::tailing::{Admission, Backoff, DocumentId, HeldReceipts, TailPosition};
use tbone_dispatch::{queue, Event};

use super::backend::{bump, is_code, Counters, MongoOptions, Setup};
use super::document::{document_id, to_event};
use super::history::{position_of, LiveDocuments};

pub(crate) struct TailContext {
    pub(crate) collection: Collection<Document>,
    pub(crate) setup: Setup,
    pub(crate) options: MongoOptions,
    pub(crate) counters: Arc<Counters>,
    pub(crate) receipts: Arc<HeldReceipts<DocumentId>>,
    pub(crate) events: queue::Sender<Event>,
    /// Set once the documents present at kickoff are listed.
    pub(crate) live: Arc<LiveDocuments>,
}

/// The context lives as long as the tailing task's future, run or not: its
/// end (return, abort, or dropped unpolled with its runtime) is what
/// `MongoBackend::started` waits for when the tail never got to start.
impl Drop for TailContext {
    fn drop(&mut self) {
        self.counters.start.send_modify(|start| start.ended = true);
    }
}

enum End {
    /// The cursor ended without an error (an empty collection on mongod, a
    /// killed cursor).
    Exhausted {
        delivered: bool,
    },
    Failed(mongodb::error::Error),
    /// The channel is gone.
    Closed,
}

pub(crate) async fn tail(context: TailContext, mut position: TailPosition) {
    let TailContext {
        collection,
        setup,
        options,
        counters,
        receipts,
        events,
        live,
    } = &context;
    // Read raw: `document.rs` converts with a bounded depth, where the
    // driver's deserialization of a `Document` recurses once per level.
    let collection = collection.clone_with_type::<RawDocumentBuf>();
    let mut empty = Backoff::new(options.empty_backoff);
    let mut failing = Backoff::new(options.error_backoff);
    let mut reopening = false;
    // Whether the documents present at kickoff were listed: once, before
    // the first cursor, so that they are not delivered.
    let mut started = false;
    // The position last found overwritten: a gap is reported once, however
    // many reopen attempts it takes to get past it.
    let mut gap_at = None;
    loop {
        if events.is_closed() {
            return;
        }
        if let Err(error) = setup.ensure().await {
            tracing::warn!(collection = %setup.name, %error, "cannot prepare the channel's collection; retrying");
            tokio::time::sleep(failing.delay()).await;
            continue;
        }
        if !started {
            match list_present(&collection, &mut position).await {
                Ok(present) => {
                    tracing::debug!(collection = %setup.name, present, "documents present at kickoff, not delivered");
                    started = true;
                    live.set(Arc::new(position.live_filter()));
                    counters.start.send_modify(|start| start.listed = true);
                }
                Err(error) => {
                    tracing::warn!(collection = %setup.name, %error, "cannot list the documents present at kickoff; retrying");
                    tokio::time::sleep(failing.delay()).await;
                    continue;
                }
            }
        }
        if reopening {
            bump(&counters.reopened);
            if let Some(last) = position
                .last_delivered()
                .filter(|last| gap_at != Some(*last))
            {
                // If the last document delivered was overwritten, so may
                // have been the ones after it: say so, once per gap.
                match collection
                    .find_one(doc! {"_id": ObjectId::from_bytes(last.0)})
                    .await
                {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        gap_at = Some(last);
                        bump(&counters.gaps);
                        tbone_dispatch::observe::record_gap(&setup.name);
                        tracing::warn!(
                            collection = %setup.name,
                            "the consumer fell behind the capped collection: documents were overwritten before they were read; continuing with the oldest remaining"
                        );
                    }
                    Err(error) => {
                        tracing::debug!(%error, "cannot check the resume position; retrying");
                        tokio::time::sleep(failing.delay()).await;
                        continue;
                    }
                }
            }
        }
        reopening = true;
        let from = ObjectId::from_bytes(position.resume_from().0);
        let opened = collection
            .find(doc! {"_id": {"$gte": from}})
            .cursor_type(CursorType::TailableAwait)
            .max_await_time(options.await_time)
            .await;
        let mut cursor = match opened {
            Ok(cursor) => cursor,
            Err(error) => {
                tracing::warn!(collection = %setup.name, %error, "cannot open the tailing cursor; retrying");
                tokio::time::sleep(failing.delay()).await;
                continue;
            }
        };
        let end = follow(
            &mut cursor,
            &mut position,
            events,
            counters,
            receipts,
            options.max_payload,
        )
        .await;
        drop(cursor);
        match end {
            End::Closed => return,
            End::Exhausted { delivered } => {
                failing.reset();
                if delivered {
                    empty.reset();
                }
                tokio::time::sleep(empty.delay()).await;
            }
            End::Failed(error) => {
                if is_code(&error, 136) {
                    tracing::info!(collection = %setup.name, "tailing cursor lost its position (CappedPositionLost); reopening");
                } else {
                    tracing::warn!(collection = %setup.name, %error, "tailing cursor failed; reopening");
                }
                tokio::time::sleep(failing.delay()).await;
            }
        }
    }
}

async fn follow(
    cursor: &mut mongodb::Cursor<RawDocumentBuf>,
    position: &mut TailPosition,
    events: &queue::Sender<Event>,
    counters: &Counters,
    receipts: &HeldReceipts<DocumentId>,
    max_payload: usize,
) -> End {
    let mut delivered = false;
    while let Some(next) = cursor.next().await {
        let document = match next {
            Ok(document) => document,
            Err(error) => return End::Failed(error),
        };
        let Some(id) = document_id(&document) else {
            bump(&counters.skipped);
            tracing::warn!(id = ?document.get("_id"), "skipping a channel document whose _id is not an ObjectId");
            continue;
        };
        match position.admit(id) {
            Admission::Deliver => {}
            Admission::Duplicate => {
                bump(&counters.duplicates);
                continue;
            }
            Admission::BeforeStart => {
                bump(&counters.before_start);
                continue;
            }
        }
        match to_event(&document, max_payload) {
            Ok(event) => {
                bump(&counters.received);
                // The ObjectId is the same on every instance: a client can
                // resume on any of them.
                let event = match position_of(id) {
                    Some(position) => event.with_position(position),
                    None => event,
                };
                let event = match receipts.release(&id) {
                    Some(receipt) => event.with_receipt(receipt),
                    None => event,
                };
                if events.send(event).await.is_err() {
                    return End::Closed;
                }
                delivered = true;
            }
            Err(reason) => {
                bump(&counters.skipped);
                tracing::warn!(id = ?document.get("_id"), %reason, "skipping a malformed channel document");
            }
        }
    }
    End::Exhausted { delivered }
}

/// Gives `position` the documents present at kickoff that a cursor opened
/// at its start would read, and must not deliver; if there are none, the
/// newest document in the collection, for the first cursor to start at
/// (see [`TailPosition::newest_present`]). Returns how many were listed.
async fn list_present(
    collection: &Collection<RawDocumentBuf>,
    position: &mut TailPosition,
) -> mongodb::error::Result<usize> {
    let from = ObjectId::from_bytes(position.resume_from().0);
    let mut cursor = collection
        .find(doc! {"_id": {"$gte": from}})
        .projection(doc! {"_id": 1})
        .await?;
    let mut present = Vec::new();
    while let Some(document) = cursor.next().await {
        // Ids that are not ObjectIds are skipped by the tailing anyway.
        present.extend(document_id(&document?));
    }
    let listed = present.len();
    position.present_at_kickoff(present);
    if listed == 0 {
        // The last one inserted: a reverse scan of the capped collection
        // stops at the first ObjectId, with or without an `_id` index.
        let any_object_id = ObjectId::from_bytes(DocumentId::floor(0).0);
        let newest = collection
            .find_one(doc! {"_id": {"$gte": any_object_id}})
            .sort(doc! {"$natural": -1})
            .projection(doc! {"_id": 1})
            .await?;
        if let Some(newest) = newest.as_deref().and_then(document_id) {
            position.newest_present(newest);
        }
    }
    Ok(listed)
}
