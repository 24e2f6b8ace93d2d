//! Errors of the MongoDB backend and model helper.

use tbone_dispatch::{BackendError, PayloadError};

/// What went wrong talking to MongoDB.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MongoError {
    /// The driver reported an error.
    #[error("{context}: {source}")]
    Driver {
        /// What we were doing.
        context: String,
        /// The driver's error.
        #[source]
        source: mongodb::error::Error,
    },
    /// The channel's collection exists but is not capped, so it cannot be
    /// tailed.
    #[error("collection `{collection}` exists but is not a capped collection; drop it or configure another collection name for the channel")]
    NotCapped {
        /// The collection.
        collection: String,
    },
    /// The channel is not tailing its collection: it was not kicked off,
    /// or it stopped before its tail started.
    #[error("the channel on collection `{collection}` is not tailing it: call kickoff() first (a stopped channel does not start again)")]
    NotTailing {
        /// The channel's collection.
        collection: String,
    },
    /// A value could not be converted between JSON and BSON.
    #[error("cannot convert the data: {context}")]
    Data {
        /// What could not be converted, and what to do.
        context: String,
        /// The converter's error, where there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The data is not valid JSON for an event.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The tokio runtime that runs the driver is unavailable.
    #[error("the MongoDB driver's runtime is unavailable: {context}")]
    Runtime {
        /// What failed.
        context: &'static str,
        /// The runtime's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl MongoError {
    /// Data that cannot be converted, for `context`, caused by `source`.
    pub(crate) fn data(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        MongoError::Data {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Data that cannot be converted, for a reason of its own.
    pub(crate) fn refused(context: impl Into<String>) -> Self {
        MongoError::Data {
            context: context.into(),
            source: None,
        }
    }
}

impl From<MongoError> for BackendError {
    fn from(error: MongoError) -> Self {
        // The message says what failed (a publisher printing the error sees
        // it); the typed error stays reachable as the source.
        BackendError::with_source(format!("MongoDB: {error}"), error)
    }
}
