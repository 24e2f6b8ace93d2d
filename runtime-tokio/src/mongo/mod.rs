//! MongoChannel: channels shared by every backend instance through a
//! MongoDB capped collection, and the model helper that sends `post_save`
//! and `post_delete` (feature `mongo`).
//!
//! The tailing task, the batching writer and the model helper are written
//! once, here; the async-std and smol crates re-export this module. The
//! `mongodb` driver needs tokio, so its work always runs on a tokio runtime
//! ([`Driver`]): the application's own under tokio, a background one owned
//! by this crate under the others.
//!
//! ```no_run
//! use tbone_dispatch_tokio::{mongo, Carrier, Frame, MongoChannel};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = mongo::connect("mongodb://127.0.0.1:27017", "app").await?;
//! let pubsub: MongoChannel = mongo::open("pubsub", &db)?; // collection tbone_channel_pubsub
//! pubsub.kickoff()?;
//!
//! let (socket, _browser) = futures::channel::mpsc::unbounded::<Frame>();
//! pubsub.subscribe("resource_create", &Carrier::from_sink(socket)?)?;
//! // Every instance on this database delivers it to its own subscribers.
//! pubsub.publish("resource_create", &serde_json::json!({"id": 1})).await?;
//! # Ok(()) }
//! ```

mod backend;
mod document;
mod driver;
mod error;
mod history;
mod model;
mod tail;

pub use backend::{builder, open, MongoBackend, MongoChannelBuilder, MongoOptions, MongoStats};
pub use driver::{connect, Driver};
pub use error::MongoError;
pub use model::{ModelCollection, Record, WriteOutcome};

/// The `mongodb` driver this crate was built with.
pub use mongodb;
