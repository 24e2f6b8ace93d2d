//! Scenario 4, Mongo faults: the database fault timeline
//! ([`super::server_faults`]) on two MongoChannel instances
//! sharing one database, each with its own client (instance `b` through the
//! proxy), while the SecantusDB server is SIGKILLed and restarted on the
//! same storage three times and `b`'s TCP connections are cut once.

use std::net::SocketAddr;
use std::time::Duration;

use mongodb::bson::doc;
use tbone_dispatch_tokio::mongo::{self, MongoBackend, MongoOptions};
use tbone_dispatch_tokio::MongoChannel;

use super::server_faults::{self, FaultyServer};
use super::{Profile, Row};
use crate::mongo::{connect_to, raw, PrivateServer};

const DATABASE: &str = "tbone_soak_mongo_faults";

/// Documents the capped collection keeps. SecantusDB's inserts slow down in
/// proportion to the collection's size (20 events/s at 20 000 documents),
/// so a small collection keeps the long profile's rate up; it wraps several
/// times in the long profile, which the tailers must survive too.
const CAPACITY: u64 = 4096;

/// The scenario; see the module documentation.
pub async fn run(profile: Profile) -> Row {
    server_faults::run::<PrivateServer>("mongo faults", profile).await
}

impl FaultyServer for PrivateServer {
    type Backend = MongoBackend;

    fn start() -> Result<Self, String> {
        PrivateServer::try_start()
    }

    fn port(&self) -> u16 {
        PrivateServer::port(self)
    }

    fn kill(&self) -> Result<(), String> {
        self.try_kill()
    }

    fn restart(&mut self) -> Result<(), String> {
        self.try_restart()
    }

    async fn open(
        &self,
        name: &'static str,
        proxy: Option<SocketAddr>,
    ) -> Result<MongoChannel, String> {
        let db = match proxy {
            None => connect_to(&self.uri, DATABASE).await,
            // The server calls itself a one-member replica set by its real
            // address; without a direct connection the driver would go
            // there, around the proxy.
            Some(proxy) => {
                connect_to(
                    &format!("mongodb://{proxy}/?directConnection=true"),
                    DATABASE,
                )
                .await
            }
        };
        let options = MongoOptions::default()
            .collection("tbone_channel_soak")
            .capacity(CAPACITY)
            .error_backoff(Duration::from_millis(50), Duration::from_millis(500));
        let channel: MongoChannel = mongo::builder(&format!("soak/mongo-faults/{name}"), &db)
            .options(options)
            .open()
            .map_err(|e| format!("cannot open instance {name}: {e}"))?;
        channel
            .kickoff()
            .map_err(|e| format!("cannot kick off instance {name}: {e}"))?;
        Ok(channel)
    }

    /// The collection's capped options on disk: SecantusDB writes them only
    /// at a checkpoint, so a SIGKILL before one brings the collection back
    /// uncapped (see `server_killed_and_restarted_loses_and_repeats_nothing`).
    async fn before_faults(&self) {
        let admin = connect_to(&self.uri, DATABASE)
            .await
            .client()
            .database("admin");
        raw(async move { admin.run_command(doc! {"fsync": 1}).await }).await;
    }

    fn capacity() -> String {
        format!("{CAPACITY} documents capped")
    }

    fn reconnects(backend: &MongoBackend) -> u64 {
        backend.stats().reopened
    }

    /// The driver's part says what happened.
    fn cause(message: &str) -> &str {
        message.find("Kind: ").map_or(message, |at| &message[at..])
    }

    fn describe(backend: &MongoBackend) -> String {
        let stats = backend.stats();
        format!(
            "MongoStats: {} gaps, {} cursor reopens, {} re-read documents dropped, {} writes not acknowledged, {:.1} events per insert",
            stats.gaps,
            stats.reopened,
            stats.duplicates,
            stats.failed,
            stats.inserted as f64 / stats.batches.max(1) as f64
        )
    }
}
