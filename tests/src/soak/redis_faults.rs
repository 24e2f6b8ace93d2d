//! Scenario 4b, Redis faults: the database fault timeline
//! ([`super::server_faults`]) on two RedisChannel instances
//! sharing one stream, each with its own connections (instance `b` through
//! the proxy), while the redis-server (AOF, `appendfsync always`) is
//! SIGKILLed and restarted on the same data three times and `b`'s TCP
//! connections are cut once.

use std::net::SocketAddr;
use std::time::Duration;

use tbone_dispatch_tokio::redis::{self, RedisBackend, RedisOptions, RedisServer};
use tbone_dispatch_tokio::RedisChannel;

use super::server_faults::{self, FaultyServer};
use super::{Profile, Row};
use crate::redis::PrivateRedis;

/// Entries the stream keeps (about): small enough that the long profile
/// trims it many times over, which the tails must survive without a gap.
const CAPACITY: u64 = 4096;

/// The scenario; see the module documentation.
pub async fn run(profile: Profile) -> Row {
    server_faults::run::<PrivateRedis>("redis faults", profile).await
}

impl FaultyServer for PrivateRedis {
    type Backend = RedisBackend<tbone_dispatch_tokio::Tokio>;

    fn start() -> Result<Self, String> {
        PrivateRedis::try_start()
    }

    fn port(&self) -> u16 {
        PrivateRedis::port(self)
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
    ) -> Result<RedisChannel, String> {
        let url = match proxy {
            None => self.url.clone(),
            Some(proxy) => format!("redis://{proxy}/"),
        };
        let server = RedisServer::parse(&url).map_err(|e| e.to_string())?;
        let options = RedisOptions::default()
            .stream("tbone_channel_soak")
            .capacity(CAPACITY)
            .command_timeout(Duration::from_secs(2))
            .error_backoff(Duration::from_millis(50), Duration::from_millis(500));
        let channel: RedisChannel = redis::builder(&format!("soak/redis-faults/{name}"), &server)
            .options(options)
            .open()
            .map_err(|e| format!("cannot open instance {name}: {e}"))?;
        channel
            .kickoff()
            .map_err(|e| format!("cannot kick off instance {name}: {e}"))?;
        Ok(channel)
    }

    fn capacity() -> String {
        format!("stream trimmed to ~{CAPACITY} entries")
    }

    fn reconnects(backend: &Self::Backend) -> u64 {
        backend.stats().reconnected
    }

    /// What the client said, after the backend's preamble.
    fn cause(message: &str) -> &str {
        let preamble = "acknowledged (it may still have been added): ";
        message
            .find(preamble)
            .map_or(message, |at| &message[at + preamble.len()..])
    }

    fn describe(backend: &Self::Backend) -> String {
        let stats = backend.stats();
        format!(
            "RedisStats: {} gaps, {} reconnections of the tail, {} skipped, {} XADDs not acknowledged, {:.1} events per pipeline",
            stats.gaps,
            stats.reconnected,
            stats.skipped,
            stats.failed,
            stats.added as f64 / stats.batches.max(1) as f64
        )
    }
}
